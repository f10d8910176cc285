"""A table of records with dense sequence numbers, split into bounded files.

TinyDB rewrites a whole file on every change, so one ever-growing file makes
every turn slower than the last.  Here records 1..size live in NAME-000001.json,
the next `size` in NAME-000002.json, and so on: a write touches one small
file, and the cost of a turn stays flat however long the log.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document

from rlchat.storage.files import Report, open_db

TABLE = "records"
OPEN_SHARDS = 4  # bounded memory: each open shard caches its parsed file


class ShardedTable:
    def __init__(self, folder: Path, name: str, size: int, readonly: bool, report: Report) -> None:
        self.folder, self.name, self.size = folder, name, size
        self.readonly, self.report = readonly, report
        self._open: OrderedDict[int, TinyDB] = OrderedDict()
        if not readonly:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.last_seq = 0
        shards = self._shards()
        if shards:
            newest = shards[-1]
            ids = [doc.doc_id for doc in self._db(newest).table(TABLE).all()]
            self.last_seq = max(ids, default=(newest - 1) * size)

    def _shards(self) -> list[int]:
        pattern = re.compile(rf"{re.escape(self.name)}-(\d{{6}})\.json")
        if not self.folder.is_dir():
            return []
        found = (pattern.fullmatch(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _db(self, shard: int) -> TinyDB:
        db = self._open.pop(shard, None)
        if db is None:
            path = self.folder / f"{self.name}-{shard:06d}.json"
            db = open_db(path, self.readonly, self.report)
        self._open[shard] = db
        while len(self._open) > OPEN_SHARDS:
            _, old = self._open.popitem(last=False)
            old.close()
        return db

    def _shard_of(self, seq: int) -> int:
        return (seq - 1) // self.size + 1

    def reserve(self, seq: int) -> None:
        """Never hand out sequence numbers up to `seq` (they were used before)."""
        self.last_seq = max(self.last_seq, seq)

    def insert(self, record: dict[str, Any]) -> int:
        seq = self.last_seq + 1
        self._db(self._shard_of(seq)).table(TABLE).insert(Document(record, doc_id=seq))
        self.last_seq = seq
        return seq

    def update(self, seq: int, fields: dict[str, Any]) -> None:
        self._db(self._shard_of(seq)).table(TABLE).update(fields, doc_ids=[seq])

    def remove(self, seqs: list[int]) -> None:
        """Delete records; their numbers are not handed out again."""
        by_shard: dict[int, list[int]] = {}
        for seq in seqs:
            by_shard.setdefault(self._shard_of(seq), []).append(seq)
        for shard, ids in sorted(by_shard.items()):
            self._db(shard).table(TABLE).remove(doc_ids=ids)

    def get(self, seq: int) -> dict[str, Any] | None:
        if not 1 <= seq <= self.last_seq:
            return None
        return self._db(self._shard_of(seq)).table(TABLE).get(doc_id=seq)

    def iter(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Records in sequence order, optionally only those after `after_seq`."""
        for shard in self._shards():
            if shard * self.size <= after_seq:
                continue
            docs = self._db(shard).table(TABLE).all()
            for doc in sorted(docs, key=lambda d: d.doc_id):
                if doc.doc_id > after_seq:
                    yield doc

    def close(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()
