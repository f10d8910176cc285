"""`rlchat train` on a simulated user's log: does the model move toward the user?

On the tiny GPT-2 (built here, as `init-model` does), a simulated user with a
visible taste chats --turns turns through the real agent and store: of the
candidates shown, they pick one that asks a question (rated 5), or else the
shortest (rated 2, a disliked pick that trains nothing).  Then `rlchat
train` (DPO, LoRA) runs on that log, and:

- the same fresh prompts are sampled from the base and the trained model with
  the same seeds: the share of raw samples that ask a question, before and
  after (the baseline is the base model in this run);
- the held-out preference accuracy: how often the implicit DPO reward ranks
  the newest 20 % of pairs' chosen reply over the rejected one (0.5 before
  training, by definition);
- the train time;
- the ranking policy after the switch: top-1 agreement with the user's picks
  over the next 50 turns on the trained model, against the 50 turns before
  and against 50 turns on the base model from the same point (a copy of the
  log, the same messages and seeds); three such continuations, pooled.

Run: .venv/bin/python benchmarks/train.py [--turns 200] [--steps 60] [--taste question|short]
Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlchat.learner.agent import open_agent
from rlchat.learner.generator import Generator
from rlchat.learner.settings import Settings
from rlchat.learner.tiny_model import corpus_lines, write_tiny_model
from rlchat.learner.train import TrainOptions, train
from rlchat.storage import Store

USERS = [line.removeprefix("User:").strip() for line in corpus_lines() if line.startswith("User:")]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


TASTES = {
    "question": lambda text: "?" in text,
    "short": lambda text: len(text) <= 25,
}


def chat(model: str, data: Path, turns: int, likes, seed: int, offset: int = 0) -> list[bool]:
    """The user chats `turns` turns; returns, per turn, whether the policy's
    first candidate was the user's pick."""
    agent = open_agent(Store(data), Settings(model=model), seed=seed)
    agreed = []
    try:
        for i in range(turns):
            view = agent.say(USERS[(offset + i) % len(USERS)])
            liked = [c for c in view.candidates if likes(c.text)]
            pick = min(liked or view.candidates, key=lambda c: len(c.text))
            agent.choose(view.turn, pick.id, 5 if liked else 2)
            agreed.append(pick.id == view.candidates[0].id)
            if (i + 1) % 50 == 0:
                say(f"  turn {i + 1}/{turns}")
            if i % 10 == 9:
                agent.end()  # sessions of ten turns
    finally:
        agent.store.close()
    return agreed


def share(model: str, likes, prompts: list[str], k: int, seed: int) -> float:
    """The share of raw samples (k per prompt, fresh dialogues) the user would like."""
    generator = Generator.load(model, seed=seed, warm_up=False)
    hits = total = 0
    for prompt in prompts:
        rows = generator.propose([], prompt, k)
        hits += sum(likes(c.text) for c in rows.candidates)
        total += len(rows.candidates)
    return hits / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--taste", choices=sorted(TASTES), default="question")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    likes = TASTES[args.taste]
    work = Path(tempfile.mkdtemp(prefix="rlchat-train-bench-"))
    model, data = work / "tiny", work / "data"
    figures: dict = {"turns": args.turns, "steps": args.steps, "taste": args.taste,
                     "threads": torch.get_num_threads()}
    say("[1/5] the tiny model")
    write_tiny_model(model)
    say(f"[2/5] {args.turns} turns of a user who likes {args.taste} replies")
    before = chat(str(model), data, args.turns, likes, args.seed)
    say("[3/5] rlchat train")
    began = time.perf_counter()
    report = train(data, TrainOptions(model=str(model), steps=args.steps, seed=args.seed),
                   lambda message: say(f"  {message}"))
    figures["train_s"] = round(time.perf_counter() - began, 1)
    figures.update({key: report[key] for key in ("pairs", "train_rows", "held_out",
                                                 "train_loss", "held_out_accuracy")})
    trained = report["path"]
    say("[4/5] the same prompts from the base and the trained model, same seeds")
    prompts = [USERS[i] for i in range(0, len(USERS), max(1, len(USERS) // 40))][:40]
    base_share = share(str(model), likes, prompts, 8, seed=123)
    trained_share = share(trained, likes, prompts, 8, seed=123)
    figures["share_base"] = round(base_share, 3)
    figures["share_trained"] = round(trained_share, 3)
    figures["share_ratio"] = round(trained_share / max(base_share, 1e-9), 2)
    say("[5/5] 50 more turns on the trained model, and on the base model (control), "
        "three times from the same log")
    after, control = [], []
    for repeat in range(3):
        for label, model_path, out in (("trained", trained, after),
                                        ("control", str(model), control)):
            copy = work / f"{label}-{repeat}"
            shutil.copytree(data, copy, ignore=shutil.ignore_patterns(".lock*", "models"))
            out += chat(model_path, copy, 50, likes, args.seed + 1 + repeat,
                        offset=args.turns + 50 * repeat)
    figures["top1_last_50_before"] = round(statistics.mean(before[-50:]), 3)
    figures["top1_50_after"] = round(statistics.mean(after), 3)
    figures["top1_50_control_base"] = round(statistics.mean(control), 3)
    figures["bars"] = {
        "share_ratio_ge_1_5": figures["share_ratio"] >= 1.5,
        "held_out_accuracy_ge_0_65": figures["held_out_accuracy"] >= 0.65,
        "train_le_300s": figures["train_s"] <= 300,
        "top1_after_ge_before": figures["top1_50_after"] >= figures["top1_last_50_before"],
    }
    for key, value in figures.items():
        say(f"{key:26s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
