"""The Textual app, driven by its Pilot over a real store (and the tiny model
where what the model writes does not matter to the check)."""

from __future__ import annotations

import tomllib

import pytest
from textual.widgets import DataTable, Input, Static

from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.app import RlchatApp
from rlchat.tui.screens.help import HelpScreen
from rlchat.tui.screens.learning import LearningScreen
from rlchat.tui.screens.sessions import SessionsScreen
from rlchat.tui.screens.settings_form import SettingsForm
from rlchat.tui.turn_flow import Phase
from rlchat.tui.widgets.candidates import CandidatePanel
from rlchat.tui.widgets.prompt import PromptInput
from rlchat.tui.widgets.transcript import Transcript
from tests.helpers import GatedSource, ScriptedSource

CHOOSING, GENERATING, RATING, REPLYING, TYPING = (
    Phase.CHOOSING, Phase.GENERATING, Phase.RATING, Phase.REPLYING, Phase.TYPING)
SIZE = (100, 30)
REPLIES = ["Sure, here it is.", "I am not sure.", "What do you mean?", "Thanks!"]


@pytest.fixture
def store(data_dir):
    opened = Store(data_dir)
    yield opened
    opened.close()


def scripted_app(store, texts=REPLIES, source=None, **settings) -> RlchatApp:
    source = source or ScriptedSource(texts)
    return RlchatApp(settings=Settings(model="scripted", **settings), store=store, seed=0,
                     source_factory=lambda s: source)


async def settle(app, pilot) -> None:
    """Wait until background work (model load, generation, learning) is done."""
    await app.workers.wait_for_complete()
    await pilot.pause()


async def until(pilot, condition, tries: int = 200) -> None:
    """Wait for a condition the app reaches on its own (a worker, a timer)."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition never became true")


def texts(app, selector: str) -> list[str]:
    return [str(w.render()) for w in app.screen.query(selector).results(Static)]


def status(app) -> str:
    return str(app.query_one("#status", Static).render())


async def send(app, pilot, message: str) -> None:
    app.query_one(PromptInput).value = message
    await pilot.press("enter")
    await settle(app, pilot)


async def test_type_pick_and_rate_with_the_tiny_model(tiny_model, store):
    app = RlchatApp(settings=Settings(model=str(tiny_model)), store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.flow.phase == TYPING and app.agent is not None
        await pilot.click("#message")
        await pilot.press(*"hello there", "enter")
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING
        shown = app.query_one(CandidatePanel).candidates
        assert len(shown) == 4 and len(texts(app, ".candidate")) == 4
        assert "█" in texts(app, ".candidate")[0]  # the score bar
        await pilot.press("1")
        assert app.flow.phase == RATING
        await pilot.press("4")
        await settle(app, pilot)
        assert app.flow.phase == TYPING
        messages = app.query_one(Transcript).messages()
        assert messages == ["You: hello there", f"Assistant: {shown[0].text}"]
        assert app.agent.policy.version == 1 and "policy v1" in status(app)
        assert "★★★★☆" in status(app)
        assert app.query_one(CandidatePanel).candidates == []
    stored = list(store.turns())
    assert stored[0]["rating"] == 4 and stored[0]["choice"] == shown[0].id


async def test_the_newest_message_stays_in_view_when_tall_candidates_shrink_the_transcript(store):
    source = GatedSource(["word " * 60 + str(i) for i in range(4)])  # each wraps over lines
    source.gate.set()
    app = scripted_app(store, source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for message in ("first", "second", "third"):
            await send(app, pilot, message)
            await pilot.press("1", "escape")
            await settle(app, pilot)
        # As with a real model: the message shows while the replies are still
        # being drawn, then the tall candidate panel takes space from the transcript.
        source.gate.clear()
        app.query_one(PromptInput).value = "the newest"
        await pilot.press("enter")
        for _ in range(5):
            await pilot.pause()
        source.gate.set()
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING
        transcript = app.query_one(Transcript)
        assert transcript.max_scroll_y > 0  # the dialogue no longer fits its area
        assert transcript.scroll_y == transcript.max_scroll_y  # and shows its end
        newest = transcript.query(".message").last()
        assert "the newest" in str(newest.render())
        assert newest.region.y < transcript.region.bottom
        # The panel closes: the transcript grows back and shows as much as fits.
        await pilot.press("1", "escape")
        await settle(app, pilot)
        assert transcript.scroll_y == transcript.max_scroll_y


async def test_escape_skips_the_rating_and_digits_out_of_range_do_nothing(store):
    app = scripted_app(store, candidates=2, samples=4)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        await pilot.press("9")  # only 2 shown
        assert app.flow.phase == CHOOSING
        await pilot.press("2", "escape")
        await settle(app, pilot)
        assert app.flow.phase == TYPING and app.agent.policy.version == 1
    stored = list(store.turns())
    assert stored[0]["rating"] is None and stored[0]["rewards"][1] == 0.5


async def test_up_down_and_enter_pick_the_highlighted_candidate(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        panel = app.query_one(CandidatePanel)
        await pilot.press("down", "down", "up")
        assert panel.highlighted == 1
        assert "highlighted" in panel.query(".candidate")[1].classes
        await pilot.press("up", "up")  # wraps around
        assert panel.highlighted == 3
        await pilot.press("enter")
        fourth = panel.candidates[3].id
        assert app.flow.phase == RATING and app.flow.picked.id == fourth
        await pilot.press("5")
        await settle(app, pilot)
    assert next(store.turns())["choice"] == fourth


async def test_own_reply_replaces_the_candidates(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        await pilot.press("e")
        assert app.flow.phase == REPLYING and not app.query_one(PromptInput).disabled
        await pilot.press("escape")  # back to the candidates
        assert app.flow.phase == CHOOSING
        await pilot.press("e", *"my [own] answer", "enter")
        await settle(app, pilot)
        assert app.flow.phase == TYPING
        assert app.query_one(Transcript).messages()[-1] == "Assistant: my [own] answer"
    turn = next(store.turns())
    assert turn["status"] == "replied" and turn["own_reply"] == "my [own] answer"


async def test_regenerate_learns_a_mild_no_to_the_old_turn(store):
    source = ScriptedSource(REPLIES)
    app = scripted_app(store, source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        await pilot.press("r")
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING
        assert app.query_one(Transcript).messages() == ["You: hi"]  # not twice
        await pilot.press("1", "3")
        await settle(app, pilot)
    first, second = list(store.turns())
    assert (first["status"], second["status"]) == ("regenerated", "chosen")
    assert first["rewards"] and all(r < 0 for r in first["rewards"])
    assert second["user_text"] == "hi"


async def test_none_of_these_then_an_order_then_an_edit(store):
    source = ScriptedSource(REPLIES)
    app = scripted_app(store, source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        await pilot.press("n")  # none of these: new candidates for the same message
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING
        shown = [c.id for c in app.flow.view.candidates]
        await pilot.press("o")
        assert app.flow.phase is Phase.ORDERING
        await pilot.press("9", "enter")  # not a reply number: said, nothing lost
        assert app.flow.phase is Phase.ORDERING and "not a reply number" in status(app)
        app.query_one(PromptInput).value = ""
        await pilot.press("2", "space", "1", "=", "3", "enter")
        assert app.flow.phase == RATING and app.flow.picked.id == shown[1]
        await pilot.press("4")
        await settle(app, pilot)
        assert app.flow.phase == TYPING
        await send(app, pilot, "again")
        await pilot.press("down", "m")
        assert app.flow.phase is Phase.EDITING
        box = app.query_one(PromptInput)
        assert box.value == app.flow.picked.text
        box.value = "an [edited] reply"
        await pilot.press("enter", "escape")  # accepted, rating skipped
        await settle(app, pilot)
        assert app.query_one(Transcript).messages()[-1] == "Assistant: an [edited] reply"
    rejected, ordered, edited = [t for t in store.turns() if t["status"] != "pending"]
    assert rejected["status"] == "rejected" and all(r < 0 for r in rejected["rewards"])
    assert ordered["ranking"][:2] == [[shown[1]], [shown[0], shown[2]]]
    assert ordered["choice"] == shown[1] and ordered["rating"] == 4
    assert edited["edit"] == "an [edited] reply" and edited["rating"] is None
    from rlchat.learner.records import Turn

    assert len(edited["edit_features"]) == Turn.from_dict(edited).features().shape[1]


async def test_why_lines_show_on_demand(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hi")
        assert texts(app, ".why") == []
        await pilot.press("w")
        await pilot.pause()
        why = texts(app, ".why")
        assert len(why) == 4 and all(line.startswith("why: ") for line in why)
        await pilot.press("w")
        await pilot.pause()
        assert texts(app, ".why") == []


async def test_candidates_stream_in_and_escape_cancels_the_generation(store):
    source = GatedSource(["[bold]first[/bold] draft", "second draft", "third", "fourth"])
    app = scripted_app(store, source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one(PromptInput).value = "stream please"
        await pilot.press("enter")
        panel = app.query_one(CandidatePanel)
        await until(pilot, lambda: len(panel.drafts()) == 4 and texts(app, ".draft"))
        assert app.flow.phase == GENERATING
        assert panel.drafts()[0] == "[bold]first[/bold] draft"
        # Streamed in, literal: the markup shows as typed.
        assert texts(app, ".draft")[0].splitlines()[0] == "~ [bold]first[/bold] draft"
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.flow.phase == TYPING and "Cancelled" in status(app)
        assert app.query_one(PromptInput).value == "stream please"  # nothing lost
        assert app.query_one(Transcript).messages() == []
        assert store.count_turns() == 0
        source.gate.set()  # the next generation runs through
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING and len(texts(app, ".candidate")) == 4


async def test_prompt_history_recalls_earlier_messages(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for message in ("first", "second"):
            await send(app, pilot, message)
            await pilot.press("1", "escape")
            await settle(app, pilot)
        box = app.query_one(PromptInput)
        box.value = "draft"
        await pilot.press("up")
        assert box.value == "second"
        await pilot.press("up", "up")
        assert box.value == "first"
        await pilot.press("down")
        assert box.value == "second"
        await pilot.press("down")
        assert box.value == "draft"


async def test_empty_message_is_refused_with_a_message(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "   ")
        assert app.flow.phase == TYPING and "empty" in status(app)
        assert store.count_turns() == 0


async def test_new_session_clears_the_transcript(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "first")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.query_one(Transcript).messages() == []
        await send(app, pilot, "second")
        assert app.agent.stats()["sessions"] == 2


async def test_sessions_screen_resumes_renames_and_deletes(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for message in ("about cats", "about dogs"):
            await send(app, pilot, message)
            await pilot.press("1", "5")
            await settle(app, pilot)
            await pilot.press("ctrl+n")
        await pilot.press("f2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        assert [str(c) for c in table.get_row_at(0)][1:] == ["about dogs", "1"]  # newest first
        assert "You: about dogs" in str(screen.query_one("#preview", Static).render())
        await pilot.press("ctrl+r")
        await pilot.pause()
        rename = app.screen.query_one(Input)
        rename.value = "[dogs] renamed"
        await pilot.press("enter")
        await pilot.pause()
        assert str(table.get_row_at(0)[1]) == "[dogs] renamed"
        await pilot.press("down", "ctrl+d")  # delete "about cats"
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert table.row_count == 1
        assert store.get_session("1")["deleted"] and store.count_turns() == 2
        assert [t["session"] for t in store.turns()] == ["2"]
        await pilot.press("enter")  # resume "[dogs] renamed"
        await settle(app, pilot)
        assert not isinstance(app.screen, SessionsScreen)
        assert app.query_one(Transcript).messages()[0] == "You: about dogs"
        assert app.agent.session == "2" and len(app.agent.history) == 1
        await send(app, pilot, "more about dogs")
        await pilot.press("1", "4")
        await settle(app, pilot)
    assert store.get_session("2")["turns"] == 2


async def test_learning_screen_shows_the_policy_and_plots(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for rating in ("5", "2", "4"):
            await send(app, pilot, "hi")
            await pilot.press("1", rating)
            await settle(app, pilot)
        await pilot.press("f3")
        await pilot.pause()
        assert isinstance(app.screen, LearningScreen)
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "policy v3" in summary and "3 answered turns" in summary
        assert len(app.screen.query("PlotextPlot")) == 4
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, LearningScreen)


async def test_settings_are_validated_saved_and_applied(store, config_dir):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsForm)
        assert str(screen.query_one("#embeddings-in-use", Static).render()) == (
            "in use: embeddings: the local model's hidden state")
        screen.query_one("#embeddings", Input).value = "hidden"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "embeddings must be generator, local:path" in str(
            screen.query_one("#error").render()).lower()
        screen.query_one("#embeddings", Input).value = ""
        screen.query_one("#candidates", Input).value = "12"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsForm)  # refused, with the reason
        assert "candidates must be from 1 to 9" in str(screen.query_one("#error").render()).lower()
        screen.query_one("#candidates", Input).value = "3"
        screen.query_one("#gamma", Input).value = "0.8"
        screen.query_one("#temperature", Input).value = "0.7"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert not isinstance(app.screen, SettingsForm)
        assert app.agent.settings.candidates == 3 and app.agent.policy.config.gamma == 0.8
        await send(app, pilot, "hi")
        assert len(app.query_one(CandidatePanel).candidates) == 3
    saved = tomllib.loads((config_dir / "config.toml").read_text())
    assert saved["candidates"] == 3 and saved["gamma"] == 0.8 and saved["temperature"] == 0.7


async def test_changing_the_model_reloads_it_in_the_background(store):
    loaded = []

    def factory(s: Settings) -> ScriptedSource:
        loaded.append(s.model)
        return ScriptedSource(REPLIES)

    app = RlchatApp(settings=Settings(model="one"), store=store, source_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        app.screen.query_one("#model", Input).value = "two"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert loaded == ["one", "two"] and app.flow.phase == TYPING
        assert "two" in app.sub_title


async def test_help_lists_every_binding_and_keys_can_be_remapped(store):
    app = scripted_app(store, keys={"new-session": "ctrl+o", "nonsense": "x"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "first")
        await pilot.press("ctrl+o")  # the remapped new-session key
        await pilot.pause()
        assert app.query_one(Transcript).messages() == []
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = {row[3]: row for row in app.screen.rows}
        for binding_id in ("digit-1 … digit-9", "pick-highlighted", "skip-rating",
                           "cancel-generation", "own-reply", "regenerate", "why", "new-session",
                           "sessions", "learning", "settings", "help", "quit", "history-older"):
            assert rows[binding_id][2], binding_id  # a description
        assert rows["new-session"][1] == "^o"
        await pilot.press("escape")
        await pilot.pause()
        app.query_one(PromptInput).blur()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_config_problems_are_shown_in_the_app(store):
    app = RlchatApp(settings=Settings(model="scripted"), store=store,
                    source_factory=lambda s: ScriptedSource(REPLIES), seed=0,
                    notices=["config.toml: candidates must be from 1 to 9; default kept"])
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(app, pilot)
        toasts = " ".join(str(t.render()) for t in app.screen.query("Toast"))
        assert "config.toml: candidates must be from 1 to 9; default kept" in toasts


async def test_command_palette_offers_the_actions_that_apply_now(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"New session", "Sessions", "Learning", "Settings", "Help"} <= titles
        assert "Regenerate" not in titles  # nothing to regenerate while typing
        await send(app, pilot, "hi")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Regenerate", "Write own reply", "Why"} <= titles
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Why")
        await command.callback()
        await pilot.pause()
        assert len(texts(app, ".why")) == 4


HOSTILE_USER = "[bold]x[/] and [/] and a lone [ and \x1b[31mred\x1b[0m"
HOSTILE_MODEL = ["[/INST] [bold]bold?[/bold]", "[", "\x1b[2J\x1b[Hclear screen", "[link=x]y[/link]"]


async def test_user_and_model_text_is_shown_literally(store):
    app = scripted_app(store, texts=HOSTILE_MODEL)
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
            assert line.startswith(f"{rank}. ") and line.endswith(f"  {expected}")
        await pilot.press("1", "5")
        await settle(app, pilot)
        user, assistant = app.query_one(Transcript).messages()
        assert user == "You: [bold]x[/] and [/] and a lone [ and ␛[31mred␛[0m"
        assert assistant == "Assistant: " + literal_model[HOSTILE_MODEL.index(order[0])]
        # What the screen shows of the reply (rendered as Markdown) is literal too.
        shown_reply = app.query_one(Transcript).query("MarkdownParagraph").last().render()
        assert str(shown_reply) == literal_model[HOSTILE_MODEL.index(order[0])]
        await pilot.press("f2")  # the session title is the user's text, literal too
        await pilot.pause()
        title = str(app.screen.query_one(DataTable).get_row_at(0)[1])
        assert title.startswith("[bold]x[/] and [/]")


async def test_unavailable_model_shows_the_fix_and_history_stays_browsable(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    session = store.new_session("an old chat")
    app = RlchatApp(settings=Settings(model="no-such/model-xyz"), store=store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "--model PATH" in status(app) and "init-model" in status(app)
        assert app.agent.source is None and app.query_one(PromptInput).disabled
        await pilot.press("1", "escape", "e", "r")  # nothing to act on: no crash
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, SessionsScreen)
        assert app.screen.selected() == session
        await pilot.press("enter")  # cannot resume without a model: says so, stays
        await pilot.pause()
        assert isinstance(app.screen, SessionsScreen)
        await pilot.press("escape", "f3")
        await pilot.pause()
        assert isinstance(app.screen, LearningScreen)
        assert app.is_running


async def test_escape_and_no_change_nothing(store, config_dir):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "keep me")
        await pilot.press("1", "5")
        await settle(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        app.screen.query_one("#candidates", Input).value = "2"
        await pilot.press("escape")  # settings cancelled: nothing saved or applied
        await pilot.pause()
        assert not isinstance(app.screen, SettingsForm)
        assert app.agent.settings.candidates == 4 and not (config_dir / "config.toml").exists()
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("ctrl+d")
        await pilot.pause()
        await pilot.press("n")  # not deleted
        await pilot.pause()
        assert isinstance(app.screen, SessionsScreen)
        assert app.screen.query_one(DataTable).row_count == 1 and store.count_turns() == 1
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SessionsScreen) and app.flow.phase == TYPING


LONG = "Here is a plan:\n" + "\n".join(f"- step {n}: do the thing number {n}" for n in range(1, 13))


async def test_all_candidates_in_view_the_highlighted_whole_and_replies_are_markdown(store):
    app = scripted_app(store, texts=[LONG, "short", "[b]x[/b]", "Thanks!"])
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "plan my day")
        panel = app.query_one(CandidatePanel)
        order = [c.text for c in panel.candidates]
        rank = order.index(LONG) + 1
        if rank == 1:  # a glimpse is what the others get: move the highlight off it
            await pilot.press("down")
            await pilot.pause()
        line = texts(app, ".candidate")[rank - 1]
        assert "- step 1" in line and "step 12" not in line and line.endswith("…")
        assert "⏎" in line and len(line.split("\n")) <= 2
        assert panel.highlighted != rank - 1
        # The others are in view together with it: every candidate's widget fits the panel.
        assert all(w.region.height <= 2 for i, w in enumerate(panel.query(".candidate"))
                   if i != panel.highlighted)
        await pilot.press("x")
        await pilot.pause()
        assert "step 12" in texts(app, ".candidate")[rank - 1]
        await pilot.press("x")
        await pilot.pause()
        while panel.highlighted != rank - 1:  # highlighted, it is shown whole
            await pilot.press("down")
            await pilot.pause()
        assert "step 12" in texts(app, ".candidate")[rank - 1]
        await pilot.press(str(rank), "5")
        await settle(app, pilot)
        reply = app.query_one(Transcript).query(".assistant").last()
        assert reply.query("MarkdownBulletList")  # the list is rendered as a list
        assert app.query_one(Transcript).messages()[-1] == "Assistant: " + LONG


async def test_a_chat_model_in_the_app_with_a_system_prompt(tiny_chat_model, store):
    app = RlchatApp(settings=Settings(model=str(tiny_chat_model)), store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "chat-template" in app.sub_title
        await pilot.press("f5")
        await pilot.pause()
        app.screen.query_one(Input).value = "You are a terse cook."
        await pilot.press("enter")
        await pilot.pause()
        assert "System prompt for the next session" in status(app)
        await send(app, pilot, "what should I cook tonight?")
        assert app.flow.phase is CHOOSING
        await pilot.press("1", "4")
        await settle(app, pilot)
        assert app.flow.phase is TYPING and app.agent.policy_view().version == 1
    turn = next(store.turns())
    assert turn["prompt"].startswith("<|im_start|>system\nYou are a terse cook.")
    assert store.get_session("1")["system"] == "You are a terse cook."


async def test_an_edit_keeps_the_pick_and_adds_to_it(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "hello")
        picked = app.query_one(CandidatePanel).candidates[1].text
        await pilot.press("down", "m")
        box = app.query_one(PromptInput)
        # The cursor at the end, nothing selected: typing adds, it replaces nothing.
        assert box.selection.start == box.selection.end == box.document.end
        assert "Ctrl+J" in str(box.placeholder)
        await pilot.press(*" (edited)", "enter", "5")
        await settle(app, pilot)
    turn = list(store.turns())[-1]
    assert turn["edit"] == picked + " (edited)" and turn["rating"] == 5


async def test_a_reply_of_several_lines_keeps_them(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "first line\nof the message")  # typed or pasted: the same
        await pilot.press("e", *"line one", "ctrl+j", *"line two", "enter")
        await settle(app, pilot)
        assert app.flow.phase == TYPING
        user = texts(app, "Transcript > .user")[-1]
        assert user.splitlines() == ["You: first line", "of the message"]
        # Up on the first line of a box of several recalls the message before.
        box = app.query_one(PromptInput)
        await pilot.press("up")
        assert box.value == "first line\nof the message"
        await pilot.press("up")  # now on its second line: up moves the cursor, recalls nothing
        assert box.cursor_location[0] == 0 and box.value == "first line\nof the message"
    turn = list(store.turns())[-1]
    assert turn["own_reply"] == "line one\nline two"
    assert turn["user_text"] == "first line\nof the message"


async def test_thumbs_mark_candidates_without_a_pick(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "rate some")
        shown = [c.id for c in app.query_one(CandidatePanel).candidates]
        await pilot.press("plus", "down", "minus", "down", "plus", "minus")
        assert "marked bad" in status(app)
        lines = texts(app, "CandidatePanel > .candidate")
        assert lines[0].endswith("+ good") and lines[1].endswith("− bad")
        assert lines[2].endswith("− bad") and "good" not in lines[3]  # changed: the last counts
        version = app.agent.policy_view().version
        await pilot.press("r")  # no pick: learned as the turn closes, regenerated
        await settle(app, pilot)
        assert app.agent.policy_view().version == version + 1
        assert not app.query_one(CandidatePanel).marks  # the new candidates have none
    first = list(store.turns())[0]
    assert first["status"] == "regenerated"
    assert [(t["id"], t["good"]) for t in first["thumbs"]] == [
        (shown[0], True), (shown[1], False), (shown[2], False)]


async def test_copy_puts_the_highlighted_candidate_or_the_last_reply_on_the_clipboard(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        assert "Nothing to copy" in status(app)
        await send(app, pilot, "hello")
        second = app.query_one(CandidatePanel).candidates[1].text
        await pilot.press("down", "c")
        assert app.clipboard == second and status(app).startswith("Copied reply 2")
        await pilot.press("1", "4")
        await settle(app, pilot)
        picked = app.query_one(Transcript).last_reply()
        await pilot.press("f6")  # the box has the focus: F6 still copies
        assert app.clipboard == picked and "Copied the last reply" in status(app)


async def test_search_finds_sessions_by_their_words_and_opens_at_the_match(store):
    app = scripted_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for session in (["about cats", "Cats purr LOUDLY", "the end"], ["about dogs", "walks"]):
            for message in session:
                await send(app, pilot, message)
                await pilot.press("1", "5")
                await settle(app, pilot)
            await pilot.press("ctrl+n")
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.index is not None)
        screen = app.screen
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        await pilot.press(*"purr")
        assert table.row_count == 1 and screen.selected() == "1"
        assert "1 session match 'purr'" in str(screen.query_one("#found", Static).render())
        preview = str(screen.query_one("#preview", Static).render())
        assert preview.startswith("Found:\nYou: Cats purr LOUDLY")
        await pilot.press(*" loud")  # every word, in any case
        assert table.row_count == 1
        await pilot.press(*"x")
        assert table.row_count == 0 and "Nothing matches" in str(
            screen.query_one("#found", Static).render())
        for _ in "loudx":
            await pilot.press("backspace")
        await pilot.press("enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, SessionsScreen) and app.agent.session == "1"
        transcript = app.query_one(Transcript)
        found = transcript.query(".found")
        assert len(found) == 1 and str(found.first().render()) == "You: Cats purr LOUDLY"
        # Turns said after the index was built are found too.
        await send(app, pilot, "a zebra appears")
        await pilot.press("1", "4")
        await settle(app, pilot)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.index is not None)
        await pilot.press(*"zebra")
        assert app.screen.query_one(DataTable).row_count == 1


async def test_the_message_box_keys_follow_the_keymap(store):
    # One who writes long messages: Enter for line breaks, Ctrl+S to send.
    app = scripted_app(store, keys={"message-send": "ctrl+s", "message-newline": "enter"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press(*"one", "enter", *"two")
        assert app.query_one(PromptInput).value == "one\ntwo" and app.flow.phase == TYPING
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.flow.phase == CHOOSING
    assert next(iter(store.turns()))["user_text"] == "one\ntwo"


async def test_g_continues_a_cut_candidate_and_the_pick_is_the_whole_reply(tiny_chat_model,
                                                                           store):
    app = RlchatApp(settings=Settings(model=str(tiny_chat_model), max_new_tokens=4),
                    store=store, seed=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await send(app, pilot, "tell me about the weather")
        panel = app.query_one(CandidatePanel)
        rank = next(i for i, c in enumerate(panel.candidates) if c.truncated) + 1
        before = panel.candidates[rank - 1]
        while panel.highlighted != rank - 1:
            await pilot.press("down")
            await pilot.pause()
        await pilot.press("g")
        await settle(app, pilot)
        assert app.flow.phase is CHOOSING
        after = panel.candidates[rank - 1]
        assert after.id == before.id and len(after.text) > len(before.text)
        assert app.flow.view.candidates[rank - 1] == after
        assert "continued" in status(app)
        ended = [i for i, c in enumerate(panel.candidates) if not c.truncated]
        if ended:  # a reply that ended on its own is not continued
            while panel.highlighted != ended[0]:
                await pilot.press("down")
                await pilot.pause()
            await pilot.press("g")
            await pilot.pause()
            assert app.flow.phase is CHOOSING and "ended on its own" in status(app)
        await pilot.press(str(rank), "4")
        await settle(app, pilot)
        assert app.query_one(Transcript).messages()[-1] == "Assistant: " + after.text


async def test_a_served_model_whose_replies_are_all_the_same_says_why_in_the_status(store):
    """The misbehaving server's `greedy` fault: every sample the same reply."""
    from rlchat.testkit.misbehaving import MODEL, MisbehavingServer

    server = MisbehavingServer().start()
    try:
        app = RlchatApp(settings=Settings(model=MODEL, base_url=server.url(), candidates=4,
                                          samples=4), store=store, seed=0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await send(app, pilot, "please fault greedy")
            await until(pilot, lambda: "same" in status(app))
            assert "greedily" in status(app) and app.flow.phase == CHOOSING
            assert len(app.flow.view.candidates) == 1
    finally:
        server.stop()
