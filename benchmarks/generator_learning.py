"""The model itself learns while a simulated user chats: auto_train on the real model.

The real model (SmolLM2-135M-Instruct, the GGUF file `rlchat init-model
--real` fetches, converted once) chats --turns turns through the real agent
and store with `auto_train` at --auto-train rows, for each taste:

- steps:   likes replies that lay out steps (lines that begin with a number
           or a bullet; more is better, up to six);
- concise: likes short replies that stay on the message's topic: the
           all-MiniLM-L6-v2 cosine of message and reply, less 0.3 per 60
           words (the judge's real trained weights, from the `bench` extra).

Of the shown candidates the user picks the one their taste likes best,
rated 5, over the others (replies tied for best are one group: no pair
among equals); where the taste likes none of them more than the rest (no
shown reply lays out steps) the pick is rated 2, no preference, as a person
who wants steps would.  Every background run is the real
`rlchat train --adapter` process the chat starts.  The user reads while a
run trains: the benchmark times one turn during the run (the run is held
while a turn is generated), then waits for the run to end before the next
message, and the chat swaps its adapter in if it beats the held-out bar.

Then, on --held-out messages the chat never saw, the generator's own
samples before any ranking (8 per message, the same seeds for every model):
for the base model and the adapter in use after each third of the chat
- the taste's mean utility, and the share of samples above the base's
  median utility (0.5 for the base, by construction; ties count half);
- what the model gives up: the mean on-topic cosine (message to reply) and
  the perplexity of a fixed general text (not a chat).
And the time of each run, and a turn's time during a run against without.

Run: .venv/bin/python benchmarks/generator_learning.py [--turns 150] [--auto-train 50]
     [--tastes steps,concise] [--quick]
Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from judge import Judge
from real_messages import MESSAGES
from real_model import real_files

from rlchat.learner.adapters import adapter_runs
from rlchat.learner.agent import open_agent
from rlchat.learner.background_training import AUTO_STEPS
from rlchat.learner.generator import Generator
from rlchat.learner.settings import Settings
from rlchat.storage import Store

GENERAL_TEXT = (
    "The water cycle describes how water moves between the land, the oceans and the air. "
    "Heat from the sun evaporates water from seas and lakes, and plants release water "
    "vapour through their leaves. As the vapour rises it cools and condenses into clouds. "
    "When the droplets grow heavy enough they fall as rain or snow, which collects in "
    "rivers, soaks into the ground or is stored for a time in glaciers. Rivers carry the "
    "water back to the sea, and the cycle begins again. Without it, fresh water would not "
    "reach the places where people, animals and plants need it.")
# A step: a line that begins with a number or a bullet and says something
# (two words of letters), so that "1. 1. 1." is no list to this user.
ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+[^\W\d_]{2,}\S*\s+[^\W\d_]{2,}",
                  re.MULTILINE)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def utility(taste: str, judge: Judge, message: str, reply: str) -> float:
    if taste == "steps":
        return float(min(len(ITEM.findall(reply)), 6))
    return judge.cosine(message, reply) - 0.3 * min(len(reply.split()) / 60, 2.0)


def perplexity(generator: Generator) -> float:
    """Of GENERAL_TEXT under the generator's weights in float32."""
    ids = generator.tokenizer(GENERAL_TEXT, return_tensors="pt")["input_ids"]
    return float(torch.exp(generator_loss(generator, ids)))


def generator_loss(generator: Generator, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        logits = generator.prompt_model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:])


def evaluate(model: Path, adapter: Path | None, held_out: list[str], tokens: int,
             taste: str, judge: Judge) -> dict:
    """The generator's raw samples on the held-out messages, same seeds for all."""
    generator = Generator.load(str(model), adapter=adapter, seed=0, max_new_tokens=tokens)
    utilities, cosines = [], []
    for i, message in enumerate(held_out):
        generator.reseed(1000 + i)
        proposal = generator.propose([], message, 8)
        for cand in proposal.candidates:
            utilities.append(utility(taste, judge, message, cand.text))
            cosines.append(judge.cosine(message, cand.text))
    return {"utilities": utilities, "on_topic_cosine": round(statistics.mean(cosines), 4),
            "perplexity": round(perplexity(generator), 3),
            "identity": generator.identity}


def above(values: list[float], median: float) -> float:
    return sum(1.0 if v > median else 0.5 if v == median else 0.0 for v in values) / len(values)


def beats(values: list[float], base: list[float]) -> float:
    """How often a sample beats a base sample, ties half: 0.5 for the base
    itself whatever its ties (a discrete taste ties many at the median)."""
    ordered = np.sort(np.asarray(base))
    wins = [np.searchsorted(ordered, v, "left") + 0.5 * (np.searchsorted(ordered, v, "right")
            - np.searchsorted(ordered, v, "left")) for v in values]
    return float(np.mean(wins) / len(base))


def answer(agent, view, utilities: list[float]) -> None:
    """The user's answer: the best shown reply, rated 5; several tied for best
    are ordered as one group above the rest (no pair among equals); where the
    taste likes none more than the others (no shown reply lays out steps) the
    pick is rated 2, which is no preference."""
    top = max(utilities)
    best = [c.id for c, u in zip(view.candidates, utilities, strict=True) if u == top]
    if top == min(utilities):
        agent.choose(view.turn, best[0], 2)
    elif len(best) == 1:  # a plain pick: the ranking policy's rewards stay a pick's
        agent.choose(view.turn, best[0], 5)
    else:
        agent.choose(view.turn, best[0], 5, order=[best])


def chat(taste: str, model: Path, data: Path, args, judge: Judge, messages: list[str]) -> dict:
    """The user chats; returns the runs, the turn times and the adapter in use by turn."""
    settings = Settings(model=str(model), auto_train=args.auto_train,
                        max_new_tokens=args.tokens)
    agent = open_agent(Store(data), settings, seed=args.seed)
    agent.model_learning.steps = args.steps
    quiet, during, runs, in_use, notices = [], [], [], {}, []
    try:
        for turn in range(args.turns):
            notice = agent.between_turns()
            if notice:
                notices.append(f"turn {turn}: {notice}")
                say(f"  turn {turn}: {notice}")
            training = agent.model_learning.training
            running = training is not None and training.running
            message = messages[turn % len(messages)]
            began = time.perf_counter()
            view = agent.say(message)
            (during if running else quiet).append(time.perf_counter() - began)
            answer(agent, view, [utility(taste, judge, message, c.text) for c in view.candidates])
            agent.end()  # each message is a question of its own: a session each
            if running:  # the user reads until the run ends
                started = time.perf_counter()
                training.wait()
                runs.append({"turn": turn, "wait_s": round(time.perf_counter() - started, 1)})
            in_use[turn + 1] = agent.adapter_run()
            if turn % 10 == 9:
                say(f"  {taste}: turn {turn + 1}, adapter {agent.adapter_run()}, "
                    f"{agent.training_status()}")
        notice = agent.between_turns()  # the last run's verdict
        if notice:
            notices.append(f"end: {notice}")
        training = agent.model_learning.training
        if training is not None and training.running:
            training.wait()
            notices.append(f"end: {agent.between_turns()}")
        in_use[args.turns] = agent.adapter_run()
    finally:
        agent.stop_training()
        agent.store.close()
    return {"quiet": quiet, "during": during, "waits": runs, "in_use": in_use,
            "notices": notices}


def run_times(data: Path) -> list[dict]:
    return [{"run": r.run, "rows": r.pairs, "held_out": r.held_out,
             "held_out_accuracy": r.accuracy, "passed": r.passed,
             "train_s": json.loads((r.path / "rlchat_lineage.json").read_text()).get("train_s")}
            for r in adapter_runs(data)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--auto-train", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens of a reply")
    parser.add_argument("--steps", type=int, default=AUTO_STEPS, help="of each run")
    parser.add_argument("--tastes", default="steps,concise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.auto_train, args.held_out, args.steps = 12, 15, 3, 4
    _, model = real_files()
    judge = Judge()
    order = list(MESSAGES)
    random.Random(args.seed).shuffle(order)
    held_out, messages = order[:args.held_out], order[args.held_out:]
    figures: dict = {"model": "SmolLM2-135M-Instruct", "turns": args.turns,
                     "auto_train": args.auto_train, "steps": args.steps,
                     "tokens": args.tokens, "held_out_messages": len(held_out),
                     "cpu": torch.backends.cpu.get_cpu_capability(),
                     "threads": torch.get_num_threads(), "tastes": {}}
    for taste in args.tastes.split(","):
        say(f"{taste}: chatting {args.turns} turns with auto_train at {args.auto_train}")
        data = Path(tempfile.mkdtemp(prefix=f"rlchat-genlearn-{taste}-")) / "data"
        log = chat(taste, model, data, args, judge, messages)
        runs = run_times(data)
        say(f"{taste}: evaluating on {len(held_out)} held-out messages")
        base = evaluate(model, None, held_out, args.tokens, taste, judge)
        median = statistics.median(base["utilities"])
        checkpoints = sorted({args.turns // 3, 2 * args.turns // 3, args.turns})
        after: dict = {}
        done: dict = {}
        for point in checkpoints:
            run = log["in_use"].get(point)
            if run is None:
                after[f"turn_{point}"] = {"adapter": None}
                continue
            if run not in done:
                path = next(r.path for r in adapter_runs(data) if r.run == run)
                done[run] = evaluate(model, path, held_out, args.tokens, taste, judge)
            e = done[run]
            after[f"turn_{point}"] = {
                "adapter": run,
                "utility_mean": round(statistics.mean(e["utilities"]), 4),
                "share_above_base_median": round(above(e["utilities"], median), 4),
                "beats_base_sample": round(beats(e["utilities"], base["utilities"]), 4),
                "on_topic_cosine": e["on_topic_cosine"],
                "on_topic_change": round(e["on_topic_cosine"] / base["on_topic_cosine"] - 1, 4),
                "perplexity": e["perplexity"],
                "perplexity_change": round(e["perplexity"] / base["perplexity"] - 1, 4),
            }
        final = after[f"turn_{args.turns}"]
        quiet, during = log["quiet"], log["during"]
        figures["tastes"][taste] = {
            "base": {"utility_mean": round(statistics.mean(base["utilities"]), 4),
                     "utility_median": round(median, 4),
                     "share_above_base_median": round(above(base["utilities"], median), 4),
                     "on_topic_cosine": base["on_topic_cosine"],
                     "perplexity": base["perplexity"]},
            "after": after,
            "runs": runs,
            "run_wall_s": [w["wait_s"] for w in log["waits"]],
            "turn_s_median_quiet": round(statistics.median(quiet), 3) if quiet else None,
            "turn_s_median_during_run": round(statistics.median(during), 3) if during else None,
            "turn_during_over_quiet": (round(statistics.median(during) / statistics.median(quiet),
                                             3) if quiet and during else None),
            "notices": log["notices"],
            "bars": {
                "share_above_base_median_ge_0_65": (final.get("share_above_base_median") or 0)
                >= 0.65,
                "on_topic_drop_le_10pct": final.get("adapter") is not None
                and final["on_topic_change"] >= -0.10,
                "perplexity_rise_le_15pct": final.get("adapter") is not None
                and final["perplexity_change"] <= 0.15,
                "turn_during_run_le_1_5x": bool(quiet and during) and statistics.median(during)
                <= 1.5 * statistics.median(quiet),
            },
        }
        say(json.dumps(figures["tastes"][taste]))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
