"""The numbered steps that bring a data file from one schema version to the
next: UPGRADES[n] turns the raw data of version n (plain dicts, as TinyDB
stores them) into version n + 1.  Each step is the one place that knows what
files of its version may hold; the records' `from_dict` methods read only
today's form.  Add a step and bump schema.SCHEMA_VERSION together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlchat.storage.upgrades import v1_to_v2, v2_to_v3

Step = Callable[[dict[str, Any]], dict[str, Any]]

UPGRADES: dict[int, Step] = {1: v1_to_v2.upgrade, 2: v2_to_v3.upgrade}
