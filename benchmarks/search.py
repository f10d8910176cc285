"""F2's search in a real terminal (tmux): from a key typed in the search box
to the screen showing the sessions that match, at 100k stored turns.

Two data dirs are filled straight in the store's file format with turns of
varied text (a 2,000-word vocabulary, messages of 6-12 words, replies of
8-20), ten turns a session: one of 1,000 turns (the baseline, measured in
the same run) and one of --turns (100,000).  For each, `rlchat` starts in a
fresh tmux window (a served model that is not up: nothing loads, the app
and its data dir are all there is), F2 opens, and:

- index: seconds from F2 to the index being ready (every turn's texts read),
  then the same after a clean exit and a new start (the saved cache);
- key to result: each query is typed a key at a time; a sample is the time
  from `tmux send-keys` to `capture-pane` showing the line that answers that
  query so far ("N sessions match '...'" or "Nothing matches '...'").
  Polling adds a few milliseconds to every sample, at both sizes.

Run: .venv/bin/python benchmarks/search.py [--turns 100000] [--rounds 3]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from rlchat.learner.curves import Curves
from rlchat.learner.features import DIM
from rlchat.learner.policy_store import new_policy, save_policy
from rlchat.storage import AtomicJSONStorage, Store
from rlchat.storage.schema import stamp
from rlchat.storage.shards import BLOB, TABLE
from rlchat.storage.store import SESSIONS_PER_FILE, TURNS_PER_FILE

SOCKET = f"rlchat-search-bench-{os.getpid()}"
TURNS_PER_SESSION = 10
CANDIDATES = 4
QUERIES = ["garlic lemon", "quokka", "tonight pasta", "zqx"]  # common, rare, mixed, absent


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "tu", "ra", "si", "vo", "pe", "da", "gu", "zo"]
    made = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(2500)}
    common = ["garlic", "lemon", "pasta", "tonight", "cook", "please", "what", "could", "with"]
    return common + sorted(made)[:2000]


def sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    # Zipf-like: the first words of the vocabulary come up far more often.
    picked = [words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)]
              for _ in range(rng.randint(low, high))]
    return " ".join(picked).capitalize() + "."


def fill(data: Path, turns: int, rng: random.Random) -> None:
    """Answered turns and their sessions, written straight into the store's files."""
    words = vocabulary(rng)
    (data / "turns").mkdir(parents=True, mode=0o700)
    (data / "sessions").mkdir(parents=True, mode=0o700)
    blob_len = CANDIDATES * DIM * 8
    crc = zlib.crc32(bytes(blob_len))  # the features are zeros: never read here
    now = time.time() - turns * 60
    for first in range(1, turns + 1, TURNS_PER_FILE):
        shard = (first - 1) // TURNS_PER_FILE + 1
        records, offset = {}, 0
        for seq in range(first, min(first + TURNS_PER_FILE, turns + 1)):
            session = str((seq - 1) // TURNS_PER_SESSION + 1)
            message = sentence(rng, words, 6, 12)
            if seq == turns // 2:
                message += " A quokka!"
            records[str(seq)] = {
                "session": session, "user_text": message,
                "candidates": [{"text": sentence(rng, words, 8, 20), "logprob": -2.0,
                                "tokens": 12, "truncated": False, "sampled": None,
                                "token_ids": None} for _ in range(CANDIDATES)],
                "feature_version": "v3", "feature_dim": DIM, "scores": [0.0] * CANDIDATES,
                "order": list(range(CANDIDATES)), "shown_count": CANDIDATES,
                "propensities": [1 / CANDIDATES] * CANDIDATES, "policy_version": 0,
                "created": now + seq * 60, "status": "chosen", "choice": 0, "rating": 4,
                "own_reply": None, "rewards": [0.5, -0.2, -0.2, -0.2],
                "weights": [1.0, 0.7, 0.49, 0.34], "answered": now + seq * 60 + 5,
                "prompt": None, "system": "", "generator": None, BLOB: [offset, blob_len, crc]}
            offset += blob_len
        with open(data / "turns" / f"turns-{shard:06d}.bin", "wb") as out:
            out.truncate(offset)  # sparse: 100k turns of zeros take no disk
        AtomicJSONStorage(data / "turns" / f"turns-{shard:06d}.json").write(
            stamp({TABLE: records}))
    sessions = (turns + TURNS_PER_SESSION - 1) // TURNS_PER_SESSION
    for first in range(1, sessions + 1, SESSIONS_PER_FILE):
        shard = (first - 1) // SESSIONS_PER_FILE + 1
        records = {}
        for seq in range(first, min(first + SESSIONS_PER_FILE, sessions + 1)):
            low = (seq - 1) * TURNS_PER_SESSION + 1
            high = min(seq * TURNS_PER_SESSION, turns)
            records[str(seq)] = {"title": f"chat {seq}", "started": now + low * 60,
                                 "ended": now + high * 60, "turns": high - low + 1,
                                 "system": "", "first_seq": low, "last_seq": high}
        AtomicJSONStorage(data / "sessions" / f"sessions-{shard:06d}.json").write(
            stamp({TABLE: records}))
    # A checkpoint that has learned every turn, as a chat's clean exit leaves
    # it: the start has nothing to learn again, only the search to build.
    store = Store(data)
    policy, curves = new_policy(), Curves()
    policy.last_seq = curves.last_seq = turns
    save_policy(store, policy, curves)
    store.close()


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True,
                          check=True).stdout


def screen(window: str) -> str:
    return tmux("capture-pane", "-p", "-t", window)


def wait(window: str, predicate, timeout: float = 300.0) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        text = screen(window)
        if predicate(text):
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the screen never changed as expected:\n{text}")


def answered(query: str):
    shown = query.strip()
    return lambda s: f"match '{shown}'" in s or f"Nothing matches '{shown}'" in s


def run_app(data: Path, work: Path, window: str, queries: list[str]) -> dict:
    """One start: F2, the index, then each query typed a key at a time."""
    rlchat = Path(sys.executable).with_name("rlchat")
    command = (f"env RLCHAT_CONFIG_DIR={work / 'config'} {rlchat} --data-dir {data} "
               "--base-url http://127.0.0.1:9/v1 --model not-served")
    tmux("new-session", "-d", "-s", window, "-x", "120", "-y", "40", command)
    wait(window, lambda s: "not connected" in s or "cannot be reached" in s or "F2" in s)
    began = time.perf_counter()
    tmux("send-keys", "-t", window, "F2")
    ready = wait(window, lambda s: "ype to search" in s and "indexing" not in s) - began
    samples: list[float] = []
    for query in queries:
        for i in range(1, len(query) + 1):
            typed = query[:i]
            if not typed.strip() or typed.endswith(" "):
                tmux("send-keys", "-t", window, "-l", query[i - 1])
                continue  # no new words: nothing new to show
            sent = time.perf_counter()
            tmux("send-keys", "-t", window, "-l", query[i - 1])
            samples.append(wait(window, answered(typed), timeout=60) - sent)
        tmux("send-keys", "-t", window, "C-u")  # clear the box for the next query
        wait(window, lambda s: "ype to search" in s, timeout=60)
    tmux("send-keys", "-t", window, "Escape", "C-q")
    deadline = time.monotonic() + 60
    while subprocess.run(["tmux", "-L", SOCKET, "has-session", "-t", window],
                         capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not quit")
        time.sleep(0.05)
    return {"index_s": ready, "samples": samples}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--baseline-turns", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3, help="times each query list is typed")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rlchat-search-bench-"))
    tmux("new-session", "-d", "-s", "keeper", "sleep 100000")
    figures: dict = {"turns": args.turns, "baseline_turns": args.baseline_turns,
                     "queries": QUERIES, "rounds": args.rounds}
    try:
        for label, turns in (("baseline", args.baseline_turns), ("large", args.turns)):
            data = work / f"data-{turns}"
            say(f"filling {turns:,} turns")
            fill(data, turns, random.Random(0))
            say(f"{turns:,} turns: first start, the index built from the turns")
            first = run_app(data, work, f"{label}-1", QUERIES)
            say(f"{turns:,} turns: second start, the index from the cache")
            second = run_app(data, work, f"{label}-2", QUERIES * args.rounds)
            samples = first["samples"] + second["samples"]
            figures[label] = {
                "index_first_s": round(first["index_s"], 3),
                "index_cached_s": round(second["index_s"], 3),
                "keys": len(samples),
                "median_ms": round(1000 * statistics.median(samples), 1),
                "p95_ms": round(1000 * sorted(samples)[int(0.95 * (len(samples) - 1))], 1),
                "max_ms": round(1000 * max(samples), 1),
            }
            say(json.dumps(figures[label]))
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    large, base = figures["large"], figures["baseline"]
    figures["ratio_median_large_over_baseline"] = round(large["median_ms"] / base["median_ms"], 2)
    figures["median_le_300_ms"] = large["median_ms"] <= 300
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
