"""Learning from the logs after the fact: the work behind `rlchat replay`,
`evaluate`, `export` and `stats` (the command line only parses and prints).
The offline commands reach the data dir only through here.

Replay and evaluation walk the stored turns in order through the same update
path as live learning (learner/update.py), so a replay with the live
settings rebuilds the live policy bit for bit.  No torch; nothing is written
but by `save_replayed`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rlchat.learner.conversation import storing
from rlchat.learner.curves import Curves
from rlchat.learner.dialogue import valid_unicode
from rlchat.learner.evaluate import Evaluation, LoggedStep, estimate
from rlchat.learner.export import (
    export_dpo,
    export_turns,
    json_line,
    kto_rows,
    weekly_stats,
)
from rlchat.learner.policy import PolicyConfig, QPolicy
from rlchat.learner.policy_store import new_policy, save_policy, stored_config, stored_policy
from rlchat.learner.records import Turn
from rlchat.learner.update import (
    catch_up,
    current,
    finish_turn,
    learn_late_thumbs,
    learnable,
    replay,
    start_turn,
)

Progress = Callable[[int], None]


def _turns(records: Iterable[dict[str, Any]], progress: Progress | None) -> Iterable[Turn]:
    for i, record in enumerate(records, start=1):
        if progress and i % 1000 == 0:
            progress(i)
        turn = current(record)
        if learnable(turn):
            yield turn


def replay_logs(
    records: Iterable[dict[str, Any]], config: PolicyConfig, progress: Progress | None = None
) -> QPolicy:
    """A new policy learned from stored turns, in order."""
    policy = new_policy(config)
    replay(policy, _turns(records, progress))
    return policy


def evaluation_steps(
    records: Iterable[dict[str, Any]], config: PolicyConfig, progress: Progress | None = None
) -> list[LoggedStep]:
    """For every answered turn: what a learner with `config` would have placed
    first (its probabilities, learning from the logs as they come), against
    what was logged."""
    policy = new_policy(config)
    steps = []
    for turn in _turns(records, progress):
        start_turn(policy, turn)
        if turn.answered_ok and turn.rewards:
            phi = turn.features()
            scores = policy.scores(phi)
            probs = policy.first_probabilities(scores, policy.temperature(phi))
            action = turn.order[0]
            steps.append(LoggedStep(action, turn.propensities[action], turn.rewards[0],
                                    probs, scores))
        finish_turn(policy, turn)
        learn_late_thumbs(policy, turn)
    return steps


def learner_config(snapshot: dict[str, Any] | None, overrides: dict[str, Any]) -> PolicyConfig:
    """The stored policy's learner settings with `overrides` on top."""
    return replace(stored_config(snapshot), **overrides)


@dataclass
class Replayed:
    policy: QPolicy  # learned anew from every stored turn
    turns: int  # turns read
    live: QPolicy | None  # the live policy (its checkpoint and the turns since), if any
    snapshot: dict[str, Any] | None  # the stored policy as it was read

    @property
    def same_as_live(self) -> bool | None:
        if self.live is None:
            return None
        return bool(np.array_equal(self.live.w, self.policy.w)
                    and self.live.config == self.policy.config)


def replay_store(store, overrides: dict[str, Any], progress: Progress | None = None) -> Replayed:
    """A policy rebuilt from every stored turn with the live settings and
    `overrides`, beside the live policy it may replace."""
    snapshot = store.load_policy()
    live = stored_policy(snapshot)
    if live is not None:
        catch_up(live, store.turns(after_seq=live.last_seq))
    policy = replay_logs(store.turns(), learner_config(snapshot, overrides), progress)
    return Replayed(policy, store.count_turns(), live, snapshot)


def save_replayed(store, replayed: Replayed) -> int:
    """Save a replayed policy as the next version; returns that version.  The
    learning curves describe the log, not the policy: they stay as they are."""
    latest = (replayed.live.version if replayed.live is not None
              else (replayed.snapshot or {}).get("version", 0))
    replayed.policy.version = max(replayed.policy.version, latest) + 1
    curves = (replayed.snapshot or {}).get("curves")
    with storing():  # a full disk and the like: an AgentError with its code
        save_policy(store, replayed.policy, Curves.from_dict(curves) if curves else None,
                    source="replay")
    return replayed.policy.version


def evaluate_store(store, overrides: dict[str, Any], bootstrap: int,
                   progress: Progress | None = None) -> tuple[PolicyConfig, Evaluation | None]:
    """How a learner with the live settings and `overrides` would have done
    on the logs (learner/evaluate.py); None when no turn was answered yet."""
    config = learner_config(store.load_policy(), overrides)
    steps = evaluation_steps(store.turns(), config, progress)
    return config, estimate(steps, bootstrap=bootstrap) if steps else None


def log_stats(store) -> dict[str, Any]:
    """Turns, sessions, the policy version, and by ISO week (export.weekly_stats)."""
    stats = weekly_stats(Turn.from_dict(t) for t in store.turns())
    stats["policy_version"] = (store.load_policy() or {}).get("version", 0)
    return stats


def has_session(store, session: str) -> bool:
    """The session exists and was not deleted."""
    found = store.get_session(session)
    return found is not None and not found.get("deleted")


def _sessions(store, session: str | None) -> Iterator[tuple[dict[str, Any], list[Turn]]]:
    """(session, its turns) to export: one, or every one not deleted, oldest first."""
    chosen = [store.get_session(session)] if session is not None else store.sessions()
    for record in chosen:
        yield record, [Turn.from_dict(t) for t in store.session_turns(record["id"])]


@dataclass
class ExportRun:
    """An export being written: its text in chunks, and as they are taken,
    how many items it held and what the preference formats left out."""

    chunks: Iterator[str]
    counted: int = 0
    dropped: Counter = field(default_factory=Counter)


def export_run(store, kind: str, *, session: str | None = None, min_rating: int | None = None,
               since: dt.date | None = None, candidates: bool = False) -> ExportRun:
    """The `kind` export (turns, dpo, kto: JSON lines; markdown) of the whole
    log or of one session."""
    from rlchat.learner.transcript import export_markdown

    run = ExportRun(chunks=iter(()))
    if kind == "markdown":
        sessions = list(_sessions(store, session))
        run.counted = len(sessions)
        run.chunks = map(valid_unicode, export_markdown(sessions, candidates))
        return run
    turns = (Turn.from_dict(t) for t in (store.session_turns(session) if session is not None
                                         else store.turns()))
    if kind == "turns":
        lines = export_turns(turns, min_rating, since)
    elif kind == "kto":
        lines = kto_rows(turns, min_rating, since, run.dropped)
    else:
        lines = export_dpo(turns, min_rating, since, run.dropped)

    def counted() -> Iterator[str]:
        for line in lines:
            yield json_line(line)
            run.counted += 1

    run.chunks = counted()
    return run
