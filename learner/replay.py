"""The one update path for a stored turn, shared by live learning and replay.

Live, `start_turn` runs when the candidates are known (before ranking) and
`finish_turn` when the feedback arrives; replay runs both back to back.
Same calls, same order, same floats: the same weights, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from learner.policy import QPolicy
from learner.records import CHOSEN, Turn


def start_turn(policy: QPolicy, turn: Turn) -> None:
    policy.start_turn(turn.session, turn.features())


def finish_turn(policy: QPolicy, turn: Turn) -> None:
    if turn.answered_ok and turn.rewards is not None and turn.weights is not None:
        phi = turn.features()
        chosen = phi[turn.choice] if turn.status == CHOSEN and turn.choice is not None else None
        policy.learn(phi[turn.shown_ids], np.array(turn.rewards), np.array(turn.weights), chosen)
    policy.last_seq = turn.seq


def replay(policy: QPolicy, turns: Iterable[Turn]) -> int:
    """Apply stored turns in order; returns how many were applied."""
    count = 0
    for turn in turns:
        start_turn(policy, turn)
        finish_turn(policy, turn)
        count += 1
    return count
