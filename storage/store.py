"""The data dir: sessions, turns and the policy.

    DATA/.lock                        the one writer's lock (and .lock.pid)
    DATA/sessions/sessions-NNNNNN.json  200 sessions a file
    DATA/turns/turns-NNNNNN.json        25 turns a file (a write re-encodes one file)
    DATA/turns/turns-NNNNNN.bin         their feature matrices, appended once each
    DATA/policy.json                  the current policy snapshot
    DATA/search.json                  the words of every turn, for search (a cache:
                                      rebuilt from the turns when absent)

Records go in and come out as plain JSON dicts; the learner converts them to
its dataclasses.  A record's "seq" and "id" come from its document id on the
way out and are not stored in it.  Returned dicts share structure with TinyDB's cache, so
callers treat them as read-only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from tinydb.table import Document

from rlchat.storage.atomic import write_atomic
from rlchat.storage.faults import StorageFault
from rlchat.storage.files import open_db
from rlchat.storage.lock import acquire
from rlchat.storage.schema import SCHEMA_VERSION, stamp, version_of
from rlchat.storage.shards import BLOB, ShardedTable

log = logging.getLogger(__name__)

SEARCH_CACHE = "search.json"
TURNS_PER_FILE = 25
SESSIONS_PER_FILE = 200


P = ParamSpec("P")
R = TypeVar("R")


def _writes(method: Callable[P, R]) -> Callable[P, R]:
    """A failed write (disk full, read-only, denied) comes out as one StorageFault."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            store = args[0]
            assert isinstance(store, Store)
            if store.readonly:  # a caller's mistake, not the disk's
                raise
            raise StorageFault.from_os_error(exc, store.data_dir) from exc

    return wrapper


class Store:
    """All of rlchat's durable state in one data dir.

    The writer (the default) holds the data dir's lock until `close`; a
    second writer gets DataDirInUse.  `readonly=True` takes no lock and
    writes nothing, so export and stats work beside a running chat.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.readonly = readonly
        self.warnings: list[str] = []
        self._unreadable: set[int] = set()
        # Sessions' turn counters not written yet: {session seq: fields}.  They
        # are derived from the turns, so they go to disk with the next write
        # of their session, a checkpoint or close, not once a turn.
        self._counters: dict[int, dict[str, int]] = {}
        self._lock = None
        if not readonly:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock = acquire(self.data_dir)
        self._sessions = ShardedTable(self.data_dir / "sessions", "sessions", SESSIONS_PER_FILE,
                                      readonly, self._warn)
        self._turns = ShardedTable(self.data_dir / "turns", "turns", TURNS_PER_FILE,
                                   readonly, self._warn)
        self._policy = open_db(self.data_dir / "policy.json", readonly, self._warn)

    def _warn(self, message: str) -> None:
        # Every front end shows `warnings` itself (a notice, headless's first
        # answer, stderr): the log only keeps a record.
        log.info(message)
        self.warnings.append(message)

    # sessions -------------------------------------------------------------
    @_writes
    def new_session(self, title: str = "", system: str = "") -> str:
        seq = self._sessions.insert(
            {"title": title[:80], "started": time.time(), "ended": None, "turns": 0,
             "system": system}
        )
        return str(seq)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        seq = _seq(session_id)
        return self._counted(self._sessions.get(seq) if seq else None)

    @_writes
    def update_session(self, session_id: str, **fields: Any) -> None:
        pending = self._counters.pop(int(session_id), {})
        self._sessions.update(int(session_id), {**pending, **fields})

    def count_session_turn(self, session_id: str, seq: int) -> None:
        """Turn `seq` belongs to the session: its count, first and last turn
        (kept in memory until the session is next written; see __init__).
        A turn counted before is not counted again."""
        session = self.get_session(session_id)
        if session is None or seq <= (session.get("last_seq") or 0):
            return
        self._counters[int(session_id)] = {
            "turns": session.get("turns", 0) + 1,
            "first_seq": session.get("first_seq") or seq, "last_seq": seq}

    @_writes
    def flush_sessions(self) -> None:
        """Write the sessions' pending counters."""
        for seq in sorted(self._counters):
            self._sessions.update(seq, self._counters.pop(seq))

    def sessions(self) -> Iterator[dict[str, Any]]:
        """Sessions oldest first, deleted ones left out."""
        for record in self._sessions.iter():
            if not record.get("deleted"):
                yield self._counted(record)

    def _counted(self, doc: Document | None) -> dict[str, Any] | None:
        """A session as stored, with its pending counters."""
        if doc is None:
            return None
        return {**doc, **self._counters.get(doc.doc_id, {}), **_ids(doc.doc_id)}

    @_writes
    def delete_session(self, session_id: str) -> int:
        """Remove a session's turns (their text and feedback); returns how many.

        The session keeps its number, marked deleted, so a new session never
        reuses it; what the policy already learned from the turns stays until
        an offline replay.
        """
        seqs = [turn["seq"] for turn in self.session_turns(session_id)]
        self._turns.remove(seqs)
        self.update_session(session_id, deleted=True, title="", turns=0)
        return len(seqs)

    def session_turns(self, session_id: str) -> Iterator[dict[str, Any]]:
        """A session's turns, read from its first to its last (its index), not all."""
        session = self.get_session(session_id)
        if not session or not session.get("first_seq"):
            return
        for turn in self.turns(after_seq=session["first_seq"] - 1):
            if turn["seq"] > session["last_seq"]:
                return
            if turn.get("session") == session_id:
                yield turn

    def count_sessions(self) -> int:
        return self._sessions.last_seq

    # turns ----------------------------------------------------------------
    @_writes
    def add_turn(self, record: dict[str, Any], blob: bytes = b"") -> dict[str, Any]:
        """Store a new turn durably; it gets the next sequence number and an id.
        `blob`: its bulk (the feature matrix), written once beside the record
        and handed back with it under "blob" (shards.py)."""
        return {**record, **_ids(self._turns.insert(record, blob))}

    @_writes
    def update_turn(self, turn_id: str, **fields: Any) -> None:
        self._turns.update(int(turn_id), fields)

    def get_turn(self, turn_id: str) -> dict[str, Any] | None:
        seq = _seq(turn_id)
        doc = self._turns.get(seq) if seq else None
        return None if doc is None or self._damaged(doc) else _with_ids(doc)

    def turns(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Turns in the order they were taken, optionally only those after a
        seq; a turn whose features cannot be read back is left out and
        counted in `unreadable_turns`."""
        return (_with_ids(doc) for doc in self._turns.iter(after_seq) if not self._damaged(doc))

    def turn_texts(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Turns as `turns` gives them, but without their features: for
        reading texts, at a fraction of the cost."""
        return (_with_ids(doc) for doc in self._turns.iter(after_seq, attachments=False))

    def _damaged(self, doc: Document) -> bool:
        if BLOB in doc and doc[BLOB] is None:
            if doc.doc_id not in self._unreadable:
                self._unreadable.add(doc.doc_id)
                self._warn(f"turn {doc.doc_id}'s features are damaged; it is left out.")
            return True
        return False

    @property
    def unreadable_turns(self) -> int:
        """Turns seen so far that could not be read (damaged files and features)."""
        return len(self._unreadable) + self._turns.lost

    def count_turns(self) -> int:
        return self._turns.last_seq

    def reserve_turns(self, seq: int) -> None:
        """New turns get numbers above `seq` (e.g. the policy has seen up to it)."""
        self._turns.reserve(seq)

    # policy ---------------------------------------------------------------
    def load_policy(self) -> dict[str, Any] | None:
        return self._policy.table("policy").get(doc_id=1)

    @_writes
    def save_policy(self, snapshot: dict[str, Any]) -> None:
        """The policy is a checkpoint: the shards' manifest is brought up to
        date with it (a kill between the two only costs a parse at start)."""
        self._policy.table("policy").upsert(Document(snapshot, doc_id=1))
        self.flush_sessions()
        self._turns.save_manifest()
        self._sessions.save_manifest()

    # search cache ---------------------------------------------------------
    def load_search_cache(self) -> dict[str, Any] | None:
        """The search index as last saved, or None (absent or unreadable:
        it is only a cache)."""
        try:
            data = json.loads((self.data_dir / SEARCH_CACHE).read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and version_of(data) == SCHEMA_VERSION else None

    @_writes
    def save_search_cache(self, data: dict[str, Any]) -> None:
        write_atomic(self.data_dir / SEARCH_CACHE, json.dumps(stamp(dict(data))))

    @_writes
    def drop_search_cache(self) -> None:
        """Deleted texts must not outlive their turns, even in a cache."""
        (self.data_dir / SEARCH_CACHE).unlink(missing_ok=True)

    def close(self) -> None:
        if not self.readonly:
            with contextlib.suppress(OSError):
                self.flush_sessions()
        self._sessions.close()
        self._turns.close()
        self._policy.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _ids(seq: int) -> dict[str, Any]:
    return {"seq": seq, "id": str(seq)}


def _with_ids(doc: Document | None) -> dict[str, Any] | None:
    """A stored record with its sequence number and string id, both taken from
    the one place they live: the record's TinyDB document id."""
    return None if doc is None else {**doc, **_ids(doc.doc_id)}


def _seq(record_id: str) -> int | None:
    try:
        seq = int(record_id)
    except (TypeError, ValueError):
        return None
    return seq if seq > 0 else None
