"""Fit the population prior that ships as learner/population_prior.json.

Simulated users of two families (benchmarks/taste_family.py: the kinds of
benchmarks/tastes.py, and one taste per named text feature; seeds from
1000: none of the reports') each chat --turns turns
through the real agent, starting from the ridge for every column.  What
each user's turns taught is kept as its data (the Gram matrix A_u and the
vector b_u of its policy), and the prior variance v_j of every column is
the one that makes all users' data most likely (empirical Bayes, by EM):

    S_u = (A_u + diag(1 / v))^-1,  m_u = S_u b_u,  v_j <- mean_u (m_uj^2 + S_u,jj)

The columns of one kind (the hidden-state projection, the length bands, the
letters, the common words, the hashed words) share one variance: a word's
own variance would say more about which words the tiny model happens to
say than about people.  Written as factors of the ridge: the prior
precision of column j is ridge x factor_j.

Run: .venv/bin/python benchmarks/population_prior.py [--users 240] [--turns 150]
Ends by printing one JSON object (the factors by group, and the file written).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from taste_family import (  # noqa: E402
    FEATURE_KINDS,
    KINDS,
    Taste,
    draw_tastes,
    drive,
    reply_pool,
    run_users,
    say,
    worker_pool,
)

ROOT = Path(__file__).resolve().parent.parent
FIRST_SEED = 1000
# A variance no smaller than this: a column no simulated user needed still
# starts with a prior a few turns of a real user can loosen.
FLOOR = 0.01

def user_data(task: tuple[Taste, int, int]) -> tuple[np.ndarray, np.ndarray]:
    taste, seed, turns = task
    run = drive(taste, worker_pool(), seed, turns, population=False)
    return run.policy.A, run.policy.b


def groups() -> list[str]:
    """The group of every column (its own name where it has no kind)."""
    from rlchat.learner.features import CHARS, FEATURE_NAMES

    letters = {f"char_{c}" for c in CHARS if c.isalnum()}
    out = []
    for name in FEATURE_NAMES:
        if name.startswith("hidden_"):
            out.append("hidden")
        elif name.startswith("length_band_"):
            out.append("length_bands")
        elif name in letters:
            out.append("letters")
        elif name.startswith("word_hashed_"):
            out.append("hashed_words")
        elif name.startswith("word_"):
            out.append("common_words")
        else:
            out.append(name)
    return out


def fit_variances(data: list[tuple[np.ndarray, np.ndarray]], start: float, group: list[str],
                  steps: int = 40) -> np.ndarray:
    """EM for the prior variance of every column, tied within groups."""
    names = sorted(set(group))
    members = [np.array([g == name for g in group]) for name in names]
    v = np.full(len(group), start)
    for _ in range(steps):
        second = np.zeros(len(group))
        for A, b in data:
            S = np.linalg.inv(A + np.diag(1.0 / v))
            m = S @ b
            second += m * m + np.diag(S)
        second /= len(data)
        for mask in members:
            v[mask] = max(float(second[mask].mean()), FLOOR)
    return v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=240)
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", default=str(ROOT / "learner" / "population_prior.json"))
    args = parser.parse_args()
    start = time.time()

    from rlchat.learner.features import FEATURE_NAMES, FEATURE_VERSION
    from rlchat.learner.policy import PolicyConfig

    pool = reply_pool(args.dtype, args.jobs)
    # Two families: the kinds of benchmarks/tastes.py and one taste per named
    # text feature, in proportion to their kinds.
    share = round(args.users * len(FEATURE_KINDS) / (len(KINDS) + len(FEATURE_KINDS)))
    tastes = (draw_tastes(args.users - share, pool.texts(), FIRST_SEED)
              + draw_tastes(share, pool.texts(), FIRST_SEED + 1, kinds=FEATURE_KINDS))
    tasks = [(t, FIRST_SEED + i, args.turns) for i, t in enumerate(tastes)]
    say(f"{len(tasks)} simulated users x {args.turns} turns on {args.jobs} processes")
    data = list(run_users(pool, user_data, tasks, args.jobs, "users"))
    ridge = PolicyConfig().ridge
    group = groups()
    say("fitting the prior variances (EM)")
    v = fit_variances(data, 1.0 / ridge, group)
    factors = 1.0 / (v * ridge)
    by_group = {g: round(float(factors[group.index(g)]), 4) for g in dict.fromkeys(group)}
    prior = {
        "features": FEATURE_VERSION,
        "ridge": ridge,
        "fitted_on": f"{len(tastes)} simulated users x {args.turns} turns (tastes drawn "
                     f"with seeds {FIRST_SEED} and {FIRST_SEED + 1}, runs seeded {FIRST_SEED}-"
                     f"{FIRST_SEED + len(tastes) - 1}), benchmarks/population_prior.py",
        "factors": {name: round(float(f), 6) for name, f in zip(FEATURE_NAMES, factors,
                                                                strict=True)},
    }
    Path(args.out).write_text(json.dumps(prior, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"users": len(tastes), "turns": args.turns, "out": args.out,
                      "factors_by_group": by_group, "total_s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
