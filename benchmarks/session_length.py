"""Does a turn cost more late in a long session?  1,000 turns through `rlchat headless`.

One session of --turns turns with the tiny model, driven through the real
JSON-lines protocol in a child process, over a fresh data dir: each turn a
`say` (a message of 3-12 corpus words) then a `choose` of the first
candidate with a rating.  Reports the median `say` and `choose` round trip
over turns 50-150 and over the last 100, and their ratio; the early turns
are the baseline, measured in the same run.

Run: .venv/bin/python benchmarks/session_length.py [--turns 1000]
Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlchat.learner.tiny_model import corpus_lines, write_tiny_model


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    args = parser.parse_args(argv)
    words = " ".join(corpus_lines()).split()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_model(Path(folder) / "tiny")
        child = subprocess.Popen(
            [sys.executable, "-m", "rlchat.tui.cli", "headless", "--model", str(model),
             "--data-dir", str(Path(folder) / "data"), "--seed", "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

        def ask(request: dict) -> tuple[dict, float]:
            start = time.perf_counter()
            child.stdin.write(json.dumps(request) + "\n")
            answer = json.loads(child.stdout.readline())
            return answer, time.perf_counter() - start

        says, chooses = [], []
        try:
            for n in range(1, args.turns + 1):
                text = " ".join(rng.choices(words, k=rng.randint(3, 12)))
                answer, seconds = ask({"op": "say", "text": text})
                if not answer.get("ok"):
                    raise SystemExit(f"turn {n}: {answer}")
                says.append(seconds)
                first = answer["candidates"][0]["id"]
                answer, seconds = ask({"op": "choose", "turn": answer["turn"], "id": first,
                                       "rating": rng.randint(1, 5)})
                chooses.append(seconds)
                if n % 100 == 0:
                    say(f"turn {n}: say median of the last 100 "
                        f"{statistics.median(says[-100:]) * 1e3:.1f} ms")
        finally:
            child.stdin.close()
            child.wait(timeout=60)

    last = slice(max(args.turns - 100, 0), args.turns)
    early = slice(49, min(150, args.turns))
    figures = {
        "turns": args.turns,
        "say_median_ms_turns_50_150": round(statistics.median(says[early]) * 1e3, 1),
        "say_median_ms_last_100": round(statistics.median(says[last]) * 1e3, 1),
        "choose_median_ms_turns_50_150": round(statistics.median(chooses[early]) * 1e3, 1),
        "choose_median_ms_last_100": round(statistics.median(chooses[last]) * 1e3, 1),
    }
    figures["say_late_over_early"] = round(
        figures["say_median_ms_last_100"] / figures["say_median_ms_turns_50_150"], 2)
    figures["choose_late_over_early"] = round(
        figures["choose_median_ms_last_100"] / figures["choose_median_ms_turns_50_150"], 2)
    figures["bars"] = {"say_late_le_1_2x_early": figures["say_late_over_early"] <= 1.2}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
