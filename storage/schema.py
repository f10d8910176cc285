"""Schema versions of the data files, and the numbered steps that upgrade them.

Every file holds its version in its `meta` table.  A file older than
SCHEMA_VERSION is upgraded step by step when the writer opens it: UPGRADES[n]
turns the raw data of version n into version n + 1 (plain dicts, as TinyDB
stores them).  Add a step and bump SCHEMA_VERSION together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 2
META = "meta"

Step = Callable[[dict[str, Any]], dict[str, Any]]


def _attachments(data: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: records may point at an attachment (shards.py); a version-1
    file has none, so its data stays as it is.  The new number keeps an
    rlchat that cannot read attachments from opening a log that has them."""
    return data


UPGRADES: dict[int, Step] = {1: _attachments}


def version_of(data: dict[str, Any] | None) -> int:
    """The schema version of raw file data (0 when it has none)."""
    meta = (data or {}).get(META, {}).get("1")
    return int(meta["schema"]) if meta and "schema" in meta else 0


def stamp(data: dict[str, Any], version: int | None = None) -> dict[str, Any]:
    data[META] = {"1": {"schema": SCHEMA_VERSION if version is None else version}}
    return data


def upgrade(data: dict[str, Any], target: int | None = None) -> dict[str, Any]:
    """Raw data brought from its version to `target` (default: current) by the steps."""
    target = SCHEMA_VERSION if target is None else target
    version = version_of(data)
    if version > target:
        raise ValueError(f"written by a newer rlchat (schema {version} > {target})")
    if version == 0:  # a file from before versions were recorded is version 1
        version = 1
    while version < target:
        data = UPGRADES[version](data)
        version += 1
    return stamp(data, target)
