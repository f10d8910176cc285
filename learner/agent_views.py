"""What the agent hands out: views of a turn, of the policy and of a
deletion.  Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from rlchat.learner.policy import PolicyConfig


@dataclass(frozen=True)
class ShownCandidate:
    id: int  # the candidate's index in its turn
    text: str
    score: float  # Q(s, a)
    propensity: float  # logged P(placed first)
    truncated: bool = False  # cut at the token limit before its turn ended


@dataclass(frozen=True)
class TurnView:
    session: str
    turn: str
    candidates: list[ShownCandidate]  # shown order, the policy's choice first


@dataclass(frozen=True)
class PolicyView:
    """What the learning screen shows of the policy; a copy, not the policy."""

    version: int
    config: PolicyConfig
    weights: tuple[float, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class Deleted:
    turns: int  # stored turns removed
    was_open: bool  # it was the session in use: it ended, the next message starts another
