"""Small helpers shared by tests."""

from __future__ import annotations

import numpy as np

from learner.records import Candidate, Proposal


class ScriptedSource:
    """A candidate source that returns given texts, for tests about what the
    app does with a model's output (the tiny model cannot be made to write
    `[/INST]` on demand).  Signals are fixed and deterministic."""

    def __init__(self, texts: list[str], hidden_size: int = 16) -> None:
        self.texts = texts
        self.hidden_size = hidden_size

    def propose(self, history, message: str, n: int) -> Proposal:
        rng = np.random.default_rng(len(history))
        return Proposal(
            candidates=[
                Candidate(text=t, logprob=-2.0, tokens=len(t.split()),
                          hidden=rng.standard_normal(self.hidden_size))
                for t in self.texts[:n]
            ],
            context_hidden=rng.standard_normal(self.hidden_size),
        )
