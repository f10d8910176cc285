"""The exit statuses of every `rlchat` command (documented in docs/data.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1  # the work could not be done: a write, a training run, an unknown session
    # The model cannot be loaded, an option is wrong (argparse's own 2), or an
    # extra the command needs is not installed.
    UNUSABLE = 2
    IN_USE = 3  # the data dir is held by another rlchat, or cannot be read
    INTERRUPTED = 130  # Ctrl+C, as a shell reports it
