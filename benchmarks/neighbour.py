"""A turn beside a CPU-bound neighbour: the default turn of the tiny model and
of the real one (SmolLM2-135M-Instruct), quiet and with one busy process
beside it (a Python loop that never sleeps), in turns in this one run, with
the product's thread policy (learner/generator/threads.py); and the real
model's load, quiet and beside the neighbour, each in a fresh process.

Each turn is the product's: `Generator.propose` with k = 8 and the format's
default reply length, reseeded so quiet and busy runs draw the same replies.

    .venv/bin/python benchmarks/neighbour.py [--runs 3]

Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

K = 8
MESSAGE = "Can you suggest something relaxing to cook tonight?"
LOAD = """
import sys, time
began = time.perf_counter()
from rlchat.learner.generator import Generator
Generator.load(sys.argv[1], seed=0)
print(time.perf_counter() - began)
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def neighbour():
    """One CPU-bound process beside this one, for the length of the block."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.5)  # let it take its core, and the sampler see it
        yield
    finally:
        process.kill()
        process.wait()
        time.sleep(1.5)  # the sampler's memory: the next quiet turn is quiet


def turn_figures(model: str, runs: int) -> dict:
    from rlchat.learner.generator import Generator

    generator = Generator.load(model, seed=0)
    times: dict[str, list[float]] = {"quiet": [], "busy": []}
    threads: dict[str, list[int]] = {"quiet": [], "busy": []}
    steps: dict[str, list[int]] = {"quiet": [], "busy": []}

    def turn(label: str) -> None:
        generator.reseed(0)
        generator._prompt_pass = None  # every turn runs its whole prompt
        began = time.perf_counter()
        generator.propose([], MESSAGE, K)
        times[label].append(time.perf_counter() - began)
        threads[label].append(generator._cores.last_threads)
        steps[label].append(generator.last_steps)

    turn("quiet")  # warm-up
    times["quiet"].clear(), threads["quiet"].clear(), steps["quiet"].clear()
    for run in range(runs):
        say(f"  run {run + 1} of {runs}")
        turn("quiet")
        with neighbour():
            turn("busy")
    quiet, busy = statistics.median(times["quiet"]), statistics.median(times["busy"])
    return {"model": model, "dtype": generator.dtype, "quiet_turn_s": round(quiet, 3),
            "busy_turn_s": round(busy, 3), "busy_over_quiet": round(busy / quiet, 2),
            "threads_quiet": threads["quiet"], "threads_busy": threads["busy"],
            "steps": sorted(set(steps["quiet"] + steps["busy"]))}


def load_seconds(model: str, busy: bool) -> float:
    with neighbour() if busy else contextlib.nullcontext():
        out = subprocess.run([sys.executable, "-c", LOAD, model], capture_output=True,
                             text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import torch
    from real_model import real_files  # noqa: E402  (beside this file)

    from rlchat.learner.generator.threads import usable_cores
    from rlchat.learner.tiny_model import write_tiny_model

    figures: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "cores": usable_cores(), "k": K, "runs": args.runs}
    _, real = real_files()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_model(Path(tmp) / "tiny")
        say("tiny model: quiet and beside a busy process, in turns")
        figures["tiny"] = turn_figures(str(tiny), args.runs)
        say(f"  {figures['tiny']}")
    say("real model: quiet and beside a busy process, in turns")
    figures["real"] = turn_figures(str(real), args.runs)
    say(f"  {figures['real']}")
    say("real model's load, quiet and beside a busy process")
    quiet, busy = load_seconds(str(real), False), load_seconds(str(real), True)
    figures["real_load"] = {"quiet_s": round(quiet, 2), "busy_s": round(busy, 2),
                            "busy_over_quiet": round(busy / quiet, 2)}
    figures["bars"] = {f"{name}_busy_le_2_5x_quiet": figures[name]["busy_over_quiet"] <= 2.5
                       for name in ("tiny", "real")}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
