"""How the learner is doing: reward, top-pick rate, exploration, feature weights."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from learner.curves import Curves, learning_curves
from learner.features import FEATURE_NAMES
from learner.policy import QPolicy
from storage import Store


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
        yield Header()
        yield Static("", id="summary")
        with Grid():
            yield PlotextPlot(id="reward")
            yield PlotextPlot(id="top-pick")
            yield PlotextPlot(id="temperature")
            yield PlotextPlot(id="weights")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "Learning"
        curves = learning_curves(self.store.turns())
        self.query_one("#summary", Static).update(self._summary(curves))
        self._plot_reward(curves)
        self._plot_top_pick(curves)
        self._plot_temperature(curves)
        self._plot_weights()

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

    def _plot_reward(self, curves: Curves) -> None:
        plt = self.query_one("#reward", PlotextPlot).plt
        plt.title("reward per turn (line: moving average of 10)")
        if curves.turn:
            plt.scatter(curves.turn, curves.reward, marker="dot")
            plt.plot(curves.turn, curves.reward_average)
        plt.xlabel("turn")

    def _plot_top_pick(self, curves: Curves) -> None:
        plt = self.query_one("#top-pick", PlotextPlot).plt
        plt.title("picked the top-ranked candidate (moving share)")
        if curves.turn:
            plt.plot(curves.turn, curves.top_pick_rate)
        plt.ylim(0, 1)
        plt.xlabel("turn")

    def _plot_temperature(self, curves: Curves) -> None:
        plt = self.query_one("#temperature", PlotextPlot).plt
        plt.title("exploration temperature")
        if curves.temperature:
            plt.plot(curves.temperature_turn, curves.temperature)
        plt.xlabel("turn")

    def _plot_weights(self) -> None:
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
