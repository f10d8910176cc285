"""The Textual chat app: type, watch candidates stream in, pick one, rate it.

The app maps keys to the turn flow (tui/turn_flow.py) and renders it; all
stored state and the policy are reached through the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, LoadingIndicator, Static

from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.settings import LEARNER, Settings
from rlchat.tui.config_file import config_path, save_settings
from rlchat.tui.model_loading import ModelLoading
from rlchat.tui.screens.dialogs import AskText
from rlchat.tui.screens.help import COMMANDS, HelpScreen, KeyRow, key_rows
from rlchat.tui.screens.learning import LearningScreen
from rlchat.tui.screens.sessions import Resume, SessionsScreen
from rlchat.tui.screens.settings_form import SettingsForm
from rlchat.tui.turn_actions import TURN_BINDINGS, TurnActions
from rlchat.tui.turn_flow import Phase, TurnFlow
from rlchat.tui.widgets.candidates import CandidatePanel
from rlchat.tui.widgets.prompt import KEYS_HINT, PromptInput
from rlchat.tui.widgets.transcript import Transcript

if TYPE_CHECKING:  # the app paints before numpy and the learner are imported
    from rlchat.learner.agent import Agent, CandidateSource
    from rlchat.storage import Store  # storage: only the type of the store it is handed

log = logging.getLogger(__name__)

SourceFactory = Callable[[Settings], "CandidateSource"]


class RlchatApp(App[int]):
    TITLE = "rlchat"
    CSS = """
    #status { height: auto; padding: 0 1; color: $text-muted; }
    #status.-error { color: $error; }
    #training { height: 1; padding: 0 1; color: $text-muted; display: none; }
    #training.-on { display: block; }
    #busy { height: 1; display: none; }
    #busy.-on { display: block; }
    PromptInput { dock: bottom; margin-bottom: 1; }
    """
    BINDINGS = [
        *TURN_BINDINGS,
        Binding("ctrl+n", "new_session", "new", id="new-session",
                tooltip="end this session, start a new one"),
        Binding("f2", "sessions", "sessions", id="sessions",
                tooltip="search, browse, resume, rename, delete sessions"),
        Binding("f3", "learning", "learning", id="learning",
                tooltip="plots of what the learner has learned"),
        Binding("f4", "settings", "settings", id="settings",
                tooltip="model, sampling and learner settings"),
        Binding("f5", "system_prompt", "persona", id="system-prompt",
                tooltip="the system prompt (persona) of this session, or of the next"),
        Binding("f1,question_mark", "help", "help", id="help", tooltip="this list of keys"),
        Binding("ctrl+q", "quit", "quit", id="quit", priority=True, tooltip="quit rlchat"),
    ]

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings | None = None,
        seed: int | None = None,
        source_factory: SourceFactory | None = None,
        notices: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.notices = list(notices or [])  # e.g. what is wrong with config.toml
        self.settings = settings or Settings()
        self.store, self.seed = store, seed
        # Runs in a worker thread; by default it loads the model.
        self.source_factory = source_factory or self._load_source
        self.agent: Agent | None = None  # from the first frames on; the model comes later
        self.flow = TurnFlow()
        self.turns = TurnActions(self)  # the turn keys' work
        self.model_loader = ModelLoading(self)  # the agent and its model, in the background
        # Held here: its timer ticks while other screens are on top, and at exit.
        self.training_line = Static("", id="training", markup=False)

    def _load_source(self, settings: Settings) -> CandidateSource:
        from rlchat.learner.agent import adapter_at_start, load_source

        return load_source(settings, seed=self.seed, progress=self.model_loader.loading_stage,
                           adapter=adapter_at_start(self.store, settings))

    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield CandidatePanel(id="candidates")
        yield LoadingIndicator(id="busy")
        yield Static("", id="status", markup=False)
        yield self.training_line
        yield PromptInput(placeholder="Loading the model…", id="message", disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for notice in self.notices:
            self.notify(notice, severity="warning", markup=False, timeout=10)
        self.apply_keymap(self.settings.keys)
        self.model_loader.load_model()
        self.set_interval(1.0, self.show_training)

    async def on_event(self, event: events.Event) -> None:
        # Every key reaches the app first: a background run holds while keys come.
        if isinstance(event, events.Key) and not event.is_forwarded and self.agent is not None:
            self.agent.typing()
        await super().on_event(event)

    def show_training(self) -> None:
        """The background run's progress (auto_train), a line under the status;
        a run held for the keys goes on once they have stopped."""
        if self.agent is not None:
            self.agent.idle_check()
        line = self.training_line
        if not line.is_mounted:
            return
        text = self.agent.training_status() if self.agent is not None else ""
        line.update(Text(text))
        line.set_class(bool(text), "-on")

    def apply_keymap(self, keys: dict[str, str]) -> None:
        known = {row[3] for row in self.key_rows()}
        unknown = sorted(set(keys) - known)
        if unknown:
            self.notify(f"Unknown binding ids in [keys]: {', '.join(unknown)}",
                        severity="warning", markup=False)
        self.set_keymap({k: v for k, v in keys.items() if k in known})
        self.query_one(PromptInput).keymap = dict(keys)  # it reads its own two keys

    # the turn's keys: Textual finds actions on the app; TurnActions does the work
    def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        self.turns.submitted(event)

    def action_digit(self, n: int) -> None:
        self.turns.digit(n)

    def action_move(self, delta: int) -> None:
        self.turns.move(delta)

    def action_pick_highlighted(self) -> None:
        self.turns.pick_highlighted()

    def action_order(self) -> None:
        self.turns.order()

    def action_edit(self) -> None:
        self.turns.edit()

    def action_skip_rating(self) -> None:
        self.turns.skip_rating()

    def action_own_reply(self) -> None:
        self.turns.own_reply()

    def action_cancel_reply(self) -> None:
        self.turns.cancel_reply()

    def action_regenerate(self) -> None:
        self.turns.regenerate()

    def action_none(self) -> None:
        self.turns.none()

    def action_continue_reply(self) -> None:
        self.turns.continue_reply()

    def action_cancel(self) -> None:
        self.turns.cancel()

    def action_thumb(self, good: bool) -> None:
        self.turns.thumb(good)

    def action_copy(self) -> None:
        self.turns.copy()

    def action_toggle_why(self) -> None:
        self.turns.toggle_why()

    def action_toggle_expand(self) -> None:
        self.turns.toggle_expand()

    # sessions, learning, settings -------------------------------------------
    def action_new_session(self) -> None:
        if self.agent is not None:
            self.agent.end()
        self.restart_turn("New session.", [])

    def restart_turn(self, status: str, messages: list[tuple[str, str]]) -> None:
        """The dialogue changed under the turn: show `messages`, drop the turn on screen."""
        self.query_one(Transcript).show(messages)
        self.query_one(CandidatePanel).clear()
        if self.flow.phase in (Phase.GENERATING, Phase.LEARNING, Phase.LOADING):
            self.set_status(status)  # the step in flight ends on its own
            return
        self.flow.restart()
        if self.flow.phase is Phase.TYPING:
            self.to_typing(status)

    def action_sessions(self) -> None:
        if self.agent is None:
            self.notify("Still starting; try again in a moment.", markup=False)
        elif not isinstance(self.screen, SessionsScreen):
            self.push_screen(SessionsScreen(self.agent, can_resume=self.flow.allows("resume")),
                             self.resume)

    def resume(self, chosen: Resume | None) -> None:
        if chosen is None or self.agent is None:
            return
        try:
            messages = self.agent.resume(chosen.session)
        except AgentError as exc:
            self.set_status(exc.message, error=True)
            return
        self.restart_turn(f"Resumed session {chosen.session}.", messages)
        if chosen.turn is not None:  # shown at the exchange the search found
            self.query_one(Transcript).show_turn(chosen.turn)

    def on_sessions_screen_deleted(self, event: SessionsScreen.Deleted) -> None:
        if event.was_open:
            self.restart_turn("The open session was deleted and its turn on screen discarded; "
                              "your next message starts a new session.", [])

    def action_system_prompt(self) -> None:
        if self.agent is None:
            self.notify("Still starting; try again in a moment.", markup=False)
            return
        agent = self.agent
        current = agent.system if agent.system is not None else self.settings.system

        def done(text: str | None) -> None:
            if text is None:
                return
            agent.set_system(text.strip())
            which = "this session" if agent.session is not None else "the next session"
            self.set_status(f"System prompt for {which}: {text.strip() or '(none)'}")

        self.push_screen(AskText("System prompt (persona) for this session; empty for none:",
                                 current), done)

    def action_learning(self) -> None:
        if self.agent is None:
            self.notify("Still starting; try again in a moment.", markup=False)
        elif not isinstance(self.screen, LearningScreen):
            self.push_screen(LearningScreen(self.agent.policy_view(),
                                            self.agent.learning_curves(),
                                            self.agent.stats()["sessions"],
                                            self.agent.model_learning_lines()))

    def action_settings(self) -> None:
        if isinstance(self.screen, SettingsForm):
            return
        shown = self.settings
        if self.agent is not None:  # show what the learner really uses
            config = self.agent.policy_view().config
            shown = replace(shown, **{name: getattr(config, name) for name in LEARNER})
        adapters, running = [], None
        if self.agent is not None and self.agent.source is not None and not self.settings.base_url:
            adapters = [(f"run {r.run}: held-out {r.accuracy if r.accuracy is not None else '-'}"
                         f"{'' if r.passed else ' (not passed)'}", r.run)
                        for r in self.agent.adapters()]
            running = self.agent.adapter_run()
        embeddings = self.agent.embeddings() if self.agent is not None else None
        self.push_screen(SettingsForm(shown, self.server_lines(), adapters, running,
                                      self.turns.use_adapter,
                                      embeddings.line() if embeddings else ""),
                         self.apply_settings)

    def server_lines(self) -> list[str]:
        """What the probe of a served model found, or why it could not run."""
        source = self.agent.source if self.agent else None
        caps = getattr(source, "capabilities", None)
        if caps is not None:
            return caps.lines()
        problem = getattr(source, "problem", None)
        return [f"not connected: {problem.message}"] if problem is not None else []

    def apply_settings(self, settings: Settings | None) -> None:
        if settings is None:
            return
        try:
            path = save_settings(settings)
        except OSError as exc:
            self.notify(f"Could not save the settings: {exc}", severity="error", markup=False)
            return
        old, self.settings = self.settings, settings
        self.notify(f"Saved to {path}.", markup=False)
        if settings.keys != old.keys:
            self.apply_keymap(settings.keys)
            if self.is_screen_installed("help"):
                self.uninstall_screen("help")
        if self.agent is None:
            return
        reload = self.agent.reconfigure(settings) or self.flow.phase is Phase.BROKEN
        if reload:
            if self.flow.phase in (Phase.LOADING, Phase.GENERATING, Phase.LEARNING):
                self.notify("The new model loads after this step; press F4 and save again.")
                return
            self.agent.detach()
            self.query_one(Transcript).show([])
            self.query_one(CandidatePanel).clear()
            self.model_loader.load_model()

    # keys and commands ------------------------------------------------------
    def key_rows(self) -> list[KeyRow]:
        owners: list[tuple[str, object]] = [
            ("chat", self), ("message box", PromptInput), ("sessions", SessionsScreen),
            ("learning", LearningScreen), ("settings", SettingsForm), ("help", HelpScreen),
        ]
        return key_rows(self, owners, self.settings.keys)

    def action_help(self) -> None:
        # Installed once and kept: opening it again costs no compose.
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(self.key_rows(), str(config_path())), "help")
        if not isinstance(self.screen, HelpScreen):
            self.push_screen("help")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in COMMANDS:
            if self.check_action(action, ()) is not False:
                yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "copy" and self.screen is not self.screen_stack[0]:
            return False  # it copies from the chat: hidden over F2, F3 and the rest
        return self.flow.allows(action)

    # rendering --------------------------------------------------------------
    def refresh_subtitle(self) -> None:
        version = self.agent.policy_view().version if self.agent else "-"
        source = self.agent.source if self.agent else None
        identity = source.identity if source else {}
        shown = [identity.get("dtype"), identity.get("format")]
        if identity.get("lineage"):
            shown.append(f"trained run {identity['lineage']}")
        fmt = f" ({', '.join(v for v in shown if v)})" if any(shown) else ""
        where = f" @ {identity['host']}" if identity.get("host") else ""
        name = getattr(source, "label", "") or self.settings.model  # a fallback says its own
        self.sub_title = f"{name}{where}{fmt} · policy v{version}"

    def busy(self, on: bool) -> None:
        self.query_one("#busy").set_class(on, "-on")

    def to_typing(self, status: str, *, error: bool = False) -> None:
        self.refresh_bindings()
        self.busy(False)
        box = self.query_one(PromptInput)
        box.disabled = False
        box.placeholder = f"Type a message: {KEYS_HINT} · ↑ recalls earlier ones"
        box.clear()
        self.focus_then_say(box, status, error=error)

    def focus_then_say(self, box: PromptInput, status: str, *, error: bool = False) -> None:
        """Focus lands a moment after `focus()`: the status that invites
        typing is shown only once keys reach the box."""
        box.focus()
        self.call_later(self.set_status, status, error=error)

    def set_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")

    def say_warning(self) -> None:
        """A problem the last step survived (storage), or a word on what it
        drew (every reply the same): said once."""
        warning = self.agent.take_warning() if self.agent else None
        if warning is None:
            return
        if warning.code == ErrorCode.IDENTICAL_REPLIES:
            self.set_status(warning.message, error=True)
        else:
            self.notify(warning.message, severity="error", markup=False, timeout=15)
