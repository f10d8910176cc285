"""One writer per data dir: an exclusive lock held for the life of the process."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = ".lock"
PID_NAME = ".lock.pid"


class DataDirInUse(Exception):
    """Another process holds the data dir; the message says which."""


def acquire(data_dir: Path) -> FileLock:
    """Take the data dir's lock now or raise DataDirInUse, naming the holder.

    The lock is an OS-level file lock: it is released when its process
    exits, however it exits (a SIGKILL too).
    """
    lock = FileLock(data_dir / LOCK_NAME, mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = holder_pid(data_dir)
        who = f"process {holder}" if holder else "another process"
        raise DataDirInUse(
            f"The rlchat data in {data_dir} is in use by {who}; close that rlchat first, "
            f"or pass --data-dir DIR to use another folder."
        ) from None
    pid_file = data_dir / PID_NAME
    fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return lock


def holder_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
