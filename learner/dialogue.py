"""The plain-text dialogue format the language model continues.

    User: hello
    Assistant: hi, how can I help?
    User: <message>
    Assistant:

One turn per line, so a reply ends at the first line break (the next turn
marker).  Kept free of torch so it can be tested and reused anywhere.
"""

from __future__ import annotations

import re

USER, ASSISTANT = "User:", "Assistant:"
MARKERS = (USER, ASSISTANT)
_SPACE = re.compile(r"\s+")
# Control characters other than tab and newline (C0, DEL, C1): dropped from
# what the model sees, made visible in what the terminal shows (tui/literal.py).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def valid_unicode(text: str) -> str:
    """Text with lone surrogates (possible from JSON input) replaced by "?"."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def one_line(text: str) -> str:
    """A message as it appears in the prompt: control characters dropped,
    whitespace (line breaks included) collapsed to single spaces."""
    return _SPACE.sub(" ", CONTROL.sub("", text)).strip()


def exchange_block(user: str, reply: str) -> str:
    """One past exchange as prompt text, with the line break that ends it: the
    prompt is these blocks one after another, then `message_block`."""
    return f"{USER} {one_line(user)}\n{ASSISTANT} {one_line(reply)}\n"


def message_block(message: str) -> str:
    """The user's new message and the open assistant marker the model continues."""
    return f"{USER} {one_line(message)}\n{ASSISTANT}"


def cut_reply(text: str) -> str:
    """A sampled continuation cut at the end of its turn and stripped."""
    text = text.split("\n", 1)[0]
    for marker in MARKERS:
        index = text.find(marker)
        if index >= 0:
            text = text[:index]
    return text.strip()


def unique_nonempty(texts: list[str]) -> list[int]:
    """Indices of the first occurrence of every non-empty text."""
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(texts):
        if text and text not in seen:
            seen.add(text)
            keep.append(i)
    return keep
