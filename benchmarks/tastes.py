"""A family of simulated users with tastes drawn at random, through the real agent.

The tastes (benchmarks/taste_family.py) are drawn from a wide space, twelve
kinds in turn; a taste is `named` when one feature column says it one to
one, and the report gives the family whole and split into the two.  The
user reads the shown candidates and picks the best by their taste (small
noise), rating it 5 if it is the best of the shown and 3 otherwise; the
figure is how often the first-ranked candidate was that pick, against
random order (1 / shown, its expectation), over three windows: turns 1-20
(what a person judges an assistant by), 11-30, and the second half.

The ceiling is what ranking by the true taste would score on the same
turns: the user's noise alone keeps it under 4x (4 shown).  The linear fit
is what the features can express: a least-squares fit of the true utility
on the features of every candidate of the other turns (exact utilities, far
more than feedback tells), ranking each turn of the second half.  Two
more figures of the second half say how far the learner is from what its
model can reach on the data it had: the greedy figure is the learner's own
first choice, before exploration drew the order; the batch fit is the same
model (probit preferences, each column's prior fitted by MacKay's update)
fitted in batch every ten turns to all preferences so far, where the
learner reads each preference once, online.  The median ceiling by kind
sits beside the median by kind: kinds differ in how often the user's noise
decides.

Each taste runs through the real agent, store and features, on replies the
tiny GPT-2 sampled (a pool sampled once per model, see taste_family.py);
the variants, same seed and messages:
  - current:       the agent as shipped, a pick and a rating per turn;
  - no_prior:      without the population prior (one ridge for all columns to
                   start from);
  - previous:      the learner before it (no population prior, and
                   preferences at a probit scale of 0.1 instead of 0.3);
  - v1:            as shipped, the columns added since v1 held at zero;
  - current_rank:  as shipped, the user orders all shown candidates.

Seeds: the report draws its tastes and runs from --seed (0); the learner's
settings and the population prior were tuned and fitted on seeds from 1000
(benchmarks/population_prior.py), so no taste of the report was seen.

With --real local|served the family is real_tastes.py's: tastes of meaning
and of form over the real model's replies (a pool sampled once, with its
hidden states where the model is local), in two variants:
  - current:     the learner as shipped for that generator (a local model's
                 meaning columns from its hidden state; a served one's off);
  - embeddings:  the same with `--embeddings local:` (all-MiniLM-L6-v2 over
                 a text's first 48 tokens, the vectors computed once);
  - embeddings_static: the same model distilled to a vector per token
                 (benchmarks/static_embedder.py), the whole text;
and the report adds the semantic kinds (meaning, and mixtures with meaning)
apart, each variant's median over its ceiling, the linear fit for every
variant and, for `current`, the linear fit with the reply's whole vector
(384 numbers) beside the features (what a linear learner could reach with
all of the embedding, from exact utilities), and each embedder's cost per
turn (the message and 8 replies, measured in this run).

Run: .venv/bin/python benchmarks/tastes.py [--tastes 96] [--turns 100] [--quick]
     [--real local|served] [--per-message 2]
Ends by printing one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from real_tastes import (  # noqa: E402
    REAL_KINDS,
    PoolEmbedder,
    RealPool,
    draw_real_tastes,
    real_pool,
)
from taste_family import (  # noqa: E402
    KINDS,
    NOISE,
    PREVIOUS,
    Taste,
    draw_tastes,
    drive,
    reply_pool,
    run_users,
    say,
    worker_pool,
)

from rlchat.learner.policy import RELEVANCE_STRENGTH, QPolicy, probit_observation  # noqa: E402

VARIANTS = ("current", "no_prior", "previous", "v1", "current_rank")
REAL_VARIANTS = ("current", "embeddings", "embeddings_static")
WINDOWS = {"turns_1_20": (0, 20), "turns_11_30": (10, 30)}  # and the second half


def run_taste(task: tuple[Taste, str, int, int]) -> dict:
    """Per turn: (hit, 1 / shown, ceiling hit) for one taste and one variant."""
    taste, variant, seed, turns = task
    config = PREVIOUS if variant == "previous" else None
    population = variant not in ("no_prior", "previous")
    pool = worker_pool()
    embeddings, settings = None, None
    if isinstance(pool, RealPool):
        from rlchat.learner.embeddings import Embeddings
        from rlchat.learner.settings import Settings

        if variant.startswith("embeddings"):
            embeddings = Embeddings("local:all-MiniLM-L6-v2",
                                    PoolEmbedder(pool, static=variant == "embeddings_static"))
        elif pool.identity.get("server"):  # as shipped before: no meaning columns
            settings = Settings(candidates=4, samples=8, embeddings="off")
    run = drive(taste, pool, seed, turns, population=population, v1=variant == "v1",
                order=variant == "current_rank", config=config, embeddings=embeddings,
                settings=settings)
    current = variant == "current"
    real = isinstance(pool, RealPool)
    linear = linear_fit_hits(run.stored, taste, run.picks) if current or real else []
    batch = batch_fit_hits(run.stored, run.picks, run.policy) if current else []
    # What a linear learner could reach with the reply's whole vector (384
    # numbers of the local: embedder) beside the features, from exact utilities.
    whole = (linear_fit_hits(run.stored, taste, run.picks, ridge=0.1, extra=lambda turn: np.array(
        [pool.embedded[c.text] for c in turn.candidates])) if current and real else [])
    # The learner's own first choice, before exploration drew the order.
    greedy = [int(np.argmax(np.asarray(turn.scores)[turn.shown_ids])) == pick
              for turn, pick in zip(run.stored, run.picks, strict=True)]
    return {"taste": taste.name, "variant": variant, "hits": run.hits, "chance": run.chance,
            "ceiling": run.ceiling, "linear": linear, "batch": batch, "greedy": greedy,
            "linear_whole_embedding": whole}


def linear_fit_hits(stored: list, taste: Taste, picks: list, folds: int = 5,
                    ridge: float = 1e-3, extra=None) -> list[bool]:
    """What the features can express: least squares of the true utility on
    the features of every candidate (shown or not; exact utilities, far more
    than any feedback tells), fitted on the other folds of turns; then, for
    each turn of the second half, whether its first-ranked shown candidate
    was the pick.  `extra(turn)`: columns added beside the features."""
    phis = [turn.features() if extra is None else np.hstack([turn.features(), extra(turn)])
            for turn in stored]
    utilities = [np.array([taste.utility(c.text, turn.user_text) for c in turn.candidates])
                 for turn in stored]
    half = len(stored) // 2
    hits = []
    for fold in range(folds):
        train = [t for t in range(len(stored)) if t % folds != fold]
        x = np.vstack([phis[t] - phis[t].mean(axis=0) for t in train])
        y = np.concatenate([utilities[t] - utilities[t].mean() for t in train])
        w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        hits += [(t, int(np.argmax(phis[t][stored[t].shown_ids] @ w)) == picks[t])
                 for t in range(half, len(stored)) if t % folds == fold]
    return [hit for _, hit in sorted(hits)]


def batch_fit_hits(stored: list, picks: list, policy: QPolicy, every: int = 10,
                   relevance_steps: int = 4, newton_steps: int = 6) -> list[bool]:
    """What the learner's model class reaches on the same picks when nothing
    is spared: every 10 turns of the second half, the preferences of all
    turns before (the pick against each other shown) are fitted in batch, to
    the posterior mode of the probit likelihood (Newton steps), with every
    column's prior fitted by MacKay's update on that posterior from the
    learner's base prior; then, for each of the next turns, whether its
    first-ranked shown candidate was the pick.  The learner does the same
    online, each preference read once at the posterior of its turn."""
    scale = policy.config.pair_margin
    base = policy.base_prior()
    half, hits, w = len(stored) // 2, [], np.zeros(policy.dim)
    for t in range(half, len(stored)):
        if (t - half) % every == 0:
            rows = [turn.features()[turn.choice] - turn.features()[j]
                    for turn in stored[:t] if turn.choice is not None
                    for j in turn.shown_ids if j != turn.choice]
            x, prior = np.array(rows), base.copy()
            for _ in range(relevance_steps):
                for _ in range(newton_steps):
                    target, precision = probit_observation(x @ w, np.zeros(len(x)), scale)
                    cov = np.linalg.inv((x * precision[:, None]).T @ x + np.diag(prior))
                    w = cov @ (x.T @ (precision * target))
                determined = np.clip(1.0 - prior * np.diag(cov), 0.0, 1.0)
                prior = (determined + RELEVANCE_STRENGTH) / (w**2 + RELEVANCE_STRENGTH / base)
        hits.append(int(np.argmax(stored[t].features()[stored[t].shown_ids] @ w)) == picks[t])
    return hits


def window_ratio(values: list[bool], chance: list[float], lo: int, hi: int) -> float:
    return round(float(np.mean(values[lo:hi]) / np.mean(chance[lo:hi])), 3)


def per_taste_row(res: dict, turns: int) -> dict:
    windows = {**WINDOWS, "late": (turns // 2, turns)}
    row = {}
    for name, (lo, hi) in windows.items():
        row[name] = window_ratio(res["hits"], res["chance"], lo, hi)
        row[f"{name}_ceiling"] = window_ratio(res["ceiling"], res["chance"], lo, hi)
    row["late_greedy"] = window_ratio(res["greedy"], res["chance"], turns // 2, turns)
    for fit in ("linear", "batch", "linear_whole_embedding"):
        if res.get(fit):
            row[f"{fit}_fit"] = round(float(np.mean(res[fit])
                                            / np.mean(res["chance"][turns // 2:])), 3)
    return row


def summary(rows: list[dict]) -> dict:
    def median(key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return round(statistics.median(values), 3) if values else None

    late = [r["late"] for r in rows]
    out = {"tastes": len(rows)}
    for window in (*WINDOWS, "late"):
        out[f"{window}_median"] = median(window)
        out[f"{window}_ceiling_median"] = median(f"{window}_ceiling")
    out["late_greedy_median"] = median("late_greedy")
    out["late_share_ge_2x"] = round(sum(r >= 2.0 for r in late) / len(late), 3)
    out["late_min"] = min(late)
    out["turns_1_20_share_ge_2x"] = round(
        sum(r["turns_1_20"] >= 2.0 for r in rows) / len(rows), 3)
    for fit in ("linear_fit", "batch_fit", "linear_whole_embedding_fit"):
        if median(fit) is not None:
            out[f"{fit}_median"] = median(fit)
    return out


def embedding_cost(pool) -> dict:
    """The product's embedders on turns of the pool (the message and its 8
    replies) on 2 threads: median and mean ms over 20 turns, the contextual
    sentence model (`local:`, its first 48 tokens) and its static distillation."""
    import torch
    from static_embedder import StaticEmbedder

    from rlchat.learner.embeddings import SentenceEmbedder, packaged_model

    torch.set_num_threads(2)  # the chat's: both cores
    model = SentenceEmbedder(str(packaged_model()))
    turns = [[m, *(c.text for c in p.candidates)] for m, props in pool.proposals.items()
             for p in props][:20]
    out = {"threads": torch.get_num_threads()}
    for name, embedder in (("local", model), ("static", StaticEmbedder(model, say))):
        embedder.embed(turns[0])  # warm-up
        times = []
        for texts in turns:
            began = time.perf_counter()
            embedder.embed(texts)
            times.append((time.perf_counter() - began) * 1000)
        out[name] = {"median": round(statistics.median(times), 2),
                     "mean": round(statistics.mean(times), 2)}
    return out


def real_bars(figures: dict) -> dict:
    """The real family's acceptance, as far as one run (one generator) tells."""
    bars = {}
    for v in REAL_VARIANTS:
        if v in figures:
            bars[f"{v}_late_over_ceiling_ge_0_85"] = figures[v]["all"]["late_over_ceiling"] >= 0.85
            bars[f"{v}_turns_1_20_over_ceiling_ge_0_65"] = (
                figures[v]["all"]["turns_1_20_over_ceiling"] >= 0.65)
    for v in ("embeddings", "embeddings_static"):
        if "current" in figures and v in figures:
            gain = (figures[v]["semantic"]["late_median"]
                    - figures["current"]["semantic"]["late_median"])
            figures[f"semantic_late_gain_{v}"] = round(gain, 3)
            bars[f"semantic_gain_{v}_ge_0_3x"] = gain >= 0.3
    for name in ("local", "static"):
        bars[f"embedding_{name}_le_30_ms"] = figures["embedding_ms_per_turn"][name]["median"] <= 30
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tastes", type=int, default=96)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="24 tastes x 40 turns, current")
    parser.add_argument("--real", choices=("local", "served"),
                        help="the family of real replies (real_tastes.py), from this generator")
    parser.add_argument("--per-message", type=int, default=2,
                        help="--real: turns sampled per message for the pool")
    parser.add_argument("--messages", type=int, default=100, help="--real: of real_messages.py")
    args = parser.parse_args()
    if args.real and args.variants == ",".join(VARIANTS):
        args.variants = ",".join(REAL_VARIANTS)
    if args.quick:
        args.tastes, args.turns = 24, 40
        args.variants = args.variants if args.real else "current"
    variants = args.variants.split(",")
    start = time.time()

    if args.real:
        from real_messages import MESSAGES

        pool = real_pool(args.real, args.per_message, MESSAGES[:args.messages], args.jobs)
        tastes = draw_real_tastes(args.tastes, pool, args.seed)
    else:
        pool = reply_pool(args.dtype, args.jobs)
        tastes = draw_tastes(args.tastes, pool.texts(), args.seed)
    import torch

    cpu = torch.backends.cpu.get_cpu_capability()
    say(f"CPU capability {cpu}; generator format {pool.identity['dtype']}; {len(tastes)} tastes "
        f"x {len(variants)} variants x {args.turns} turns on {args.jobs} processes")
    tasks = [(taste, v, args.seed + i, args.turns)
             for i, taste in enumerate(tastes) for v in variants]
    results: dict[str, dict[str, dict]] = {t.name: {} for t in tastes}
    for res in run_users(pool, run_taste, tasks, args.jobs, "runs"):
        results[res["taste"]][res["variant"]] = res

    per_taste = {name: {v: per_taste_row(res, args.turns) for v, res in by.items()}
                 for name, by in results.items()}
    groups = {"all": tastes, "named": [t for t in tastes if t.named],
              "unnamed": [t for t in tastes if not t.named]}
    if args.real:
        groups["semantic"] = [t for t in tastes if t.semantic]
        groups["form"] = [t for t in tastes if not t.semantic]
    kinds = list(REAL_KINDS if args.real else KINDS)
    figures: dict = {
        "family": f"real ({args.real})" if args.real else "synthetic",
        "tastes": len(tastes), "turns": args.turns, "seed": args.seed,
        "late_window": f"{args.turns // 2 + 1}-{args.turns}",
        "cpu_capability": cpu, "dtype": pool.identity.get("dtype", ""), "noise": NOISE,
        "kinds": kinds,
    }
    for v in variants:
        figures[v] = {g: summary([per_taste[t.name][v] for t in members])
                      for g, members in groups.items() if members}
        figures[v]["late_median_by_kind"] = {
            kind: round(statistics.median(per_taste[t.name][v]["late"]
                                          for t in tastes if t.kind == kind), 3)
            for kind in kinds if any(t.kind == kind for t in tastes)}
        figures[v]["late_ceiling_median_by_kind"] = {
            kind: round(statistics.median(per_taste[t.name][v]["late_ceiling"]
                                          for t in tastes if t.kind == kind), 3)
            for kind in kinds if any(t.kind == kind for t in tastes)}
        for group in figures[v].values():
            if isinstance(group, dict) and group.get("late_ceiling_median"):
                for window in (*WINDOWS, "late"):
                    group[f"{window}_over_ceiling"] = round(
                        group[f"{window}_median"] / group[f"{window}_ceiling_median"], 3)
    figures["per_taste"] = {name: {v: {k: row[k] for k in ("turns_1_20", "turns_11_30", "late",
                                                          "late_ceiling")}
                                   for v, row in rows.items()}
                            for name, rows in per_taste.items()}
    current = figures.get("current")
    if args.real:
        figures["embedding_ms_per_turn"] = embedding_cost(pool)
        figures["bars"] = real_bars(figures)
    elif current:
        figures["bars"] = {
            "turns_1_20_median_ge_2x": current["all"]["turns_1_20_median"] >= 2.0,
            "late_median_ge_3_3x": current["all"]["late_median"] >= 3.3,
            "late_share_ge_2x_ge_0_95": current["all"]["late_share_ge_2x"] >= 0.95,
            "unnamed_late_median_ge_3x": current["unnamed"]["late_median"] >= 3.0,
        }
    figures["total_s"] = round(time.time() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
