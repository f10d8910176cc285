"""What the learning screen plots, kept up to date turn by turn.

Reading every stored turn when the screen opens costs seconds at 100k turns,
so the agent folds each closed turn into this summary and saves it with the
policy.  Its size is bounded: every point covers `bucket` answered turns, and
when there are more than MAX_POINTS points, neighbours merge and the bucket
doubles.  Under MAX_POINTS answered turns every point is one turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlchat.learner.records import Turn

MAX_POINTS = 512
# A point: [reward sum, top-pick count, temperature sum, temperature count, turns].
REWARD, TOP, TEMP, TEMP_N, N = range(5)


@dataclass
class Curves:
    answered: int = 0
    unanswered: int = 0
    bucket: int = 1  # answered turns per point
    points: list[list[float]] = field(default_factory=list)
    last_seq: int = 0  # the last stored turn folded in

    def fold(self, turn: Turn) -> None:
        """Count one closed turn (answered or not)."""
        self.last_seq = max(self.last_seq, turn.seq)
        if not turn.answered_ok or not turn.rewards:
            self.unanswered += 1
            return
        self.answered += 1
        if turn.choice is not None and turn.choice in turn.shown_ids:
            position = turn.shown_ids.index(turn.choice)
            reward, top = float(turn.rewards[position]), float(position == 0)
        else:  # the user's own reply: no candidate was good enough
            reward, top = float(min(turn.rewards)), 0.0
        temp = turn.temperature
        point = [reward, top, float(temp or 0.0), float(temp is not None), 1.0]
        if self.points and self.points[-1][N] < self.bucket:
            self.points[-1] = [a + b for a, b in zip(self.points[-1], point, strict=True)]
        else:
            self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self._halve()

    def _halve(self) -> None:
        pairs = zip(self.points[0::2], self.points[1::2] + [[0.0] * 5], strict=True)
        self.points = [[a + b for a, b in zip(x, y, strict=True)] for x, y in pairs]
        self.bucket *= 2

    # what the screen plots ---------------------------------------------
    def x(self) -> list[float]:
        """Answered-turn number at the end of each point."""
        out, total = [], 0.0
        for point in self.points:
            total += point[N]
            out.append(total)
        return out

    def reward(self) -> list[float]:
        return [p[REWARD] / p[N] for p in self.points]

    def top_pick_rate(self) -> list[float]:
        return [p[TOP] / p[N] for p in self.points]

    def temperature(self) -> tuple[list[float], list[float]]:
        x = self.x()
        kept = [(t, p[TEMP] / p[TEMP_N]) for t, p in zip(x, self.points, strict=True) if p[TEMP_N]]
        return [t for t, _ in kept], [v for _, v in kept]

    # persistence ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"answered": self.answered, "unanswered": self.unanswered,
                "bucket": self.bucket, "last_seq": self.last_seq,
                # copies: a stored snapshot must not follow the live curves
                "points": [list(point) for point in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curves:
        return cls(int(data["answered"]), int(data["unanswered"]), int(data["bucket"]),
                   [list(map(float, p)) for p in data["points"]], int(data["last_seq"]))


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
