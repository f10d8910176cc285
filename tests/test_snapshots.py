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
