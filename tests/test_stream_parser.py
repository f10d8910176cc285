"""Property tests of the server-sent event parser: whatever bytes a server
streams, in whatever pieces, rlchat gets rows or one BackendError, never
another exception; the rows are bounded, their log-probs finite, their
text valid Unicode."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlchat.learner.errors import BACKEND_CODES, BackendError
from rlchat.learner.remote.events import lines
from rlchat.learner.remote.streaming import CHARS_PER_TOKEN, Assembly, assemble

EXAMPLES = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 5),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["stop", "length", "\ud800"]))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=8)
logprobs = st.one_of(anything, st.fixed_dictionaries({"content": st.lists(
    st.one_of(anything, st.fixed_dictionaries({"logprob": scalars})), max_size=3)}))
choice = st.fixed_dictionaries(
    {"index": st.one_of(st.integers(-1, 3), scalars)},
    optional={"delta": st.one_of(anything, st.fixed_dictionaries(
        {}, optional={"content": st.one_of(st.text(max_size=20), scalars)})),
        "text": st.one_of(st.text(max_size=20), scalars),
        "finish_reason": st.one_of(st.sampled_from([None, "stop", "length"]), scalars),
        "logprobs": logprobs})
# Mostly well formed, as servers are, so that a field of the wrong type is
# met deep in a stream as often as at its start.
good_choice = st.fixed_dictionaries(
    {"index": st.integers(0, 2), "delta": st.fixed_dictionaries({"content": st.text(
        max_size=20)}), "finish_reason": st.sampled_from([None, None, "stop", "length"])},
    optional={"logprobs": st.fixed_dictionaries({"content": st.lists(
        st.fixed_dictionaries({"logprob": st.floats(-30, 0)}), max_size=2)})})
good_chunk = st.fixed_dictionaries({"choices": st.lists(good_choice, min_size=1, max_size=3)})
FIELDS = ("choices", "choice", "index", "delta", "content", "finish_reason", "logprobs",
          "logprobs.content", "logprob", "error")


def spoil(chunk: dict, field: str, value) -> dict:
    """A well-formed chunk with one field of any type."""
    first = chunk["choices"][0]
    first.setdefault("logprobs", {"content": [{"logprob": -1.0}]})
    if field == "choices":
        chunk["choices"] = value
    elif field == "choice":
        chunk["choices"][0] = value
    elif field == "content":
        first["delta"]["content"] = value
    elif field == "logprobs.content":
        first["logprobs"]["content"] = value
    elif field == "logprob":
        first["logprobs"]["content"] = [{"logprob": value}]
    elif field == "error":
        chunk["error"] = value
    else:
        first[field] = value
    return chunk


spoiled_chunk = st.builds(spoil, good_chunk, st.sampled_from(FIELDS), anything)
chunk = st.one_of(
    good_chunk, good_chunk, spoiled_chunk, spoiled_chunk,
    st.fixed_dictionaries({"choices": st.lists(st.one_of(good_choice, choice), max_size=3)}),
    st.fixed_dictionaries({"choices": st.one_of(st.lists(st.one_of(choice, anything),
                                                         max_size=3), anything)},
                          optional={"error": anything, "model": anything}),
    anything)


def as_line(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if value == "[DONE]":
        return b"data: [DONE]"
    return b"data: " + json.dumps(value).encode()


event_lines = st.lists(st.one_of(
    chunk.map(as_line), chunk.map(as_line), chunk.map(as_line), chunk.map(as_line),
    st.just(b"data: [DONE]"), st.just(b""), st.just(b": keep-alive"),
    st.just(b"event: error"), st.binary(max_size=30),
    st.binary(max_size=30).map(lambda raw: b"data: " + raw),
), max_size=16)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@EXAMPLES
@given(event_lines, st.lists(st.integers(0, 10_000), max_size=8), st.integers(3, 4),
       st.integers(1, 6), st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
def test_any_stream_gives_rows_or_backend_error(lines_, cuts, rows, max_tokens, end):
    data = end.join(lines_) + (end if lines_ else b"")
    assembly = Assembly(rows, max_tokens, "test")
    try:
        draws = assemble(iter(pieces(data, cuts)), assembly)
    except BackendError as exc:
        assert exc.code in BACKEND_CODES and exc.message and "\n" not in exc.message
        exc.message.encode("utf-8")  # the server's words too are valid Unicode
        return
    assert len(draws) == rows
    for draw in draws:
        assert draw.chars <= max_tokens * CHARS_PER_TOKEN
        assert draw.pieces <= max_tokens
        draw.text.encode("utf-8")  # strict: no lone surrogate
        assert draw.logprob is None or (math.isfinite(draw.logprob) and draw.logprob <= 0.001)


@EXAMPLES
@given(st.lists(st.binary(max_size=40), max_size=10), st.lists(st.integers(0, 500),
                                                               max_size=8))
def test_lines_are_the_same_in_any_pieces(parts, cuts):
    data = b"\n".join(parts)
    whole = list(lines([data], "test"))
    assert list(lines(pieces(data, cuts), "test")) == whole
    assert whole == [p.rstrip(b"\r") for p in data.split(b"\n")][:len(whole)]


KEY = "sk-live-12345"


@EXAMPLES
@given(st.text("ab k-", max_size=8), st.text("ab k-", max_size=8), st.integers(1, 3),
       st.lists(st.integers(0, 60), max_size=10), st.booleans())
def test_the_key_is_never_streamed_whole_however_it_is_cut(before, after, times, cuts,
                                                            finish):
    """A server that echoes the key, cut into pieces anywhere: what the token
    callback streams never holds it, and adds up to the masked reply."""
    reply = before + (KEY + after) * times
    parts = [p for p in pieces(reply.encode(), cuts) if p]
    shown: list[str] = []
    assembly = Assembly(1, 64, "test", on_token=lambda row, text: shown.append(text),
                        mask=lambda text: text.replace(KEY, "***"), hold=len(KEY) - 1)
    for number, part in enumerate(parts):
        last = finish and number == len(parts) - 1
        assembly.add({"choices": [{"index": 0, "delta": {"content": part.decode()},
                                   "finish_reason": "stop" if last else None}]})
        assert KEY not in "".join(shown)
    assembly.finished(True)
    assert "".join(shown) == reply.replace(KEY, "***")
