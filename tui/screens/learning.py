"""How the learner is doing: reward, top-pick rate, exploration, feature weights.

Cheap to import (the app lists its key at start-up): plotext, numpy and the
learner load when the screen is first shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

if TYPE_CHECKING:
    from learner.curves import Curves
    from learner.policy import QPolicy
    from storage import Store

PLOTS = ("reward", "top-pick", "temperature", "weights")


class LearningScreen(Screen[None]):
    DEFAULT_CSS = """
    LearningScreen #summary { height: auto; padding: 0 1; }
    LearningScreen Grid { grid-size: 2 2; height: 1fr; }
    LearningScreen PlotextPlot { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "back", "back", id="learning-back")]

    def __init__(self, store: Store, policy: QPolicy | None) -> None:
        super().__init__()
        self.store = store
        self.policy = policy

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        yield Static("", id="summary")
        with Grid():
            for plot in PLOTS:
                yield PlotextPlot(id=plot)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        from learner.curves import learning_curves

        self.sub_title = "Learning"
        curves = learning_curves(self.store.turns())
        self.query_one("#summary", Static).update(self._summary(curves))
        plt = self._plt("reward", "reward per turn (line: moving average of 10)")
        if curves.turn:
            plt.scatter(curves.turn, curves.reward, marker="dot")
            plt.plot(curves.turn, curves.reward_average)
        self._line("top-pick", "picked the top-ranked candidate (moving share)",
                   curves.turn, curves.top_pick_rate).ylim(0, 1)
        self._line("temperature", "exploration temperature",
                   curves.temperature_turn, curves.temperature)
        self._plot_weights()

    def _plt(self, plot: str, title: str):
        from textual_plotext import PlotextPlot

        plt = self.query_one(f"#{plot}", PlotextPlot).plt
        plt.title(title)
        plt.xlabel("turn")
        return plt

    def _line(self, plot: str, title: str, x: list[int], y: list[float]):
        plt = self._plt(plot, title)
        if x:
            plt.plot(x, y)
        return plt

    def _summary(self, curves: Curves) -> Text:
        version = self.policy.version if self.policy else "-"
        text = Text()
        text.append(f"policy v{version} · ", style="bold")
        text.append(f"{curves.answered} answered turns, {curves.unanswered} unanswered, "
                    f"{self.store.count_sessions()} sessions")
        if self.policy is not None:
            cfg = self.policy.config
            text.append(f" · gamma {cfg.gamma:g}, forgetting {cfg.forgetting:g}, "
                        f"exploration {cfg.epsilon:g}", style="dim")
        return text

    def _plot_weights(self) -> None:
        import numpy as np
        from textual_plotext import PlotextPlot

        from learner.features import FEATURE_NAMES

        plt = self.query_one("#weights", PlotextPlot).plt
        plt.title("feature weights (largest 6)")
        if self.policy is None:
            return
        weights = np.asarray(self.policy.w)
        top = np.argsort(-np.abs(weights))[:6]
        plt.bar([FEATURE_NAMES[i] for i in top], [float(weights[i]) for i in top],
                orientation="horizontal", width=0.3)

    def action_back(self) -> None:
        self.dismiss(None)
