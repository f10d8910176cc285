"""The Textual app, driven by its Pilot over the tiny model and a real store."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from learner.agent import Agent, AgentConfig
from storage import Store
from tests.helpers import ScriptedSource
from tui.app import CHOOSING, RATING, TYPING, RlchatApp
from tui.widgets.candidates import CandidatePanel
from tui.widgets.transcript import Transcript

SIZE = (100, 30)


@pytest.fixture
def store(data_dir):
    opened = Store(data_dir)
    yield opened
    opened.close()


async def settle(app, pilot) -> None:
    """Wait until background work (model load, generation, learning) is done."""
    await app.workers.wait_for_complete()
    await pilot.pause()


def texts(app, selector: str) -> list[str]:
    return [str(w.render()) for w in app.query(selector).results(Static)]


async def send(app, pilot, message: str) -> None:
    app.query_one("#message", Input).value = message
    await pilot.press("enter")
    await settle(app, pilot)


async def test_type_pick_and_rate(tiny_model, store):
    app = RlchatApp(model=str(tiny_model), store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.mode == TYPING and app.agent is not None
        await pilot.click("#message")
        await pilot.press(*"hello there", "enter")
        await settle(app, pilot)
        assert app.mode == CHOOSING
        shown = app.query_one(CandidatePanel).candidates
        assert len(shown) == 4 and len(texts(app, ".candidate")) == 4
        await pilot.press("1")
        assert app.mode == RATING
        await pilot.press("4")
        await settle(app, pilot)
        assert app.mode == TYPING
        messages = app.query_one(Transcript).messages()
        assert messages == ["You: hello there", f"Assistant: {shown[0].text}"]
        assert app.agent.policy.version == 1
        assert "policy v1" in str(app.query_one("#status", Static).render())
        assert app.query_one(CandidatePanel).candidates == []
    stored = list(store.turns())
    assert stored[0]["rating"] == 4 and stored[0]["choice"] == shown[0].id


async def test_escape_skips_the_rating_and_digits_out_of_range_do_nothing(tiny_model, store):
    app = RlchatApp(model=str(tiny_model), store=store, seed=0,
                    config=AgentConfig(candidates=2, samples=4))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        await pilot.press("9")  # only 2 shown
        assert app.mode == CHOOSING
        await pilot.press("2")
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.mode == TYPING and app.agent.policy.version == 1
    stored = list(store.turns())
    assert stored[0]["rating"] is None and stored[0]["rewards"][1] == 0.5


async def test_empty_message_is_refused_with_a_message(tiny_model, store):
    app = RlchatApp(model=str(tiny_model), store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "   ")
        assert app.mode == TYPING
        assert "empty" in str(app.query_one("#status", Static).render())
        assert app.agent.store.count_turns() == 0


async def test_new_session_clears_the_transcript(tiny_model, store):
    app = RlchatApp(model=str(tiny_model), store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "first")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.query_one(Transcript).messages() == []
        await send(app, pilot, "second")
        assert app.agent.stats()["sessions"] == 2


HOSTILE_USER = "[bold]x[/] and [/] and a lone [ and \x1b[31mred\x1b[0m"
HOSTILE_MODEL = ["[/INST] [bold]bold?[/bold]", "[", "\x1b[2J\x1b[Hclear screen", "[link=x]y[/link]"]


async def test_user_and_model_text_is_shown_literally(store):
    def factory() -> Agent:
        return Agent(store, ScriptedSource(HOSTILE_MODEL), AgentConfig(4, 4), seed=0)

    app = RlchatApp(model="scripted", agent_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, HOSTILE_USER)
        shown = texts(app, ".candidate")
        assert len(shown) == 4
        literal_model = ["[/INST] [bold]bold?[/bold]", "[", "␛[2J␛[Hclear screen",
                         "[link=x]y[/link]"]
        order = [c.text for c in app.query_one(CandidatePanel).candidates]
        for line, rank in zip(shown, range(1, 5), strict=True):
            expected = literal_model[HOSTILE_MODEL.index(order[rank - 1])]
            assert line.startswith(f"{rank}. {expected}   (Q ")
        await pilot.press("1", "5")
        await settle(app, pilot)
        user, assistant = app.query_one(Transcript).messages()
        assert user == "You: [bold]x[/] and [/] and a lone [ and ␛[31mred␛[0m"
        assert assistant == "Assistant: " + literal_model[HOSTILE_MODEL.index(order[0])]


async def test_unavailable_model_shows_the_fix_and_keeps_running(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = RlchatApp(model="no-such/model-xyz", store=store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        status = str(app.query_one("#status", Static).render())
        assert "--model PATH" in status and "init-model" in status
        assert app.agent is None and app.query_one("#message", Input).disabled
        await pilot.press("1", "escape")  # nothing to pick: no crash
        assert app.is_running
