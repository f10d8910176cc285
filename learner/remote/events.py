"""Server-sent events from raw bytes, whatever the bytes are.

Servers differ in how they frame a stream (blank lines or none between
events, CRLF or LF, comments, `event:` lines), so each `data:` line is one
event, as every OpenAI-compatible server writes it.  Lines are cut from a
byte buffer that is scanned once (a stream of 30 MB costs its length, in
small pieces or large), one line may not grow past MAX_LINE_BYTES, and
bytes that are not UTF-8 are replaced, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.errors import BACKEND_ERROR, BackendError

MAX_LINE_BYTES = 4 << 20  # one event; a reply capped at max_tokens needs far less
DONE = None  # what `events` yields for the `[DONE]` line, after which it stops


def lines(chunks: Iterable[bytes], host: str) -> Iterator[bytes]:
    """The lines of a byte stream, without their line ends (LF or CRLF)."""
    buffer = bytearray()
    for chunk in chunks:
        start = len(buffer)
        buffer += chunk
        cut = 0
        while True:
            end = buffer.find(b"\n", max(start, cut))
            if end < 0:
                break
            yield bytes(buffer[cut:end]).rstrip(b"\r")
            cut = end + 1
        if cut:
            del buffer[:cut]
        if len(buffer) > MAX_LINE_BYTES:
            raise BackendError(BACKEND_ERROR, f"The server at {host} streamed one event of "
                               f"more than {MAX_LINE_BYTES >> 20} MB; rlchat reads none that "
                               "long.")
    if buffer:
        yield bytes(buffer).rstrip(b"\r")


def events(chunks: Iterable[bytes], host: str) -> Iterator[dict[str, Any] | None]:
    """The JSON object of each `data:` line, then DONE at `[DONE]`.

    BackendError (backend_error) for data that is not a JSON object, and
    for an error object the server sends inside its stream."""
    for line in lines(chunks, host):
        if not line.startswith(b"data:"):
            continue  # comments, `event:` and `id:` lines, blank lines
        data = line[5:].strip()
        if data == b"[DONE]":
            yield DONE
            return
        if not data:
            continue
        yield parse_event(data, host)


def parse_event(data: bytes, host: str) -> dict[str, Any]:
    try:
        event = json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise BackendError(BACKEND_ERROR, f"The server at {host} streamed something that is "
                           "not JSON.") from exc
    if not isinstance(event, dict):
        raise BackendError(BACKEND_ERROR, f"The server at {host} streamed an event that is "
                           "not an object.")
    if event.get("error") is not None:
        error = event["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise BackendError(BACKEND_ERROR, f"The server at {host} reported an error in its "
                           f"stream: {one_line(valid_unicode(str(message)))[:300]}")
    return event
