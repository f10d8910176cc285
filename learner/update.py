"""The one update path for a stored turn, shared by live learning and replay.

Live, `start_turn` runs when the candidates are known (before ranking),
`finish_turn` when the feedback arrives (the answer with the thumbs given
before it, or the thumbs alone when the turn closes unanswered) and
`learn_late_thumb` for each thumb given after the answer; replay runs them in
that order.  Same calls, same order, same floats: the same weights, bit for
bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from rlchat.learner.embeddings import GENERATOR
from rlchat.learner.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    MEANING_COLUMNS,
    refeaturize,
)
from rlchat.learner.policy import QPolicy
from rlchat.learner.records import CHOSEN, LEARNED, REGENERATED, REJECTED, REPLIED, Turn


class Feedback(NamedTuple):
    rows: np.ndarray
    targets: np.ndarray  # read for the rows that are not preferences
    weights: np.ndarray
    chosen: np.ndarray | None  # phi of the candidate that continued the conversation
    preferences: np.ndarray  # the rows that say "the first is better than the second"


def feedback_rows(
    phi: np.ndarray,
    shown: list[int],
    status: str,
    choice: int | None,
    rewards: list[float],
    weights: list[float],
    *,
    ranking: list[list[int]] | None = None,
    edit_phi: np.ndarray | None = None,
    thumbs: list[tuple[int, float]] = (),
) -> Feedback:
    """Regression rows for one answered turn.

    A pick gives its own reward as a target, and one preference per
    candidate it was preferred to: phi(pick) - phi(other), weighted by how
    likely the other one was read.  A preference carries what a skip says
    (worse than the pick, in this context) without pretending to know its
    absolute value, or by how much (learner/policy.py: a probit observation).
    An order of several gives a preference for every two candidates in
    different groups, and a tie a row with target 0, all read.  An edit of
    the pick is a row of its own, with the pick's reward, and preferred to
    the pick.  An own reply, "none of these" or a regenerate penalise every
    shown candidate, each by its read weight.  A thumb (candidate id,
    reward) is a row of that candidate with its reward, read: with the
    answer's rows, or alone for a turn that closed without one.
    """
    marked = _thumb_rows(phi, thumbs)
    if status not in LEARNED:
        if not thumbs:
            raise ValueError(f"no feedback in a turn with status {status!r}")
        return marked
    answer = _answer_rows(phi, shown, status, choice, rewards, weights, ranking, edit_phi)
    if not thumbs:
        return answer
    return Feedback(np.concatenate([answer.rows, marked.rows]),
                    np.concatenate([answer.targets, marked.targets]),
                    np.concatenate([answer.weights, marked.weights]), answer.chosen,
                    np.concatenate([answer.preferences, marked.preferences]))


def _thumb_rows(phi: np.ndarray, thumbs: list[tuple[int, float]]) -> Feedback:
    ids = [cid for cid, _ in thumbs]
    return Feedback(phi[ids].reshape(len(ids), phi.shape[1]),
                    np.array([reward for _, reward in thumbs], dtype=np.float64),
                    np.ones(len(ids)), None, np.zeros(len(ids), dtype=bool))


def _answer_rows(
    phi: np.ndarray, shown: list[int], status: str, choice: int | None, rewards: list[float],
    weights: list[float], ranking: list[list[int]] | None, edit_phi: np.ndarray | None,
) -> Feedback:
    if status == CHOSEN and choice is not None:
        pick = shown.index(choice)
        rows, targets, cs, prefer = [phi[choice]], [rewards[pick]], [1.0], [False]

        def add(row: np.ndarray, target: float, weight: float, preference: bool) -> None:
            rows.append(row)
            targets.append(target)
            cs.append(weight)
            prefer.append(preference)

        if ranking is None:
            for pos, other in enumerate(shown):
                if pos != pick:
                    add(phi[choice] - phi[other], 0.0, weights[pos], True)
        else:
            for g, group in enumerate(ranking):
                for i, better in enumerate(group):
                    for worse in group[i + 1:]:
                        add(phi[better] - phi[worse], 0.0, 1.0, False)  # a tie
                    for lower in ranking[g + 1:]:
                        for worse in lower:
                            add(phi[better] - phi[worse], 0.0, 1.0, True)
        if edit_phi is not None:
            add(edit_phi, rewards[pick], 1.0, False)
            add(edit_phi - phi[choice], 0.0, 1.0, True)
        return Feedback(np.array(rows), np.array(targets), np.array(cs), phi[choice],
                        np.array(prefer))
    if status in (REPLIED, REJECTED, REGENERATED):
        return Feedback(phi[shown], np.array(rewards), np.array(weights), None,
                        np.zeros(len(shown), dtype=bool))
    raise ValueError(f"no feedback in a turn with status {status!r}")


def generator_key(turn: Turn) -> str | None:
    """What the model features of a turn are comparable across: the model's
    family (a model and the models `rlchat train` made from it) and the
    prompt format.  None for turns that did not record their generator."""
    if not turn.generator:
        return None
    family = turn.generator.get("family") or turn.generator.get("weights", "")
    return f"{family}/{turn.generator.get('format', '')}"


LOGPROB_COLUMN = FEATURE_NAMES.index("logprob")


def meaning_key(turn: Turn) -> str | None:
    """What a turn's meaning columns are comparable across: the embeddings
    source it recorded (learner/embeddings.py); the generator's key where
    its hidden state filled them (`generator`, and every turn from before
    sources were recorded)."""
    if not turn.generator:
        return None
    source = turn.generator.get("embeddings")
    return generator_key(turn) if source in (None, "", GENERATOR) else source


def start_turn(policy: QPolicy, turn: Turn) -> None:
    key, meaning = generator_key(turn), meaning_key(turn)
    # Another model made these candidates (not a fine-tune of the one the
    # policy learned on): its log-prob means something else, and so do the
    # meaning columns where its hidden state fills them; another embeddings
    # source changes the meaning columns alone.  What the policy learned of
    # them is dropped; the text features carry over.  A fine-tune keeps
    # them: its features stay close, and keeping them holds the ranking up
    # (benchmarks/train.py).  The first generator or source a policy meets
    # (or turns that recorded none) changes nothing.
    forget: set[int] = set()
    if key is not None and key != policy.generator:
        if policy.generator is not None:
            forget.add(LOGPROB_COLUMN)
        policy.generator = key
    if meaning is not None and meaning != policy.meaning:
        if policy.meaning is not None:
            forget.update(MEANING_COLUMNS)
        policy.meaning = meaning
    if forget:
        policy.forget_columns(sorted(forget))
    policy.start_turn(turn.session, turn.features())


def finish_turn(policy: QPolicy, turn: Turn) -> None:
    """The turn is answered or closed: its answer and the thumbs given before it."""
    answered = turn.answered_ok and turn.rewards is not None and turn.weights is not None
    thumbs = turn.thumbs_given(late=False)
    if answered or thumbs:
        edit_phi = None if turn.edit_features is None else np.array(turn.edit_features)
        feedback = feedback_rows(
            turn.features(), turn.shown_ids, turn.status if answered else "", turn.choice,
            turn.rewards or [], turn.weights or [], ranking=turn.ranking, edit_phi=edit_phi,
            thumbs=thumbs,
        )
        policy.learn(feedback.rows, feedback.targets, feedback.weights, feedback.chosen,
                     feedback.preferences)
    policy.last_seq = turn.seq


def learn_late_thumb(policy: QPolicy, turn: Turn, candidate: int, reward: float) -> None:
    """A thumb given after the turn's answer: its row on top of what the
    turn taught (policy.learn's `late`)."""
    feedback = _thumb_rows(turn.features(), [(candidate, reward)])
    policy.learn(feedback.rows, feedback.targets, feedback.weights, None,
                 feedback.preferences, late=True)


def learn_late_thumbs(policy: QPolicy, turn: Turn) -> None:
    """The thumbs a stored turn got after its answer, one at a time as they came."""
    for candidate, reward in turn.thumbs_given(late=True):
        learn_late_thumb(policy, turn, candidate, reward)


def learnable(turn: Turn) -> bool:
    """Whether this policy can score the turn: features of the current version
    (a turn read through `current` has them where its stored texts allow)."""
    return turn.feature_version == FEATURE_VERSION and bool(turn.candidates)


def current(record: dict) -> Turn:
    """A stored turn, with today's features where it was stored with older
    ones (features.refeaturize): how replay and recovery read the log."""
    return refeaturize(Turn.from_dict(record))


def replay(policy: QPolicy, turns: Iterable[Turn]) -> int:
    """Apply stored turns in order; returns how many were applied."""
    count = 0
    for turn in turns:
        start_turn(policy, turn)
        finish_turn(policy, turn)
        learn_late_thumbs(policy, turn)
        count += 1
    return count


def catch_up(policy: QPolicy, records: Iterable[dict]) -> int:
    """A checkpointed policy brought up to the log: the stored turns after its
    checkpoint applied as start-up applies them.  Returns how many."""
    late = [current(record) for record in records]
    late = [t for t in late if t.seq > policy.last_seq]
    return replay(policy, late) if all(learnable(t) for t in late) else 0
