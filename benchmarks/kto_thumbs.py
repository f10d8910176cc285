"""KTO on a log answered with thumbs alone: does `rlchat train --method kto`
move the model toward the thumbs?

On the tiny GPT-2 (built here, as `init-model` does), a simulated user
chats --turns turns through the real agent and store and never picks: of
the candidates shown they mark the shortest good (`+`) and the longest bad
(`-`), and send the next message, so every turn closes unanswered with its
two thumbs.  Then `rlchat train --method kto` runs on that log at each of
--steps, and reports the held-out accuracy: how often the implicit reward
ranks each held-out prompt's liked reply over its disliked one (the newest
20 % of rows; 0.5 before training, by definition, which is the baseline).

Run: .venv/bin/python benchmarks/kto_thumbs.py [--turns 50] [--steps 10,30,60]
Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rlchat.learner.agent import open_agent
from rlchat.learner.settings import Settings
from rlchat.learner.tiny_model import corpus_lines, write_tiny_model
from rlchat.learner.train import TrainOptions, train
from rlchat.storage import Store

USERS = [line.removeprefix("User:").strip() for line in corpus_lines() if line.startswith("User:")]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--steps", default="10,30,60")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlchat-kto-bench-"))
    model, data = work / "tiny", work / "data"
    say("[1/3] the tiny model")
    write_tiny_model(model)
    say(f"[2/3] {args.turns} turns answered with thumbs alone")
    agent = open_agent(Store(data), Settings(model=str(model)), seed=args.seed)
    try:
        for i in range(args.turns):
            view = agent.say(USERS[i % len(USERS)])
            by_length = sorted(view.candidates, key=lambda c: len(c.text))
            agent.rate(view.turn, by_length[0].id, True)
            agent.rate(view.turn, by_length[-1].id, False)
        agent.end()
        agent.checkpoint()
    finally:
        agent.store.close()
    figures: dict = {"turns": args.turns, "baseline_accuracy": 0.5, "runs": []}
    for steps in (int(s) for s in args.steps.split(",")):
        say(f"[3/3] rlchat train --method kto --steps {steps}")
        began = time.perf_counter()
        report = train(data, TrainOptions(model=str(model), method="kto", steps=steps,
                                          seed=args.seed, out=work / f"run-{steps}"),
                       lambda message: None)
        figures["runs"].append({
            "steps": steps, "rows": report["rows"], "held_out": report["held_out"],
            "held_out_accuracy": report["held_out_accuracy"],
            "held_out_reward_margin": report["held_out_reward_margin"],
            "train_s": round(time.perf_counter() - began, 1)})
        say(f"  {json.dumps(figures['runs'][-1])}")
    figures["bars"] = {"accuracy_above_baseline": all(
        run["held_out_accuracy"] > figures["baseline_accuracy"] for run in figures["runs"])}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
