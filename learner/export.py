"""Export formats (public contracts, documented in the README) and log statistics.

- turns: one JSON object per turn, schema "rlchat.turn/1".
- dpo:   TRL's preference format, {"prompt", "chosen", "rejected"} as plain
         strings; chosen = the pick (or the user's own reply), rejected = each
         candidate shown and passed over.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from rlchat.learner.dialogue import format_turns
from rlchat.learner.features import FEATURE_NAMES
from rlchat.learner.records import CHOSEN, REPLIED, Turn

TURN_SCHEMA = "rlchat.turn/2"  # 2 added system, prompt, generator, truncated


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def keep(turn: Turn, min_rating: int | None, since: dt.date | None) -> bool:
    """The export filters: created on or after `since` (UTC); picks rated at
    least `min_rating` (own replies carry no rating and are kept)."""
    if since is not None and dt.datetime.fromtimestamp(turn.created, dt.UTC).date() < since:
        return False
    if min_rating is not None:
        if turn.status == REPLIED:
            return True
        return turn.status == CHOSEN and turn.rating is not None and turn.rating >= min_rating
    return True


def turn_record(turn: Turn) -> dict[str, Any]:
    shown = turn.shown_ids
    return {
        "schema": TURN_SCHEMA,
        "id": turn.id,
        "session": turn.session,
        "created": _iso(turn.created),
        "answered": _iso(turn.answered),
        "status": turn.status,
        "user_text": turn.user_text,
        "system": turn.system,
        "prompt": turn.prompt,
        "generator": turn.generator,
        "feature_version": turn.feature_version,
        "feature_names": list(FEATURE_NAMES),
        "candidates": [
            {
                "id": i,
                "text": c.text,
                "logprob": c.logprob,
                "tokens": c.tokens,
                "truncated": c.truncated,
                "score": turn.scores[i],
                "propensity": turn.propensities[i],
                "shown_position": shown.index(i) if i in shown else None,
                "features": c.features,
            }
            for i, c in enumerate(turn.candidates)
        ],
        "shown": shown,
        "choice": turn.choice,
        "rating": turn.rating,
        "own_reply": turn.own_reply,
        "rewards": turn.rewards,
        "policy_version": turn.policy_version,
    }


def export_turns(
    turns: Iterable[Turn], min_rating: int | None = None, since: dt.date | None = None
) -> Iterator[dict[str, Any]]:
    for turn in turns:
        if keep(turn, min_rating, since):
            yield turn_record(turn)


def export_dpo(
    turns: Iterable[Turn], min_rating: int | None = None, since: dt.date | None = None
) -> Iterator[dict[str, str]]:
    """Preference pairs; the prompt is the one the model continued, as stored
    with the turn (its format's markers and the system prompt included);
    turns stored before prompts were kept get the dialogue as plain lines."""
    history: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for turn in turns:
        reply = turn.reply_text()
        if reply is None:
            continue  # unanswered: no preference, and nothing joined the dialogue
        if keep(turn, min_rating, since):
            prompt = turn.prompt or "\n".join(format_turns(history[turn.session],
                                                            turn.user_text))
            for i in turn.shown_ids:
                rejected = turn.candidates[i].text
                if i != turn.choice and rejected != reply:
                    yield {"prompt": prompt, "chosen": reply, "rejected": rejected}
        history[turn.session].append((turn.user_text, reply))


def weekly_stats(turns: Iterable[Turn]) -> dict[str, Any]:
    """Turns, sessions, and by ISO week: mean rating, mean reward, top-pick rate."""
    weeks: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    sessions, count = set(), 0
    for turn in turns:
        count += 1
        sessions.add(turn.session)
        year, week, _ = dt.datetime.fromtimestamp(turn.created, dt.UTC).isocalendar()
        row = weeks[f"{year}-W{week:02d}"]
        row["turns"].append(1)
        if turn.status == CHOSEN and turn.rewards:
            row["reward"].append(turn.rewards[turn.shown_ids.index(turn.choice)])
            row["top"].append(turn.choice == turn.order[0])
            if turn.rating is not None:
                row["rating"].append(turn.rating)
        elif turn.status == REPLIED and turn.rewards:
            row["reward"].append(turn.rewards[0])
            row["top"].append(False)

    def mean(values: list) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    return {
        "turns": count,
        "sessions": len(sessions),
        "weeks": [
            {"week": week, "turns": len(row["turns"]), "answered": len(row["reward"]),
             "mean_rating": mean(row["rating"]), "mean_reward": mean(row["reward"]),
             "top_pick_rate": mean(row["top"])}
            for week, row in sorted(weeks.items())
        ],
    }
