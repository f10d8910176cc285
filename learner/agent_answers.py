"""The agent's answers to a turn: a pick (with a rating, an order of
several, an edit), an own reply, "none of these" and regenerate, mixed into
the Agent (learner/agent.py).  Each is stored before it is learned, through
the one update path (learner/update.py)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from rlchat.learner.agent_sessions import checked_text, storing
from rlchat.learner.errors import AgentError
from rlchat.learner.features import text_row
from rlchat.learner.feedback import complete_order
from rlchat.learner.records import CHOSEN, LEARNED, REGENERATED, REJECTED, REPLIED, Turn
from rlchat.learner.rewards import (
    again_feedback,
    own_reply_feedback,
    pick_feedback,
    ranking_feedback,
)
from rlchat.learner.sampling import TokenCallback
from rlchat.learner.update import finish_turn

if TYPE_CHECKING:
    from rlchat.learner.agent import Agent
    from rlchat.learner.agent_views import TurnView

# What an answer clears of an earlier, failed one.
NO_FEEDBACK = {"choice": None, "rating": None, "own_reply": None, "ranking": None,
               "edit": None, "edit_features": None}


class AnswerDoor:
    def choose(self: Agent, turn_id: str, candidate_id: int | None, rating: int | None = None,
               *, order: list | None = None, edit: str | None = None) -> float:
        """The user picked a shown candidate (and maybe rated it); returns its reward.

        `order` ranks the shown candidates, best first, ties grouped in a list
        (feedback.complete_order); the pick must be in its first group, and
        is its first candidate if `candidate_id` is None.
        `edit` is the user's edit of the pick: it continues the conversation
        and is learned (and exported) as preferred to the pick."""
        with self._lock, storing():
            turn = self._answerable(turn_id)
            ranking = None if order is None else complete_order(order, turn.shown_ids)
            if candidate_id is None and ranking is not None:
                candidate_id = ranking[0][0]
            if not isinstance(candidate_id, int) or isinstance(candidate_id, bool) or (
                candidate_id not in turn.shown_ids
            ):
                raise AgentError(
                    "bad_id",
                    f"Candidate id {candidate_id!r} was not shown in turn {turn_id}; "
                    f"shown ids: {turn.shown_ids}.",
                )
            if rating is not None and (
                not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5
            ):
                raise AgentError("bad_rating",
                                 f"Rating {rating!r} is not a whole number from 1 to 5.")
            position = turn.shown_ids.index(candidate_id)
            extra: dict[str, Any] = {}
            if ranking is None:
                rewards, weights = pick_feedback(turn.shown_count, position, rating,
                                                 self.rewards)
            else:
                if candidate_id not in ranking[0]:
                    raise AgentError("bad_order", f"The pick {candidate_id} must be first "
                                     "in the order (or tied for first).")
                rewards, weights = ranking_feedback(turn.shown_ids, ranking, rating,
                                                    self.rewards)
                extra["ranking"] = ranking
            if edit is not None:
                extra["edit"] = checked_text(edit, "edit")
                extra["edit_features"] = text_row(turn.user_text, extra["edit"],
                                                  turn.candidates[candidate_id].features)
            self._finish(turn, rewards, weights, status=CHOSEN, choice=candidate_id,
                         rating=rating, **extra)
            return rewards[position]

    def reply(self: Agent, turn_id: str, text: str) -> None:
        """The user wrote their own reply instead of picking a candidate."""
        with self._lock, storing():
            turn = self._answerable(turn_id)
            text = checked_text(text, "reply")
            rewards, weights = own_reply_feedback(turn.shown_count, self.rewards)
            self._finish(turn, rewards, weights, status=REPLIED, own_reply=text)

    def regenerate(
        self: Agent,
        turn_id: str,
        *,
        none: bool = False,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnView:
        """New candidates for the open turn's message.  The shown ones are
        learned as a mild negative, or with `none` ("none of these") as all
        worse than what the user wanted; then the message is said again."""
        with self._lock, storing():
            turn = self._answerable(turn_id)
            rewards, weights = again_feedback(turn.shown_count, none, self.rewards)
            self._finish(turn, rewards, weights, status=REJECTED if none else REGENERATED)
        return self.say(turn.user_text, on_token=on_token, cancel=cancel)

    def _answerable(self: Agent, turn_id: str) -> Turn:
        stored = self.store.get_turn(turn_id) if isinstance(turn_id, str) else None
        if stored is None:
            raise AgentError("unknown_turn", f"There is no turn {turn_id!r}.")
        turn = self.open_turn
        if turn is None or turn.id != turn_id:
            if stored["status"] in LEARNED:
                raise AgentError("already_answered", f"Turn {turn_id} has already been answered.")
            raise AgentError(
                "turn_closed",
                f"Turn {turn_id} was left unanswered; only the latest turn can be answered.",
            )
        return turn

    def _finish(self: Agent, turn: Turn, rewards: list[float], weights: list[float],
                **feedback: Any) -> None:
        answered = time.time()
        # Durable before learning: a crash after this line is recovered at
        # startup; a failed write changes nothing here.
        self.store.update_turn(turn.id, rewards=rewards, weights=weights, answered=answered,
                               **{**NO_FEEDBACK, **feedback})
        for name, value in feedback.items():
            setattr(turn, name, value)
        turn.rewards, turn.weights, turn.answered = rewards, weights, answered
        finish_turn(self.policy, turn)
        self.curves.fold(turn)
        reply = turn.reply_text()
        if reply is not None:  # else the message is said again
            self.history.append((turn.user_text, reply))
        self.open_turn = None
        self.checkpoint(due_only=True)  # the turn is stored: the policy is a cache of it
