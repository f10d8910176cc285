"""Named, versioned features phi(s, a) of a (context, candidate) pair.

Every feature is scaled to roughly [-1, 1] by construction so that a single
ridge penalty suits all of them.  Stored turns carry FEATURE_VERSION: change
it whenever the names or their computation change.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

from rlchat.learner.records import Candidate

FEATURE_VERSION = "v1"
HIDDEN_DIMS = 8
FEATURE_NAMES: tuple[str, ...] = (
    "bias",
    "length",
    "logprob",
    "repetition",
    "overlap",
    "question",
    "exclaim",
    "punctuation",
    "polite",
    "similarity",
    *(f"hidden_{i}" for i in range(HIDDEN_DIMS)),
)
DIM = len(FEATURE_NAMES)
# The features the generator's numbers make (the rest are read off the text):
# they change meaning when the model changes (learner/update.py).
MODEL_COLUMNS = [i for i, name in enumerate(FEATURE_NAMES)
                 if name in ("logprob", "similarity") or name.startswith("hidden_")]

_WORD = re.compile(r"[A-Za-z0-9']+")
_POLITE = frozenset({"please", "thanks", "thank", "sorry", "glad", "welcome", "kindly"})
_PUNCT = frozenset(".,;:!?-\"'()")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=8)
def _projection(hidden_size: int) -> np.ndarray:
    # Fixed across runs (seeded by the width alone) so features stay comparable.
    rng = np.random.default_rng(20240 + hidden_size)
    return rng.standard_normal((HIDDEN_DIMS, hidden_size))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else np.zeros_like(v)


def text_features(user_text: str, text: str, logprob: float) -> list[float]:
    """The features that depend on text only (no hidden state)."""
    cand_words = words(text)
    n = len(cand_words)
    user_words = set(words(user_text))
    length = math.log1p(len(text)) / math.log1p(200.0)  # 200 chars -> 1
    repetition = 1.0 - len(set(cand_words)) / n if n else 0.0
    overlap = sum(w in user_words for w in cand_words) / n if n else 0.0
    punct = sum(ch in _PUNCT for ch in text) / max(len(text), 1)
    polite = min(sum(w in _POLITE for w in cand_words), 2) / 2.0
    return [
        1.0,
        min(length, 2.0) * 2.0 - 1.0,
        float(np.clip((logprob + 4.0) / 4.0, -2.0, 2.0)),
        repetition,
        overlap,
        1.0 if "?" in text else 0.0,
        1.0 if "!" in text else 0.0,
        min(punct * 5.0, 1.0),
        polite,
    ]


def featurize(
    user_text: str, context_hidden: np.ndarray, candidates: list[Candidate]
) -> np.ndarray:
    """phi for every candidate, shape (len(candidates), DIM), float64."""
    rows = []
    context = np.asarray(context_hidden, dtype=np.float64)
    ctx_unit = _unit(context)
    proj = _projection(context.shape[-1])
    for cand in candidates:
        hidden = np.asarray(cand.hidden, dtype=np.float64)
        similarity = float(_unit(hidden) @ ctx_unit)
        # The difference from the context removes the large shared components
        # of transformer states, leaving what is specific to this reply.
        direction = proj @ _unit(hidden - context)
        rows.append(
            text_features(user_text, cand.text, cand.logprob)
            + [similarity]
            + list(np.clip(direction, -3.0, 3.0) / 3.0)
        )
    phi = np.array(rows, dtype=np.float64).reshape(len(candidates), DIM)
    return np.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0)
