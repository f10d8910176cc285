"""Where rlchat keeps its data."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "RLCHAT_DATA_DIR"


def default_data_dir() -> Path:
    """The data dir: $RLCHAT_DATA_DIR if set, else platformdirs' user data dir."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("rlchat", appauthor=False))

CACHE_DIR_ENV = "RLCHAT_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where rlchat keeps what it can make again (GGUF files converted, the
    packaged model fetched): $RLCHAT_CACHE_DIR if set, else platformdirs'
    user cache dir.  Shared by every data dir of this user."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rlchat", appauthor=False))
