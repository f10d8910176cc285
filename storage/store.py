"""The data dir: sessions, turns and the policy, each in its own TinyDB file.

Records go in and come out as plain JSON dicts; the learner converts them to
its dataclasses.  Returned dicts share structure with TinyDB's cache, so
callers treat them as read-only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from storage.atomic import AtomicJSONStorage, CorruptFileError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILES = ("sessions", "turns", "policy")


def _quarantine(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, target)
    return target


class Store:
    """All of rlchat's durable state in one data dir."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.warnings: list[str] = []
        self._dbs: dict[str, TinyDB] = {name: self._open(name) for name in FILES}

    def _open(self, name: str) -> TinyDB:
        path = self.data_dir / f"{name}.json"
        db = TinyDB(path, storage=AtomicJSONStorage)
        try:
            meta = db.table("meta")
            if not meta.contains(doc_id=1):
                meta.insert(Document({"schema": SCHEMA_VERSION}, doc_id=1))
        except CorruptFileError:
            db.close()
            moved = _quarantine(path)
            message = f"{path.name} was damaged and has been moved aside to {moved.name}."
            log.warning(message)
            self.warnings.append(message)
            db = TinyDB(path, storage=AtomicJSONStorage)
            db.table("meta").insert(Document({"schema": SCHEMA_VERSION}, doc_id=1))
        return db

    def _table(self, name: str) -> Table:
        return self._dbs[name].table(name)

    def schema_version(self, name: str) -> int:
        meta = self._dbs[name].table("meta").get(doc_id=1)
        return int(meta["schema"]) if meta else 0

    # sessions -------------------------------------------------------------
    def new_session(self, title: str = "") -> str:
        table = self._table("sessions")
        seq = _next_seq(table)
        record = {"id": str(seq), "seq": seq, "title": title[:80], "started": time.time(),
                  "ended": None, "turns": 0}
        table.insert(Document(record, doc_id=seq))
        return record["id"]

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        return _get(self._table("sessions"), session_id)

    def update_session(self, session_id: str, **fields: Any) -> None:
        self._table("sessions").update(fields, doc_ids=[int(session_id)])

    def sessions(self) -> list[dict[str, Any]]:
        return sorted(self._table("sessions").all(), key=lambda d: d.doc_id)

    def count_sessions(self) -> int:
        return len(self._table("sessions"))

    # turns ----------------------------------------------------------------
    def add_turn(self, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new turn durably; it gets the next sequence number and an id."""
        table = self._table("turns")
        seq = _next_seq(table)
        stored = {**record, "seq": seq, "id": str(seq)}
        table.insert(Document(stored, doc_id=seq))
        return stored

    def update_turn(self, turn_id: str, **fields: Any) -> None:
        self._table("turns").update(fields, doc_ids=[int(turn_id)])

    def get_turn(self, turn_id: str) -> dict[str, Any] | None:
        return _get(self._table("turns"), turn_id)

    def turns(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Turns in the order they were taken, optionally only those after a seq."""
        docs = self._table("turns").all()
        for doc in sorted(docs, key=lambda d: d.doc_id):
            if doc.doc_id > after_seq:
                yield doc

    def count_turns(self) -> int:
        return len(self._table("turns"))

    # policy ---------------------------------------------------------------
    def load_policy(self) -> dict[str, Any] | None:
        return self._table("policy").get(doc_id=1)

    def save_policy(self, snapshot: dict[str, Any]) -> None:
        table = self._table("policy")
        if table.contains(doc_id=1):
            table.update(snapshot, doc_ids=[1])
        else:
            table.insert(Document(snapshot, doc_id=1))

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


def _next_seq(table: Table) -> int:
    ids = [doc.doc_id for doc in table.all()]
    return max(ids, default=0) + 1


def _get(table: Table, record_id: str) -> dict[str, Any] | None:
    try:
        doc_id = int(record_id)
    except (TypeError, ValueError):
        return None
    return table.get(doc_id=doc_id)
