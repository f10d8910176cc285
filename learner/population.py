"""The population prior: how far each feature's weight tends to stray from 0
across many users, shipped with the package (population_prior.json) and
fitted by benchmarks/population_prior.py on simulated users of many taste
kinds (empirical Bayes: the prior variance of each column that makes the
users' own fits most likely).

A column that tastes often live in (length, a letter, how a reply ends)
starts with a loose prior and is learned from the first turns; one that
rarely matters starts tight, so the few rows of the first turns are not
spread over all of them.  It is only where the policy starts: relevance
(learner/policy.py) refits each column's prior to the user's own turns,
tied to this one, so a user unlike the population moves away from it as
their turns come in.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from rlchat.learner.features import FEATURE_NAMES, FEATURE_VERSION

PRIOR_FILE = Path(__file__).with_name("population_prior.json")


@lru_cache(maxsize=1)
def population_factors() -> np.ndarray | None:
    """Each column's prior precision as a factor of the ridge, in
    FEATURE_NAMES order (1 for a column the file does not name); None where
    the file is missing or was fitted on other features."""
    try:
        data = json.loads(PRIOR_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("features") != FEATURE_VERSION:
        return None
    factors = data.get("factors")
    try:
        values = np.array([float(factors.get(name, 1.0)) for name in FEATURE_NAMES])
    except (AttributeError, TypeError, ValueError):
        return None
    # A damaged file must not stop a new policy: it starts from the ridge then.
    return values if np.all(np.isfinite(values) & (values > 0.0)) else None
