"""Search over past chats: which turns' message and reply hold all the words.

The index keeps one case-folded text per turn (its message, and the reply
that continued the conversation once there is one), in turn order.  A query
is its words; a turn matches when every word is in its text, so typing more
narrows the result.  A scan of 100k short texts is a few tens of milliseconds,
so there is no inverted index to keep in step.

It is built once from the stored turns (their texts only, not their
features), kept up to date by the agent as turns are stored, answered and
deleted, and saved at a clean exit as a cache that the next start loads
instead of reading every turn again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Hit:
    """A session with a turn that matches: the newest such turn."""

    session: str
    turn: str


def searchable(message: str, reply: str | None) -> str:
    """What a turn offers to search: its message and its reply, case-folded."""
    return f"{message}\n{reply or ''}".casefold()


def record_text(record: dict[str, Any]) -> str:
    """`searchable` of a stored turn's record, read without its features."""
    reply = None
    if record.get("status") == "chosen" and record.get("choice") is not None:
        reply = record.get("edit")
        if reply is None:
            reply = record["candidates"][record["choice"]]["text"]
    elif record.get("status") == "replied":
        reply = record.get("own_reply")
    return searchable(record.get("user_text", ""), reply)


def words(query: str) -> list[str]:
    return query.casefold().split()


class SearchIndex:
    def __init__(self, last_seq: int = 0) -> None:
        self.texts: dict[int, tuple[str, str]] = {}  # seq -> (session, folded text)
        self.last_seq = last_seq  # the newest turn it has seen
        self.changed = False  # since it was loaded or saved

    @classmethod
    def build(cls, records: Iterable[dict[str, Any]],
              progress: Callable[[int], None] | None = None,
              start: SearchIndex | None = None) -> SearchIndex:
        """An index of these stored turns, added to `start` (a cache) if given."""
        index = start or cls()
        for count, record in enumerate(records, start=1):
            index.put(record["seq"], record["session"], record_text(record))
            if progress and count % 5000 == 0:
                progress(count)
        return index

    def put(self, seq: int, session: str, text: str) -> None:
        self.texts[seq] = (session, text)
        self.last_seq = max(self.last_seq, seq)
        self.changed = True

    def drop_session(self, session: str) -> None:
        for seq in [seq for seq, (owner, _) in self.texts.items() if owner == session]:
            del self.texts[seq]
        self.changed = True

    def search(self, query: str, limit: int | None = None) -> list[Hit]:
        """Sessions with a turn that holds every word of `query`, the one
        with the newest match first; at most `limit` of them (the scan
        stops there, newest turns first: a common word costs no full scan)."""
        wanted = words(query)
        if not wanted:
            return []
        first, rest = wanted[0], wanted[1:]
        hits: dict[str, Hit] = {}
        for seq, (session, text) in reversed(self.texts.items()):
            if session not in hits and first in text and all(w in text for w in rest):
                hits[session] = Hit(session, str(seq))
                if len(hits) == limit:
                    break
        return list(hits.values())

    def position(self, turn: str) -> int:
        """The 0-based place of a turn among its session's turns."""
        seq = int(turn)
        session = self.texts[seq][0]
        return sum(1 for other, (owner, _) in self.texts.items() if owner == session
                   and other < seq)

    # the cache --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "last_seq": self.last_seq,
                "turns": [[seq, session, text] for seq, (session, text) in self.texts.items()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SearchIndex | None:
        """The cached index, or None if there is none this version reads."""
        if not data or data.get("format") != CACHE_FORMAT:
            return None
        try:
            index = cls(int(data["last_seq"]))
            index.texts = {int(seq): (str(session), str(text))
                           for seq, session, text in data["turns"]}
        except (KeyError, TypeError, ValueError):
            return None
        return index
