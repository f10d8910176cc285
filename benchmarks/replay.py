"""Offline replay and evaluation over 100k stored turns.

The store is filled with 100k answered turns of the real shape (through
benchmarks/storage.py's filler, in the store's own shard format).  Timed in
one run: reading and decoding every turn (the floor any offline pass pays),
`replay` (a new policy from all turns) and `evaluate` (IPS, SNIPS, DR with
500 bootstrap resamples), each as `rlchat` runs them, without saving.

Run: .venv/bin/python benchmarks/replay.py [--turns 100000]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent

from rlchat.learner.evaluate import estimate  # noqa: E402
from rlchat.learner.offline import evaluation_steps, replay_logs  # noqa: E402
from rlchat.learner.policy import PolicyConfig  # noqa: E402
from rlchat.learner.records import Turn  # noqa: E402
from rlchat.storage import Store  # noqa: E402
from rlchat.tui.progress import Progress  # noqa: E402


def _filler():
    spec = importlib.util.spec_from_file_location("storage_bench", _HERE / "storage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100_000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp())
    print(f"[1/4] filling {args.turns} turns", file=sys.stderr, flush=True)
    _filler()(data, args.turns, random.Random(0))
    store = Store(data, readonly=True)
    figures = {"turns": args.turns}

    print("[2/4] reading every turn", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    count = sum(1 for t in store.turns() if Turn.from_dict(t).features().size)
    figures["read_s"] = round(time.perf_counter() - t0, 2)
    assert count == args.turns

    print("[3/4] replay", file=sys.stderr, flush=True)
    progress = Progress("replay", args.turns)
    t0 = time.perf_counter()
    policy = replay_logs(store.turns(), PolicyConfig(), progress)
    figures["replay_s"] = round(time.perf_counter() - t0, 2)
    progress.done()
    assert policy.version == args.turns

    print("[4/4] evaluate", file=sys.stderr, flush=True)
    progress = Progress("evaluate", args.turns)
    t0 = time.perf_counter()
    config = PolicyConfig(gamma=0.0, temperature_floor=0.05)
    steps = evaluation_steps(store.turns(), config, progress)
    result = estimate(steps, bootstrap=500)
    figures["evaluate_s"] = round(time.perf_counter() - t0, 2)
    progress.done()
    store.close()
    shutil.rmtree(data)

    figures["replay_over_read"] = round(figures["replay_s"] / figures["read_s"], 2)
    figures["evaluate_over_read"] = round(figures["evaluate_s"] / figures["read_s"], 2)
    figures["ess"] = round(result.ess, 1)
    for key, value in figures.items():
        print(f"{key:20s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
