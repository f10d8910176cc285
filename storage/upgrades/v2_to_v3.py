"""Version 2 -> 3: policy snapshots learned before the population prior
(releases up to 0.3) started every column from the ridge; they say so
(`population` null) and go on as they learned.  Turns are unchanged.
Pure Python: storage imports nothing heavy.
"""

from __future__ import annotations

from typing import Any


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    for table, records in data.items():
        if not isinstance(records, dict) or table == "meta":
            continue
        for record in records.values():
            if isinstance(record, dict) and "config" in record and "A" in record:
                record.setdefault("population", None)
    return data
