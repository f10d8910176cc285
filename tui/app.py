"""The Textual chat app: type, pick one of the ranked candidates, rate it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import Footer, Header, Input, LoadingIndicator, Static

from learner.agent import Agent, AgentConfig, TurnView, open_agent
from learner.errors import AgentError, ModelUnavailable
from storage import Store
from tui.widgets.candidates import CandidatePanel
from tui.widgets.transcript import Transcript

log = logging.getLogger(__name__)

LOADING, TYPING, GENERATING, CHOOSING, RATING, BROKEN = (
    "loading", "typing", "generating", "choosing", "rating", "broken",
)


class RlchatApp(App[int]):
    TITLE = "rlchat"
    CSS = """
    #status { height: auto; padding: 0 1; color: $text-muted; }
    #status.-error { color: $error; }
    #busy { height: 1; display: none; }
    #busy.-on { display: block; }
    Input { dock: bottom; margin-bottom: 1; }
    """
    BINDINGS = [
        *(Binding(str(n), f"digit({n})", f"pick or rate {n}", id=f"digit-{n}", show=False)
          for n in range(1, 10)),
        Binding("escape", "skip_rating", "skip rating", id="skip-rating"),
        Binding("ctrl+n", "new_session", "new session", id="new-session"),
        Binding("ctrl+q", "quit", "quit", id="quit", priority=True),
    ]

    mode: reactive[str] = reactive(LOADING, init=False)

    def __init__(
        self,
        *,
        model: str,
        store: Store | None = None,
        config: AgentConfig | None = None,
        seed: int | None = None,
        agent_factory: Callable[[], Agent] | None = None,
    ) -> None:
        super().__init__()
        if agent_factory is None and store is None:
            raise ValueError("give the app an open store or an agent factory")
        # The factory runs in a worker thread; by default it loads the model.
        self.agent_factory = agent_factory or (
            lambda: open_agent(model, store, config, seed=seed)
        )
        self.model_name = model
        self.agent: Agent | None = None
        self.view: TurnView | None = None
        self.picked: int | None = None  # candidate id awaiting its rating

    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield CandidatePanel(id="candidates")
        yield LoadingIndicator(id="busy")
        yield Static("", id="status", markup=False)
        yield Input(placeholder="Loading the model…", id="message", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.mode = LOADING
        self.set_status(f"Loading model {self.model_name}…")
        self.query_one("#busy").add_class("-on")
        self.load_agent()

    # model ----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="model")
    def load_agent(self) -> None:
        try:
            agent = self.agent_factory()
        except ModelUnavailable as exc:
            self.call_from_thread(self.model_failed, str(exc))
        except Exception as exc:  # shown, never a traceback on the terminal
            log.exception("model load failed")
            self.call_from_thread(self.model_failed, f"Loading failed: {exc}")
        else:
            self.call_from_thread(self.model_ready, agent)

    def model_ready(self, agent: Agent) -> None:
        self.agent = agent
        for warning in agent.store.warnings:
            self.notify(warning, severity="warning", markup=False)
        self.sub_title = f"{self.model_name} · policy v{agent.policy.version}"
        self.to_typing("Ready. Type a message and press Enter.")

    def model_failed(self, message: str) -> None:
        self.mode = BROKEN
        self.query_one("#busy").remove_class("-on")
        self.set_status(message, error=True)
        self.query_one("#message", Input).placeholder = "The model is not available."

    # typing ---------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.mode != TYPING or self.agent is None:
            return
        text = event.value  # the agent refuses empty or huge text with a message
        self.mode = GENERATING
        box = self.query_one("#message", Input)
        box.disabled = True
        self.query_one("#busy").add_class("-on")
        self.set_status("Generating candidates…")
        self.generate(text)

    @work(thread=True, exclusive=True, group="turn")
    def generate(self, text: str) -> None:
        assert self.agent is not None
        try:
            view = self.agent.say(text)
        except AgentError as exc:
            self.call_from_thread(self.turn_failed, exc.message)
        else:
            self.call_from_thread(self.show_candidates, text, view)

    def turn_failed(self, message: str) -> None:
        self.to_typing(message, error=True, keep_text=True)

    def show_candidates(self, text: str, view: TurnView) -> None:
        self.query_one("#message", Input).clear()
        self.query_one(Transcript).add_message("user", text)
        self.view = view
        self.query_one(CandidatePanel).show(view.candidates)
        self.query_one("#busy").remove_class("-on")
        self.mode = CHOOSING
        prompt = f"Pick a reply: press 1-{len(view.candidates)}."
        self.query_one("#message", Input).placeholder = prompt
        self.set_status(prompt)

    # choosing and rating --------------------------------------------------
    def action_digit(self, n: int) -> None:
        if self.mode == CHOOSING and self.view and 1 <= n <= len(self.view.candidates):
            chosen = self.view.candidates[n - 1]
            self.picked = chosen.id
            self.query_one(CandidatePanel).mark_picked(n)
            self.mode = RATING
            prompt = f"Rate reply {n}: press 1-5, or Esc to skip the rating."
            self.query_one("#message", Input).placeholder = prompt
            self.set_status(prompt)
        elif self.mode == RATING and 1 <= n <= 5:
            self.answer(n)

    def action_skip_rating(self) -> None:
        if self.mode == RATING:
            self.answer(None)

    def answer(self, rating: int | None) -> None:
        assert self.view is not None and self.picked is not None
        self.mode = GENERATING  # no keys count until the policy has learned
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
        assert self.agent is not None and self.view is not None
        text = next(c.text for c in self.view.candidates if c.id == candidate)
        self.query_one(Transcript).add_message("assistant", text)
        self.query_one(CandidatePanel).clear()
        self.view, self.picked = None, None
        version = self.agent.policy.version
        self.sub_title = f"{self.model_name} · policy v{version}"
        stars = f"{rating}★" if rating else "no rating"
        self.to_typing(f"Learned ({stars}, reward {reward:+.2f}); policy v{version}.")

    def action_new_session(self) -> None:
        if self.agent is None or self.mode not in (TYPING, CHOOSING, RATING):
            return
        self.agent.end()
        self.query_one(Transcript).remove_children()
        self.query_one(CandidatePanel).clear()
        self.view, self.picked = None, None
        self.to_typing("New session.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "skip_rating":
            return self.mode == RATING
        if action == "new_session":
            return self.mode in (TYPING, CHOOSING, RATING)
        return True

    def watch_mode(self) -> None:
        self.refresh_bindings()

    # helpers --------------------------------------------------------------
    def to_typing(self, status: str, *, error: bool = False, keep_text: bool = False) -> None:
        self.mode = TYPING
        self.query_one("#busy").remove_class("-on")
        box = self.query_one("#message", Input)
        box.disabled = False
        box.placeholder = "Type a message and press Enter"
        if not keep_text:
            box.clear()
        box.focus()
        self.set_status(status, error=error)

    def set_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(error, "-error")
