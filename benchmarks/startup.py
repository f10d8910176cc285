"""Startup costs a user feels, as ratios against baselines measured in the same run.

- `rlchat --help` against a bare `python -c pass`: it must not load torch.
- `rlchat headless --model <missing>` (the hub is probed, not waited for)
  against importing torch + transformers alone: the failure adds little to
  the import, and stays within 3 s of it.
- The first answer of `rlchat headless --model <tiny>`.

Run: .venv/bin/python benchmarks/startup.py [--runs 5]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def timed(cmd: list[str], stdin: str = "", env_extra: dict | None = None) -> tuple[float, str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    start = time.perf_counter()
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, result.stdout + result.stderr


def median_of(runs: int, cmd: list[str], **kwargs) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        seconds, out = timed(cmd, **kwargs)
        times.append(seconds)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rlchat = [PY, "-m", "rlchat.tui.cli"]
    figures: dict[str, float] = {}
    steps = [
        ("python_bare_s", [PY, "-c", "pass"], {}),
        ("help_s", [*rlchat, "--help"], {}),
        ("import_torch_transformers_s",
         [PY, "-c", "import torch, transformers; from transformers import AutoModelForCausalLM"],
         {}),
        ("missing_model_s",
         [*rlchat, "headless", "--model", "no-such-user/no-such-model",
          "--data-dir", tempfile.mkdtemp()],
         {"env_extra": {"HF_HUB_OFFLINE": ""}}),
    ]
    for i, (name, cmd, kwargs) in enumerate(steps, start=1):
        print(f"[{i}/{len(steps) + 1}] {name} ({args.runs} runs)", file=sys.stderr, flush=True)
        figures[name], out = median_of(args.runs, cmd, **kwargs)
        if name == "missing_model_s":
            assert "--model PATH" in out and "Traceback" not in out, out

    print(f"[{len(steps) + 1}/{len(steps) + 1}] first answer with the tiny model",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        subprocess.run([*rlchat, "init-model", str(model)], check=True, capture_output=True)
        figures["first_answer_tiny_s"], out = median_of(
            args.runs,
            [*rlchat, "headless", "--model", str(model), "--data-dir", str(Path(tmp) / "d")],
            stdin='{"op":"say","text":"hello"}\n',
        )
        assert '"ok": true' in out, out

    figures["help_over_bare_python"] = figures["help_s"] / figures["python_bare_s"]
    figures["missing_model_over_import"] = (
        figures["missing_model_s"] / figures["import_torch_transformers_s"]
    )
    figures["missing_model_minus_import_s"] = (
        figures["missing_model_s"] - figures["import_torch_transformers_s"]
    )
    for key, value in figures.items():
        print(f"{key:32s} {value:8.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
