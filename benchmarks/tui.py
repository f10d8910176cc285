"""The app in a real terminal (tmux): time to first paint, and key-press-to-screen
latency while a generation is running.

- first paint: from starting `rlchat` in a fresh tmux window to the screen
  showing the app (still loading the model); baseline: a bare `python -c pass`
  in the same kind of window.
- key latency: F1 (help appears) and F1 again (help goes) while candidates
  are being generated, against the same keys while the app is idle.  Each
  sample is the time from `tmux send-keys` to `capture-pane` showing the
  change; polling adds a few milliseconds to every sample, idle or not.
  A lone Esc is reported apart: a terminal cannot tell it from the start of
  an escape sequence, so Textual waits ESCDELAY (100 ms) before taking it.
- key latency while a background run trains: the app with `--auto-train 1`
  answers a turn, which starts its run (the real `rlchat train --adapter`
  process); F1 round trips each begin after the run has gone on again, so
  the first key of each meets a running run.

The model has GPT-2 124M's body (12 layers, width 768) with random weights and
the tiny model's tokenizer, so generation costs what the real model's does
(its output head is smaller: 800 tokens, not 50257).

Run: .venv/bin/python benchmarks/tui.py [--samples 20]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOCKET = f"rlchat-bench-{os.getpid()}"
WINDOW = "bench-0"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True,
                          check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", WINDOW)


def wait(predicate, timeout: float = 120.0) -> float:
    """Poll the screen until predicate(text) holds; returns the time it did."""
    deadline = time.perf_counter() + timeout
    while True:
        text = screen()
        if predicate(text):
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the screen never changed as expected:\n{text}")


def start(command: str) -> float:
    """Start `command` in a fresh window; returns when tmux was asked to."""
    global WINDOW
    subprocess.run(["tmux", "-L", SOCKET, "kill-session", "-t", WINDOW], capture_output=True)
    WINDOW = f"bench-{int(WINDOW.split('-')[1]) + 1}"
    began = time.perf_counter()
    tmux("new-session", "-d", "-s", WINDOW, "-x", "100", "-y", "30", command)
    return began


def build_model(folder: Path) -> None:
    """The 124M body over the tiny model's tokenizer, saved like any model."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from rlchat.learner.tiny_model import write_tiny_model

    write_tiny_model(folder, train_steps=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)


def training_keys(env: str, rlchat: Path, model: Path, samples: int):
    """F1 round trips while the app's auto_train run trains: a chat with
    `--auto-train 1` answers one turn, which starts the run (the real `rlchat
    train` process); once it takes steps, each round trip begins more than
    KEYS_HOLD_S after the last key, so its first key always meets a running
    run (the keys after it find the run held).  Returns (the first key of
    each round trip, every key), counting only round trips the run outlived."""
    from rlchat.learner.model_learning import KEYS_HOLD_S

    # A run long enough to measure beside (auto_train's own is 12 steps).
    start(f"{env} RLCHAT_AUTO_STEPS=100000 {rlchat} --model {model} --max-new-tokens 8 "
          "--auto-train 1")
    wait(lambda s: "Ready." in s or "Learned" in s)
    tmux("send-keys", "-t", WINDOW, "-l", "tell me a story")
    tmux("send-keys", "-t", WINDOW, "Enter")
    wait(lambda s: "Pick a reply" in s, timeout=120)
    tmux("send-keys", "-t", WINDOW, "1")
    tmux("send-keys", "-t", WINDOW, "5")
    wait(lambda s: "background: step" in s, timeout=600)
    first: list[float] = []
    every: list[float] = []
    while len(first) < samples:
        time.sleep(KEYS_HOLD_S + 1.5)  # the run goes on again between round trips
        if "background: step" not in screen():
            break  # the run has ended
        opened, closed = help_round_trip()
        if "background" in screen():
            first.append(opened)
            every += [opened, closed]
    if len(first) < 3:
        raise AssertionError("the background run ended before the keys were measured")
    return first, every


def key_latency(key: str, appears: bool) -> float:
    """Seconds from sending `key` to help appearing (or going)."""
    sent = time.perf_counter()
    tmux("send-keys", "-t", WINDOW, key)
    done = wait(lambda s: ("rlchat keys" in s) == appears, timeout=30)
    return done - sent


def help_round_trip(close: str = "F1") -> tuple[float, float]:
    return key_latency("F1", True), key_latency(close, False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="starts timed for first paint")
    args = parser.parse_args(argv)
    rlchat = Path(sys.executable).with_name("rlchat")
    work = Path(tempfile.mkdtemp(prefix="rlchat-tui-bench-"))
    model = work / "model"
    say("building the 124M-bodied model")
    build_model(model)
    env = f"env RLCHAT_CONFIG_DIR={work / 'config'} RLCHAT_DATA_DIR={work / 'data'}"
    figures: dict = {"samples": args.samples, "runs": args.runs}
    # A session that lives throughout, so the server never exits between windows.
    tmux("new-session", "-d", "-s", "keeper", "sleep 100000")
    try:
        say("first paint")
        bare, paint, ready = [], [], []
        for _ in range(args.runs):
            began = start(f"{sys.executable} -c 'print(\"bare-python-ready\")'; sleep 30")
            bare.append(wait(lambda s: "bare-python-ready" in s) - began)
            began = start(f"{env} {rlchat} --model {model} --samples 16")
            shown = wait(lambda s: "Loading model" in s or "Ready." in s)
            paint.append(shown - began)
            if "Ready." in screen():
                raise AssertionError("the first paint came after the model had loaded")
            ready.append(wait(lambda s: "Ready." in s) - began)
        figures["first_paint_s"] = round(statistics.median(paint), 3)
        figures["bare_python_s"] = round(statistics.median(bare), 3)
        figures["model_ready_s"] = round(statistics.median(ready), 3)

        say("key latency while idle")
        idle = [t for _ in range(args.samples) for t in help_round_trip()]
        escape = [help_round_trip("Escape")[1] for _ in range(args.samples)]
        say("key latency while generating")
        busy: list[float] = []
        generations = 0
        tmux("send-keys", "-t", WINDOW, "-l", "tell me a story")
        tmux("send-keys", "-t", WINDOW, "Enter")
        while len(busy) < 2 * args.samples:
            text = screen()
            if "Pick a reply" in text:  # that generation ended: start another
                tmux("send-keys", "-t", WINDOW, "r")
                wait(lambda s: "drafting" in s or "Generating" in s, timeout=30)
                generations += 1
                continue
            if "Generating" not in text and "drafting" not in text:
                continue
            opened, closed = help_round_trip()
            # Count only round trips that began and ended inside one generation.
            if "Pick a reply" not in screen():
                busy += [opened, closed]
        figures["key_latency_idle_median_ms"] = round(1000 * statistics.median(idle), 1)
        figures["key_latency_generating_median_ms"] = round(1000 * statistics.median(busy), 1)
        figures["key_latency_generating_p90_ms"] = round(
            1000 * statistics.quantiles(busy, n=10)[-1], 1)
        figures["generating_over_idle"] = round(
            statistics.median(busy) / statistics.median(idle), 2)
        figures["escape_latency_idle_median_ms"] = round(1000 * statistics.median(escape), 1)
        say("key latency while the app's own background run trains")
        first, trained = training_keys(env, rlchat, model, args.samples)
        figures["key_latency_training_median_ms"] = round(1000 * statistics.median(trained), 1)
        figures["key_latency_training_first_key_median_ms"] = round(
            1000 * statistics.median(first), 1)
        figures["training_over_idle"] = round(
            statistics.median(trained) / statistics.median(idle), 2)
        started = time.perf_counter()
        for _ in range(20):
            screen()
        figures["poll_ms"] = round(1000 * (time.perf_counter() - started) / 20, 1)
        figures["regenerations"] = generations
        figures["bars"] = {
            "first_paint_le_0_5s": figures["first_paint_s"] <= 0.5,
            "key_latency_generating_le_50ms": figures["key_latency_generating_median_ms"] <= 50,
            "key_latency_training_le_100ms": figures["key_latency_training_median_ms"] <= 100,
        }
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
        # A chat killed with its window leaves its background run going (its
        # own session): end this benchmark's.
        subprocess.run(["pkill", "-f", f"rlchat.tui.cli train .*--data-dir {work / 'data'}"],
                       capture_output=True)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
