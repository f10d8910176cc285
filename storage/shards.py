"""A table of records with dense sequence numbers, split into bounded files.

TinyDB rewrites a whole file on every change, so one ever-growing file makes
every turn slower than the last.  Here records 1..size live in NAME-000001.json,
the next `size` in NAME-000002.json, and so on: a write touches one small
file, and the cost of a turn stays flat however long the log.

A record may carry one binary attachment (a turn's feature matrix), written
once, appended to NAME-NNNNNN.bin beside its shard and fsynced before the
record that points at it ([offset, length, crc32] under BLOB): the shard's
JSON, rewritten at every change, stays small whatever the attachment's size.
A record comes out with the attachment's bytes under BLOB, or None where
they cannot be read back intact.

NAME.manifest.json lists each shard's size, modification time and record
count as of the last checkpoint.  At open every shard is checked against it
by a stat (thousands of stats cost milliseconds); a shard that differs is
parsed, and one that no longer parses is salvaged (files.py) and the records
it lost are counted in `lost`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document

from rlchat.storage.atomic import write_atomic
from rlchat.storage.files import Report, open_db
from rlchat.storage.schema import stamp

TABLE = "records"
BLOB = "blob"
OPEN_SHARDS = 4  # bounded memory: each open shard caches its parsed file


class ShardedTable:
    def __init__(self, folder: Path, name: str, size: int, readonly: bool, report: Report) -> None:
        self.folder, self.name, self.size = folder, name, size
        self.readonly, self.report = readonly, report
        self._open: OrderedDict[int, TinyDB] = OrderedDict()
        if not readonly:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.last_seq = 0
        self.lost = 0  # records that damaged shards lost (salvage kept the rest)
        self._manifest_path = folder / f"{name}.manifest.json"
        self._manifest: dict[str, list[int]] = {}
        self._dirty: set[int] = set()  # shards changed since the manifest was written
        self._verify()
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

    def _verify(self) -> None:
        """Parse every shard the manifest does not vouch for (see above)."""
        adopt = not self._manifest_path.exists()
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError):
            self._manifest = dict(json.loads(self._manifest_path.read_bytes())["shards"])
        shards = self._shards()
        for shard in shards:
            entry = self._manifest.get(str(shard))
            if adopt and shard != shards[-1]:
                # A log from before manifests: its files are taken as they are
                # (parsing every file of a long log would hold up the start); checks
                # start from here.  The newest is parsed, as at every start.
                with contextlib.suppress(OSError):
                    st = (self.folder / f"{self.name}-{shard:06d}.json").stat()
                    self._manifest[str(shard)] = [st.st_size, st.st_mtime_ns, -1]
                    self._dirty.add(shard)
                continue
            try:
                st = (self.folder / f"{self.name}-{shard:06d}.json").stat()
            except OSError:
                continue
            if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
                continue
            db = self._db(shard)
            self._dirty.add(shard)
            if db.salvaged is not None:
                first = (shard - 1) * self.size + 1
                present = {doc.doc_id for doc in db.table(TABLE).all()}
                expected = entry[2] if entry and entry[2] >= 0 else len(
                    [s for s in range(first, max(present, default=first - 1) + 1)
                     if s not in present]) + len(present)
                self.lost += max(0, expected - len(present))
        if not self.readonly and self._dirty:
            self.save_manifest()

    def save_manifest(self) -> None:
        """Vouch for the shards changed since the last manifest (a checkpoint)."""
        if self.readonly or not self._dirty:
            return
        for shard in sorted(self._dirty):
            path = self.folder / f"{self.name}-{shard:06d}.json"
            try:
                st = path.stat()
            except OSError:
                self._manifest.pop(str(shard), None)
                continue
            known = self._manifest.get(str(shard))
            if known and known[:2] == [st.st_size, st.st_mtime_ns]:
                continue  # adopted or unchanged: no need to open it
            count = len(self._db(shard).table(TABLE))
            self._manifest[str(shard)] = [st.st_size, st.st_mtime_ns, count]
        write_atomic(self._manifest_path, json.dumps(stamp({"shards": self._manifest})))
        self._dirty.clear()

    def _blob_path(self, shard: int) -> Path:
        return self.folder / f"{self.name}-{shard:06d}.bin"

    def insert(self, record: dict[str, Any], blob: bytes = b"") -> int:
        seq = self.last_seq + 1
        shard = self._shard_of(seq)
        if blob:
            record = {**record, BLOB: self._append(shard, blob)}
        self._db(shard).table(TABLE).insert(Document(record, doc_id=seq))
        self._dirty.add(shard)
        self.last_seq = seq
        return seq

    def _append(self, shard: int, blob: bytes) -> list[int]:
        """Append an attachment durably; its [offset, length, crc32]."""
        fd = os.open(self._blob_path(shard), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            offset = os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, blob)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return [offset, len(blob), zlib.crc32(blob)]

    def _attach(self, shard: int, docs: list[Document]) -> list[dict[str, Any]]:
        """The records with their attachments' bytes (None where damaged)."""
        refs = [doc.get(BLOB) for doc in docs]
        if not any(refs):
            return list(docs)
        try:
            data = self._blob_path(shard).read_bytes()
        except OSError:
            data = b""
        out = []
        for doc, ref in zip(docs, refs, strict=True):
            if ref:
                offset, length, crc = ref
                blob = data[offset:offset + length]
                intact = len(blob) == length and zlib.crc32(blob) == crc
                doc = Document({**doc, BLOB: blob if intact else None}, doc_id=doc.doc_id)
            out.append(doc)
        return out

    def update(self, seq: int, fields: dict[str, Any]) -> None:
        self._db(self._shard_of(seq)).table(TABLE).update(fields, doc_ids=[seq])
        self._dirty.add(self._shard_of(seq))

    def remove(self, seqs: list[int]) -> None:
        """Delete records, their attachments' bytes overwritten with zeros;
        their numbers are not handed out again."""
        by_shard: dict[int, list[int]] = {}
        for seq in seqs:
            by_shard.setdefault(self._shard_of(seq), []).append(seq)
        for shard, ids in sorted(by_shard.items()):
            table = self._db(shard).table(TABLE)
            spans = [doc[BLOB] for doc in (table.get(doc_id=i) for i in ids)
                     if doc is not None and doc.get(BLOB)]
            if spans:
                self._erase(shard, spans)
            table.remove(doc_ids=ids)
            self._dirty.add(shard)

    def _erase(self, shard: int, spans: list[list[int]]) -> None:
        try:
            fd = os.open(self._blob_path(shard), os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            for offset, length, _ in spans:
                os.pwrite(fd, bytes(length), offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, seq: int) -> dict[str, Any] | None:
        if not 1 <= seq <= self.last_seq:
            return None
        doc = self._db(self._shard_of(seq)).table(TABLE).get(doc_id=seq)
        return None if doc is None else self._attach(self._shard_of(seq), [doc])[0]

    def iter(self, after_seq: int = 0, attachments: bool = True) -> Iterator[dict[str, Any]]:
        """Records in sequence order, optionally only those after `after_seq`;
        without `attachments`, as stored (BLOB holds the reference)."""
        for shard in self._shards():
            if shard * self.size <= after_seq:
                continue
            docs = sorted((d for d in self._db(shard).table(TABLE).all() if d.doc_id > after_seq),
                          key=lambda d: d.doc_id)
            yield from self._attach(shard, docs) if attachments else docs

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.save_manifest()
        for db in self._open.values():
            db.close()
        self._open.clear()
