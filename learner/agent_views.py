"""What the agent hands out: views of a turn, of the policy and of a deletion,
and what it needs of a model (CandidateSource).  Plain data, no I/O."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from rlchat.learner.policy import PolicyConfig
from rlchat.learner.records import Proposal
from rlchat.learner.sampling import Sampling, TokenCallback


class CandidateSource(Protocol):
    """A generator of candidate replies (the model)."""

    sampling: Sampling

    @property
    def identity(self) -> dict[str, str]:
        """What generates: model, prompt format, number format (stored with each turn)."""
        ...

    def propose(
        self,
        history: list[tuple[str, str]],
        message: str,
        n: int,
        *,
        system: str = "",
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Proposal: ...


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
