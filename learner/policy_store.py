"""The one way a policy goes to and from the store, with its feature-version check.

A snapshot records the feature version its weights belong to; one learned on
other features cannot score today's candidates and is not used.  The
learning curves travel in the same snapshot, so they are written in the same
atomic step as the weights they describe.
"""

from __future__ import annotations

import logging
from typing import Any

from rlchat.learner.curves import Curves
from rlchat.learner.features import DIM, FEATURE_VERSION
from rlchat.learner.policy import PolicyConfig, QPolicy
from rlchat.learner.population import population_factors
from rlchat.storage import Store

log = logging.getLogger(__name__)


def fits(snapshot: dict[str, Any] | None) -> bool:
    """Whether a stored snapshot was learned on today's features."""
    return bool(snapshot) and snapshot.get("dim") == DIM and (
        snapshot.get("features") == FEATURE_VERSION
    )


def stored_config(snapshot: dict[str, Any] | None) -> PolicyConfig:
    """The learner settings a snapshot holds (the defaults if none)."""
    return PolicyConfig.from_dict((snapshot or {}).get("config", {}))


def load_policy(store: Store, config: PolicyConfig | None = None) -> tuple[QPolicy, Curves | None]:
    """The stored policy (a new one if there is none that fits) and its curves
    (None if the snapshot has none: they are rebuilt from the turns)."""
    snapshot = store.load_policy()
    if fits(snapshot):
        assert snapshot is not None
        curves = snapshot.get("curves")
        return (QPolicy.from_dict(snapshot, config),
                Curves.from_dict(curves) if curves else None)
    if snapshot:
        log.warning("stored policy uses other features; starting a new one")
    return new_policy(config or _settings_of(snapshot)), None


def new_policy(config: PolicyConfig | None = None) -> QPolicy:
    """A policy for today's features that has learned nothing: it starts
    from the population prior (learner/population.py)."""
    return QPolicy(DIM, config, population=population_factors())


def _settings_of(snapshot: dict[str, Any] | None) -> PolicyConfig:
    """For a new policy in place of one learned on other features: the
    learner settings a person sets (epsilon, gamma, forgetting) carry over;
    the rest take today's defaults, which were chosen for today's features."""
    from rlchat.learner.settings import LEARNER

    stored = stored_config(snapshot)
    return PolicyConfig(**{name: getattr(stored, name) for name in LEARNER})


def save_policy(store: Store, policy: QPolicy, curves: Curves | None, **extra: Any) -> None:
    """Store the policy, stamped with its features, and the curves."""
    snapshot = {**policy.to_dict(), "features": FEATURE_VERSION, **extra}
    if curves is not None:
        snapshot["curves"] = curves.to_dict()
    store.save_policy(snapshot)


def stored_policy(snapshot: dict[str, Any] | None) -> QPolicy | None:
    """The policy in a stored snapshot if it fits today's features, else None."""
    return QPolicy.from_dict(snapshot) if snapshot and fits(snapshot) else None
