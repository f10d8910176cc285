"""Schema versions of the data files.

Every file holds its version in its `meta` table.  A file older than
SCHEMA_VERSION is brought up to it by the numbered steps in
storage/upgrades/: on disk when the writer opens it, in memory for a reader.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 3
META = "meta"

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
    from rlchat.storage.upgrades import UPGRADES

    while version < target:
        data = UPGRADES[version](data)
        version += 1
    return stamp(data, target)
