"""The chat's turn keys and the work behind them, mixed into the App.

Each key moves the turn flow (tui/turn_flow.py) and starts the agent's work in
a worker thread; the results come back on the UI thread and are rendered.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
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

BACKGROUND_NICE = 10


def background_priority() -> None:
    """Run this thread, and the torch threads it starts, below the UI's CPU
    priority: with every core busy generating, keys still get handled at once,
    and generation still gets the cores whenever the UI is idle."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: run as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class TurnActions:
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

    def init_turns(self: RlchatApp) -> None:
        self._cancel = threading.Event()
        self._tokens: deque[tuple[int, str]] = deque()  # from the generation thread
        self._drain: Timer | None = None

    # typing and generating ----------------------------------------------
    def on_prompt_input_submitted(self: RlchatApp, event: PromptInput.Submitted) -> None:
        if self.agent is None:
            return
        if self.flow.phase is Phase.TYPING:
            text = event.value  # the agent refuses empty or huge text with a message
            self.query_one(PromptInput).remember(text)
            self.query_one(Transcript).add_message("user", text)
            self.flow.send(text)
            self.start_generation()
        elif self.flow.phase is Phase.ORDERING:
            self.submit_order(event.value)
        elif self.flow.phase is Phase.EDITING:
            if not event.value.strip():
                self.set_status("The edit is empty; write the reply or press Esc.", error=True)
                return
            self.flow.submit_edit(event.value)
            self.ask_rating("your edit")
        elif self.flow.phase is Phase.REPLYING:
            turn = self.flow.submit_reply()
            self.refresh_bindings()
            self.query_one(PromptInput).disabled = True
            self.run_worker(lambda: self._learn_reply(turn, event.value), thread=True,
                            exclusive=True, group="turn")

    def start_generation(self: RlchatApp, again: tuple[str, bool] | None = None) -> None:
        """Generate for the flow's message; `again` = (turn id, none of
        these) closes that turn first, as regenerated or rejected."""
        self.refresh_bindings()
        box = self.query_one(PromptInput)
        box.disabled = True
        box.placeholder = "Generating… (Esc cancels)"
        self.busy(True)
        self.query_one(CandidatePanel).start_drafts()
        self.set_status("Generating candidates… Esc cancels.")
        self._cancel = cancel = threading.Event()
        self._tokens.clear()
        self._drain = self.set_interval(1 / 20, self._drain_tokens)
        message = self.flow.message or ""
        self.run_worker(lambda: self._generate(message, cancel, again), thread=True,
                        exclusive=True, group="turn")

    def _on_token(self: RlchatApp, row: int, text: str) -> None:
        self._tokens.append((row, text))  # generation thread; drained by a UI timer

    def _drain_tokens(self: RlchatApp) -> None:
        if self.screen is not self.screen_stack[0]:
            return  # the chat is covered (help, sessions): keep the tokens for later
        batch = []
        while self._tokens:
            batch.append(self._tokens.popleft())
        if batch:
            self.query_one(CandidatePanel).add_tokens(batch)

    def _generate(self: RlchatApp, text: str, cancel: threading.Event,
                  again: tuple[str, bool] | None) -> None:
        assert self.agent is not None
        background_priority()
        try:
            if again is None:
                view = self.agent.say(text, on_token=self._on_token, cancel=cancel)
            else:
                view = self.agent.regenerate(again[0], none=again[1], on_token=self._on_token,
                                             cancel=cancel)
            why = self.agent.explain(view.turn)
        except GenerationCancelled:
            self.call_from_thread(self.generation_stopped, "Cancelled.", False)
        except AgentError as exc:
            self.call_from_thread(self.generation_stopped, exc.message, True)
        else:
            self.call_from_thread(self.show_candidates, view, why)

    def _stop_drain(self: RlchatApp) -> None:
        if self._drain is not None:
            self._drain.stop()
            self._drain = None
        self._tokens.clear()

    def generation_stopped(self: RlchatApp, message: str, error: bool) -> None:
        """Back to typing with the message in the box again, as if never sent."""
        self._stop_drain()
        self.query_one(CandidatePanel).clear()
        self.query_one(Transcript).remove_last("user")
        text = self.flow.stopped()
        self.to_typing(message, error=error)
        self.query_one(PromptInput).value = text

    def show_candidates(self: RlchatApp, view: TurnView, why: dict) -> None:
        self._stop_drain()
        self._subtitle()  # a served model shows its format once its server answered
        self.flow.generated(view)
        self.query_one(CandidatePanel).show(view.candidates, why)
        self.busy(False)
        self.query_one(PromptInput).clear()
        self.to_choosing()
        self.say_warning()

    def to_choosing(self: RlchatApp) -> None:
        assert self.flow.view is not None
        self.refresh_bindings()
        box = self.query_one(PromptInput)
        box.disabled = True
        n = len(self.flow.view.candidates)
        box.placeholder = f"Pick a reply above: 1-{n}, or ↑↓ Enter"
        self.set_status(f"Pick a reply: 1-{n} or ↑↓ Enter; + or - marks one good or bad; "
                        "o orders several, m edits, e writes your own, r regenerates, "
                        "n: none of these; c copies.")

    # choosing and rating --------------------------------------------------
    def action_digit(self: RlchatApp, n: int) -> None:
        if self.flow.phase is Phase.CHOOSING:
            self.pick(n)
        elif self.flow.phase is Phase.RATING and 1 <= n <= 5:
            self.answer(n)

    def action_move(self: RlchatApp, delta: int) -> None:
        self.query_one(CandidatePanel).move(delta)

    def action_pick_highlighted(self: RlchatApp) -> None:
        self.pick(self.query_one(CandidatePanel).highlighted + 1)

    def pick(self: RlchatApp, rank: int) -> None:
        if self.flow.pick(rank) is None:
            return
        self.query_one(CandidatePanel).mark_picked(rank)
        self.ask_rating(f"reply {rank}")

    def ask_rating(self: RlchatApp, what: str) -> None:
        self.refresh_bindings()
        box = self.query_one(PromptInput)
        box.clear()
        box.disabled = True
        prompt = f"Rate {what}: press 1-5 stars, or Esc to skip the rating."
        box.placeholder = prompt
        self.set_status(prompt)

    def action_order(self: RlchatApp) -> None:
        self.flow.start_order()
        n = len(self.flow.view.candidates) if self.flow.view else 0
        self.write_in_box(f"Order the replies best first, e.g. 2 1=3 (= ties; 1-{n}; "
                          "left out ranks last). Enter; Esc: back", "")

    def submit_order(self: RlchatApp, text: str) -> None:
        try:
            picked = self.flow.submit_order(text)
        except ValueError as exc:
            self.set_status(str(exc), error=True)
            return
        assert self.flow.view is not None
        rank = self.flow.view.candidates.index(picked) + 1
        self.query_one(CandidatePanel).mark_picked(rank)
        self.ask_rating(f"reply {rank}, first in your order")

    def action_edit(self: RlchatApp) -> None:
        rank = self.query_one(CandidatePanel).highlighted + 1
        picked = self.flow.start_edit(rank)
        self.query_one(CandidatePanel).mark_picked(rank)
        self.write_in_box(f"Edit the reply, then Enter accepts it ({KEYS_HINT}; Esc: back)",
                          picked.text)

    def write_in_box(self: RlchatApp, prompt: str, text: str) -> None:
        self.refresh_bindings()
        box = self.query_one(PromptInput)
        box.disabled = False
        box.placeholder = prompt
        box.value = text
        self.focus_then_say(box, prompt)

    def action_skip_rating(self: RlchatApp) -> None:
        self.answer(None)

    def answer(self: RlchatApp, rating: int | None) -> None:
        order, edit = self.flow.order, self.flow.edit
        turn, candidate = self.flow.rate()  # no keys count until the policy has learned
        self.refresh_bindings()
        self.run_worker(lambda: self._learn(turn, candidate, rating, order, edit), thread=True,
                        exclusive=True, group="turn")

    def _learn(self: RlchatApp, turn: str, candidate: int, rating: int | None,
               order: list[list[int]] | None, edit: str | None) -> None:
        assert self.agent is not None
        try:
            reward = self.agent.choose(turn, candidate, rating, order=order, edit=edit)
        except AgentError as exc:
            self.call_from_thread(self.answer_failed, exc.message)
        else:
            self.call_from_thread(self.learned, rating, reward)

    def learned(self: RlchatApp, rating: int | None, reward: float) -> None:
        assert self.flow.picked is not None
        stars = "★" * rating + "☆" * (5 - rating) if rating else "no rating"
        what = "order, " if self.flow.order else "edit, " if self.flow.edit is not None else ""
        self.after_answer(self.flow.edit if self.flow.edit is not None else self.flow.picked.text,
                          f"Learned ({what}{stars}, reward {reward:+.2f})")

    def answer_failed(self: RlchatApp, message: str) -> None:
        """Nothing was stored: the candidates stay, to pick again."""
        self.flow.back_to_choosing()
        self.query_one(CandidatePanel).mark_picked(0)
        self.to_choosing()
        self.set_status(message, error=True)

    def action_own_reply(self: RlchatApp) -> None:
        self.flow.write_own()
        self.query_one(CandidatePanel).mark_picked(0)
        self.write_in_box(f"Write the reply you wanted, then Enter ({KEYS_HINT}; Esc: back)", "")

    def action_cancel_reply(self: RlchatApp) -> None:
        self.flow.back_to_choosing()
        self.query_one(PromptInput).clear()
        self.to_choosing()

    def _learn_reply(self: RlchatApp, turn: str, text: str) -> None:
        assert self.agent is not None
        try:
            self.agent.reply(turn, text)
        except AgentError as exc:
            self.call_from_thread(self.reply_refused, exc.message)
        else:
            self.call_from_thread(self.after_answer, text, "Learned from your own reply")

    def reply_refused(self: RlchatApp, message: str) -> None:
        self.flow.reply_refused()
        self.refresh_bindings()
        box = self.query_one(PromptInput)
        box.disabled = False
        self.focus_then_say(box, message, error=True)

    def after_answer(self: RlchatApp, reply: str, what: str) -> None:
        assert self.agent is not None
        self.flow.answered()
        if self.agent.session is not None:  # else the session was deleted meanwhile
            self.query_one(Transcript).add_message("assistant", reply)
        self.query_one(CandidatePanel).clear()
        self._subtitle()
        self.to_typing(f"{what}; policy v{self.agent.policy_view().version}.")
        self.say_warning()

    def action_regenerate(self: RlchatApp) -> None:
        self.start_generation(again=(self.flow.regenerate(), False))

    def action_none(self: RlchatApp) -> None:
        self.start_generation(again=(self.flow.regenerate(), True))

    def action_continue_reply(self: RlchatApp) -> None:
        panel = self.query_one(CandidatePanel)
        rank = panel.highlighted + 1
        if self.flow.view is None or self.agent is None:
            return
        if not self.flow.view.candidates[rank - 1].truncated:
            self.set_status(f"Reply {rank} ended on its own; only a reply cut at the token "
                            "limit (✂) can be continued.")
            return
        cand = self.flow.start_continue(rank)
        self.refresh_bindings()
        self.busy(True)
        self.set_status(f"Continuing reply {rank}… Esc cancels.")
        self._cancel = cancel = threading.Event()
        turn = self.flow.view.turn
        self.run_worker(lambda: self._continue(turn, cand.id, rank, cancel), thread=True,
                        exclusive=True, group="turn")

    def _continue(self: RlchatApp, turn: str, candidate: int, rank: int,
                  cancel: threading.Event) -> None:
        assert self.agent is not None
        background_priority()
        try:
            whole = self.agent.continue_reply(turn, candidate, cancel=cancel)
        except GenerationCancelled:
            self.call_from_thread(self.continue_done, None, "Cancelled; the reply is as it was.",
                                  False)
        except AgentError as exc:
            self.call_from_thread(self.continue_done, None, exc.message, True)
        else:
            more = " It was cut again: g goes on." if whole.truncated else ""
            self.call_from_thread(self.continue_done, whole, f"Reply {rank} continued.{more}",
                                  False)

    def continue_done(self: RlchatApp, whole, status: str, error: bool) -> None:
        self.flow.continued(whole)
        self.busy(False)
        self.refresh_bindings()
        if whole is not None:
            self.query_one(CandidatePanel).replace_candidate(whole)
        self.set_status(status, error=error)

    def action_cancel(self: RlchatApp) -> None:
        self._cancel.set()
        self.set_status("Cancelling…")

    def action_thumb(self: RlchatApp, good: bool) -> None:
        """Mark the highlighted candidate good or bad, without picking it: it
        is learned with the turn's answer, and can be changed until then."""
        panel = self.query_one(CandidatePanel)
        view = self.flow.view
        if view is None or not panel.candidates or self.agent is None:
            return
        cand = panel.candidates[panel.highlighted]
        try:
            self.agent.rate(view.turn, cand.id, good)
        except AgentError as exc:
            self.set_status(exc.message, error=True)
            return
        panel.mark(cand.id, good)
        self.set_status(f"Reply {panel.highlighted + 1} marked {'good' if good else 'bad'}; "
                        "learned with this turn's answer (a pick, your own, r or n), "
                        "whichever it is.")

    def action_copy(self: RlchatApp) -> None:
        """The highlighted candidate, or else the last reply, to the clipboard
        (OSC 52: the terminal, or the one tmux and ssh pass it to, keeps it)."""
        if self.screen is not self.screen_stack[0]:
            return
        panel = self.query_one(CandidatePanel)
        if panel.candidates:
            text = panel.candidates[panel.highlighted].text
            what = f"reply {panel.highlighted + 1}"
        else:
            text, what = self.query_one(Transcript).last_reply(), "the last reply"
        if not text:
            self.set_status("Nothing to copy yet.")
            return
        self.copy_to_clipboard(text)
        self.set_status(f"Copied {what} ({len(text)} characters) to the clipboard.")

    def action_toggle_why(self: RlchatApp) -> None:
        self.query_one(CandidatePanel).toggle_why()

    def action_toggle_expand(self: RlchatApp) -> None:
        self.query_one(CandidatePanel).toggle_expanded()
