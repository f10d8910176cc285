"""Kill `rlchat headless` at random moments and check that nothing acknowledged is lost.

Each trial starts `rlchat headless` (tiny model) on one data dir, feeds it
say/choose pairs as fast as it answers, and SIGKILLs it after a random delay.
Then a fresh process opens the data dir (with the startup recovery) and
checks: every file parses and none was moved aside (corrupt=0); every turn
whose `choose` was acknowledged is stored as chosen, and the policy has
learned exactly the answered turns, with the weights a replay of the stored
turns gives bit for bit (lost=0).  The policy is a checkpoint (every
CHECKPOINT_EVERY turns and at a clean exit): each fresh start reports how
many stored turns it learned again and how long that took, and the worst
case (CHECKPOINT_EVERY - 1 turns after the checkpoint) is timed at the end.

Run: .venv/bin/python benchmarks/crash.py [--trials 200] [--minutes 12] [--jobs 2]
Ends by printing one JSON object; the tests run a short version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rlchat.testkit.crash import run, worst_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="in all, over the jobs")
    parser.add_argument("--minutes", type=float, default=12.0, help="time bound")
    parser.add_argument("--jobs", type=int, default=2, help="data dirs killed side by side")
    args = parser.parse_args()
    from rlchat.learner.tiny_model import write_tiny_model

    tmp = Path(tempfile.mkdtemp())
    print("building the tiny model", file=sys.stderr, flush=True)
    model = write_tiny_model(tmp / "model")
    per_job = -(-args.trials // args.jobs)
    start = time.monotonic()
    done = [0] * args.jobs

    def job(i: int) -> dict:
        def progress(t: dict) -> None:
            done[i] = t["trials"]
            if sum(done) % 10 == 0:
                print(f"  {sum(done)}/{args.trials} trials, {time.monotonic() - start:.0f}s",
                      file=sys.stderr, flush=True)
        return run(model, tmp / f"data{i}", per_job, args.minutes * 60, seed=i, progress=progress)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(job, range(args.jobs)))
    summary = {
        "trials": sum(r["trials"] for r in results),
        "acked_turns": sum(r.get("acked", 0) for r in results),
        "corrupt": max(r["corrupt"] for r in results),
        "lost": max(r["lost"] for r in results),
        "unlearned": max(r["unlearned"] for r in results),
        "replay_mismatch": sum(r["replay_mismatch"] for r in results),
        "max_recovered_turns": max(r["recovered_turns"] for r in results),
        "max_recovered_s": round(max(r["recovered_s"] for r in results), 3),
        "seconds": round(time.monotonic() - start, 1),
    }
    print("timing the worst start after a kill", file=sys.stderr, flush=True)
    summary["worst_start"] = worst_start(model, tmp / "worst")
    print(f"trials={summary['trials']} acked={summary['acked_turns']} "
          f"corrupt={summary['corrupt']} lost={summary['lost']} "
          f"unlearned={summary['unlearned']} replay_mismatch={summary['replay_mismatch']} "
          f"worst start: {summary['worst_start']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
