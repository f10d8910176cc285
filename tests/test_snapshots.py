"""Snapshots of the main, learning, sessions (and its search), help screens
and the reply editor at 100x30.

Deterministic: a scripted candidate source, seeded exploration, fixed session
dates in UTC, no blinking cursor.  After a deliberate change of the look, run
`pytest tests/test_snapshots.py --snapshot-update` and review the SVG files.
"""

from __future__ import annotations

import time

import pytest

from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.app import RlchatApp
from rlchat.tui.widgets.prompt import PromptInput
from tests.helpers import ScriptedSource

SIZE = (100, 30)
REPLIES = ["Sure, here it is: [b]bold?[/b]", "I am not sure.", "What do you mean?", "Thanks!"]
DAY = 1_790_000_000.0  # a fixed date for the sessions list


@pytest.fixture
def app(data_dir, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    store = Store(data_dir)

    yield RlchatApp(settings=Settings(model="scripted", samples=4), store=store, seed=0,
                    source_factory=lambda settings: ScriptedSource(REPLIES))
    store.close()
    monkeypatch.delenv("TZ")
    time.tzset()


async def chat(pilot, turns: list[tuple[str, str, str]]) -> None:
    """Send messages and pick/rate, then fix the dates the snapshots show."""
    app = pilot.app
    await app.workers.wait_for_complete()
    app.query_one(PromptInput).cursor_blink = False
    for message, pick, rating in turns:
        app.query_one(PromptInput).value = message
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        if pick:
            await pilot.press(pick, rating)
            await app.workers.wait_for_complete()
            await pilot.pause()
    for session in app.store.sessions():
        app.store.update_session(session["id"], started=DAY + 3600 * int(session["id"]))
    await pilot.pause()


def test_main_screen(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [("hello", "1", "4"), ("tell me [more]", "", "")])
        await pilot.press("down", "w")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_learning_screen(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [("hi", "1", "5"), ("and?", "2", "2"), ("ok", "1", "4"),
                           ("more", "3", "1"), ("last", "1", "5")])
        await pilot.press("f3")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_sessions_screen(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [("about cats", "1", "5")])
        await pilot.press("ctrl+n")
        await chat(pilot, [("about [dogs]", "2", "3"), ("and puppies", "1", "4")])
        await pilot.press("f2")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_sessions_search(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [("about cats", "1", "5"), ("they purr", "2", "4")])
        await pilot.press("ctrl+n")
        await chat(pilot, [("about [dogs]", "2", "3"), ("and puppies", "1", "4")])
        await pilot.press("f2")
        await pilot.app.workers.wait_for_complete()  # the index
        await pilot.pause()
        await pilot.press(*"PURR")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_reply_editor(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [("hello", "", "")])
        await pilot.press("plus", "down", "down", "minus", "up", "m", *" and more",
                          "ctrl+j", *"on a second line")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(app, snap_compare):
    async def run_before(pilot) -> None:
        await chat(pilot, [])
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# Four replies SmolLM2-135M-Instruct wrote to "How do I cook pasta?" (seed 4,
# qint8, 128 tokens, every one cut there), as the model gave them.
REAL_REPLIES = [
    ("A: Cooking pasta is as simple as eating it, but let me share the perfect part "
     "of the recipe. For that, I'm here.\n\nThe perfect sauce to make your pasta:\nA: "
     "The secret to cooking pasta is mixing the perfect blend of spaghetti and broth. "
     "First you need a few spudlo, so this is a bit of common knowledge for all, "
     "spudlo, is a broth made with pasta, so you need both spudlo and pasta. So you "
     "have both spudlo and pasta, which makes the mixture very easy to handle. And as "
     "a part of this mixture, you need"),
    ("There's a multitude of ways to cook pasta in different cultures, but the key is "
     "to choose the perfect ingredients, always make it fresh and locally sourced, "
     "and to keep it light and fresh, right? This brings us to the art of pasta "
     "making. I love it when I can offer recommendations on which pasta sauce to use, "
     "or the perfect way to serve it, but on the flip side, I love the creativity "
     "when you just can't keep it light and fresh.\n\nNow, I'm about to introduce you "
     "to a bit of the Italian way of cooking food and drink. The story of Aglio di "
     "Gallo, the"),
    ("Cooking pasta can vary depending on the type and quality of pasta you're using, "
     "but generally, pasta can be used to make lasagna, burrata, and pasta con leche "
     "(cheese with pasta). To cook pasta with cheese, you'll need:\n\n- Oven-cured "
     "Pasta\n- Chopped Cheese and Emmental Brie\n- Chopped Scallops and Mussels\n- "
     "Chopped Tomatoes, Corn, and Mozzarella cheese\n\nThe key is to cook the pasta in "
     "a non-dairy, gluten-free cream based on salt, which can"),
    ("Cooking pasta can be a fun adventure! For a beginner, my first step would be to "
     "start by choosing the right type of pasta. I'm a pasta-eating machine, I don't "
     "care about which type you're using. You should choose a pasta that will provide "
     "the best texture and flavor. Let me suggest a few you might be interested "
     "in:\n\n1. **Frozen Spaghetti**: Fresh pasta makes the most of it, so don't get "
     "disappointed if you only have a few pounds.\n\n2. **Uremia and Spaghetti**: A bit "
     "of misleaders can be just as much of a sauce"),
]


@pytest.fixture
def real_app(data_dir, monkeypatch):
    """The app with four real replies, each cut at the token limit as they were."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    store = Store(data_dir)

    class CutReplies(ScriptedSource):
        def propose(self, *args, **kwargs):
            proposal = super().propose(*args, **kwargs)
            for candidate in proposal.candidates:
                candidate.truncated = True
            return proposal

    yield RlchatApp(settings=Settings(model="scripted", samples=4), store=store, seed=0,
                    source_factory=lambda settings: CutReplies(REAL_REPLIES))
    store.close()
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_four_real_replies_in_view(real_app, snap_compare, size):
    async def run_before(pilot) -> None:
        await chat(pilot, [("How do I cook pasta?", "", "")])
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(real_app, terminal_size=size, run_before=run_before)
