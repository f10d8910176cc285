"""Storage faults in words: what went wrong on disk, a stable code, and the fix.

The front ends show `message` (a notice in the app, an error object in
headless); programs match on `code`.
"""

from __future__ import annotations

import errno
from pathlib import Path

# errno -> (code, what happened, what to do)
_KINDS = {
    errno.ENOSPC: ("storage_full", "The disk is full", "free some space and try again"),
    errno.EDQUOT: ("storage_full", "The disk quota is used up", "free some space and try again"),
    errno.EROFS: ("storage_readonly", "The data folder is on a read-only file system",
                  "pass --data-dir DIR to use a writable folder"),
    errno.EACCES: ("storage_denied", "rlchat may not write to the data folder",
                   "check its permissions or pass --data-dir DIR"),
    errno.EPERM: ("storage_denied", "rlchat may not write to the data folder",
                  "check its permissions or pass --data-dir DIR"),
}


class StorageFault(Exception):
    """A write to the data dir failed; nothing that was acknowledged is lost."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_os_error(cls, exc: OSError, data_dir: Path) -> StorageFault:
        code, what, fix = _KINDS.get(
            exc.errno or 0, ("storage_error", "Writing to the data folder failed", "try again")
        )
        reason = exc.strerror or str(exc)
        return cls(code, f"{what} ({data_dir}: {reason}); this step was not saved, "
                         f"everything before it is: {fix}.")
