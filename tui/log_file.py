"""The data dir's log file, rlchat.log: where the app and `rlchat train` put
what the terminal has no room for (tracebacks included)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOG_NAME = "rlchat.log"


def log_to_data_dir(data_dir: Path) -> Path:
    """Send this process's log records to DATA/rlchat.log, private (0600)
    like every other file there; returns its path."""
    log_file = data_dir / LOG_NAME
    os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(log_file, 0o600)  # one written by an older rlchat was 0644
    root = logging.getLogger()
    # A handler of its own rather than basicConfig, which does nothing where
    # the process already logs somewhere (a test runner, an embedding program).
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file.resolve()
               for h in root.handlers):
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return log_file
