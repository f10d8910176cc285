"""A family of simulated users with tastes drawn at random, through the real agent.

Each taste is drawn from a wide space (a word liked or disliked, a property
of the characters, a band of lengths, a set of topic words, a punctuation
habit) and given a small secondary preference on length, so that every turn
has a favourite.  The user reads the shown candidates and picks the best by
their taste (small noise); the figure is how often the first-ranked
candidate was that pick, against random order (1 / shown, its expectation).

The ceiling is what ranking by the true taste would score on the same
turns: the user's noise alone keeps it under 4x (4 shown).  The linear fit
is what today's features can express: a least-squares fit of the true
utility on the features of every candidate of the other turns (exact
utilities, far more than feedback tells), ranking each turn of the second
half.

Each taste runs three ways through the real agent, store and tiny GPT-2
(built like `rlchat init-model`), same seed and messages:
  - current:       today's features, a pick and a rating per turn;
  - v1:            the same with the columns added since v1 held at zero;
  - current_rank:  today's features, the user orders all shown candidates.

Run: .venv/bin/python benchmarks/tastes.py [--tastes 24] [--turns 100] [--quick]
Ends by printing one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

MESSAGES = [
    "what should I cook tonight?", "tell me a joke", "how do I fix a slow laptop?",
    "recommend a film please", "I feel nervous about my exam", "what book should I read?",
    "where should I travel this summer?", "why is the sky blue?", "good morning",
    "I lost my keys in the kitchen", "can you help me write an email?", "do you like music?",
    "I am tired today", "what is the weather like?", "give me a tip for sleeping better",
]
KINDS = ("word_liked", "word_disliked", "chars", "length_band", "topic", "punctuation")
VARIANTS = ("current", "v1", "current_rank")
NOISE = 0.05
WINDOW = 20  # turns, for "how many turns to reach 2x"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Taste:
    name: str
    kind: str
    arg: tuple
    tie: float  # weight of the secondary length preference (signed)

    def utility(self, text: str) -> float:
        from rlchat.learner.features import words

        ws = words(text)
        low = text.lower()
        if self.kind == "word_liked":
            main = float(ws.count(self.arg[0]))
        elif self.kind == "word_disliked":
            main = -float(ws.count(self.arg[0]))
        elif self.kind == "chars":
            what, sign = self.arg
            if what == "vowels":
                letters = [c for c in low if c.isalpha()]
                share = sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0
                main = sign * 5.0 * share
            elif what == "capitals":
                main = sign * float(sum(c.isupper() for c in text))
            else:  # one letter
                main = sign * float(low.count(what))
        elif self.kind == "length_band":
            lo, hi = self.arg
            n = len(text)
            main = 0.0 if lo <= n <= hi else -min(abs(n - lo), abs(n - hi)) / 15.0
        elif self.kind == "topic":
            main = float(sum(w in self.arg for w in ws))
        else:  # punctuation
            mark, sign = self.arg
            main = sign * float(text.count(mark))
        return main + self.tie * len(text) / 300.0


def draw_tastes(count: int, vocabulary: list[str], seed: int) -> list[Taste]:
    """`count` tastes, the kinds in turn, their parameters at random."""
    rng = np.random.default_rng([seed, 99])
    tastes = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        sign = 1 if rng.random() < 0.5 else -1
        tie = float(rng.choice([-1.0, 1.0]))
        if kind in ("word_liked", "word_disliked"):
            arg: tuple = (str(rng.choice(vocabulary)),)
        elif kind == "chars":
            what = str(rng.choice(["vowels", "capitals", *"etaoinshrdlu"]))
            arg = (what, sign)
        elif kind == "length_band":
            lo = int(rng.integers(10, 90))
            arg = (lo, lo + int(rng.integers(15, 40)))
        elif kind == "topic":
            arg = tuple(str(w) for w in rng.choice(vocabulary, size=5, replace=False))
        else:
            arg = (str(rng.choice([",", ".", "?", "!", "'"])), sign)
        tastes.append(Taste(f"{i:02d}_{kind}:{'/'.join(map(str, arg))}", kind, arg, tie))
    return tastes


# the runs ---------------------------------------------------------------------
_GENERATOR = None


def _init(model_dir: str, dtype: str) -> None:
    global _GENERATOR
    import torch

    from rlchat.learner.generator import Generator

    torch.set_num_threads(1)
    _GENERATOR = Generator.load(model_dir, dtype=dtype)


def _v1_only(agent_cls: type) -> type:
    """The agent with the columns added since v1 held at zero: v1's features."""
    from rlchat.learner.features import FEATURE_NAMES, V1_NAMES

    added = [i for i, name in enumerate(FEATURE_NAMES) if name not in V1_NAMES]

    class V1Agent(agent_cls):
        def _store_turn(self, text, proposal, phi):
            phi = phi.copy()
            phi[:, added] = 0.0
            return super()._store_turn(text, proposal, phi)

    return V1Agent


def run_taste(task: tuple[Taste, str, int, int]) -> dict:
    """Per turn: (hit, 1 / shown) for one taste and one variant."""
    from rlchat.learner.agent import Agent
    from rlchat.learner.records import Turn
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store

    taste, variant, seed, turns = task
    assert _GENERATOR is not None
    _GENERATOR.reseed(seed)
    rng = np.random.default_rng([seed, 7])
    agent_cls = _v1_only(Agent) if variant == "v1" else Agent
    hits, chance, ceiling, picks = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        agent = agent_cls(Store(tmp), _GENERATOR, Settings(candidates=4, samples=8), seed=seed)
        for t in range(turns):
            message = MESSAGES[int(rng.integers(len(MESSAGES)))]
            view = agent.say(message)
            u = np.array([taste.utility(c.text) for c in view.candidates])
            noisy = u + rng.normal(0, NOISE, len(u))
            pick = int(np.argmax(noisy))
            hits.append(pick == 0)
            ceiling.append(pick == int(np.argmax(u)))  # ranked by the true taste
            picks.append(pick)
            chance.append(1.0 / len(view.candidates))
            rating = 5 if u[pick] >= u.max() else 3
            ids = [c.id for c in view.candidates]
            order = [ids[i] for i in np.argsort(-noisy, kind="stable")]
            agent.choose(view.turn, ids[pick], rating,
                         order=order if variant == "current_rank" else None)
            if t % 5 == 4:
                agent.end()
        stored = [Turn.from_dict(record) for record in agent.store.turns()]
        agent.store.close()
    linear = linear_fit_hits(stored, taste, picks) if variant == "current" else []
    return {"taste": taste.name, "variant": variant, "hits": hits, "chance": chance,
            "ceiling": ceiling, "linear": linear}


def linear_fit_hits(stored: list, taste: Taste, picks: list, folds: int = 5) -> list[bool]:
    """What the features can express: least squares of the true utility on
    the features of every candidate (shown or not; exact utilities, far more
    than any feedback tells), fitted on the other folds of turns; then, for
    each turn of the second half, whether its first-ranked shown candidate
    was the pick."""
    phis = [turn.features() for turn in stored]
    utilities = [np.array([taste.utility(c.text) for c in turn.candidates]) for turn in stored]
    half = len(stored) // 2
    hits = []
    for fold in range(folds):
        train = [t for t in range(len(stored)) if t % folds != fold]
        x = np.vstack([phis[t] - phis[t].mean(axis=0) for t in train])
        y = np.concatenate([utilities[t] - utilities[t].mean() for t in train])
        w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
        hits += [(t, int(np.argmax(phis[t][stored[t].shown_ids] @ w)) == picks[t])
                 for t in range(half, len(stored)) if t % folds == fold]
    return [hit for _, hit in sorted(hits)]


def vocabulary(model_dir: str, dtype: str, turns: int) -> tuple[list[str], str]:
    """Words the model says in 3-30 % of its candidates (a liked word that it
    never says would be no taste at all), and the number format in use."""
    from rlchat.learner.features import words
    from rlchat.learner.generator import Generator

    generator = Generator.load(model_dir, dtype=dtype, seed=12345)
    seen: Counter = Counter()
    total = 0
    for i in range(turns):
        proposal = generator.propose([], MESSAGES[i % len(MESSAGES)], 8)
        for cand in proposal.candidates:
            seen.update(set(words(cand.text)))
            total += 1
    words_said = sorted(w for w, n in seen.items() if 0.03 <= n / total <= 0.30 and len(w) > 1)
    return words_said, generator.dtype


def turns_to_2x(hits: list[bool], chance: list[float]) -> int | None:
    """The first turn at which the last WINDOW turns were at least twice chance."""
    for t in range(WINDOW, len(hits) + 1):
        if np.mean(hits[t - WINDOW:t]) >= 2.0 * np.mean(chance[t - WINDOW:t]):
            return t
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tastes", type=int, default=24)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="6 tastes x 40 turns")
    args = parser.parse_args()
    if args.quick:
        args.tastes, args.turns = 6, 40
    variants = args.variants.split(",")
    start = time.time()

    from rlchat.learner.tiny_model import write_tiny_model

    model_dir = tempfile.mkdtemp()
    say("building the tiny model (as `rlchat init-model`)")
    write_tiny_model(model_dir)
    vocab, dtype = vocabulary(model_dir, args.dtype, 30)
    import torch

    cpu = torch.backends.cpu.get_cpu_capability()
    say(f"CPU capability {cpu}; generator format {dtype}")
    tastes = draw_tastes(args.tastes, vocab, args.seed)
    say(f"{len(vocab)} words to draw from; {len(tastes)} tastes x {len(variants)} variants "
        f"x {args.turns} turns on {args.jobs} processes")
    tasks = [(taste, v, args.seed + i, args.turns)
             for i, taste in enumerate(tastes) for v in variants]
    results: dict[str, dict[str, dict]] = {t.name: {} for t in tastes}
    # spawn: the parent has torch threads running (the vocabulary), and a
    # forked child would inherit their locks.
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(args.jobs, initializer=_init, initargs=(model_dir, args.dtype)) as pool:
        for n, res in enumerate(pool.imap_unordered(run_taste, tasks), start=1):
            results[res["taste"]][res["variant"]] = res
            say(f"  {n}/{len(tasks)} runs ({time.time() - start:.0f} s)")

    half = args.turns // 2
    per_taste: dict[str, dict] = {}
    for name, by_variant in results.items():
        row = {}
        for v, res in by_variant.items():
            late_hits, late_chance = res["hits"][half:], res["chance"][half:]
            row[f"{v}_ratio"] = round(float(np.mean(late_hits) / np.mean(late_chance)), 3)
            row[f"{v}_turns_to_2x"] = turns_to_2x(res["hits"], res["chance"])
            if v == "current":  # what a policy that knew the taste would score
                ceiling = np.mean(res["ceiling"][half:]) / np.mean(late_chance)
                row["ceiling_ratio"] = round(float(ceiling), 3)
                linear = np.mean(res["linear"]) / np.mean(late_chance)
                row["linear_fit_ratio"] = round(float(linear), 3)
        per_taste[name] = row
        say(f"  {name:40s} {row}")

    ceilings = [row["ceiling_ratio"] for row in per_taste.values() if "ceiling_ratio" in row]
    linear_fits = [row["linear_fit_ratio"] for row in per_taste.values()
                   if "linear_fit_ratio" in row]

    def summary(v: str) -> dict:
        ratios = [row[f"{v}_ratio"] for row in per_taste.values()]
        reach = [row[f"{v}_turns_to_2x"] for row in per_taste.values()]
        reached = [r for r in reach if r is not None]
        return {
            "median_ratio": round(statistics.median(ratios), 3),
            "share_ge_2x": round(sum(r >= 2.0 for r in ratios) / len(ratios), 3),
            "min_ratio": round(min(ratios), 3),
            "reached_2x": f"{len(reached)}/{len(reach)}",
            "median_turns_to_2x": statistics.median(reached) if reached else None,
        }

    figures = {
        "tastes": len(tastes), "turns": args.turns, "window_turns": f"{half + 1}-{args.turns}",
        "cpu_capability": cpu, "dtype": dtype, "noise": NOISE, "vocabulary": len(vocab),
        "ceiling_median_ratio": round(statistics.median(ceilings), 3) if ceilings else None,
        "linear_fit_median_ratio": (
            round(statistics.median(linear_fits), 3) if linear_fits else None),
        **{v: summary(v) for v in variants if all(v in r for r in results.values())},
        "per_taste": per_taste, "total_s": round(time.time() - start, 1),
    }
    current = figures.get("current")
    if current:
        figures["bars"] = {"share_ge_2x_ge_0_9": current["share_ge_2x"] >= 0.9,
                           "median_ge_3x": current["median_ratio"] >= 3.0}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
