"""Small helpers shared by tests."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from rlchat.learner.errors import GenerationCancelled
from rlchat.learner.records import Candidate, Proposal, Turn
from rlchat.learner.sampling import Sampling
from rlchat.storage import Store


class ScriptedSource:
    """A candidate source that returns given texts, for tests about what the
    app does with a model's output (the tiny model cannot be made to write
    `[/INST]` on demand).  Signals are fixed and deterministic."""

    identity = {"model": "scripted", "format": "", "dtype": ""}  # nothing to show in the title

    def __init__(self, texts: list[str], hidden_size: int = 16) -> None:
        self.texts = texts
        self.hidden_size = hidden_size
        self.sampling = Sampling()

    def propose(self, history, message: str, n: int, *, system: str = "", on_token=None,
                cancel=None) -> Proposal:
        rng = np.random.default_rng(len(history))
        return Proposal(
            candidates=[
                Candidate(text=t, logprob=-2.0, tokens=len(t.split()),
                          hidden=rng.standard_normal(self.hidden_size))
                for t in self.texts[:n]
            ],
            context_hidden=rng.standard_normal(self.hidden_size),
        )


class GatedSource(ScriptedSource):
    """Streams its texts word by word, then holds the generation open until
    `gate` is set, so a test can look at the drafts and cancel."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__(texts)
        self.gate = threading.Event()
        self.calls = 0

    def propose(self, history, message: str, n: int, *, system: str = "", on_token=None,
                cancel=None) -> Proposal:
        self.calls += 1
        for row, text in enumerate(self.texts[:n]):
            for i, word in enumerate(text.split(" ")):
                if on_token:
                    on_token(row, word if i == 0 else " " + word)
        while not self.gate.wait(0.01):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled", "Generation was cancelled.")
        return super().propose(history, message, n)


def turns_of(data: Path) -> list[Turn]:
    """Every stored turn of a data dir, read as the offline commands read them."""
    store = Store(data, readonly=True)
    try:
        return [Turn.from_dict(t) for t in store.turns()]
    finally:
        store.close()
