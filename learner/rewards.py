"""Rewards from the user's feedback on one turn (docs/how-it-learns.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    unrated_pick: float = 0.5  # a pick without a rating: liked, but less than a 5
    skip_penalty: float = 0.2  # a candidate shown and passed over
    own_reply_penalty: float = 0.5  # the user wrote their own reply instead
    examine_decay: float = 0.7  # chance of reading position j (0-based) is decay**j
    none_penalty: float = 0.5  # "none of these": every shown one is worse than wanted
    regenerate_penalty: float = 0.1  # new candidates asked for without a word: mild
    thumb: float = 1.0  # a candidate marked good is worth +thumb, one marked bad -thumb


def thumb_reward(good: bool, config: RewardConfig) -> float:
    """A candidate marked good or bad, without a pick: as plain as a 5 or a 1."""
    return config.thumb if good else -config.thumb


def rating_reward(rating: int | None, config: RewardConfig) -> float:
    """A rating of 1-5 mapped to [-1, 1]; no rating counts as a mild positive."""
    if rating is None:
        return config.unrated_pick
    return (min(max(rating, 1), 5) - 3) / 2.0


def read_probability(position: int, pick_position: int | None, config: RewardConfig) -> float:
    """How likely the user read the candidate at `position` of the shown list.

    Users read from the top: everything above the pick was read; below it
    (or when nothing was picked) reading falls off geometrically.
    """
    if pick_position is not None and position <= pick_position:
        return 1.0
    return config.examine_decay**position


def pick_feedback(
    shown: int, pick_position: int, rating: int | None, config: RewardConfig
) -> tuple[list[float], list[float]]:
    """(rewards, weights) by shown position when the user picked one candidate."""
    rewards, weights = [], []
    for pos in range(shown):
        if pos == pick_position:
            rewards.append(rating_reward(rating, config))
            weights.append(1.0)
        else:
            rewards.append(-config.skip_penalty)
            weights.append(read_probability(pos, pick_position, config))
    return rewards, weights


def own_reply_feedback(shown: int, config: RewardConfig) -> tuple[list[float], list[float]]:
    """(rewards, weights) by shown position when the user wrote their own reply."""
    rewards = [-config.own_reply_penalty] * shown
    weights = [read_probability(pos, None, config) for pos in range(shown)]
    return rewards, weights


def ranking_feedback(
    shown_ids: list[int], ranking: list[list[int]], rating: int | None, config: RewardConfig
) -> tuple[list[float], list[float]]:
    """(rewards, weights) by shown position when the user ordered the shown
    candidates: the first group (the pick and its ties) gets the rating's
    reward, the rest count as passed over.  All were read to be ordered."""
    top = set(ranking[0])
    rewards = [rating_reward(rating, config) if i in top else -config.skip_penalty
               for i in shown_ids]
    return rewards, [1.0] * len(shown_ids)


def again_feedback(
    shown: int, rejected: bool, config: RewardConfig
) -> tuple[list[float], list[float]]:
    """(rewards, weights) by shown position when the user asked for new
    candidates: said "none of these" (all read and found wanting), or just
    regenerated (a mild negative, by read weight)."""
    if rejected:
        return [-config.none_penalty] * shown, [1.0] * shown
    rewards = [-config.regenerate_penalty] * shown
    return rewards, [read_probability(pos, None, config) for pos in range(shown)]
