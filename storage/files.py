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
from rlchat.storage.salvage import salvage

log = logging.getLogger(__name__)

Report = Callable[[str], None]


def quarantine(path: Path) -> Path:
    """Move a damaged file aside as NAME.corrupt-TIMESTAMP; it is kept, not lost."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, target)
    return target


def open_db(path: Path, readonly: bool, report: Report) -> TinyDB:
    """A TinyDB on `path` at the current schema.

    A file that does not parse is reported, and the complete records in it
    are salvaged (salvage.py): the writer moves the file aside and writes
    them to a fresh one in its place; a reader reads them in memory and
    leaves the file alone.  `db.salvaged` is then how many records came
    back (None for a file that parsed).
    """
    db = TinyDB(path, storage=AtomicJSONStorage, readonly=readonly)
    db.salvaged = None
    try:
        raw = db.storage.read()
    except CorruptFileError as exc:
        db.close()
        kept = salvage(path.read_bytes())
        count = sum(len(t) for name, t in kept.items() if name != schema.META)
        if readonly:
            report(f"{path.name} is damaged ({exc}); {count} complete records were read "
                   "from it.")
            db = TinyDB(storage=MemoryStorage)
            db.storage.write(kept)
            db.salvaged = count
            return db
        moved = quarantine(path)
        report(f"{path.name} was damaged: moved aside to {moved.name}, and the {count} "
               "complete records in it were saved to a fresh file.")
        db = TinyDB(path, storage=AtomicJSONStorage)
        raw = kept
        db.salvaged = count
    version = schema.version_of(raw)
    if version > schema.SCHEMA_VERSION:
        db.close()
        raise CorruptFileError(path, f"written by a newer rlchat (schema {version})")
    if not readonly and (raw is None or version != schema.SCHEMA_VERSION
                         or db.salvaged is not None):
        db.storage.write(schema.stamp({}) if raw is None else schema.upgrade(raw))
    elif readonly and raw is not None and version < schema.SCHEMA_VERSION:
        # A reader writes nothing: it reads the file upgraded, in memory.
        salvaged = db.salvaged
        db.close()
        db = TinyDB(storage=MemoryStorage)
        db.storage.write(schema.upgrade(raw))
        db.salvaged = salvaged
    return db
