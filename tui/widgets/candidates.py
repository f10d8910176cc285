"""The candidate replies of the current turn, in the policy's order."""

from __future__ import annotations

from textual.containers import Vertical
from textual.widgets import Static

from learner.agent import ShownCandidate
from tui.literal import literal


class CandidatePanel(Vertical):
    """Ranked candidates, numbered for the keys that pick them."""

    DEFAULT_CSS = """
    CandidatePanel { height: auto; max-height: 50%; border: round $accent; padding: 0 1; }
    CandidatePanel.-empty { display: none; }
    CandidatePanel > .candidate { margin: 0 0 0 0; }
    CandidatePanel > .picked { background: $accent 30%; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(classes="-empty", **kwargs)
        self.border_title = "Candidates"
        self.candidates: list[ShownCandidate] = []

    def show(self, candidates: list[ShownCandidate]) -> None:
        self.clear()
        self.candidates = list(candidates)
        for rank, cand in enumerate(candidates, start=1):
            line = f"{rank}. {literal(cand.text)}   (Q {cand.score:+.2f}, p {cand.propensity:.2f})"
            self.mount(Static(line, markup=False, classes="candidate"))
        self.remove_class("-empty")

    def mark_picked(self, rank: int) -> None:
        for i, child in enumerate(self.query(".candidate")):
            child.set_class(i == rank - 1, "picked")

    def clear(self) -> None:
        self.candidates = []
        self.remove_children()
        self.add_class("-empty")
