"""The LoRA adapters `rlchat train --adapter` wrote into DATA/models/, and
which one the chat uses.

An adapter run is a folder DATA/models/<run>/ holding a PEFT adapter
(adapter_config.json) and the lineage rlchat train writes.  The one in use
is named in DATA/models/in_use.json, written whole or not at all, so the
chat, `rlchat adapters use` and a restart agree on it.  No torch here:
`rlchat adapters list` reads only JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlchat.storage.atomic import write_atomic

# An adapter is used only where its held-out preference accuracy beats
# chance (0.5) by this much, on at least MIN_HELD_OUT held-out rows: below
# that, a run's accuracy is mostly the luck of a few pairs.
MARGIN = 0.05
MIN_HELD_OUT = 8
IN_USE = "in_use.json"
ADAPTER_GGUF = "adapter.gguf"  # the run's adapter for llama-server (rlchat adapters gguf)


@dataclass(frozen=True)
class AdapterRun:
    run: int
    path: Path
    base: str  # the model it was trained on, as named
    base_weights: str  # that model's weights fingerprint
    method: str
    turns: int
    pairs: int  # preference rows: DPO's pairs or KTO's labelled replies
    held_out: int
    first: str | None  # the data range: the first and last turn used (UTC, ISO)
    last: str | None
    accuracy: float | None  # held-out preference accuracy
    last_seq: int  # the newest turn the run saw (0 where older runs did not say)
    created: str | None

    @property
    def passed(self) -> bool:
        """Whether it beats the held-out bar (MARGIN over chance on MIN_HELD_OUT rows)."""
        return (self.accuracy is not None and self.held_out >= MIN_HELD_OUT
                and self.accuracy >= 0.5 + MARGIN)

    def describe(self, in_use: bool) -> dict[str, Any]:
        """The run as `rlchat adapters list --json` prints it."""
        return {"run": self.run, "path": str(self.path), "base": self.base,
                "method": self.method, "turns": self.turns, "pairs": self.pairs,
                "held_out": self.held_out, "from": self.first, "to": self.last,
                "held_out_accuracy": self.accuracy, "passed": self.passed,
                "in_use": in_use, "created": self.created}


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / "models"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_run(folder: Path) -> AdapterRun | None:
    """The adapter run in `folder`, or None where it holds no adapter or
    no lineage rlchat train wrote."""
    from rlchat.learner.model_files import LINEAGE

    if not (folder / "adapter_config.json").is_file():
        return None
    lineage = _read_json(folder / LINEAGE)
    if not isinstance(lineage.get("run"), int):
        return None
    data = lineage.get("data") if isinstance(lineage.get("data"), dict) else {}
    metrics = lineage.get("metrics") if isinstance(lineage.get("metrics"), dict) else {}
    accuracy = metrics.get("held_out_accuracy")
    return AdapterRun(
        run=lineage["run"], path=folder, base=str(lineage.get("base", "")),
        base_weights=str(lineage.get("base_weights", "")),
        method=str(lineage.get("method", "")), turns=int(data.get("turns") or 0),
        pairs=int(data.get("pairs") or 0), held_out=int(data.get("held_out") or 0),
        first=data.get("from"), last=data.get("to"),
        accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        last_seq=int(data.get("last_seq") or 0), created=lineage.get("created"))


def adapter_runs(data_dir: Path) -> list[AdapterRun]:
    """Every adapter run in DATA/models/, oldest first."""
    models = models_dir(data_dir)
    if not models.is_dir():
        return []
    runs = [read_run(folder) for folder in models.iterdir()
            if folder.is_dir() and folder.name.isdigit()]
    return sorted((r for r in runs if r is not None), key=lambda r: r.run)


def find_run(data_dir: Path, run: int) -> AdapterRun | None:
    return next((r for r in adapter_runs(data_dir) if r.run == run), None)


def read_in_use(data_dir: Path) -> int | None:
    """The run in_use.json names (None: the base model)."""
    named = _read_json(models_dir(data_dir) / IN_USE).get("run")
    return named if isinstance(named, int) and not isinstance(named, bool) else None


def run_in_use(data_dir: Path) -> AdapterRun | None:
    """The adapter the chat uses, or None for the base model (also where
    the run named is gone)."""
    named = read_in_use(data_dir)
    return find_run(data_dir, named) if named is not None else None


def set_in_use(data_dir: Path, run: int | None) -> None:
    """Name the adapter the chat uses from its next turn (None: the base)."""
    models = models_dir(data_dir)
    models.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(models / IN_USE, json.dumps({"run": run}) + "\n", temp_prefix=".in_use-")
