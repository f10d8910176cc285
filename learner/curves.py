"""What the learning screen plots, computed from the stored turns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from learner.records import Turn


@dataclass
class Curves:
    turn: list[int] = field(default_factory=list)  # answered turns, 1..n
    reward: list[float] = field(default_factory=list)  # reward of what continued the turn
    reward_average: list[float] = field(default_factory=list)  # moving average
    top_pick_rate: list[float] = field(default_factory=list)  # moving share: pick ranked first
    temperature: list[float] = field(default_factory=list)  # exploration, where logged
    temperature_turn: list[int] = field(default_factory=list)
    answered: int = 0
    unanswered: int = 0


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def learning_curves(records: Iterable[dict[str, Any]], window: int = 10) -> Curves:
    curves = Curves()
    top = []
    for record in records:
        turn = Turn.from_dict(record)
        if not turn.answered_ok or not turn.rewards:
            curves.unanswered += 1
            continue
        curves.answered += 1
        curves.turn.append(curves.answered)
        if turn.choice is not None and turn.choice in turn.shown_ids:
            position = turn.shown_ids.index(turn.choice)
            curves.reward.append(float(turn.rewards[position]))
            top.append(1.0 if position == 0 else 0.0)
        else:  # the user's own reply: no candidate was good enough
            curves.reward.append(float(min(turn.rewards)))
            top.append(0.0)
        if turn.temperature is not None:
            curves.temperature_turn.append(curves.answered)
            curves.temperature.append(float(turn.temperature))
    curves.reward_average = moving_average(curves.reward, window)
    curves.top_pick_rate = moving_average(top, window)
    return curves
