"""The learning screen (F3) at 100k stored turns, in a real terminal (tmux):
seconds from the key to the screen showing its summary.

Baselines from the same run: F3 over an empty data dir (the screen's own
cost, flat if nothing grows with the log), F1 (help, a screen installed once)
in the same app, and reading every stored turn once, which is what F3 did
before it plotted the agent's curve summary.

The store is filled straight into its shard files (benchmarks/storage.py's
filler).  The first start over it folds the turns into the curve summary once
(an upgrade from data written before the summary existed), and learns them
(the filler writes no policy); the timed starts after that read neither.  No
model is needed: `--model` points nowhere, and F3 works without one.

Run: .venv/bin/python benchmarks/learning_screen.py [--turns 100000] [--samples 10]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rlchat.learner.records import Turn
from rlchat.storage import Store

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


terminal = _load("tui")  # its tmux helpers: start, wait, screen, tmux
say = terminal.say


def key_to_screen(key: str, shows: str) -> float:
    """Seconds from sending `key` to `shows` on screen; then Escape back."""
    sent = time.perf_counter()
    terminal.tmux("send-keys", "-t", terminal.WINDOW, key)
    done = terminal.wait(lambda s: shows in s, timeout=60)
    terminal.tmux("send-keys", "-t", terminal.WINDOW, "Escape")
    terminal.wait(lambda s: shows not in s, timeout=60)
    return done - sent


def open_app(data: Path, work: Path) -> None:
    rlchat = Path(sys.executable).with_name("rlchat")
    terminal.start(f"env RLCHAT_CONFIG_DIR={work / 'config'} HF_HUB_OFFLINE=1 "
                   f"{rlchat} --model {work / 'no-model'} --data-dir {data}")
    terminal.wait(lambda s: "Past sessions stay readable" in s, timeout=600)


def timings(data: Path, work: Path, samples: int) -> tuple[list[float], list[float]]:
    """(F3 times, F1 times) in one start of the app over `data`."""
    open_app(data, work)
    learning = [key_to_screen("F3", "answered turns") for _ in range(samples)]
    helps = [key_to_screen("F1", "rlchat keys") for _ in range(samples)]
    return learning, helps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlchat-f3-bench-"))
    full, empty = work / "full", work / "empty"
    figures: dict = {"turns": args.turns, "samples": args.samples}
    say(f"[1/5] filling {args.turns} turns")
    _load("storage").fill(full, args.turns, random.Random(0))

    say("[2/5] baseline: reading every turn once")
    store = Store(full, readonly=True)
    t0 = time.perf_counter()
    count = sum(1 for t in store.turns() if Turn.from_dict(t).answered_ok)
    figures["read_all_s"] = round(time.perf_counter() - t0, 3)
    store.close()
    assert count == args.turns

    terminal.tmux("new-session", "-d", "-s", "keeper", "sleep 100000")
    try:
        say("[3/5] first start over the full log (the one-time upgrade)")
        t0 = time.perf_counter()
        open_app(full, work)
        figures["first_start_s"] = round(time.perf_counter() - t0, 2)
        say("[4/5] F3 and F1 over the full log")
        full_f3, full_f1 = timings(full, work, args.samples)
        say("[5/5] F3 and F1 over an empty data dir")
        empty_f3, empty_f1 = timings(empty, work, args.samples)
    finally:
        terminal.subprocess.run(["tmux", "-L", terminal.SOCKET, "kill-server"],
                                capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    ms = lambda values: round(1000 * statistics.median(values), 1)  # noqa: E731
    figures["f3_full_median_ms"] = ms(full_f3)
    figures["f3_full_max_ms"] = round(1000 * max(full_f3), 1)
    figures["f3_empty_median_ms"] = ms(empty_f3)
    figures["f1_full_median_ms"] = ms(full_f1)
    figures["f1_empty_median_ms"] = ms(empty_f1)
    f3 = statistics.median(full_f3)
    figures["f3_full_over_empty"] = round(f3 / statistics.median(empty_f3), 2)
    figures["f3_over_f1"] = round(f3 / statistics.median(full_f1), 2)
    figures["f3_full_over_read_all"] = round(f3 / figures["read_all_s"], 4)
    figures["bar_f3_le_300ms"] = figures["f3_full_median_ms"] <= 300
    for key, value in figures.items():
        say(f"{key:24s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
