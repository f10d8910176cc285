"""A TinyDB storage that never leaves a half-written file behind.

TinyDB's JSONStorage rewrites its file in place (seek, dump, truncate): a
process killed in between leaves a file that no longer parses.  Here every
write goes to a temp file in the same folder, is fsynced and then renamed
over the old file, so a reader sees the old state or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

TEMP_SUFFIX = ".tmp"


class CorruptFileError(Exception):
    """A database file exists but does not hold valid JSON."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} does not parse ({reason})")
        self.path = path


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, chunks: str | Iterable[str], *, temp_prefix: str | None = None
) -> None:
    """Write text so that `path` holds the old content or the new, never a mix:
    a temp file in the same folder (0600), fsynced, renamed over `path`, and the
    rename made durable.  `chunks` may be a generator (an export streams)."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=temp_prefix or f".{path.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in [chunks] if isinstance(chunks, str) else chunks:
                f.write(chunk)
            f.flush()
            os.fdatasync(f.fileno())  # the data and its size: all a rename needs
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class AtomicJSONStorage(Storage):
    """JSON storage with atomic, durable writes (temp file + fsync + rename).

    The parsed file is cached and reused while the file on disk is unchanged
    (same inode, size and mtime), because TinyDB reads the whole storage on
    every operation.
    """

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False, **_: Any) -> None:
        super().__init__()
        self.path = Path(path)
        self.readonly = readonly
        self._cache: dict[str, Any] | None = None
        self._stamp: tuple[int, int, int] | None = None
        if not readonly:
            # Only the writer (who holds the data dir's lock) may clean: a
            # reader could otherwise delete the writer's temp file mid-write.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._remove_leftover_temps()

    def _temp_prefix(self) -> str:
        return f".{self.path.name}."

    def _remove_leftover_temps(self) -> None:
        # A temp file can only survive a crash before its rename: it never
        # holds the committed state, so dropping it loses nothing.
        for leftover in self.path.parent.glob(f"{self._temp_prefix()}*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def read(self) -> dict[str, Any] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cache = self._stamp = None
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cache is not None and stamp == self._stamp:
            return self._cache
        raw = self.path.read_bytes()
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(self.path, str(exc)) from exc
        if not isinstance(data, dict):
            raise CorruptFileError(self.path, "top level is not an object")
        self._cache, self._stamp = data, stamp
        return data

    def write(self, data: dict[str, Any]) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only")
        # TinyDB mutates the dict that read() returned before calling write();
        # if the write fails the cache no longer matches the disk, so drop it.
        self._cache = self._stamp = None
        # One dumps (the C encoder; json.dump streams through the Python one,
        # several times slower).  ASCII escapes keep any Python string
        # storable, lone surrogates too.
        write_atomic(self.path, json.dumps(data, separators=(",", ":")),
                     temp_prefix=self._temp_prefix())
        st = os.stat(self.path)
        self._cache, self._stamp = data, (st.st_ino, st.st_size, st.st_mtime_ns)

    def close(self) -> None:
        self._cache = self._stamp = None
