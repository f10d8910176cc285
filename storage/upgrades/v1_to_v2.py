"""Version 1 -> 2: the files rlchat wrote before features were stored as
bytes (releases 0.1 to 0.3; see CHANGELOG.md), in today's form.

- A turn's `shown` is `shown_count` (0.1 named it so).
- A policy snapshot's learner settings: `temperature` is `temperature_floor`
  (0.1 named it so), and a snapshot that predates `relevance` has it off, so
  that the policy goes on as it learned.  Its prior precisions, where it has
  none, are the ridge for every column (what it learned with); its matrices,
  where stored as JSON lists, are packed (base64 of little-endian
  float64, exactly the same numbers); its inverse `P`, where it kept none,
  is null: the policy inverts it when it loads.  Fields added since it was
  written get the values that mean "none yet".

Records may point at an attachment from version 2 on; a version-1 file has
none.  Pure Python: storage imports nothing heavy.
"""

from __future__ import annotations

import base64
import struct
from typing import Any


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    for table, records in data.items():
        if not isinstance(records, dict) or table == "meta":
            continue
        for record in records.values():
            if isinstance(record, dict):
                if "user_text" in record:
                    _turn(record)
                elif "config" in record and "A" in record:
                    _policy(record)
    return data


def _turn(record: dict[str, Any]) -> None:
    if "shown" in record:
        record["shown_count"] = record.pop("shown")


def _policy(record: dict[str, Any]) -> None:
    config = record["config"]
    if "temperature" in config:
        config.setdefault("temperature_floor", config.pop("temperature"))
    config.setdefault("relevance", False)
    dim = int(record["dim"])
    record.setdefault("prior", [float(config.get("ridge", 1.0))] * dim)
    record.setdefault("P", None)
    for name, value in (("since_exact", 0), ("generator", None), ("generator_switches", 0),
                        ("column_forgetting", None), ("session", None), ("pending", None)):
        record.setdefault(name, value)
    for name in ("A", "P"):
        if isinstance(record[name], list):
            record[name] = _packed(record[name])


def _packed(rows: list) -> str:
    flat = [float(x) for row in rows for x in (row if isinstance(row, list) else [row])]
    return base64.b64encode(struct.pack(f"<{len(flat)}d", *flat)).decode("ascii")
