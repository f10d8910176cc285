"""How the learner is doing: reward, top-pick rate, exploration, feature weights.

Cheap to import (the app lists its key at start-up): plotext loads when the
screen is first shown.  It plots the agent's curve summary, which is kept turn
by turn, so opening it costs the same at 100k turns as at 10.
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
    from rlchat.learner.agent import PolicyView
    from rlchat.learner.curves import Curves

PLOTS = ("reward", "top-pick", "temperature", "weights")


class LearningScreen(Screen[None]):
    DEFAULT_CSS = """
    LearningScreen #summary { height: auto; padding: 0 1; }
    LearningScreen Grid { grid-size: 2 2; height: 1fr; }
    LearningScreen PlotextPlot { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "back", "back", id="learning-back")]

    def __init__(self, policy: PolicyView, curves: Curves, sessions: int,
                 model: list[str] | None = None) -> None:
        """`model`: what the model itself learned (adapters, auto_train), a line each."""
        super().__init__()
        self.policy = policy
        self.curves = curves
        self.sessions = sessions
        self.model = model or []

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        yield Static("", id="summary")
        with Grid():
            for plot in PLOTS:
                yield PlotextPlot(id=plot)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        from rlchat.learner.curves import moving_average

        self.sub_title = "Learning"
        curves = self.curves
        self.query_one("#summary", Static).update(self._summary())
        per = "turn" if curves.bucket == 1 else f"{curves.bucket} turns"
        plt = self._plt("reward", f"reward per {per} (line: moving average of 10)")
        x, reward = curves.x(), curves.reward()
        if x:
            plt.scatter(x, reward, marker="dot")
            plt.plot(x, moving_average(reward, 10))
        self._line("top-pick", "picked the top-ranked candidate (moving share)",
                   x, moving_average(curves.top_pick_rate(), 10)).ylim(0, 1)
        self._line("temperature", "exploration temperature", *curves.temperature())
        self._plot_weights()

    def _plt(self, plot: str, title: str):
        from textual_plotext import PlotextPlot

        plt = self.query_one(f"#{plot}", PlotextPlot).plt
        plt.title(title)
        plt.xlabel("turn")
        return plt

    def _line(self, plot: str, title: str, x: list[float], y: list[float]):
        plt = self._plt(plot, title)
        if x:
            plt.plot(x, y)
        return plt

    def _summary(self) -> Text:
        text = Text()
        text.append(f"policy v{self.policy.version} · ", style="bold")
        text.append(f"{self.curves.answered} answered turns, {self.curves.unanswered} "
                    f"unanswered, {self.sessions} sessions")
        cfg = self.policy.config
        text.append(f" · gamma {cfg.gamma:g}, forgetting {cfg.forgetting:g}, "
                    f"exploration {cfg.epsilon:g}", style="dim")
        for line in self.model:
            text.append("\n" + line, style="dim")
        return text

    def _plot_weights(self) -> None:
        from textual_plotext import PlotextPlot

        plt = self.query_one("#weights", PlotextPlot).plt
        plt.title("feature weights (largest 6)")
        weights = self.policy.weights
        names = self.policy.names
        # Weights that are equal on paper (columns no turn told apart) differ
        # in the last bits between CPUs: compared at 6 digits, then by name.
        top = sorted(range(len(weights)),
                     key=lambda i: (-float(f"{abs(weights[i]):.6g}"), names[i]))[:6]
        plt.bar([names[i] for i in top], [weights[i] for i in top],
                orientation="horizontal", width=0.3)

    def action_back(self) -> None:
        self.dismiss(None)
