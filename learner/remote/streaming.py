"""One sampling request to an OpenAI-compatible server, read as it streams.

Chat and completions chunks both carry `choices[]`, each with the `index`
of the sample it continues: that index is the row of the token callback,
so n samples of one request stream side by side like the local model's rows.
Log-probs come in OpenAI's chat shape (`logprobs.content[].logprob`) or the
legacy completions shape (`logprobs.token_logprobs`); either is read.

Nothing a server sends is trusted: a field of the wrong type is
backend_error; a row's text is capped at the `max_tokens` asked for (by
its tokens, and by CHARS_PER_TOKEN characters a token, which a server that
ignores `max_tokens` cannot pass) and marked capped; a log-prob that is not
a finite number makes the row's log-prob absent; text is made valid
Unicode.  A stream that ends without `[DONE]` before every row has a
finish reason was dropped (backend_unreachable).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rlchat.learner.dialogue import valid_unicode
from rlchat.learner.errors import BACKEND_ERROR, BACKEND_UNREACHABLE, BackendError
from rlchat.learner.remote.client import ServerClient
from rlchat.learner.remote.events import DONE, events
from rlchat.learner.sampling import TokenCallback

CHARS_PER_TOKEN = 32  # longer than any real token of a common vocabulary
# A token's log-prob is at most 0 (0.001 for rounding); below this it is no
# number a sampler drew from.
LOWEST_LOGPROB = -1000.0


@dataclass
class Draw:
    """One sample as it arrived."""

    parts: list[str] = field(default_factory=list)
    chars: int = 0
    pieces: int = 0  # chunks that added text: the token count where no log-probs came
    logprob_count: int = 0
    logprob_sum: float = 0.0
    logprobs_valid: bool = True  # every log-prob the server sent was a finite number
    finish: str | None = None
    capped: bool = False  # longer than the max_tokens asked for: cut here
    came: bool = False  # the stream carried this row at all
    held: str = ""  # drawn but not streamed yet: it could be the start of the key

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tokens(self) -> int:
        """Log-probs count tokens; chunks with text count them where none came."""
        return max(self.logprob_count, self.pieces)

    @property
    def logprob(self) -> float | None:
        """The mean token log-prob, where the server sent only finite ones."""
        if not self.logprob_count or not self.logprobs_valid:
            return None
        return self.logprob_sum / self.logprob_count

    @property
    def ended(self) -> bool:
        return self.finish is not None or self.capped


def _wrong(host: str, what: str) -> BackendError:
    return BackendError(BACKEND_ERROR, f"The server at {host} streamed {what}; rlchat "
                        "does not understand that answer.")


def _logprob_values(choice: dict[str, Any], host: str) -> list[Any]:
    block = choice.get("logprobs")
    if block is None:
        return []
    if not isinstance(block, dict):
        raise _wrong(host, "log-probs that are not an object")
    entries = block.get("content")
    if entries is not None:
        if not isinstance(entries, list):
            raise _wrong(host, "log-prob content that is not a list")
        return [e.get("logprob") if isinstance(e, dict) else e for e in entries]
    values = block.get("token_logprobs")
    if values is None:
        return []
    if not isinstance(values, list):
        raise _wrong(host, "token log-probs that are not a list")
    return values


def _piece(choice: dict[str, Any], host: str) -> str:
    if "delta" in choice:  # chat
        delta = choice["delta"]
        if delta is None:
            return ""
        if not isinstance(delta, dict):
            raise _wrong(host, "a delta that is not an object")
        content = delta.get("content")
    else:  # completions
        content = choice.get("text")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise _wrong(host, "reply text that is not a string")
    return content


class Assembly:
    """The rows of one request, built event by event."""

    def __init__(self, rows: int, max_tokens: int, host: str, *, first_row: int = 0,
                 on_token: TokenCallback | None = None,
                 mask: Callable[[str], str] = str, hold: int = 0) -> None:
        """`mask` hides the API key in text; `hold`: how many characters of
        a row to keep back from `on_token` until more come (the key's length
        less one), so that a key split across pieces is never streamed."""
        self.draws = [Draw() for _ in range(rows)]
        self.hold = hold
        self.max_tokens = max(1, max_tokens)
        self.max_chars = self.max_tokens * CHARS_PER_TOKEN
        self.host, self.first_row, self.on_token, self.mask = host, first_row, on_token, mask
        self.seen = 0  # events read
        self.model: str | None = None  # the model the server says answered

    def add(self, event: dict[str, Any]) -> None:
        self.seen += 1
        if self.model is None and isinstance(event.get("model"), str):
            self.model = event["model"][:200]
        choices = event.get("choices")
        if choices is None:
            return  # usage and timing chunks
        if not isinstance(choices, list):
            raise _wrong(self.host, "choices that are not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise _wrong(self.host, "a choice that is not an object")
            index = choice.get("index", 0)
            if isinstance(index, bool) or not isinstance(index, int):
                raise _wrong(self.host, "a choice index that is not an integer")
            if not 0 <= index < len(self.draws):
                raise _wrong(self.host, f"choice {index} of a request for "
                             f"{len(self.draws)}")
            self._add_choice(self.draws[index], index, choice)

    def _add_choice(self, draw: Draw, index: int, choice: dict[str, Any]) -> None:
        piece = _piece(choice, self.host)
        values = _logprob_values(choice, self.host)
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise _wrong(self.host, "a finish reason that is not a string")
        draw.came = True
        if draw.ended:  # what a server sends after a row's end is not the reply
            return
        if piece:
            room = self.max_chars - draw.chars
            if draw.tokens >= self.max_tokens or room <= 0:
                draw.capped = True
                return
            if len(piece) > room:
                piece, draw.capped = piece[:room], True
            piece = self.mask(valid_unicode(piece))
            draw.parts.append(piece)
            draw.chars += len(piece)
            draw.pieces += 1
            self._stream(draw, index, piece)
        for value in values[:max(0, self.max_tokens - draw.logprob_count)]:
            draw.logprob_count += 1
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not LOWEST_LOGPROB <= value <= 0.001:  # NaN fails too
                draw.logprobs_valid = False
            else:
                draw.logprob_sum += value
        if finish:
            draw.finish = valid_unicode(finish)[:40]
        if draw.ended:
            self._stream(draw, index, "", flush=True)

    def _stream(self, draw: Draw, index: int, piece: str, flush: bool = False) -> None:
        if self.on_token is None:
            return
        if not self.hold:
            if piece:
                self.on_token(self.first_row + index, piece)
            return
        held = self.mask(draw.held + piece)
        cut = len(held) if flush else max(0, len(held) - self.hold)
        if cut:
            self.on_token(self.first_row + index, held[:cut])
        draw.held = held[cut:]

    @property
    def settled(self) -> bool:
        """A row was capped and every other one is over: nothing more to read."""
        return any(d.capped for d in self.draws) and all(d.ended for d in self.draws)

    def finished(self, done: bool) -> list[Draw]:
        """The rows, once the stream is over; `done`: it ended with [DONE].

        Without [DONE] (`transformers serve` sends none) every row the stream
        carried must have its finish reason; rows it never carried are
        choices the server did not give."""
        came = [d for d in self.draws if d.came]
        for index, draw in enumerate(self.draws):
            self._stream(draw, index, "", flush=True)
        if not done and (not came or not all(d.ended for d in came)):
            if not self.seen:
                raise BackendError(BACKEND_ERROR, f"The server at {self.host} answered "
                                   "without a stream of events; rlchat asks for one "
                                   "(stream: true).")
            raise BackendError(BACKEND_UNREACHABLE, f"The server at {self.host} ended its "
                               "stream before the replies were finished; nothing was kept. "
                               "Send again.")
        return self.draws


def assemble(chunks: Iterable[bytes], assembly: Assembly) -> list[Draw]:
    """Read events from a byte stream into `assembly` until [DONE], its end,
    or until every row is over with one capped."""
    for event in events(chunks, assembly.host):
        if event is DONE:
            return assembly.finished(True)
        assembly.add(event)
        if assembly.settled:
            return assembly.finished(True)
    return assembly.finished(False)


def stream_assembly(
    client: ServerClient,
    path: str,
    body: dict[str, Any],
    rows: int,
    *,
    first_row: int = 0,
    on_token: TokenCallback | None = None,
    cancel: threading.Event | None = None,
) -> Assembly:
    """One streamed request read whole; `rows` is how many samples it asked for."""
    assembly = Assembly(rows, int(body.get("max_tokens") or 1), client.host,
                        first_row=first_row, on_token=on_token, mask=client.mask,
                        hold=max(0, len(client.key()) - 1))
    with client.stream(path, {**body, "stream": True}, cancel) as chunks:
        assemble(chunks, assembly)
    return assembly


def stream_draws(client: ServerClient, path: str, body: dict[str, Any], rows: int,
                 **options: Any) -> list[Draw]:
    """The samples of one streamed request (options as stream_assembly's)."""
    return stream_assembly(client, path, body, rows, **options).draws
