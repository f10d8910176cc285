"""The agent strings one turn together: propose, rank, feedback, store, learn.

The TUI and the headless protocol are thin front ends over these calls.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from learner.dialogue import one_line, valid_unicode
from learner.errors import AgentError, GenerationCancelled
from learner.features import DIM, FEATURE_NAMES, FEATURE_VERSION, featurize
from learner.policy import PolicyConfig, QPolicy
from learner.records import (
    CHOSEN,
    PENDING,
    REPLIED,
    UNANSWERED,
    Proposal,
    StoredCandidate,
    Turn,
)
from learner.replay import finish_turn, replay, start_turn
from learner.rewards import RewardConfig, own_reply_feedback, pick_feedback
from learner.sampling import Sampling, TokenCallback
from storage import Store

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000


class CandidateSource(Protocol):
    def propose(
        self,
        history: list[tuple[str, str]],
        message: str,
        n: int,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Proposal: ...


@dataclass(frozen=True)
class AgentConfig:
    candidates: int = 4  # K, shown
    samples: int = 8  # N, generated

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.samples < self.candidates:
            raise ValueError("need 1 <= candidates <= samples")


@dataclass(frozen=True)
class ShownCandidate:
    id: int  # the candidate's index in its turn
    text: str
    score: float  # Q(s, a)
    propensity: float  # logged P(placed first)


@dataclass(frozen=True)
class TurnView:
    session: str
    turn: str
    candidates: list[ShownCandidate]  # shown order, the policy's choice first


class Agent:
    def __init__(
        self,
        store: Store,
        source: CandidateSource,
        config: AgentConfig | None = None,
        *,
        policy_config: PolicyConfig | None = None,
        rewards: RewardConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.config = config or AgentConfig()
        self.rewards = rewards or RewardConfig()
        self.rng = np.random.default_rng(seed)
        self.policy = self._load_policy(policy_config)
        self.session: str | None = None
        self.history: list[tuple[str, str]] = []
        self.open_turn: Turn | None = None
        self._recover()

    # startup --------------------------------------------------------------
    def _load_policy(self, config: PolicyConfig | None) -> QPolicy:
        snapshot = self.store.load_policy()
        if snapshot and snapshot.get("dim") == DIM and snapshot.get("features") == FEATURE_VERSION:
            return QPolicy.from_dict(snapshot, config)
        if snapshot:
            log.warning("stored policy uses other features; starting a new one")
        return QPolicy(DIM, config)

    def _recover(self) -> None:
        """Close what a previous process left open and learn what it stored
        but did not learn (a crash between the turn write and the policy save)."""
        # Only the newest sessions can be open: each start closes what the
        # previous process left, so walk back to the first ended one.
        for seq in range(self.store.count_sessions(), 0, -1):
            session = self.store.get_session(str(seq))
            if session is None or session.get("ended") is not None:
                break
            self.store.update_session(str(seq), ended=time.time())
        # A damaged newest turn file must not make new turns reuse numbers
        # the policy has already seen.
        self.store.reserve_turns(self.policy.last_seq)
        late = []
        for record in self.store.turns(after_seq=self.policy.last_seq):
            turn = Turn.from_dict(record)
            if turn.status == PENDING:
                turn.status = UNANSWERED
                self.store.update_turn(turn.id, status=UNANSWERED)
            late.append(turn)
        if late and all(t.feature_version == FEATURE_VERSION for t in late):
            replay(self.policy, late)
            self._save_policy()
            log.info("learned %d stored turns that the policy had not seen", len(late))

    def _save_policy(self) -> None:
        self.store.save_policy({**self.policy.to_dict(), "features": FEATURE_VERSION})

    # one turn -------------------------------------------------------------
    def say(
        self,
        text: str,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnView:
        """Propose, rank and store a turn for the user's message.

        `on_token(row, text)` streams the samples as they are drawn; `cancel`
        stops the generation (GenerationCancelled, nothing stored).
        """
        text = _checked_text(text, "message")
        self._close_open_turn()
        try:
            proposal = self.source.propose(
                self.history, text, self.config.samples, on_token=on_token, cancel=cancel
            )
        except GenerationCancelled:
            raise
        except Exception as exc:
            log.exception("generation failed")
            raise AgentError("generation_failed", f"Generating replies failed: {exc}") from exc
        if not proposal.candidates:
            raise AgentError(
                "no_candidates", "The model produced no usable reply; send the message again."
            )
        if self.session is None:
            self.session = self.store.new_session(title=one_line(text))
        phi = featurize(text, proposal.context_hidden, proposal.candidates)
        turn = Turn(
            session=self.session,
            user_text=text,
            candidates=[
                StoredCandidate(c.text, c.logprob, c.tokens, [float(x) for x in row])
                for c, row in zip(proposal.candidates, phi, strict=True)
            ],
            feature_version=FEATURE_VERSION,
            scores=[],
            order=[],
            shown=0,
            propensities=[],
            policy_version=self.policy.version,
            created=time.time(),
        )
        start_turn(self.policy, turn)
        order, probs, scores = self.policy.rank(phi, self.rng)
        turn.order = order
        turn.shown = min(self.config.candidates, len(order))
        turn.propensities = [float(p) for p in probs]
        turn.scores = [float(s) for s in scores]
        turn.temperature = float(self.policy.temperature(phi))
        stored = self.store.add_turn(turn.to_dict())
        turn.seq, turn.id = stored["seq"], stored["id"]
        session = self.store.get_session(self.session) or {}
        self.store.update_session(
            self.session, turns=session.get("turns", 0) + 1,
            first_seq=session.get("first_seq") or turn.seq, last_seq=turn.seq,
        )
        self.open_turn = turn
        return TurnView(
            session=self.session,
            turn=turn.id,
            candidates=[
                ShownCandidate(i, turn.candidates[i].text, turn.scores[i], turn.propensities[i])
                for i in turn.shown_ids
            ],
        )

    def choose(self, turn_id: str, candidate_id: int, rating: int | None = None) -> float:
        """The user picked a shown candidate (and maybe rated it); returns its reward."""
        turn = self._answerable(turn_id)
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
            raise AgentError("bad_rating", f"Rating {rating!r} is not a whole number from 1 to 5.")
        position = turn.shown_ids.index(candidate_id)
        rewards, weights = pick_feedback(turn.shown, position, rating, self.rewards)
        turn.status, turn.choice, turn.rating = CHOSEN, candidate_id, rating
        self._finish(turn, rewards, weights)
        return rewards[position]

    def reply(self, turn_id: str, text: str) -> None:
        """The user wrote their own reply instead of picking a candidate."""
        turn = self._answerable(turn_id)
        text = _checked_text(text, "reply")
        rewards, weights = own_reply_feedback(turn.shown, self.rewards)
        turn.status, turn.own_reply = REPLIED, text
        self._finish(turn, rewards, weights)

    def end(self) -> str | None:
        """End the session (terminal for Q-learning); the next message opens a new one."""
        self._close_open_turn()
        ended = self.session
        if ended is not None:
            self.store.update_session(ended, ended=time.time())
        self.session, self.history = None, []
        return ended

    def tune(self, **settings: float) -> None:
        """Change learner settings (gamma, forgetting, epsilon, ...) from now on;
        they are saved with the policy."""
        self.policy.config = replace(self.policy.config, **settings)
        if settings:
            self._save_policy()

    def resume(self, session_id: str) -> list[tuple[str, str]]:
        """Continue a stored session: its answered turns become the history.
        Returns its messages as (role, text) for the transcript."""
        session = self.store.get_session(session_id) if isinstance(session_id, str) else None
        if session is None or session.get("deleted"):
            raise AgentError("unknown_session", f"There is no session {session_id!r}.")
        self.end()
        self.store.update_session(session_id, ended=None)
        self.session = session_id
        self.history = [
            (turn.user_text, turn.reply_text() or "")
            for turn in map(Turn.from_dict, self.store.session_turns(session_id))
            if turn.reply_text()
        ]
        return session_messages(self.store, session_id)

    def explain(self, turn_id: str, candidate_id: int, top: int = 3) -> list[tuple[str, float]]:
        """Why a candidate of the open turn scored as it did: its top feature
        contributions (name, value x weight) under the current weights."""
        turn = self.open_turn
        if turn is None or turn.id != turn_id or not 0 <= candidate_id < len(turn.candidates):
            raise AgentError("unknown_turn", f"Turn {turn_id!r} is not open.")
        return self.policy.explain(turn.features()[candidate_id], FEATURE_NAMES, top)

    def stats(self) -> dict[str, int]:
        return {
            "turns": self.store.count_turns(),
            "sessions": self.store.count_sessions(),
            "policy_version": self.policy.version,
        }

    # internals ------------------------------------------------------------
    def _answerable(self, turn_id: str) -> Turn:
        stored = self.store.get_turn(turn_id) if isinstance(turn_id, str) else None
        if stored is None:
            raise AgentError("unknown_turn", f"There is no turn {turn_id!r}.")
        turn = self.open_turn
        if turn is None or turn.id != turn_id:
            if stored["status"] in (CHOSEN, REPLIED):
                raise AgentError("already_answered", f"Turn {turn_id} has already been answered.")
            raise AgentError(
                "turn_closed",
                f"Turn {turn_id} was left unanswered; only the latest turn can be answered.",
            )
        return turn

    def _finish(self, turn: Turn, rewards: list[float], weights: list[float]) -> None:
        turn.rewards, turn.weights, turn.answered = rewards, weights, time.time()
        # Durable before learning: a crash after this line is recovered at startup.
        self.store.update_turn(
            turn.id,
            status=turn.status,
            choice=turn.choice,
            rating=turn.rating,
            own_reply=turn.own_reply,
            rewards=rewards,
            weights=weights,
            answered=turn.answered,
        )
        finish_turn(self.policy, turn)
        self._save_policy()
        self.history.append((turn.user_text, turn.reply_text() or ""))
        self.open_turn = None

    def _close_open_turn(self) -> None:
        turn = self.open_turn
        if turn is None:
            return
        turn.status = UNANSWERED
        self.store.update_turn(turn.id, status=UNANSWERED)
        # Nothing to learn from it, but it was applied (bootstrap) and counts as seen.
        finish_turn(self.policy, turn)
        self.open_turn = None


def session_messages(store: Store, session_id: str) -> list[tuple[str, str]]:
    """A stored session as (role, text) lines: "user", "assistant", or "note"
    for a message that got no reply."""
    lines = []
    for turn in map(Turn.from_dict, store.session_turns(session_id)):
        lines.append(("user", turn.user_text))
        reply = turn.reply_text()
        lines.append(("assistant", reply) if reply else ("note", "(no reply chosen)"))
    return lines


def _checked_text(text: object, what: str) -> str:
    """Text from a person, refused with a clear message if empty or huge."""
    if not isinstance(text, str) or not one_line(text):
        raise AgentError("empty_text", f"The {what} is empty; write something first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise AgentError(
            "too_long",
            f"The {what} has {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.",
        )
    return valid_unicode(text)


def open_agent(
    model: str,
    store: Store,
    config: AgentConfig | None = None,
    *,
    seed: int | None = None,
    max_new_tokens: int = 40,
    dtype: str = "auto",
    sampling: Sampling | None = None,
) -> Agent:
    """Load the model into an agent over an open store; raises ModelUnavailable."""
    from learner.generator import Generator  # torch and transformers load here, not before

    generator = Generator.load(
        model, seed=seed, max_new_tokens=max_new_tokens, dtype=dtype, sampling=sampling
    )
    return Agent(store, generator, config, seed=seed)
