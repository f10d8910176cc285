"""Learning from the logs after the fact: replay and the steps evaluation needs.

Both walk the stored turns in order through the same update path as live
learning (learner/update.py), so `replay` with the live settings rebuilds the
live policy bit for bit.  No torch, no writes: callers decide what to save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rlchat.learner.evaluate import LoggedStep
from rlchat.learner.features import DIM
from rlchat.learner.policy import PolicyConfig, QPolicy
from rlchat.learner.records import Turn
from rlchat.learner.update import (
    current,
    finish_turn,
    learn_late_thumbs,
    learnable,
    replay,
    start_turn,
)

Progress = Callable[[int], None]


def _turns(records: Iterable[dict[str, Any]], progress: Progress | None) -> Iterable[Turn]:
    for i, record in enumerate(records, start=1):
        if progress and i % 1000 == 0:
            progress(i)
        turn = current(record)
        if learnable(turn):
            yield turn


def replay_logs(
    records: Iterable[dict[str, Any]], config: PolicyConfig, progress: Progress | None = None
) -> QPolicy:
    """A new policy learned from stored turns, in order."""
    policy = QPolicy(DIM, config)
    replay(policy, _turns(records, progress))
    return policy


def evaluation_steps(
    records: Iterable[dict[str, Any]], config: PolicyConfig, progress: Progress | None = None
) -> list[LoggedStep]:
    """For every answered turn: what a learner with `config` would have placed
    first (its probabilities, learning from the logs as they come), against
    what was logged."""
    policy = QPolicy(DIM, config)
    steps = []
    for turn in _turns(records, progress):
        start_turn(policy, turn)
        if turn.answered_ok and turn.rewards:
            phi = turn.features()
            scores = policy.scores(phi)
            probs = policy.first_probabilities(scores, policy.temperature(phi))
            action = turn.order[0]
            steps.append(LoggedStep(action, turn.propensities[action], turn.rewards[0],
                                    probs, scores))
        finish_turn(policy, turn)
        learn_late_thumbs(policy, turn)
    return steps
