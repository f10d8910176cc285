"""The chat's turn keys and the work behind them: a collaborator of the App.

Each key moves the turn flow (tui/turn_flow.py) and starts the agent's work in
a worker thread; the results come back on the UI thread and are rendered.
The App keeps one action per key (Textual looks actions up on it), each
handing over to TurnActions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.timer import Timer

from rlchat.learner.errors import AgentError, GenerationCancelled
from rlchat.tui.turn_flow import Phase
from rlchat.tui.widgets.candidates import CandidatePanel
from rlchat.tui.widgets.prompt import KEYS_HINT, PromptInput
from rlchat.tui.widgets.transcript import Transcript

if TYPE_CHECKING:
    from rlchat.learner.agent import TurnView
    from rlchat.tui.app import RlchatApp

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10


def background_priority() -> None:
    """Run this thread, and the torch threads it starts, below the UI's CPU
    priority: with every core busy generating, keys still get handled at once,
    and generation still gets the cores whenever the UI is idle."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: run as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


TURN_BINDINGS = [
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
            tooltip="back to the candidates from your own reply, an order or an edit"),
    Binding("e", "own_reply", "own reply", id="own-reply",
            tooltip="write your own reply instead"),
    Binding("o", "order", "order", id="order",
            tooltip="rank several candidates, best first (= ties): 2 1=3"),
    Binding("m", "edit", "edit", id="edit",
            tooltip="edit the highlighted candidate, then accept it"),
    Binding("r", "regenerate", "again", id="regenerate",
            tooltip="sample new candidates for the same message (a mild no to these)"),
    Binding("n", "none", "none", id="none-of-these",
            tooltip="none of these will do: sample new candidates"),
    Binding("w", "toggle_why", "why", id="why",
            tooltip="show or hide what sets each candidate apart from the others"),
    Binding("g", "continue_reply", "go on", id="continue-reply",
            tooltip="continue the highlighted candidate that was cut at the token limit (✂)"),
    Binding("x", "toggle_expand", "all whole", id="expand",
            tooltip="show every candidate whole, or the others in glimpses again"),
    Binding("plus,equals_sign", "thumb(True)", "good", id="thumb-up", show=False,
            tooltip="mark the highlighted candidate good, with or without a pick"),
    Binding("minus", "thumb(False)", "bad", id="thumb-down", show=False,
            tooltip="mark the highlighted candidate bad, with or without a pick"),
    Binding("c", "copy", "copy", id="copy",
            tooltip="copy the highlighted candidate, or the last reply, to the clipboard"),
    Binding("f6", "copy", "copy", id="copy-anywhere", show=False, priority=True,
            tooltip="copy, also while typing: the highlighted candidate, or the last reply"),
]


class TurnActions:
    """The chat's turn keys and the work behind them, for one app: the app's
    actions hand over to these, which move the turn flow and run the
    agent's work in worker threads."""

    def __init__(self, app: RlchatApp) -> None:
        self.app = app
        self._cancel = threading.Event()
        self._tokens: deque[tuple[int, str]] = deque()  # from the generation thread
        self._drain: Timer | None = None

    # typing and generating ----------------------------------------------
    def submitted(self, event: PromptInput.Submitted) -> None:
        app = self.app
        if app.agent is None:
            return
        if app.flow.phase is Phase.TYPING:
            text = event.value  # the agent refuses empty or huge text with a message
            app.query_one(PromptInput).remember(text)
            app.query_one(Transcript).add_message("user", text)
            app.flow.send(text)
            self.start_generation()
        elif app.flow.phase is Phase.ORDERING:
            self.submit_order(event.value)
        elif app.flow.phase is Phase.EDITING:
            if not event.value.strip():
                app.set_status("The edit is empty; write the reply or press Esc.", error=True)
                return
            app.flow.submit_edit(event.value)
            self.ask_rating("your edit")
        elif app.flow.phase is Phase.REPLYING:
            turn = app.flow.submit_reply()
            app.refresh_bindings()
            app.query_one(PromptInput).disabled = True
            app.run_worker(lambda: self._learn_reply(turn, event.value), thread=True,
                            exclusive=True, group="turn")

    def start_generation(self, again: tuple[str, bool] | None = None) -> None:
        """Generate for the flow's message; `again` = (turn id, none of
        these) closes that turn first, as regenerated or rejected."""
        app = self.app
        app.refresh_bindings()
        box = app.query_one(PromptInput)
        box.disabled = True
        box.placeholder = "Generating… (Esc cancels)"
        app.busy(True)
        app.query_one(CandidatePanel).start_drafts()
        app.set_status("Generating candidates… Esc cancels.")
        self._cancel = cancel = threading.Event()
        self._tokens.clear()
        self._drain = app.set_interval(1 / 20, self._drain_tokens)
        message = app.flow.message or ""
        app.run_worker(lambda: self._generate(message, cancel, again), thread=True,
                        exclusive=True, group="turn")

    def _on_token(self, row: int, text: str) -> None:
        self._tokens.append((row, text))  # generation thread; drained by a UI timer

    def _drain_tokens(self) -> None:
        app = self.app
        if app.screen is not app.screen_stack[0]:
            return  # the chat is covered (help, sessions): keep the tokens for later
        batch = []
        while self._tokens:
            batch.append(self._tokens.popleft())
        if batch:
            app.query_one(CandidatePanel).add_tokens(batch)

    def _generate(self, text: str, cancel: threading.Event,
                  again: tuple[str, bool] | None) -> None:
        app = self.app
        assert app.agent is not None
        background_priority()
        try:
            if again is None:
                view = app.agent.say(text, on_token=self._on_token, cancel=cancel)
            else:
                view = app.agent.regenerate(again[0], none=again[1], on_token=self._on_token,
                                             cancel=cancel)
            why = app.agent.explain(view.turn)
        except GenerationCancelled:
            app.call_from_thread(self.generation_stopped, "Cancelled.", False)
        except AgentError as exc:
            app.call_from_thread(self.generation_stopped, exc.message, True)
        else:
            app.call_from_thread(self.show_candidates, view, why)

    def _stop_drain(self) -> None:
        if self._drain is not None:
            self._drain.stop()
            self._drain = None
        self._tokens.clear()

    def generation_stopped(self, message: str, error: bool) -> None:
        """Back to typing with the message in the box again, as if never sent."""
        app = self.app
        self._stop_drain()
        app.query_one(CandidatePanel).clear()
        app.query_one(Transcript).remove_last("user")
        text = app.flow.stopped()
        app.to_typing(message, error=error)
        app.query_one(PromptInput).value = text

    def show_candidates(self, view: TurnView, why: dict) -> None:
        app = self.app
        self._stop_drain()
        app.refresh_subtitle()  # a served model shows its format once its server answered
        app.flow.generated(view)
        app.query_one(CandidatePanel).show(view.candidates, why)
        app.busy(False)
        app.query_one(PromptInput).clear()
        self.to_choosing()
        app.say_warning()

    def to_choosing(self) -> None:
        app = self.app
        assert app.flow.view is not None
        app.refresh_bindings()
        box = app.query_one(PromptInput)
        box.disabled = True
        n = len(app.flow.view.candidates)
        box.placeholder = f"Pick a reply above: 1-{n}, or ↑↓ Enter"
        app.set_status(f"Pick a reply: 1-{n} or ↑↓ Enter; + or - marks one good or bad; "
                        "o orders several, m edits, e writes your own, r regenerates, "
                        "n: none of these; c copies.")

    # choosing and rating --------------------------------------------------
    def digit(self, n: int) -> None:
        app = self.app
        if app.flow.phase is Phase.CHOOSING:
            self.pick(n)
        elif app.flow.phase is Phase.RATING and 1 <= n <= 5:
            self.answer(n)

    def move(self, delta: int) -> None:
        app = self.app
        app.query_one(CandidatePanel).move(delta)

    def pick_highlighted(self) -> None:
        app = self.app
        self.pick(app.query_one(CandidatePanel).highlighted + 1)

    def pick(self, rank: int) -> None:
        app = self.app
        if app.flow.pick(rank) is None:
            return
        app.query_one(CandidatePanel).mark_picked(rank)
        self.ask_rating(f"reply {rank}")

    def ask_rating(self, what: str) -> None:
        app = self.app
        app.refresh_bindings()
        box = app.query_one(PromptInput)
        box.clear()
        box.disabled = True
        prompt = f"Rate {what}: press 1-5 stars, or Esc to skip the rating."
        box.placeholder = prompt
        app.set_status(prompt)

    def order(self) -> None:
        app = self.app
        app.flow.start_order()
        n = len(app.flow.view.candidates) if app.flow.view else 0
        self.write_in_box(f"Order the replies best first, e.g. 2 1=3 (= ties; 1-{n}; "
                          "left out ranks last). Enter; Esc: back", "")

    def submit_order(self, text: str) -> None:
        app = self.app
        try:
            picked = app.flow.submit_order(text)
        except ValueError as exc:
            app.set_status(str(exc), error=True)
            return
        assert app.flow.view is not None
        rank = app.flow.view.candidates.index(picked) + 1
        app.query_one(CandidatePanel).mark_picked(rank)
        self.ask_rating(f"reply {rank}, first in your order")

    def edit(self) -> None:
        app = self.app
        rank = app.query_one(CandidatePanel).highlighted + 1
        picked = app.flow.start_edit(rank)
        app.query_one(CandidatePanel).mark_picked(rank)
        self.write_in_box(f"Edit the reply, then Enter accepts it ({KEYS_HINT}; Esc: back)",
                          picked.text)

    def write_in_box(self, prompt: str, text: str) -> None:
        app = self.app
        app.refresh_bindings()
        box = app.query_one(PromptInput)
        box.disabled = False
        box.placeholder = prompt
        box.value = text
        app.focus_then_say(box, prompt)

    def skip_rating(self) -> None:
        self.answer(None)

    def answer(self, rating: int | None) -> None:
        app = self.app
        order, edit = app.flow.order, app.flow.edit
        turn, candidate = app.flow.rate()  # no keys count until the policy has learned
        app.refresh_bindings()
        app.run_worker(lambda: self._learn(turn, candidate, rating, order, edit), thread=True,
                        exclusive=True, group="turn")

    def _learn(self, turn: str, candidate: int, rating: int | None,
               order: list[list[int]] | None, edit: str | None) -> None:
        app = self.app
        assert app.agent is not None
        try:
            reward = app.agent.choose(turn, candidate, rating, order=order, edit=edit)
        except AgentError as exc:
            app.call_from_thread(self.answer_failed, exc.message)
        else:
            app.call_from_thread(self.learned, rating, reward)

    def learned(self, rating: int | None, reward: float) -> None:
        app = self.app
        assert app.flow.picked is not None
        stars = "★" * rating + "☆" * (5 - rating) if rating else "no rating"
        what = "order, " if app.flow.order else "edit, " if app.flow.edit is not None else ""
        self.after_answer(app.flow.edit if app.flow.edit is not None else app.flow.picked.text,
                          f"Learned ({what}{stars}, reward {reward:+.2f})")

    def answer_failed(self, message: str) -> None:
        """Nothing was stored: the candidates stay, to pick again."""
        app = self.app
        app.flow.back_to_choosing()
        app.query_one(CandidatePanel).mark_picked(0)
        self.to_choosing()
        app.set_status(message, error=True)

    def own_reply(self) -> None:
        app = self.app
        app.flow.write_own()
        app.query_one(CandidatePanel).mark_picked(0)
        self.write_in_box(f"Write the reply you wanted, then Enter ({KEYS_HINT}; Esc: back)", "")

    def cancel_reply(self) -> None:
        app = self.app
        app.flow.back_to_choosing()
        app.query_one(PromptInput).clear()
        self.to_choosing()

    def _learn_reply(self, turn: str, text: str) -> None:
        app = self.app
        assert app.agent is not None
        try:
            app.agent.reply(turn, text)
        except AgentError as exc:
            app.call_from_thread(self.reply_refused, exc.message)
        else:
            app.call_from_thread(self.after_answer, text, "Learned from your own reply")

    def reply_refused(self, message: str) -> None:
        app = self.app
        app.flow.reply_refused()
        app.refresh_bindings()
        box = app.query_one(PromptInput)
        box.disabled = False
        app.focus_then_say(box, message, error=True)

    def after_answer(self, reply: str, what: str) -> None:
        app = self.app
        assert app.agent is not None
        app.flow.answered()
        if app.agent.session is not None:  # else the session was deleted meanwhile
            app.query_one(Transcript).add_message("assistant", reply)
        app.query_one(CandidatePanel).clear()
        app.refresh_subtitle()
        app.to_typing(f"{what}; policy v{app.agent.policy_view().version}.")
        app.say_warning()
        self._model_work(app.agent.between_turns)

    def use_adapter(self, run: int | None) -> None:
        """F4's choice of adapter (None: the base), loaded in a worker."""
        self.app.notify("Loading the model with the adapter chosen…" if run is not None
                        else "Loading the base model…", markup=False)
        self._model_work(lambda: self.app.agent.use_adapter(run))

    def _model_work(self, work: Callable[[], str]) -> None:
        """Work on the model between two turns (auto_train's runs, a swap of
        adapter: a load), in a worker below the UI's priority; its one line
        as a notice.  A failure keeps the model that runs."""
        def run() -> None:
            background_priority()
            try:
                notice = work()
            except AgentError as exc:
                notice = exc.message
            except Exception as exc:
                log.exception("work on the model between turns")
                notice = f"Switching the model failed: {exc}"
            if notice:
                self.app.call_from_thread(self.model_changed, notice)

        self.app.run_worker(run, thread=True, group="model-learning")

    def model_changed(self, notice: str) -> None:
        self.app.refresh_subtitle()
        self.app.notify(notice, markup=False, timeout=15)

    def regenerate(self) -> None:
        app = self.app
        self.start_generation(again=(app.flow.regenerate(), False))

    def none(self) -> None:
        app = self.app
        self.start_generation(again=(app.flow.regenerate(), True))

    def continue_reply(self) -> None:
        app = self.app
        panel = app.query_one(CandidatePanel)
        rank = panel.highlighted + 1
        if app.flow.view is None or app.agent is None:
            return
        if not app.flow.view.candidates[rank - 1].truncated:
            app.set_status(f"Reply {rank} ended on its own; only a reply cut at the token "
                            "limit (✂) can be continued.")
            return
        cand = app.flow.start_continue(rank)
        app.refresh_bindings()
        app.busy(True)
        app.set_status(f"Continuing reply {rank}… Esc cancels.")
        self._cancel = cancel = threading.Event()
        turn = app.flow.view.turn
        app.run_worker(lambda: self._continue(turn, cand.id, rank, cancel), thread=True,
                        exclusive=True, group="turn")

    def _continue(self, turn: str, candidate: int, rank: int,
                  cancel: threading.Event) -> None:
        app = self.app
        assert app.agent is not None
        background_priority()
        try:
            whole = app.agent.continue_reply(turn, candidate, cancel=cancel)
        except GenerationCancelled:
            app.call_from_thread(self.continue_done, None, "Cancelled; the reply is as it was.",
                                  False)
        except AgentError as exc:
            app.call_from_thread(self.continue_done, None, exc.message, True)
        else:
            more = " It was cut again: g goes on." if whole.truncated else ""
            app.call_from_thread(self.continue_done, whole, f"Reply {rank} continued.{more}",
                                  False)

    def continue_done(self, whole, status: str, error: bool) -> None:
        app = self.app
        app.flow.continued(whole)
        app.busy(False)
        app.refresh_bindings()
        if whole is not None:
            app.query_one(CandidatePanel).replace_candidate(whole)
        app.set_status(status, error=error)

    def cancel(self) -> None:
        app = self.app
        self._cancel.set()
        app.set_status("Cancelling…")

    def thumb(self, good: bool) -> None:
        """Mark the highlighted candidate good or bad, without picking it: it
        is learned with the turn's answer, and can be changed until then."""
        app = self.app
        panel = app.query_one(CandidatePanel)
        view = app.flow.view
        if view is None or not panel.candidates or app.agent is None:
            return
        cand = panel.candidates[panel.highlighted]
        try:
            app.agent.rate(view.turn, cand.id, good)
        except AgentError as exc:
            app.set_status(exc.message, error=True)
            return
        panel.mark(cand.id, good)
        app.set_status(f"Reply {panel.highlighted + 1} marked {'good' if good else 'bad'}; "
                        "learned with this turn's answer (a pick, your own, r or n), "
                        "whichever it is.")

    def copy(self) -> None:
        """The highlighted candidate, or else the last reply, to the clipboard
        (OSC 52: the terminal, or the one tmux and ssh pass it to, keeps it)."""
        app = self.app
        if app.screen is not app.screen_stack[0]:
            return
        panel = app.query_one(CandidatePanel)
        if panel.candidates:
            text = panel.candidates[panel.highlighted].text
            what = f"reply {panel.highlighted + 1}"
        else:
            text, what = app.query_one(Transcript).last_reply(), "the last reply"
        if not text:
            app.set_status("Nothing to copy yet.")
            return
        app.copy_to_clipboard(text)
        app.set_status(f"Copied {what} ({len(text)} characters) to the clipboard.")

    def toggle_why(self) -> None:
        app = self.app
        app.query_one(CandidatePanel).toggle_why()

    def toggle_expand(self) -> None:
        app = self.app
        app.query_one(CandidatePanel).toggle_expanded()
