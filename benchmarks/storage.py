"""The durable write per turn, as the store grows from 1k to 100k turns, at the
chat's feature count and at a synthetic 800 columns.

A turn's writes are what the agent does: the turn stored at `say` (its
feature matrix appended to its shard's .bin file, the record to the shard)
and its feedback at `choose`; every write is fsynced (JSON files: temp file
+ fsync + rename + folder fsync).  The policy is a checkpoint, saved every
CHECKPOINT_EVERY turns with the sessions' turn counters (which follow from
the turns): its time is reported apart, and is in the per-turn mean.
Stores of 1k, 10k and 100k turns of the real shape (8 candidates) are
filled through the store's own file format, then --turns turns are timed on
each.  Also the start-up check of the files (opening the store): once without
a manifest (every turn file parsed), and then with it.

Run: .venv/bin/python benchmarks/storage.py [--sizes 1000,10000,100000] [--dims 203,800]
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

import numpy as np

from rlchat.learner.agent import CHECKPOINT_EVERY
from rlchat.learner.features import DIM
from rlchat.learner.policy import QPolicy
from rlchat.storage import AtomicJSONStorage, Store
from rlchat.storage.schema import stamp
from rlchat.storage.shards import BLOB, TABLE
from rlchat.storage.store import TURNS_PER_FILE

CANDIDATES = 8


def fake_turn(rng: random.Random, session: str, dim: int,
              features: bool = True) -> tuple[dict, bytes]:
    """A turn record of the real shape and its feature matrix's bytes (zeros
    without `features`: the filler's, never read)."""
    record = {
        "session": session, "user_text": "what should I cook tonight? " * 2,
        "candidates": [
            {"text": "Something quick: pasta with garlic and lemon.", "logprob": rng.uniform(-4, 0),
             "tokens": 12, "truncated": False, "sampled": None, "token_ids": None}
            for _ in range(CANDIDATES)
        ],
        "feature_version": "v3", "feature_dim": dim, "scores": [rng.random() for _ in range(8)],
        "order": list(range(8)), "shown_count": 4, "propensities": [0.125] * 8,
        "policy_version": 1, "created": time.time(), "status": "pending", "choice": None,
        "rating": None, "own_reply": None, "rewards": None, "weights": None, "answered": None,
        "prompt": "User: what should I cook tonight?\nAssistant:", "system": "",
        "generator": {"model": "gpt2", "format": "gpt2", "dtype": "qint8"},
    }
    if not features:
        return record, bytes(CANDIDATES * dim * 8)
    matrix = np.random.default_rng(rng.randrange(2**32)).uniform(-1, 1, (CANDIDATES, dim))
    return record, matrix.astype("<f8").tobytes()


def fill(data: Path, turns: int, dim: int, rng: random.Random) -> None:
    """Write `turns` answered turns straight into the store's shard files."""
    folder = data / "turns"
    folder.mkdir(parents=True, mode=0o700)
    for first in range(1, turns + 1, TURNS_PER_FILE):
        shard = (first - 1) // TURNS_PER_FILE + 1
        records, offset = {}, 0
        for seq in range(first, min(first + TURNS_PER_FILE, turns + 1)):
            turn, blob = fake_turn(rng, "1", dim, features=False)
            turn.update(status="chosen", choice=0, rating=4,
                        rewards=[0.5, -0.2, -0.2, -0.2], weights=[1, 0.7, 0.49, 0.34])
            turn[BLOB] = [offset, len(blob), 0]
            offset += len(blob)
            records[str(seq)] = turn
        # Sparse: the timed turns never read old features, and 100k turns of
        # 800 columns would be 5 GB of real bytes.
        with open(folder / f"turns-{shard:06d}.bin", "wb") as out:
            out.truncate(offset)
        AtomicJSONStorage(folder / f"turns-{shard:06d}.json").write(stamp({TABLE: records}))


def time_turns(data: Path, count: int, dim: int, rng: random.Random) -> dict:
    began = time.perf_counter()
    store = Store(data)  # no manifest yet: every turn file is parsed once
    first_open = time.perf_counter() - began
    session = store.new_session("bench")
    policy = QPolicy(dim)
    times, checkpoints = [], []
    for i in range(count):
        turn, blob = fake_turn(rng, session, dim)
        t0 = time.perf_counter()
        stored = store.add_turn(turn, blob)
        store.count_session_turn(session, stored["seq"])
        store.update_turn(stored["id"], status="chosen", choice=2, rating=5,
                          rewards=[-0.2, -0.2, 1.0, -0.2], weights=[1, 1, 1, 0.34],
                          answered=time.time())
        t1 = time.perf_counter()
        if (i + 1) % CHECKPOINT_EVERY == 0:
            policy.version, policy.last_seq = i + 1, stored["seq"]
            store.save_policy({**policy.to_dict(), "features": "v3"})
            checkpoints.append(time.perf_counter() - t1)
        times.append(time.perf_counter() - t0)
    store.close()
    began = time.perf_counter()
    Store(data).close()  # the start-up check with the manifest: a stat a file
    return {"times": sorted(times), "checkpoints": checkpoints, "first_open": first_open,
            "open": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dims", default=f"{DIM},800")
    parser.add_argument("--turns", type=int, default=200, help="timed turns per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    rng = random.Random(0)
    figures: dict = {"checkpoint_every": CHECKPOINT_EVERY}
    step, steps = 0, len(sizes) * len(dims)
    for dim in dims:
        for size in sizes:
            step += 1
            data = Path(tempfile.mkdtemp())
            print(f"[{step}/{steps}] {dim} columns: filling {size} turns", file=sys.stderr,
                  flush=True)
            fill(data, size, dim, rng)
            # Let the bulk fill reach the disk first: its writeback would
            # otherwise slow the timed fsyncs, and that is the filler's cost.
            os.sync()
            print(f"[{step}/{steps}] {dim} columns: timing {args.turns} turns", file=sys.stderr,
                  flush=True)
            result = time_turns(data, args.turns, dim, rng)
            times = result["times"]
            key = f"{dim}_{size}"
            figures[f"median_ms_{key}"] = round(statistics.median(times) * 1e3, 3)
            figures[f"p95_ms_{key}"] = round(times[int(0.95 * (len(times) - 1))] * 1e3, 3)
            figures[f"mean_ms_{key}"] = round(statistics.fmean(times) * 1e3, 3)
            figures[f"open_ms_{key}"] = round(result["open"] * 1e3, 1)
            figures[f"open_without_manifest_ms_{key}"] = round(result["first_open"] * 1e3, 1)
            if result["checkpoints"]:
                figures[f"checkpoint_ms_{key}"] = round(
                    statistics.median(result["checkpoints"]) * 1e3, 3)
            shutil.rmtree(data)
    first, last = sizes[0], sizes[-1]
    for dim in dims:
        figures[f"ratio_median_{dim}_{last}_over_{first}"] = round(
            figures[f"median_ms_{dim}_{last}"] / figures[f"median_ms_{dim}_{first}"], 3)
    if len(dims) > 1:
        figures[f"ratio_median_{dims[-1]}_over_{dims[0]}_at_{first}"] = round(
            figures[f"median_ms_{dims[-1]}_{first}"] / figures[f"median_ms_{dims[0]}_{first}"],
            3)
    for key, value in figures.items():
        print(f"{key:40s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
