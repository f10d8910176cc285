"""Generation settings that the command line needs without importing torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# on_token(row, text): a sample's newly drawn text, row 0..n-1.
TokenCallback = Callable[[int, str], None]

DTYPES = ("auto", "qint8", "int8", "bfloat16", "float32")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 50  # the nucleus is looked for among these: a sort of 50, not of the vocabulary
    top_p: float = 0.95
