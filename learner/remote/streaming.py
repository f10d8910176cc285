"""One sampling request to an OpenAI-compatible server, read as it streams.

Chat and completions chunks both carry `choices[]`, each with the `index`
of the sample it continues: that index is the row of the token callback,
so n samples of one request stream side by side like the local model's rows.
Log-probs come in OpenAI's chat shape (`logprobs.content[].logprob`) or the
legacy completions shape (`logprobs.token_logprobs`); either is read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from rlchat.learner.remote.client import ServerClient
from rlchat.learner.sampling import TokenCallback


@dataclass
class Draw:
    """One sample as it arrived."""

    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    pieces: int = 0  # chunks that added text: the token count where no log-probs came
    finish: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.logprobs) or self.pieces


def _logprobs(choice: dict[str, Any]) -> list[float]:
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return []
    entries = block.get("content")
    if isinstance(entries, list):
        return [float(e["logprob"]) for e in entries
                if isinstance(e, dict) and isinstance(e.get("logprob"), int | float)]
    values = block.get("token_logprobs")
    if isinstance(values, list):
        return [float(v) for v in values if isinstance(v, int | float)]
    return []


def _piece(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):  # chat
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")  # completions
    return text if isinstance(text, str) else ""


def stream_draws(
    client: ServerClient,
    path: str,
    body: dict[str, Any],
    rows: int,
    *,
    first_row: int = 0,
    on_token: TokenCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Draw]:
    """The samples of one streamed request; `rows` is how many it asked for.
    A choice index outside them is ignored; rows that never came stay empty."""
    draws = [Draw() for _ in range(rows)]
    for event in client.stream(path, {**body, "stream": True}, cancel):
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < rows:
                continue
            draw = draws[index]
            piece = _piece(choice)
            if piece:
                draw.text += piece
                draw.pieces += 1
                if on_token is not None:
                    on_token(first_row + index, piece)
            draw.logprobs.extend(_logprobs(choice))
            if choice.get("finish_reason"):
                draw.finish = str(choice["finish_reason"])
    return draws
