"""The Textual chat app: type, watch candidates stream in, pick one, rate it."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, LoadingIndicator, Static

from learner.errors import AgentError, GenerationCancelled, ModelUnavailable
from tui.screens.help import HelpScreen, KeyRow
from tui.screens.learning import LearningScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.settings import SettingsScreen
from tui.settings import Settings, config_path, open_agent, save_settings
from tui.widgets.candidates import CandidatePanel
from tui.widgets.prompt import PromptInput
from tui.widgets.transcript import Transcript

if TYPE_CHECKING:  # the app paints before numpy and the learner are imported
    from learner.agent import Agent, TurnView
    from learner.policy import QPolicy
    from storage import Store

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10

LOADING, TYPING, GENERATING, CHOOSING, RATING, REPLYING, LEARNING, BROKEN = (
    "loading", "typing", "generating", "choosing", "rating", "replying", "learning", "broken",
)
# Actions and the modes they work in; everything else is always on.
ACTION_MODES = {
    "move": (CHOOSING,),
    "pick_highlighted": (CHOOSING,),
    "skip_rating": (RATING,),
    "cancel": (GENERATING,),
    "cancel_reply": (REPLYING,),
    "own_reply": (CHOOSING, RATING),
    "regenerate": (CHOOSING, RATING),
    "toggle_why": (CHOOSING, RATING),
    "new_session": (TYPING, CHOOSING, RATING, BROKEN),
}


def background_priority() -> None:
    """Run this thread, and the torch threads it starts, below the UI's CPU
    priority: with every core busy generating, keys still get handled at once,
    and generation still gets the cores whenever the UI is idle."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: run as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class RlchatApp(App[int]):
    TITLE = "rlchat"
    CSS = """
    #status { height: auto; padding: 0 1; color: $text-muted; }
    #status.-error { color: $error; }
    #busy { height: 1; display: none; }
    #busy.-on { display: block; }
    PromptInput { dock: bottom; margin-bottom: 1; }
    """
    BINDINGS = [
        *(Binding(str(n), f"digit({n})", f"pick or rate {n}", id=f"digit-{n}", show=False)
          for n in range(1, 10)),
        Binding("up", "move(-1)", "previous candidate", id="candidate-up", show=False,
                tooltip="highlight the candidate above"),
        Binding("down", "move(1)", "next candidate", id="candidate-down", show=False,
                tooltip="highlight the candidate below"),
        Binding("enter", "pick_highlighted", "pick", id="pick-highlighted", show=False,
                tooltip="pick the highlighted candidate"),
        Binding("escape", "cancel", "cancel", id="cancel-generation",
                tooltip="cancel the generation"),
        Binding("escape", "skip_rating", "skip rating", id="skip-rating",
                tooltip="keep the pick without a rating"),
        Binding("escape", "cancel_reply", "back", id="cancel-reply",
                tooltip="back to the candidates from your own reply"),
        Binding("e", "own_reply", "own reply", id="own-reply",
                tooltip="write your own reply instead"),
        Binding("r", "regenerate", "again", id="regenerate",
                tooltip="sample new candidates for the same message"),
        Binding("w", "toggle_why", "why", id="why",
                tooltip="show or hide why each candidate scored as it did"),
        Binding("ctrl+n", "new_session", "new", id="new-session",
                tooltip="end this session, start a new one"),
        Binding("f2", "sessions", "sessions", id="sessions",
                tooltip="browse, resume, rename, delete sessions"),
        Binding("f3", "learning", "learning", id="learning",
                tooltip="plots of what the learner has learned"),
        Binding("f4", "settings", "settings", id="settings",
                tooltip="model, sampling and learner settings"),
        Binding("f1,question_mark", "help", "help", id="help",
                tooltip="this list of keys"),
        Binding("ctrl+q", "quit", "quit", id="quit", priority=True,
                tooltip="quit rlchat"),
    ]

    mode: reactive[str] = reactive(LOADING, init=False)

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings | None = None,
        seed: int | None = None,
        agent_factory: Callable[[Settings], Agent] | None = None,
        notices: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.notices = list(notices or [])  # e.g. what is wrong with config.toml
        self.settings = settings or Settings()
        self.store = store
        # The factory runs in a worker thread; by default it loads the model.
        self.agent_factory = agent_factory or (lambda s: open_agent(s, store, seed=seed))
        self.agent: Agent | None = None
        self.view: TurnView | None = None
        self.message: str | None = None  # the message of the open turn
        self.picked: int | None = None  # candidate id awaiting its rating
        self._cancel = threading.Event()
        self._tokens: deque[tuple[int, str]] = deque()  # from the generation thread
        self._drain: Timer | None = None
        self._load_started = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield CandidatePanel(id="candidates")
        yield LoadingIndicator(id="busy")
        yield Static("", id="status", markup=False)
        yield PromptInput(placeholder="Loading the model…", id="message", disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for notice in self.notices:
            self.notify(notice, severity="warning", markup=False, timeout=10)
        self.apply_keymap(self.settings.keys)
        self.load_model()

    def apply_keymap(self, keys: dict[str, str]) -> None:
        known = {row[3] for row in self.key_rows()}
        unknown = sorted(set(keys) - known)
        if unknown:
            self.notify(f"Unknown binding ids in [keys]: {', '.join(unknown)}",
                        severity="warning", markup=False)
        self.set_keymap({k: v for k, v in keys.items() if k in known})

    # model ----------------------------------------------------------------
    def load_model(self) -> None:
        self.mode = LOADING
        self.agent = None
        self._load_started = time.monotonic()
        self.set_status(f"Loading model {self.settings.model}…")
        self.query_one("#busy").add_class("-on")
        box = self.query_one(PromptInput)
        box.disabled, box.placeholder = True, "Loading the model…"
        self._load_ticker = self.set_interval(0.5, self._tick_loading)
        self.load_agent(self.settings)

    def _tick_loading(self) -> None:
        if self.mode == LOADING:
            seconds = time.monotonic() - self._load_started
            self.set_status(f"Loading model {self.settings.model}… {seconds:.0f} s")

    @work(thread=True, exclusive=True, group="model")
    def load_agent(self, settings: Settings) -> None:
        background_priority()
        try:
            agent = self.agent_factory(settings)
        except ModelUnavailable as exc:
            self.call_from_thread(self.model_failed, str(exc))
        except Exception as exc:  # shown, never a traceback on the terminal
            log.exception("model load failed")
            self.call_from_thread(self.model_failed, f"Loading failed: {exc}")
        else:
            self.call_from_thread(self.model_ready, agent)

    def model_ready(self, agent: Agent) -> None:
        self._load_ticker.stop()
        self.agent = agent
        for warning in agent.store.warnings:
            self.notify(warning, severity="warning", markup=False)
        self._subtitle()
        self.to_typing("Ready. Type a message and press Enter (F1: help).")

    def model_failed(self, message: str) -> None:
        self._load_ticker.stop()
        self.mode = BROKEN
        self.query_one("#busy").remove_class("-on")
        self.set_status(message + " Past sessions stay readable (F2); F4 changes the model.",
                        error=True)
        self.query_one(PromptInput).placeholder = "The model is not available."

    # typing and generating ----------------------------------------------
    def on_input_submitted(self, event: PromptInput.Submitted) -> None:
        # Inputs of other screens (rename, settings) bubble up here too.
        if self.agent is None or not isinstance(event.input, PromptInput):
            return
        if self.mode == TYPING:
            text = event.value  # the agent refuses empty or huge text with a message
            box = self.query_one(PromptInput)
            box.remember(text)
            self.query_one(Transcript).add_message("user", text)
            self.message = text
            self.start_generation()
        elif self.mode == REPLYING and self.view is not None:
            self.mode = LEARNING
            self.query_one(PromptInput).disabled = True
            self.learn_reply(self.view.turn, event.value)

    def start_generation(self) -> None:
        self.mode = GENERATING
        box = self.query_one(PromptInput)
        box.disabled = True
        box.placeholder = "Generating… (Esc cancels)"
        self.query_one("#busy").add_class("-on")
        self.query_one(CandidatePanel).start_drafts()
        self.set_status("Generating candidates… Esc cancels.")
        self._cancel = threading.Event()
        self._tokens.clear()
        self._drain = self.set_interval(1 / 20, self._drain_tokens)
        self.generate(self.message or "", self._cancel)

    def _on_token(self, row: int, text: str) -> None:
        self._tokens.append((row, text))  # generation thread; drained by a UI timer

    def _drain_tokens(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return  # the chat is covered (help, sessions): keep the tokens for later
        batch = []
        while self._tokens:
            batch.append(self._tokens.popleft())
        if batch:
            self.query_one(CandidatePanel).add_tokens(batch)

    @work(thread=True, exclusive=True, group="turn")
    def generate(self, text: str, cancel: threading.Event) -> None:
        assert self.agent is not None
        background_priority()
        try:
            view = self.agent.say(text, on_token=self._on_token, cancel=cancel)
            why = {c.id: self.agent.explain(view.turn, c.id) for c in view.candidates}
        except GenerationCancelled:
            self.call_from_thread(self.generation_stopped, "Cancelled.", False)
        except AgentError as exc:
            self.call_from_thread(self.generation_stopped, exc.message, True)
        else:
            self.call_from_thread(self.show_candidates, view, why)

    def _stop_drain(self) -> None:
        if self._drain is not None:
            self._drain.stop()
            self._drain = None
        self._tokens.clear()

    def generation_stopped(self, message: str, error: bool) -> None:
        """Back to typing with the message in the box again, as if never sent."""
        self._stop_drain()
        self.query_one(CandidatePanel).clear()
        self.query_one(Transcript).remove_last("user")
        text, self.message, self.view = self.message or "", None, None
        self.to_typing(message, error=error)
        self.query_one(PromptInput).value = text

    def show_candidates(self, view: TurnView, why: dict) -> None:
        self._stop_drain()
        self.view = view
        self.query_one(CandidatePanel).show(view.candidates, why)
        self.query_one("#busy").remove_class("-on")
        self.query_one(PromptInput).clear()
        self.to_choosing()

    def to_choosing(self) -> None:
        assert self.view is not None
        self.mode = CHOOSING
        self.picked = None
        box = self.query_one(PromptInput)
        box.disabled = True
        prompt = (f"Pick a reply: 1-{len(self.view.candidates)} or ↑↓ Enter; "
                  "e writes your own, r regenerates, w shows why.")
        box.placeholder = prompt
        self.set_status(prompt)

    # choosing and rating --------------------------------------------------
    def action_digit(self, n: int) -> None:
        if self.mode == CHOOSING and self.view and 1 <= n <= len(self.view.candidates):
            self.pick(n)
        elif self.mode == RATING and 1 <= n <= 5:
            self.answer(n)

    def action_move(self, delta: int) -> None:
        self.query_one(CandidatePanel).move(delta)

    def action_pick_highlighted(self) -> None:
        self.pick(self.query_one(CandidatePanel).highlighted + 1)

    def pick(self, rank: int) -> None:
        assert self.view is not None
        self.picked = self.view.candidates[rank - 1].id
        self.query_one(CandidatePanel).mark_picked(rank)
        self.mode = RATING
        prompt = f"Rate reply {rank}: press 1-5 stars, or Esc to skip the rating."
        self.query_one(PromptInput).placeholder = prompt
        self.set_status(prompt)

    def action_skip_rating(self) -> None:
        self.answer(None)

    def answer(self, rating: int | None) -> None:
        assert self.view is not None and self.picked is not None
        self.mode = LEARNING  # no keys count until the policy has learned
        self.learn(self.view.turn, self.picked, rating)

    @work(thread=True, exclusive=True, group="turn")
    def learn(self, turn: str, candidate: int, rating: int | None) -> None:
        assert self.agent is not None
        try:
            reward = self.agent.choose(turn, candidate, rating)
        except AgentError as exc:
            self.call_from_thread(self.turn_failed, exc.message)
        else:
            self.call_from_thread(self.learned, candidate, rating, reward)

    def learned(self, candidate: int, rating: int | None, reward: float) -> None:
        assert self.view is not None
        text = next(c.text for c in self.view.candidates if c.id == candidate)
        self.query_one(Transcript).add_message("assistant", text)
        stars = "★" * rating + "☆" * (5 - rating) if rating else "no rating"
        self.after_answer(f"Learned ({stars}, reward {reward:+.2f})")

    def action_own_reply(self) -> None:
        self.mode = REPLYING
        box = self.query_one(PromptInput)
        box.disabled = False
        box.placeholder = "Write the reply you wanted and press Enter (Esc: back)"
        box.clear()
        box.focus()
        self.set_status("Write your own reply; it continues the conversation.")

    def action_cancel_reply(self) -> None:
        self.query_one(PromptInput).clear()
        self.query_one(CandidatePanel).mark_picked(0)
        self.to_choosing()

    @work(thread=True, exclusive=True, group="turn")
    def learn_reply(self, turn: str, text: str) -> None:
        assert self.agent is not None
        try:
            self.agent.reply(turn, text)
        except AgentError as exc:
            self.call_from_thread(self.reply_refused, exc.message)
        else:
            self.call_from_thread(self.replied, text)

    def reply_refused(self, message: str) -> None:
        self.action_own_reply()
        self.set_status(message, error=True)

    def replied(self, text: str) -> None:
        self.query_one(Transcript).add_message("assistant", text)
        self.after_answer("Learned from your own reply")

    def after_answer(self, what: str) -> None:
        assert self.agent is not None
        self.query_one(CandidatePanel).clear()
        self.view, self.picked, self.message = None, None, None
        self._subtitle()
        self.to_typing(f"{what}; policy v{self.agent.policy.version}.")

    def turn_failed(self, message: str) -> None:
        self.to_typing(message, error=True)

    def action_regenerate(self) -> None:
        # The open turn is logged as unanswered when the new one is said.
        self.view, self.picked = None, None
        self.start_generation()

    def action_cancel(self) -> None:
        self._cancel.set()
        self.set_status("Cancelling…")

    def action_toggle_why(self) -> None:
        self.query_one(CandidatePanel).toggle_why()

    def action_new_session(self) -> None:
        if self.agent is not None:
            self.agent.end()
        self.query_one(Transcript).remove_children()
        self.query_one(CandidatePanel).clear()
        self.view, self.picked, self.message = None, None, None
        if self.agent is not None:
            self.to_typing("New session.")

    # other screens --------------------------------------------------------
    def action_sessions(self) -> None:
        def resume(session: str | None) -> None:
            if session is None or self.agent is None:
                return
            try:
                messages = self.agent.resume(session)
            except AgentError as exc:
                self.set_status(exc.message, error=True)
                return
            transcript = self.query_one(Transcript)
            transcript.remove_children()
            self.query_one(CandidatePanel).clear()
            self.view, self.picked, self.message = None, None, None
            for role, text in messages:
                transcript.add_message(role, text)
            self.to_typing(f"Resumed session {session}.")

        if not isinstance(self.screen, SessionsScreen):
            self.push_screen(SessionsScreen(self.store, can_resume=self.agent is not None
                                            and self.mode in (TYPING, CHOOSING, RATING)),
                             resume)

    def _policy(self) -> QPolicy | None:
        from learner.policy import QPolicy

        if self.agent is not None:
            return self.agent.policy
        snapshot = self.store.load_policy()
        try:
            return QPolicy.from_dict(snapshot) if snapshot else None
        except (KeyError, TypeError, ValueError):
            return None

    def action_learning(self) -> None:
        if not isinstance(self.screen, LearningScreen):
            self.push_screen(LearningScreen(self.store, self._policy()))

    def action_settings(self) -> None:
        if isinstance(self.screen, SettingsScreen):
            return
        shown = self.settings
        policy = self._policy()
        if policy is not None:  # show what the learner really uses
            cfg = policy.config
            shown = replace(shown, exploration=cfg.epsilon, gamma=cfg.gamma,
                            forgetting=cfg.forgetting)
        self.push_screen(SettingsScreen(shown), self.apply_settings)

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
        if (settings.model, settings.dtype) != (old.model, old.dtype) or self.agent is None:
            if self.mode in (LOADING, GENERATING, LEARNING):
                self.notify("The new model loads after this step; press F4 and save again.")
                return
            if self.agent is not None:
                self.agent.end()
            self.query_one(Transcript).remove_children()
            self.query_one(CandidatePanel).clear()
            self.view = None
            self.load_model()
            return
        from learner.agent import AgentConfig

        agent = self.agent
        agent.config = AgentConfig(settings.candidates, settings.samples)
        if hasattr(agent.source, "sampling"):
            agent.source.sampling = settings.sampling()
        agent.tune(**settings.learner())

    def key_rows(self) -> list[KeyRow]:
        """Every binding with the key it has now (after [keys] remaps); the
        nine digit bindings share a row while none is remapped."""
        owners: list[tuple[str, object]] = [
            ("chat", self), ("message box", PromptInput), ("sessions", SessionsScreen),
            ("learning", LearningScreen), ("settings", SettingsScreen), ("help", HelpScreen),
        ]
        keymap = self.settings.keys
        digits_remapped = any(k.startswith("digit-") for k in keymap)
        rows: list[KeyRow] = []
        for where, owner in owners:
            for binding in owner.BINDINGS:
                if not isinstance(binding, Binding) or not binding.id:
                    continue
                if binding.id.startswith("digit-") and not digits_remapped:
                    if binding.id == "digit-1":
                        rows.append((where, "1 … 9", "pick a candidate, then rate 1-5",
                                     "digit-1 … digit-9"))
                    continue
                keys = keymap.get(binding.id, binding.key).split(",")
                shown = ", ".join(self.get_key_display(replace(binding, key=k.strip(),
                                                               key_display=None))
                                  for k in keys)
                rows.append((where, shown, binding.tooltip or binding.description, binding.id))
        return rows

    def action_help(self) -> None:
        # Installed once and kept: opening it again costs no compose.
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(self.key_rows(), str(config_path())), "help")
        if not isinstance(self.screen, HelpScreen):
            self.push_screen("help")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in [
            ("New session", "End this session and start another", "new_session"),
            ("Sessions", "Browse, resume, rename or delete sessions", "sessions"),
            ("Learning", "Plots of reward, top picks, exploration and weights", "learning"),
            ("Settings", "Model, candidates, sampling and learner settings", "settings"),
            ("Help", "Every key and its binding id", "help"),
            ("Regenerate", "Sample new candidates for the same message", "regenerate"),
            ("Write own reply", "Answer with your own text instead", "own_reply"),
            ("Why", "Show or hide each candidate's top feature contributions", "toggle_why"),
            ("Cancel generation", "Stop the candidates being generated", "cancel"),
            ("Skip rating", "Keep the pick without a rating", "skip_rating"),
        ]:
            if self.check_action(action, ()) is not False:
                yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))

    # modes ----------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        modes = ACTION_MODES.get(action)
        if modes is not None and self.mode not in modes:
            return False
        if action == "digit":
            return self.mode in (CHOOSING, RATING)
        return True

    def watch_mode(self) -> None:
        self.refresh_bindings()

    def _subtitle(self) -> None:
        version = self.agent.policy.version if self.agent else "-"
        dtype = getattr(getattr(self.agent, "source", None), "dtype", "")
        fmt = f" ({dtype})" if dtype else ""
        self.sub_title = f"{self.settings.model}{fmt} · policy v{version}"

    def to_typing(self, status: str, *, error: bool = False) -> None:
        self.mode = TYPING
        self.query_one("#busy").remove_class("-on")
        box = self.query_one(PromptInput)
        box.disabled = False
        box.placeholder = "Type a message and press Enter (↑ recalls earlier ones)"
        box.clear()
        box.focus()
        self.set_status(status, error=error)

    def set_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")
