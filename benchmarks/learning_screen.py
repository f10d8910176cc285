"""The learning screen (F3) at 100k stored turns: time from the key to the
screen with its plots, against reading every turn once (what the screen did
before it plotted the agent's curve summary), measured in the same run.

The store is filled straight into its shard files (benchmarks/storage.py's
filler).  The first start of the app over it folds the turns into the curve
summary once (an upgrade from data written before the summary existed); the
timed starts after that read only the summary.  No model is loaded: the
screen works without one.

Run: .venv/bin/python benchmarks/learning_screen.py [--turns 100000] [--repeats 5]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.records import Turn
from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.app import RlchatApp
from rlchat.tui.screens.learning import LearningScreen

_HERE = Path(__file__).resolve().parent


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _filler():
    spec = importlib.util.spec_from_file_location("storage_bench", _HERE / "storage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill


def no_model(settings: Settings):
    raise ModelUnavailable("no model in this benchmark")


async def open_learning(data: Path) -> tuple[float, float]:
    """(seconds from start to the agent being ready, seconds from F3 to the
    plotted screen) in one run of the app."""
    store = Store(data)
    app = RlchatApp(store=store, settings=Settings(model="none"), source_factory=no_model)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            t0 = time.perf_counter()
            while app.agent is None:
                await pilot.pause(0.01)
            ready = time.perf_counter() - t0
            await app.workers.wait_for_complete()
            t0 = time.perf_counter()
            await pilot.press("f3")
            while not (isinstance(app.screen, LearningScreen) and app.screen.is_mounted):
                await pilot.pause(0.001)
            await pilot.pause()  # its first paint
            opened = time.perf_counter() - t0
            summary = str(app.screen.query_one("#summary").render())
            assert "answered turns" in summary, summary
    finally:
        store.close()
    return ready, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp())
    figures: dict = {"turns": args.turns}
    say(f"[1/4] filling {args.turns} turns")
    _filler()(data, args.turns, random.Random(0))

    say("[2/4] baseline: reading every turn once")
    store = Store(data, readonly=True)
    t0 = time.perf_counter()
    count = sum(1 for t in store.turns() if Turn.from_dict(t).answered_ok)
    figures["read_all_s"] = round(time.perf_counter() - t0, 3)
    store.close()
    assert count == args.turns

    say("[3/4] first start: the stored turns are folded into the summary once")
    ready, _ = asyncio.run(open_learning(data))
    figures["first_start_s"] = round(ready, 2)

    say(f"[4/4] {args.repeats} starts, F3 each time")
    opens, readies = [], []
    for _ in range(args.repeats):
        ready, opened = asyncio.run(open_learning(data))
        readies.append(ready)
        opens.append(opened)
    shutil.rmtree(data)
    figures["start_median_s"] = round(statistics.median(readies), 3)
    figures["open_median_s"] = round(statistics.median(opens), 3)
    figures["open_max_s"] = round(max(opens), 3)
    figures["open_over_read_all"] = round(figures["open_median_s"] / figures["read_all_s"], 4)
    figures["open_bar_s"] = 0.3
    figures["open_ok"] = figures["open_max_s"] <= 0.3
    for key, value in figures.items():
        say(f"{key:22s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
