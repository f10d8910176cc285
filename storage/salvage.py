"""The complete records of a data file that no longer parses.

A file cut short (a disk that filled, a copy that stopped) still holds every
record before the cut whole.  This reads a TinyDB file's tables record by
record and keeps each one that decodes, stopping at the first that does not.
"""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n,"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _key(text: str, pos: int) -> tuple[str, int]:
    """A quoted key and the position after its colon."""
    key, pos = _DECODER.raw_decode(text, pos)
    pos = _skip(text, pos)
    if not isinstance(key, str) or text[pos:pos + 1] != ":":
        raise ValueError("not a key")
    return key, _skip(text, pos + 1)


def salvage(raw: bytes) -> dict[str, dict[str, Any]]:
    """{table: {id: record}} of every record that decodes whole, in order
    until the first damage."""
    text = raw.decode("utf-8", errors="replace")
    tables: dict[str, dict[str, Any]] = {}
    pos = _skip(text, text.find("{") + 1) if "{" in text else len(text)
    try:
        while pos < len(text) and text[pos] != "}":
            name, pos = _key(text, pos)
            if text[pos:pos + 1] != "{":
                raise ValueError("a table is not an object")
            table = tables.setdefault(name, {})
            pos = _skip(text, pos + 1)
            while pos < len(text) and text[pos] != "}":
                record_id, pos = _key(text, pos)
                record, pos = _DECODER.raw_decode(text, pos)
                if isinstance(record, dict):
                    table[record_id] = record
                pos = _skip(text, pos)
            pos = _skip(text, pos + 1)
    except (ValueError, IndexError):
        pass  # the damage: what came before it is kept
    return tables
