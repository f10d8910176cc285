"""The durable write per turn, as the store grows from 1k to 100k turns.

A turn's writes are what the agent does: the turn stored at `say` (with its
session's count), its feedback at `choose`, then the policy snapshot; each
write is a temp file + fsync + rename + folder fsync.  Stores of 1k, 10k and
100k turns of the real shape (8 candidates with 18 features each) are filled
through the store's own shard format, then 200 turns are timed on each.

Run: .venv/bin/python benchmarks/storage.py [--sizes 1000,10000,100000]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent

from rlchat.storage import AtomicJSONStorage, Store  # noqa: E402
from rlchat.storage.schema import stamp  # noqa: E402
from rlchat.storage.shards import TABLE  # noqa: E402
from rlchat.storage.store import TURNS_PER_FILE  # noqa: E402


def fake_turn(rng: random.Random, session: str) -> dict:
    """A turn record of the real shape and size."""
    return {
        "session": session, "user_text": "what should I cook tonight? " * 2,
        "candidates": [
            {"text": "Something quick: pasta with garlic and lemon.", "logprob": rng.uniform(-4, 0),
             "tokens": 12, "features": [rng.uniform(-1, 1) for _ in range(18)]}
            for _ in range(8)
        ],
        "feature_version": "v1", "scores": [rng.random() for _ in range(8)],
        "order": list(range(8)), "shown": 4, "propensities": [0.125] * 8,
        "policy_version": 1, "created": time.time(), "status": "pending", "choice": None,
        "rating": None, "own_reply": None, "rewards": None, "weights": None, "answered": None,
    }


def fill(data: Path, turns: int, rng: random.Random) -> None:
    """Write `turns` answered turns straight into the store's shard files."""
    folder = data / "turns"
    folder.mkdir(parents=True, mode=0o700)
    for first in range(1, turns + 1, TURNS_PER_FILE):
        records = {}
        for seq in range(first, min(first + TURNS_PER_FILE, turns + 1)):
            turn = fake_turn(rng, "1")
            turn.update(status="chosen", choice=0, rating=4,
                        rewards=[0.5, -0.2, -0.2, -0.2], weights=[1, 0.7, 0.49, 0.34])
            records[str(seq)] = turn
        shard = (first - 1) // TURNS_PER_FILE + 1
        storage = AtomicJSONStorage(folder / f"turns-{shard:06d}.json")
        storage.write(stamp({TABLE: records}))


def time_turns(data: Path, count: int, rng: random.Random) -> list[float]:
    store = Store(data)
    session = store.new_session("bench")
    policy = {"dim": 18, "A": [[rng.random() for _ in range(18)] for _ in range(18)],
              "b": [0.0] * 18, "version": 0, "last_seq": 0}
    times = []
    for i in range(count):
        turn = fake_turn(rng, session)
        t0 = time.perf_counter()
        stored = store.add_turn(turn)
        store.update_session(session, turns=i + 1)
        store.update_turn(stored["id"], status="chosen", choice=2, rating=5,
                          rewards=[-0.2, -0.2, 1.0, -0.2], weights=[1, 1, 1, 0.34],
                          answered=time.time())
        store.save_policy({**policy, "version": i + 1, "last_seq": stored["seq"]})
        times.append(time.perf_counter() - t0)
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--turns", type=int, default=200, help="timed turns per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(0)
    figures: dict = {}
    for i, size in enumerate(sizes, start=1):
        data = Path(tempfile.mkdtemp())
        print(f"[{i}/{len(sizes)}] filling {size} turns", file=sys.stderr, flush=True)
        fill(data, size, rng)
        # Let the bulk fill reach the disk first: its writeback would otherwise
        # slow the timed fsyncs, and that is the filler's cost, not a turn's.
        os.sync()
        print(f"[{i}/{len(sizes)}] timing {args.turns} turns", file=sys.stderr, flush=True)
        times = sorted(time_turns(data, args.turns, rng))
        figures[f"median_ms_{size}"] = round(statistics.median(times) * 1e3, 3)
        figures[f"p95_ms_{size}"] = round(times[int(0.95 * (len(times) - 1))] * 1e3, 3)
        shutil.rmtree(data)
    first, last = sizes[0], sizes[-1]
    figures[f"ratio_median_{last}_over_{first}"] = round(
        figures[f"median_ms_{last}"] / figures[f"median_ms_{first}"], 3)
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
