"""Opening one TinyDB file: atomic storage, schema upgrade, quarantine if damaged."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from rlchat.storage import schema
from rlchat.storage.atomic import AtomicJSONStorage, CorruptFileError

log = logging.getLogger(__name__)

Report = Callable[[str], None]


def quarantine(path: Path) -> Path:
    """Move a damaged file aside as NAME.corrupt-TIMESTAMP; it is kept, not lost."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, target)
    return target


def open_db(path: Path, readonly: bool, report: Report) -> TinyDB:
    """A TinyDB on `path` at the current schema.

    A file that does not parse is moved aside and reported, and an empty one
    takes its place (read-only: it is skipped, in memory, and left alone).
    """
    db = TinyDB(path, storage=AtomicJSONStorage, readonly=readonly)
    try:
        raw = db.storage.read()
    except CorruptFileError as exc:
        db.close()
        if readonly:
            report(f"{path.name} is damaged and was skipped ({exc}).")
            return TinyDB(storage=MemoryStorage)
        moved = quarantine(path)
        report(f"{path.name} was damaged and has been moved aside to {moved.name}.")
        db = TinyDB(path, storage=AtomicJSONStorage)
        raw = None
    version = schema.version_of(raw)
    if version > schema.SCHEMA_VERSION:
        db.close()
        raise CorruptFileError(path, f"written by a newer rlchat (schema {version})")
    if not readonly and (raw is None or version != schema.SCHEMA_VERSION):
        db.storage.write(schema.stamp({}) if raw is None else schema.upgrade(raw))
    return db
