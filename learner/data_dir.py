"""Opening the data dir for the front ends, which reach storage only through
the learner (tests/test_one_door.py holds it).  Light: no numpy, no torch,
so the app still paints before the learner is imported."""

from __future__ import annotations

from pathlib import Path

from rlchat.storage import CorruptFileError, DataDirInUse, Store
from rlchat.storage.paths import DATA_DIR_ENV, default_data_dir

__all__ = ["DATA_DIR_ENV", "StoreUnavailable", "default_data_dir", "open_store"]


class StoreUnavailable(Exception):
    """The data dir cannot be opened: another rlchat writes it, a file of it
    cannot be read, or the disk refuses; the message says which."""


def open_store(data_dir: Path, *, readonly: bool = False) -> Store:
    """The data dir's store (a reader beside a running app, else the writer)."""
    try:
        return Store(data_dir, readonly=readonly)
    except (DataDirInUse, CorruptFileError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
