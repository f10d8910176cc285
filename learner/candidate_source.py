"""What the agent needs of a model: candidate replies to a message, with the
signals it measured (records.Proposal).  The local generator
(learner/generator/) and a served model (learner/remote/) are the two."""

from __future__ import annotations

import threading
from typing import Protocol

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
