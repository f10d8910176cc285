"""Off-policy evaluation: how a learner with other settings would have done.

The logs hold, for every turn, the candidate placed first (order[0]), the
probability the logging policy gave it (its propensity), and the reward that
candidate earned.  For a target policy pi, with w_t = pi(a_t|s_t) / mu(a_t|s_t):

    IPS    mean_t  w_t r_t
    SNIPS  sum_t w_t r_t / sum_t w_t
    DR     mean_t  [ sum_a pi(a|s_t) q(s_t, a) + w_t (r_t - q(s_t, a_t)) ]

with q the target's own Q-model as the direct method.  Confidence intervals
come from a bootstrap over turns; the effective sample size (sum w)^2 / sum w^2
says how many logged turns the estimate is really worth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedStep:
    """One logged turn, seen by a target policy."""

    action: int  # the candidate the logging policy placed first
    propensity: float  # mu(action | s), as logged
    reward: float  # what that candidate earned
    target_probs: np.ndarray  # pi(. | s) over the turn's candidates
    q: np.ndarray  # the direct method's estimate for every candidate


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Evaluation:
    estimates: dict[str, Estimate]
    logged_value: float  # mean reward of what the logging policy placed first
    n: int
    ess: float
    max_weight: float
    min_propensity: float
    warning: str | None

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "logged_value": self.logged_value,
            "ess": self.ess,
            "max_weight": self.max_weight,
            "min_propensity": self.min_propensity,
            "warning": self.warning,
            "estimates": {k: {"value": e.value, "ci95": [e.low, e.high]}
                          for k, e in self.estimates.items()},
        }


def _terms(steps: list[LoggedStep]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per turn: importance weight, reward, doubly robust term."""
    w = np.array([s.target_probs[s.action] / s.propensity for s in steps])
    r = np.array([s.reward for s in steps])
    dm = np.array([float(s.target_probs @ s.q) for s in steps])
    q_logged = np.array([s.q[s.action] for s in steps])
    return w, r, dm + w * (r - q_logged)


def _point(w: np.ndarray, r: np.ndarray, dr: np.ndarray) -> np.ndarray:
    """IPS, SNIPS, DR for one sample (rows may be a bootstrap resample)."""
    total_w = w.sum(axis=-1)
    ips = (w * r).mean(axis=-1)
    snips = np.divide((w * r).sum(axis=-1), total_w, out=np.zeros_like(ips),
                      where=total_w > 0)
    return np.stack([ips, snips, dr.mean(axis=-1)], axis=-1)


def estimate(
    steps: list[LoggedStep], *, bootstrap: int = 500, seed: int = 0, level: float = 0.95
) -> Evaluation:
    """IPS, SNIPS and DR with bootstrap intervals, ESS and a trust warning."""
    if not steps:
        raise ValueError("no logged turns with a reward to evaluate on")
    w, r, dr = _terms(steps)
    n = len(steps)
    point = _point(w, r, dr)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):  # one resample at a time: memory stays O(n)
        idx = rng.integers(0, n, n)
        samples.append(_point(w[idx], r[idx], dr[idx]))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    boot = np.array(samples) if samples else point[None, :]
    low, high = np.quantile(boot, lo_q, axis=0), np.quantile(boot, hi_q, axis=0)
    ess = float(w.sum() ** 2 / max((w**2).sum(), 1e-300))
    min_prop = float(min(s.propensity for s in steps))
    return Evaluation(
        estimates={name: Estimate(float(point[i]), float(low[i]), float(high[i]))
                   for i, name in enumerate(ESTIMATORS)},
        logged_value=float(r.mean()),
        n=n,
        ess=ess,
        max_weight=float(w.max()),
        min_propensity=min_prop,
        warning=trust_warning(n, ess, float(w.max()), float(w.mean())),
    )


def trust_warning(n: int, ess: float, max_weight: float, mean_weight: float) -> str | None:
    """A plain sentence when the logs cannot support a trustworthy estimate."""
    if abs(mean_weight - 1.0) > 0.5:
        # The weights average 1 when the logs cover what the target would do.
        return (f"The importance weights average {mean_weight:.2f} instead of 1: the logs "
                f"rarely hold what the target policy would place first (small logged "
                f"propensities), so these numbers are unreliable.")
    if ess < max(10.0, 0.05 * n):
        return (f"Only {ess:.0f} of {n} logged turns effectively count (the target policy "
                f"rarely places first what the logging policy did): treat these numbers "
                f"as unreliable.")
    if max_weight > 0.2 * n:
        return (f"One logged turn carries {max_weight:.0f}x weight: the estimate hangs on a "
                f"handful of turns and is unreliable.")
    return None
