"""A server that ignores max_tokens and streams 3 MB, then 30 MB, to one turn:
time and peak memory of the client (rlchat's RemoteGenerator, in a fresh
process each run) against rlchat.testkit.misbehaving's server in a process of its
own on 127.0.0.1.

Three shapes of stream, each 3 MB and 30 MB:
- small: one short token per event (about 150 bytes an event);
- large: 256 kB of text per event;
- empty: events that carry no text at all, so nothing is capped and every
  byte must be read to the end.

The acceptance: peak memory of the 30 MB turn under 300 MB, and its time
within 2x of ten times the 3 MB turn's (a linear cost; a quadratic one
would be 10x).  Median of --runs.

    .venv/bin/python benchmarks/big_stream.py [--runs 3]

Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

SERVER = """
import sys
from rlchat.testkit.misbehaving import MisbehavingServer
server = MisbehavingServer().start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""
CLIENT = """
import json, resource, sys, time
from rlchat.learner.errors import AgentError
from rlchat.learner.remote import RemoteGenerator

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

remote = RemoteGenerator(sys.argv[1], "mis", timeout=300.0, seed=0)
remote.connect()
before = peak_mb()
began = time.perf_counter()
try:
    proposal = remote.propose([], "fault " + sys.argv[2], 8)
    kept = sum(len(c.text) for c in proposal.candidates)
    truncated = all(c.truncated for c in proposal.candidates) if kept else None
except AgentError as exc:
    kept, truncated = exc.code, None
print(json.dumps({"seconds": time.perf_counter() - began, "peak_mb": peak_mb(),
                  "before_mb": before, "kept_chars": kept, "truncated": truncated}))
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_turn(url: str, fault: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CLIENT, url, fault], capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
    figures: dict[str, dict] = {}
    try:
        for shape in ("small", "large", "empty"):
            measured = {}
            for megabytes in (3, 30):
                runs = []
                for run in range(args.runs):
                    say(f"{shape} {megabytes} MB: run {run + 1} of {args.runs}")
                    runs.append(one_turn(url, f"huge-{megabytes}-{shape}"))
                measured[megabytes] = {
                    "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
                    "peak_mb": round(max(r["peak_mb"] for r in runs), 1),
                    "before_mb": round(max(r["before_mb"] for r in runs), 1),
                    "kept_chars": runs[0]["kept_chars"], "truncated": runs[0]["truncated"],
                }
            ratio = measured[30]["seconds"] / (10 * measured[3]["seconds"])
            figures[shape] = {"3MB": measured[3], "30MB": measured[30],
                              "time_30MB_over_10x_3MB": round(ratio, 3)}
            say(f"{shape}: 30 MB in {measured[30]['seconds']} s, 3 MB in "
                f"{measured[3]['seconds']} s (ratio to 10x: {ratio:.2f}), peak "
                f"{measured[30]['peak_mb']} MB")
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    peak = max(f["30MB"]["peak_mb"] for f in figures.values())
    worst = max(f["time_30MB_over_10x_3MB"] for f in figures.values())
    print(json.dumps({"benchmark": "big_stream", "runs": args.runs, "shapes": figures,
                      "peak_mb_30MB": peak, "worst_time_ratio": worst,
                      "peak_under_300MB": peak < 300, "time_within_2x": worst <= 2.0}))


if __name__ == "__main__":
    main()
