"""Answers to a turn: a pick (with a rating, an order of several, an edit),
an own reply, "none of these" and regenerate, a continued reply, and thumbs
on single candidates.  Each is stored before it is learned, through the one
update path (learner/update.py).  A collaborator of the Agent: it works on
the conversation (learner/conversation.py) under its lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from rlchat.learner.agent_views import ShownCandidate, TurnView
from rlchat.learner.conversation import Conversation, checked_text, storing
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.features import text_row
from rlchat.learner.records import CHOSEN, LEARNED, REGENERATED, REJECTED, REPLIED, Turn
from rlchat.learner.rewards import (
    again_feedback,
    own_reply_feedback,
    pick_feedback,
    ranking_feedback,
    thumb_reward,
)
from rlchat.learner.sampling import TokenCallback
from rlchat.learner.update import finish_turn, learn_late_thumb

# What an answer clears of an earlier, failed one.
NO_FEEDBACK = {"choice": None, "rating": None, "own_reply": None, "ranking": None,
               "edit": None, "edit_features": None}
Say = Callable[..., TurnView]  # Agent.say: a regenerate says the message again


def complete_order(order: Any, shown_ids: list[int]) -> list[list[int]]:
    """An order of shown candidate ids, best first, as groups of ties.

    `order` lists ids or lists of ids (a list is a tie), e.g. [2, [0, 3]].
    Shown candidates it leaves out rank below every one in it, tied among
    themselves; they are added as a last group, so that the stored ranking
    says everything on its own.  Raises AgentError(ErrorCode.BAD_ORDER)."""
    if not isinstance(order, list) or not order:
        raise AgentError(ErrorCode.BAD_ORDER, "The order must be a non-empty list of candidate ids "
                         "(a list inside it groups ties).")
    groups, seen = [], set()
    for entry in order:
        group = entry if isinstance(entry, list) else [entry]
        if not group:
            raise AgentError(ErrorCode.BAD_ORDER, "A group of ties in the order is empty.")
        for cid in group:
            if not isinstance(cid, int) or isinstance(cid, bool) or cid not in shown_ids:
                raise AgentError(ErrorCode.BAD_ORDER, f"Candidate id {cid!r} in the order was not "
                                 f"shown; shown ids: {shown_ids}.")
            if cid in seen:
                raise AgentError(ErrorCode.BAD_ORDER, f"Candidate id {cid} is in the order twice.")
            seen.add(cid)
        groups.append(list(group))
    rest = [cid for cid in shown_ids if cid not in seen]
    return groups + [rest] if rest else groups


class Answers:
    def __init__(self, conversation: Conversation, say: Say) -> None:
        self.conversation = conversation
        self._say = say

    def choose(self, turn_id: str, candidate_id: int | None, rating: int | None = None,
               *, order: list | None = None, edit: str | None = None) -> float:
        """The user picked a shown candidate (and maybe rated it); returns its reward.

        `order` ranks the shown candidates, best first, ties grouped in a list
        (feedback.complete_order); the pick must be in its first group, and
        is its first candidate if `candidate_id` is None.
        `edit` is the user's edit of the pick: it continues the conversation
        and is learned (and exported) as preferred to the pick."""
        c = self.conversation
        with c.lock, storing():
            turn = self._answerable(turn_id)
            ranking = None if order is None else complete_order(order, turn.shown_ids)
            if candidate_id is None and ranking is not None:
                candidate_id = ranking[0][0]
            if not isinstance(candidate_id, int) or isinstance(candidate_id, bool) or (
                candidate_id not in turn.shown_ids
            ):
                raise AgentError(
                    ErrorCode.BAD_ID,
                    f"Candidate id {candidate_id!r} was not shown in turn {turn_id}; "
                    f"shown ids: {turn.shown_ids}.",
                )
            if rating is not None and (
                not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5
            ):
                raise AgentError(ErrorCode.BAD_RATING,
                                 f"Rating {rating!r} is not a whole number from 1 to 5.")
            position = turn.shown_ids.index(candidate_id)
            extra: dict[str, Any] = {}
            if ranking is None:
                rewards, weights = pick_feedback(turn.shown_count, position, rating,
                                                 c.rewards)
            else:
                if candidate_id not in ranking[0]:
                    raise AgentError(ErrorCode.BAD_ORDER, f"The pick {candidate_id} must be first "
                                     "in the order (or tied for first).")
                rewards, weights = ranking_feedback(turn.shown_ids, ranking, rating,
                                                    c.rewards)
                extra["ranking"] = ranking
            if edit is not None:
                extra["edit"] = checked_text(edit, "edit")
                extra["edit_features"] = text_row(turn.user_text, extra["edit"],
                                                  turn.candidates[candidate_id].features)
            self._finish(turn, rewards, weights, status=CHOSEN, choice=candidate_id,
                         rating=rating, **extra)
            return rewards[position]

    def reply(self, turn_id: str, text: str) -> None:
        """The user wrote their own reply instead of picking a candidate."""
        c = self.conversation
        with c.lock, storing():
            turn = self._answerable(turn_id)
            text = checked_text(text, "reply")
            rewards, weights = own_reply_feedback(turn.shown_count, c.rewards)
            self._finish(turn, rewards, weights, status=REPLIED, own_reply=text)

    def regenerate(
        self,
        turn_id: str,
        *,
        none: bool = False,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnView:
        """New candidates for the open turn's message.  The shown ones are
        learned as a mild negative, or with `none` ("none of these") as all
        worse than what the user wanted; then the message is said again."""
        c = self.conversation
        with c.lock, storing():
            turn = self._answerable(turn_id)
            rewards, weights = again_feedback(turn.shown_count, none, c.rewards)
            self._finish(turn, rewards, weights, status=REJECTED if none else REGENERATED)
        return self._say(turn.user_text, on_token=on_token, cancel=cancel)

    def continue_reply(
        self,
        turn_id: str,
        candidate_id: int,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ShownCandidate:
        """A shown candidate of the open turn that was cut at the token limit,
        continued by the model for up to as many tokens again.  The stored
        turn takes the whole reply (its text, as sampled and as token ids):
        the pick stores and exports it.  Its features stay those it was
        ranked by.  `on_token(candidate_id, text)` streams the new text."""
        c = self.conversation
        with c.lock, storing():
            turn = self._answerable(turn_id)
            if not isinstance(candidate_id, int) or isinstance(candidate_id, bool) or (
                    candidate_id not in turn.shown_ids):
                raise AgentError(ErrorCode.BAD_ID, f"Candidate id {candidate_id!r} was not shown "
                                 f"in turn {turn_id}; shown ids: {turn.shown_ids}.")
            cut = turn.candidates[candidate_id]
            if not cut.truncated:
                raise AgentError(ErrorCode.NOT_CUT, f"Candidate {candidate_id} ended on its own; "
                                 "only a reply cut at the token limit can be continued.")
            extend = getattr(c.source, "extend", None)
            if extend is None or turn.prompt is None:
                raise AgentError(ErrorCode.NOT_CUT, "This model's replies cannot be continued "
                                 "(a served model's prompt is rendered by its server).")
            epoch = c.epoch
        stream = None if on_token is None else (
            lambda _row, text: on_token(candidate_id, text))
        try:
            more = extend(turn.prompt, cut.text, cut.token_ids, on_token=stream, cancel=cancel)
        except AgentError:  # a cancel: its own code and sentence
            raise
        except Exception as exc:
            raise AgentError(ErrorCode.GENERATION_FAILED,
                             f"Continuing the reply failed: {exc}") from exc
        with c.lock, storing():
            if epoch != c.epoch:
                raise AgentError(ErrorCode.SESSION_GONE, "The session ended while the reply was "
                                 "being continued.")
            turn = self._answerable(turn_id)
            whole = replace(turn.candidates[candidate_id], text=more.text, tokens=more.tokens,
                            truncated=more.truncated, sampled=more.sampled,
                            token_ids=more.token_ids)
            candidates = list(turn.candidates)
            candidates[candidate_id] = whole
            c.store.update_turn(turn.id, candidates=[
                {k: v for k, v in asdict(c).items() if k != "features"} for c in candidates])
            c.open_turn = replace(turn, candidates=candidates)
            return ShownCandidate(candidate_id, whole.text, turn.scores[candidate_id],
                                  turn.propensities[candidate_id], whole.truncated)

    def rate(self, turn_id: str, candidate_id: int, good: bool) -> bool:
        """The user marks a shown candidate of the latest turn good or bad,
        before or without a pick, or after it.  Returns whether it was
        learned now: a thumb on the open turn is learned with the turn's
        answer (or alone when the turn closes unanswered), and can be changed
        until then; one given after the answer is learned at once and final."""
        c = self.conversation
        with c.lock, storing():
            turn = self._ratable(turn_id)
            if not isinstance(candidate_id, int) or isinstance(candidate_id, bool) or (
                candidate_id not in turn.shown_ids
            ):
                raise AgentError(ErrorCode.BAD_ID, f"Candidate id {candidate_id!r} was not "
                                 f"shown in turn {turn_id}; shown ids: {turn.shown_ids}.")
            if not isinstance(good, bool):
                raise AgentError(ErrorCode.BAD_FIELD, "Field 'good' must be true or false.")
            late = turn is not c.open_turn
            thumbs = list(turn.thumbs or ())
            earlier = next((t for t in thumbs if t["id"] == candidate_id), None)
            if earlier is not None and earlier["good"] == good:
                return False  # said before (a repeated request): nothing new
            if earlier is not None:
                if earlier["late"]:
                    raise AgentError(ErrorCode.ALREADY_RATED, f"Candidate {candidate_id} of turn "
                                     f"{turn_id} is already marked "
                                     f"{'good' if earlier['good'] else 'bad'}, and learned.")
                thumbs.remove(earlier)  # not learned yet: the newer mark counts
            thumb = {"id": candidate_id, "good": good,
                     "reward": thumb_reward(good, c.rewards), "late": late}
            thumbs.append(thumb)
            c.store.update_turn(turn.id, thumbs=thumbs)  # durable before learning
            turn.thumbs = thumbs
            if not late:
                return False
            learn_late_thumb(c.policy, turn, candidate_id, thumb["reward"])
            if c.saved_seq >= turn.seq:
                # The checkpoint already holds this turn, so start-up would not
                # learn it again: the thumb must reach the saved policy now.
                c.save_policy()
            return True

    def _ratable(self, turn_id: str) -> Turn:
        """The open turn, or the answered one before the next message."""
        c = self.conversation
        for turn in (c.open_turn, c.answered_turn):
            if turn is not None and turn.id == turn_id:
                return turn
        stored = c.store.get_turn(turn_id) if isinstance(turn_id, str) else None
        if stored is None:
            raise AgentError(ErrorCode.UNKNOWN_TURN, f"There is no turn {turn_id!r}.")
        raise AgentError(ErrorCode.TURN_CLOSED, f"Turn {turn_id} is no longer the latest "
                         "turn; only the latest turn's candidates can be rated.")

    def _answerable(self, turn_id: str) -> Turn:
        c = self.conversation
        stored = c.store.get_turn(turn_id) if isinstance(turn_id, str) else None
        if stored is None:
            raise AgentError(ErrorCode.UNKNOWN_TURN, f"There is no turn {turn_id!r}.")
        turn = c.open_turn
        if turn is None or turn.id != turn_id:
            if stored["status"] in LEARNED:
                raise AgentError(ErrorCode.ALREADY_ANSWERED,
                                 f"Turn {turn_id} has already been answered.")
            raise AgentError(
                ErrorCode.TURN_CLOSED,
                f"Turn {turn_id} was left unanswered; only the latest turn can be answered.",
            )
        return turn

    def _finish(self, turn: Turn, rewards: list[float], weights: list[float],
                **feedback: Any) -> None:
        c = self.conversation
        answered = time.time()
        # Durable before learning: a crash after this line is recovered at
        # startup; a failed write changes nothing here.
        c.store.update_turn(turn.id, rewards=rewards, weights=weights, answered=answered,
                               **{**NO_FEEDBACK, **feedback})
        for name, value in feedback.items():
            setattr(turn, name, value)
        turn.rewards, turn.weights, turn.answered = rewards, weights, answered
        finish_turn(c.policy, turn)
        c.curves.fold(turn)
        reply = turn.reply_text()
        if reply is not None:  # else the message is said again
            c.history.append((turn.user_text, reply))
        c.open_turn, c.answered_turn = None, turn
        c.index_turn(turn)
        c.checkpoint(due_only=True)  # the turn is stored: the policy is a cache of it
