"""Export formats (public contracts, documented in docs/) and log statistics.

- turns: one JSON object per turn, schema "rlchat.turn/5".
- dpo:   TRL's preference format, {"prompt", "chosen", "rejected"} as plain
         strings: the prompt the model continued; chosen = the pick (unless
         disliked), its edit, or the user's own reply, rejected = each
         candidate shown and passed over, both as sampled; an order of
         several gives every pair it orders; an edit is chosen over the pick.
         A served model's turn whose rendered prompt is not known comes in
         TRL's conversational form: prompt = the messages sent, chosen and
         rejected = one assistant message each.
- kto:   TRL's unpaired format, {"prompt", "completion", "label"}: the
         replies of the dpo pairs labelled (chosen true, rejected false),
         and every candidate marked good or bad with a thumb, which
         overrides what a pair said of the same reply.
- markdown: the sessions as a transcript (transcript.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from rlchat.learner.dialogue import valid_unicode
from rlchat.learner.features import NAMES_BY_VERSION
from rlchat.learner.records import CHOSEN, REGENERATED, REJECTED, REPLIED, Turn

TURN_SCHEMA = "rlchat.turn/5"  # each version's additions: docs/offline-and-export.md


def _finite(value: Any) -> Any:
    """The value with every number that is not finite as None (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_line(value: Any) -> str:
    """One line of a JSON-lines export: strict JSON (`jq` reads it), UTF-8.

    Data dirs written before rlchat checked what servers send may hold a NaN
    log-prob or text with lone surrogates: the writer mends both (null, and
    valid_unicode's replacement).  Only a line that needs it pays for the
    walk through its values."""
    try:
        line = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a number that is not finite
        line = json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)
    # Lone surrogates can only stand inside JSON strings: mending the line mends them.
    return valid_unicode(line) + "\n"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def before(turn: Turn, since: dt.date | None) -> bool:
    """Whether the turn was taken before the day `since` (UTC)."""
    return since is not None and dt.datetime.fromtimestamp(turn.created, dt.UTC).date() < since


def keep(turn: Turn, min_rating: int | None, since: dt.date | None) -> bool:
    """The export filters: created on or after `since` (UTC); picks rated at
    least `min_rating` (own replies carry no rating and are kept)."""
    if before(turn, since):
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
        "messages": turn.messages,
        "generator": turn.generator,
        "feature_version": turn.feature_version,
        "feature_names": list(NAMES_BY_VERSION.get(turn.feature_version, ())),
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
        "ranking": turn.ranking,
        "edit": turn.edit,
        "thumbs": [{"id": t["id"], "good": t["good"], "late": t["late"]}
                   for t in turn.thumbs or ()],
        "rewards": turn.rewards,
        "policy_version": turn.policy_version,
    }


def export_turns(
    turns: Iterable[Turn], min_rating: int | None = None, since: dt.date | None = None
) -> Iterator[dict[str, Any]]:
    for turn in turns:
        if keep(turn, min_rating, since):
            yield turn_record(turn)


LIKED = 3  # a pick rated below this was disliked: it is no preferred reply


def sampled_text(turn: Turn, text: str, sampled: str | None) -> str:
    """A reply as the model would have sampled it after the prompt: as drawn
    where it was stored so, else (an own reply, an older turn) with the
    leading space that GPT-2's plain format puts after `Assistant:`."""
    if sampled is not None:
        return sampled
    plain = (turn.generator or {}).get("format", "gpt2") == "gpt2"
    return " " + text if plain else text


def preference_pairs(
    turns: Iterable[Turn],
    min_rating: int | None = None,
    since: dt.date | None = None,
    dropped: Counter | None = None,
) -> Iterator[dict[str, Any]]:
    """{"prompt", "chosen", "rejected"} pairs, oldest first: the prompt the
    model continued (as stored with the turn), the pick (or its edit) or the
    user's own reply over each shown candidate passed over, all as sampled;
    an order gives every pair it orders, an edit is preferred to the pick.  A pick
    rated below 3 (below `min_rating`, if given) is no preference.  What is
    left out is counted in `dropped`, by reason."""
    dropped = dropped if dropped is not None else Counter()
    for turn in turns:
        if turn.status in (REJECTED, REGENERATED):
            dropped["turns answered with new candidates"] += 1
            continue
        if turn.reply_text() is None:
            dropped["unanswered turns"] += 1
            continue
        if before(turn, since):
            dropped[f"turns before {since}"] += 1
            continue
        if turn.status == CHOSEN and turn.rating is not None:
            floor = LIKED if min_rating is None else min_rating
            if turn.rating < floor:
                dropped[f"picks rated below {floor}"] += 1
                continue
        elif turn.status == CHOSEN and min_rating is not None:
            dropped[f"unrated picks (--min-rating {min_rating})"] += 1
            continue
        if not turn.prompt and not turn.messages:
            dropped["turns that did not record their prompt"] += 1
            continue
        for chosen, rejected in _ordered_pairs(turn):
            if rejected.strip() == chosen.strip():
                dropped["passed-over candidates equal to the reply"] += 1
                continue
            yield {"prompt": prompt_of(turn), "chosen": reply_as(turn, chosen),
                   "rejected": reply_as(turn, rejected)}


def prompt_of(turn: Turn) -> str | list[dict[str, str]]:
    """The prompt a turn's rows carry: the rendered prompt, or (a served model's
    that the server could not render) the messages sent, TRL's conversational form."""
    return turn.prompt if turn.prompt else [dict(m) for m in turn.messages or ()]


def reply_as(turn: Turn, text: str) -> str | list[dict[str, str]]:
    """A reply in the same form as `prompt_of(turn)`."""
    return text if turn.prompt else [{"role": "assistant", "content": text}]


def _ordered_pairs(turn: Turn) -> Iterator[tuple[str, str]]:
    """(better, worse) texts as sampled, for an answered turn with a reply."""
    def text(i: int) -> str:
        return sampled_text(turn, turn.candidates[i].text, turn.candidates[i].sampled)

    if turn.status != CHOSEN or turn.choice is None:  # an own reply over every shown
        own = sampled_text(turn, turn.own_reply or "", None)
        for i in turn.shown_ids:
            yield own, text(i)
        return
    # The edit takes the pick's place at the top, and is preferred to it.
    edit = None if turn.edit is None else sampled_text(turn, turn.edit, None)

    def best(i: int) -> str:
        return edit if edit is not None and i == turn.choice else text(i)

    if edit is not None:
        yield edit, text(turn.choice)
    ranking = turn.ranking or [[turn.choice], [i for i in turn.shown_ids if i != turn.choice]]
    for g, group in enumerate(ranking):
        for better in group:
            for lower in ranking[g + 1:]:
                for worse in lower:
                    yield best(better), text(worse)


def export_dpo(
    turns: Iterable[Turn], min_rating: int | None = None, since: dt.date | None = None,
    dropped: Counter | None = None,
) -> Iterator[dict[str, str]]:
    """TRL's preference format (see `preference_pairs`)."""
    return preference_pairs(turns, min_rating, since, dropped)


def kto_rows(
    turns: Iterable[Turn], min_rating: int | None = None, since: dt.date | None = None,
    dropped: Counter | None = None,
) -> Iterator[dict[str, Any]]:
    """{"prompt", "completion", "label"} rows, oldest first (see the module's
    docstring); a row that repeats an earlier one is left out."""
    dropped = dropped if dropped is not None else Counter()
    seen: set[bytes] = set()  # digests: a long log's prompts are not kept in memory
    for turn in turns:
        skipped: Counter = Counter()
        labels: dict[str, tuple[Any, bool]] = {}  # the completion as JSON -> row
        prompt: Any = None
        for pair in preference_pairs([turn], min_rating, since, skipped):
            prompt = pair["prompt"]
            for completion, label in ((pair["chosen"], True), (pair["rejected"], False)):
                labels.setdefault(json.dumps(completion), (completion, label))
        if turn.thumbs and not before(turn, since) and (turn.prompt or turn.messages):
            prompt = prompt_of(turn)
            for thumb in turn.thumbs:
                cand = turn.candidates[thumb["id"]]
                completion = reply_as(turn, sampled_text(turn, cand.text, cand.sampled))
                labels[json.dumps(completion)] = (completion, thumb["good"])
        if not labels:
            dropped.update(skipped)
            continue
        for completion, label in labels.values():
            key = hashlib.blake2b(json.dumps([prompt, completion, label]).encode(),
                                  digest_size=16).digest()
            if key not in seen:
                seen.add(key)
                yield {"prompt": prompt, "completion": completion, "label": label}


def summary(dropped: Counter) -> str:
    """What an export or a training set left out, in one line."""
    if not dropped:
        return "nothing left out"
    return "left out: " + ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))


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
