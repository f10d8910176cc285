"""How fast the learner picks up a user's taste, against peers and baselines.

1. The peers harness (a side-by-side harness of learning peers on a simulated
   stream, kept outside this project; --peers-dir or $RLCHAT_PEERS_DIR names
   its folder, skipped without one): the project's QPolicy, through the
   harness adapter (benchmarks/peers_plugin.py), side by side with its peers
   on the same simulated stream, seeds and users; the harness's own runner,
   metrics and table.
2. Text-level simulated users driven through the real agent, generator (a
   tiny GPT-2 built like `rlchat init-model`) and store, one per hidden taste,
   against a random-order agent in the same run; with gamma = 0 beside the
   default to show what the discount costs where turns are independent, and
   without the hidden-state features (an ablation: do they earn their place?).
3. Carry-over: the reply the user picks decides whether the session goes
   on; gamma > 0 against gamma = 0 on session length and reward.
4. rank + learn time per turn at the chat's feature dimension.

Run: .venv/bin/pip install -e '.[bench]' &&
     .venv/bin/python benchmarks/learning.py --peers-dir PATH/TO/peers
     (--quick for a smoke run).  Ends by printing one JSON object.
"""

from __future__ import annotations

import os

# One BLAS thread per process: the harness runs two processes on two cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from taste_family import PREVIOUS, without_population  # noqa: E402

from rlchat.learner.policy import PolicyConfig  # noqa: E402

_HERE = Path(__file__).resolve().parent

ROOT = Path(__file__).resolve().parent.parent
# The harness seeds each learner from its key: a key relative to the project
# root (the harness's own runner, run from there, has the same) keeps the
# figures the same wherever the checkout lives.
PLUGIN = "plugin:benchmarks/peers_plugin.py:RlchatPeer"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# 1. peers harness ------------------------------------------------------------
def peers_table(peers_dir: Path, turns: int, seeds: int, jobs: int) -> dict:
    if not (peers_dir / "run.py").exists():
        say(f"[1/4] peers harness skipped: no run.py in {peers_dir} (--peers-dir)")
        return {}
    sys.path.insert(0, str(peers_dir.resolve()))  # before the chdir: it may be relative
    os.chdir(ROOT)  # where PLUGIN's path starts
    import run as harness  # the harness's own runner, metrics and table
    from peers import default_peers

    keys = []
    for key in default_peers():
        lib = {"vw": "vowpalwabbit", "river": "river"}.get(key.split("_")[0])
        try:
            if lib:
                __import__(lib)
            keys.append(key)
        except ImportError:
            say(f"  peer {key} skipped: {lib} is not installed (pip install -e '.[bench]')")
    keys.append(PLUGIN)
    drift = 500 if turns > 600 else None
    windows = [(1, 50), (51, 200), (201, turns)]
    tasks = [(k, s, turns, drift, None) for s in range(seeds) for k in keys]
    say(f"[1/4] peers harness: {len(keys)} learners x {seeds} seeds x {turns} turns")
    start = time.time()
    with Pool(jobs) as pool:
        results = []
        for i, result in enumerate(pool.imap_unordered(harness.run_one, tasks), start=1):
            results.append(result)
            if i % max(1, len(tasks) // 10) == 0:
                say(f"  {i}/{len(tasks)} runs")
    rows = harness.summarise(results, keys, windows, drift)
    print(harness.table(rows, windows, drift))
    print(f"\n{turns} turns x {seeds} seeds, drift at {drift}, wall {time.time() - start:.1f}s\n")
    out = {}
    for row in rows:
        name = "rlchat" if row["key"] == PLUGIN else row["key"]
        out[name] = {
            "best1_t201_end": round(row["best1_late"][0], 4),
            "best1_sd": round(row["best1_late"][1], 4),
            "top1_t201_end": round(row[f"top1_201_{turns}"][0], 4),
            "top1_post_drift": round(row["top1_postdrift"][0], 4) if drift else None,
            "top1_post_drift_sd": round(row["top1_postdrift"][1], 4) if drift else None,
        }
    return out


# 2-3. text-level users -------------------------------------------------------
MESSAGES = [
    "what should I cook tonight?", "tell me a joke", "how do I fix a slow laptop?",
    "recommend a film please", "I feel nervous about my exam", "what book should I read?",
    "where should I travel this summer?", "why is the sky blue?", "good morning",
    "I lost my keys in the kitchen", "can you help me write an email?", "do you like music?",
]
POLITE = {"please", "thanks", "thank", "sorry", "glad", "welcome"}


def _words(text: str) -> list[str]:
    from rlchat.learner.features import words

    return words(text)


def _overlap(text: str, message: str) -> float:
    cand, mine = _words(text), set(_words(message))
    return sum(w in mine for w in cand) / len(cand) if cand else 0.0


# Hidden tastes: utility of a reply to a message.  A small length term breaks
# ties so that a taste always has a favourite.
TASTES = {
    "short": lambda text, msg: -len(text) / 50.0,
    "long": lambda text, msg: len(text) / 50.0,
    "questions": lambda text, msg: float("?" in text) - len(text) / 500.0,
    "echo": lambda text, msg: 3.0 * _overlap(text, msg) - len(text) / 500.0,
    "polite": lambda text, msg: float(sum(w in POLITE for w in _words(text)))
    - len(text) / 500.0,
}


class WithoutHidden:
    """The generator with its hidden-state signal removed: every candidate's
    pooled state is the context's, so the similarity and projection features
    carry nothing (an ablation, the rest of the turn unchanged)."""

    def __init__(self, generator) -> None:
        self.generator = generator

    def __getattr__(self, name: str):  # identity, tokenizer, ...: the generator's
        return getattr(self.generator, name)

    def propose(self, history, message: str, n: int, **streaming):
        proposal = self.generator.propose(history, message, n, **streaming)
        for cand in proposal.candidates:
            cand.hidden = proposal.context_hidden.copy()
        return proposal


def make_agent(generator, config, seed: int, directory: str, population: bool = True):
    """`population` off: the policy starts from the ridge for every column."""
    from rlchat.learner.agent import Agent
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store

    generator.reseed(seed)
    agent = Agent(Store(directory), generator, Settings(candidates=4, samples=8),
                  policy_config=config, seed=seed)
    if not population:
        without_population(agent)
    return agent


def taste_run(generator, taste: str, config, seed: int, turns: int,
              population: bool = True) -> list[bool]:
    """Per turn: was the first-ranked candidate the user's pick?  The user reads
    all shown candidates and picks the best by their taste (small noise)."""
    utility = TASTES[taste]
    rng = np.random.default_rng([seed, 7])
    hits = []
    with tempfile.TemporaryDirectory() as tmp:
        agent = make_agent(generator, config, seed, tmp, population)
        for t in range(turns):
            message = MESSAGES[int(rng.integers(len(MESSAGES)))]
            view = agent.say(message)
            u = np.array([utility(c.text, message) for c in view.candidates])
            pick = int(np.argmax(u + rng.normal(0, 0.05, len(u))))
            hits.append(pick == 0)
            rating = 5 if u[pick] >= u.max() else 3
            agent.choose(view.turn, view.candidates[pick].id, rating)
            if t % 5 == 4:
                agent.end()
        agent.store.close()
    return hits


def engagement_run(generator, config, seed: int, turns: int) -> dict:
    """Carry-over: a reply that asks a question keeps the user talking (the
    session goes on with p=.9, else .5), while the immediate rating prefers
    short replies.  The user reads from the top and takes the first
    acceptable reply (under 80 characters), so the ranking decides the pick."""
    rng = np.random.default_rng([seed, 11])
    lengths, rewards, session_turns, session_reward = [], [], 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        agent = make_agent(generator, config, seed, tmp)
        for _ in range(turns):
            message = MESSAGES[int(rng.integers(len(MESSAGES)))]
            view = agent.say(message)
            texts = [c.text for c in view.candidates]
            pick = next((i for i, t in enumerate(texts) if len(t) < 80), len(texts) - 1)
            rating = 4 if len(texts[pick]) < 40 else 3
            session_reward += agent.choose(view.turn, view.candidates[pick].id, rating)
            session_turns += 1
            goes_on = rng.random() < (0.9 if "?" in texts[pick] else 0.5)
            if not goes_on or session_turns >= 10:
                agent.end()
                lengths.append(session_turns)
                rewards.append(session_reward)
                session_turns, session_reward = 0, 0.0
        agent.store.close()
    half = len(lengths) // 2  # the second half: after some learning
    return {"session_len": float(np.mean(lengths[half:])),
            "session_reward": float(np.mean(rewards[half:])), "sessions": len(lengths)}


def rank_learn_timing(generator, config, turns: int) -> tuple[float, float]:
    """(median, mean) seconds of rank + learn for one turn at the chat's
    dimension: the mean carries the exact inverses and prior fits that come
    every REFRESH_EVERY turns."""
    from rlchat.learner.policy_store import new_policy
    from rlchat.learner.records import Turn
    from rlchat.learner.update import finish_turn, start_turn

    with tempfile.TemporaryDirectory() as tmp:
        agent = make_agent(generator, config, 0, tmp)
        for _ in range(turns):
            view = agent.say("tell me something")
            agent.choose(view.turn, view.candidates[0].id, 4)
        stored = [Turn.from_dict(t) for t in agent.store.turns()]
        agent.store.close()
    policy, rng, times = new_policy(config), np.random.default_rng(0), []
    for turn in stored * 5:
        phi = turn.features()
        t0 = time.perf_counter()
        start_turn(policy, turn)
        policy.rank(phi, rng)
        finish_turn(policy, turn)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.fmean(times)


def served_tastes(base_url: str, model: str, quick: bool) -> None:
    """The text-level tastes with a served model: learned against random order."""
    from rlchat.learner.remote import RemoteGenerator

    generator = RemoteGenerator(base_url, model, seed=0)
    caps = generator.connect()
    default = PolicyConfig()
    random_order = replace(default, temperature_floor=1e9, uncertainty=0.0)
    turns, seeds = (40, 1) if quick else (100, 2)
    lo = turns // 2
    say(f"text-level tastes through {base_url} ({model}; n choices {caps.n_choices}, "
        f"log-probs {caps.logprobs}): {len(TASTES)} tastes x {seeds} seeds x {turns} turns")
    tastes = {}
    for taste in TASTES:
        rate = {label: float(np.mean([np.mean(taste_run(generator, taste, config, s,
                                                        turns)[lo:])
                                      for s in range(seeds)]))
                for label, config in (("learned", default), ("random", random_order))}
        rate["ratio_vs_random"] = rate["learned"] / max(rate["random"], 1e-9)
        tastes[taste] = {k: round(v, 3) for k, v in rate.items()}
        say(f"  {taste:10s} {tastes[taste]}")
    generator.close()
    print(json.dumps({"served": {"base_url": base_url, "model": model,
                                 "hidden_state_columns": "absent",
                                 "logprobs": caps.logprobs},
                      "tastes_top1_t51_100": tastes,
                      "min_ratio_vs_random": min(t["ratio_vs_random"] for t in tastes.values())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--peers-dir", type=Path,
                        default=os.environ.get("RLCHAT_PEERS_DIR"),
                        help="the peers harness's folder (default $RLCHAT_PEERS_DIR); "
                             "without one the harness is skipped")
    parser.add_argument("--dtype", default="auto", help="the generator's number format")
    parser.add_argument("--base-url", default=None,
                        help="run only the text-level tastes, with candidates from this "
                        "OpenAI-compatible server (no hidden-state columns)")
    parser.add_argument("--model", default="tinychat", help="the model id on --base-url")
    args = parser.parse_args()
    q = args.quick
    if args.base_url:
        served_tastes(args.base_url, args.model, q)
        return
    if args.peers_dir is None:
        say("[1/4] peers harness skipped: no --peers-dir (or $RLCHAT_PEERS_DIR)")
        figures: dict = {}
    else:
        figures = {"peers": peers_table(args.peers_dir, 300 if q else 1000, 2 if q else 5,
                                        args.jobs)}

    from rlchat.learner.generator import Generator
    from rlchat.learner.tiny_model import write_tiny_model

    model_dir = tempfile.mkdtemp()
    say("building the tiny model (as `rlchat init-model`)")
    write_tiny_model(model_dir)
    generator = Generator.load(model_dir, dtype=args.dtype)
    figures["dtype"] = generator.dtype
    say(f"generator format: {generator.dtype}")
    default = PolicyConfig()
    random_order = replace(default, temperature_floor=1e9, uncertainty=0.0)
    turns, seeds = (40, 1) if q else (100, 2)
    lo = turns // 2

    say(f"[2/4] text-level tastes: {len(TASTES)} tastes x {seeds} seeds x {turns} turns x 5")
    tastes = {}
    for taste in TASTES:
        rate = {}
        for label, config in (("learned", default), ("gamma0", replace(default, gamma=0.0)),
                              ("random", random_order)):
            runs = [np.mean(taste_run(generator, taste, config, s, turns)[lo:])
                    for s in range(seeds)]
            rate[label] = float(np.mean(runs))
        runs = [np.mean(taste_run(WithoutHidden(generator), taste, default, s, turns)[lo:])
                for s in range(seeds)]
        rate["no_hidden"] = float(np.mean(runs))
        # The learner before the population prior, in the same run.
        runs = [np.mean(taste_run(generator, taste, PREVIOUS, s, turns, population=False)[lo:])
                for s in range(seeds)]
        rate["previous"] = float(np.mean(runs))
        rate["previous_ratio_vs_random"] = rate["previous"] / max(rate["random"], 1e-9)
        rate["ratio_vs_random"] = rate["learned"] / max(rate["random"], 1e-9)
        tastes[taste] = {k: round(v, 3) for k, v in rate.items()}
        say(f"  {taste:10s} {tastes[taste]}")
    figures["tastes_top1_t51_100"] = tastes

    eng_turns, eng_seeds = (60, 2) if q else (200, 3)
    say(f"[3/4] carry-over: gamma 0 vs {default.gamma}, {eng_seeds} seeds x {eng_turns} turns")
    engagement = {}
    for label, config in (("gamma0", replace(default, gamma=0.0)),
                          (f"gamma{default.gamma}", default),
                          ("gamma0.8", replace(default, gamma=0.8))):
        runs = [engagement_run(generator, config, s, eng_turns) for s in range(eng_seeds)]
        engagement[label] = {
            key: [round(float(np.mean([r[key] for r in runs])), 3),
                  round(float(np.std([r[key] for r in runs])), 3)]
            for key in ("session_len", "session_reward")
        }
        say(f"  {label:10s} {engagement[label]}")
    figures["carry_over_mean_sd"] = engagement

    say("[4/4] rank + learn timing")
    median, mean = rank_learn_timing(generator, default, 40)
    figures["rank_learn_median_ms"] = round(median * 1e3, 4)
    figures["rank_learn_mean_ms"] = round(mean * 1e3, 4)

    print("\ntext-level tastes, top-1 = the first-ranked candidate was the pick, turns "
          f"{lo + 1}-{turns}:")
    for taste, rate in tastes.items():
        print(f"  {taste:10s} learned {rate['learned']:.3f}  gamma=0 {rate['gamma0']:.3f}  "
              f"no hidden-state features {rate['no_hidden']:.3f}  "
              f"random {rate['random']:.3f}  ratio {rate['ratio_vs_random']:.2f}  "
              f"(before the population prior {rate['previous_ratio_vs_random']:.2f})")
    print("carry-over (mean, sd over seeds; second half of the sessions):")
    for label, row in engagement.items():
        print(f"  {label:10s} session length {row['session_len']}  reward {row['session_reward']}")
    print(f"rank + learn median: {figures['rank_learn_median_ms']} ms, "
          f"mean {figures['rank_learn_mean_ms']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
