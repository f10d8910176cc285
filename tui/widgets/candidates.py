"""The candidate replies of the current turn: streamed drafts, then the ranking."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from rlchat.tui.literal import literal

if TYPE_CHECKING:
    from rlchat.learner.agent import ShownCandidate

BAR_WIDTH = 10
PREVIEW_LINES = 3  # a candidate's lines shown until expanded (x)
INDENT = " " * 5  # under the text of the first line's "1. " prefix


def preview(text: str, expanded: bool) -> tuple[str, bool]:
    """(what to show of a candidate, whether lines were left out)."""
    lines = text.split("\n")
    if expanded or len(lines) <= PREVIEW_LINES:
        return text, False
    return "\n".join(lines[:PREVIEW_LINES]), True


def score_bar(value: float, low: float, high: float, width: int = BAR_WIDTH) -> str:
    """A bar whose length places `value` between the turn's lowest and highest score."""
    share = 1.0 if high - low < 1e-12 else (value - low) / (high - low)
    filled = round(share * (width - 1)) + 1  # the lowest still shows one block
    return "█" * filled + "░" * (width - filled)


class CandidatePanel(VerticalScroll):
    """Ranked candidates, numbered for the keys that pick them; one is highlighted
    for up/down + Enter."""

    DEFAULT_CSS = """
    CandidatePanel { height: auto; max-height: 60%; border: round $accent; padding: 0 1; }
    CandidatePanel.-empty { display: none; }
    CandidatePanel > .candidate { margin: 0; }
    CandidatePanel > .draft { color: $text-muted; }
    CandidatePanel > .highlighted { background: $boost; text-style: bold; }
    CandidatePanel > .picked { background: $accent 30%; }
    CandidatePanel > .why { color: $text-muted; padding-left: 4; }
    """

    can_focus = False  # the app's up/down move the highlight; no scrolling focus

    def __init__(self, **kwargs) -> None:
        super().__init__(classes="-empty", **kwargs)
        self.border_title = "Candidates"
        self.candidates: list[ShownCandidate] = []
        self.highlighted = 0
        self._drafts: dict[int, str] = {}
        self._draft_view: Static | None = None
        self._why: dict[int, list[tuple[str, float]]] = {}
        self.show_why = False
        self.expanded = False
        self.marks: dict[int, bool] = {}  # candidate id -> marked good (True) or bad

    # streaming ------------------------------------------------------------
    def start_drafts(self) -> None:
        self.clear()
        self.border_title = "Candidates (drafting… Esc cancels)"
        self.remove_class("-empty")

    def add_tokens(self, tokens: list[tuple[int, str]]) -> None:
        """New text for some rows; one repaint for the lot, so a busy stream
        costs the UI one widget update per frame, not one per token."""
        for row, text in tokens:
            self._drafts[row] = self._drafts.get(row, "") + text
        # One line per draft while they stream: line breaks show as ⏎.
        lines = Text("\n").join(
            Text(f"~ {literal(self._drafts[row]).strip()}".replace("\n", " ⏎ "))
            for row in sorted(self._drafts)
        )
        if self._draft_view is None:
            self._draft_view = Static(lines, classes="candidate draft")
            self.mount(self._draft_view)
        else:
            self._draft_view.update(lines)

    def drafts(self) -> dict[int, str]:
        return dict(self._drafts)

    # the ranking ----------------------------------------------------------
    def show(self, candidates: list[ShownCandidate],
             why: dict[int, list[tuple[str, float]]] | None = None) -> None:
        self.clear()
        self.candidates = list(candidates)
        self._why = why or {}
        self.marks = {}
        self.highlighted = 0
        self.expanded = False
        self.border_title = ("Candidates (1-9 or ↑↓ Enter pick · +/- good/bad · o order · "
                             "m edit · e own · r again · n none · c copy · w why)")
        self._render_ranking()
        self.remove_class("-empty")

    def _render_ranking(self) -> None:
        self.remove_children()
        if not self.candidates:
            return
        scores = [c.score for c in self.candidates]
        low, high = min(scores), max(scores)
        widgets = []
        for rank, cand in enumerate(self.candidates, start=1):
            line = Text()
            line.append(f"{rank}. ", style="bold")
            line.append(score_bar(cand.score, low, high), style="green")
            line.append(f" Q {cand.score:+.2f} p {cand.propensity:.2f}  ", style="dim")
            shown, more = preview(literal(cand.text), self.expanded)
            # A Text append is never parsed as markup.
            line.append(shown.replace("\n", "\n" + INDENT))
            if more:
                line.append(f"\n{INDENT}… (x shows all lines)", style="dim")
            if cand.truncated:
                line.append(" ✂ cut at the token limit", style="dim italic")
            if cand.id in self.marks:
                good = self.marks[cand.id]
                line.append("  + good" if good else "  − bad",
                            style="bold green" if good else "bold red")
            classes = "candidate" + (" highlighted" if rank - 1 == self.highlighted else "")
            widgets.append(Static(line, classes=classes))
            if self.show_why and cand.id in self._why:
                parts = ", ".join(f"{name} {value:+.2f}" for name, value in self._why[cand.id])
                widgets.append(Static(Text(f"why: {parts}"), classes="why"))
        self.mount_all(widgets)

    def mark(self, candidate_id: int, good: bool) -> None:
        self.marks[candidate_id] = good
        self._render_ranking()

    def toggle_why(self) -> None:
        self.show_why = not self.show_why
        self._render_ranking()

    def toggle_expanded(self) -> None:
        self.expanded = not self.expanded
        self._render_ranking()
        self.query(".candidate")[self.highlighted].scroll_visible(animate=False)

    def move(self, delta: int) -> None:
        if self.candidates:
            self.highlighted = (self.highlighted + delta) % len(self.candidates)
            for i, child in enumerate(self.query(".candidate")):
                child.set_class(i == self.highlighted, "highlighted")
            self.query(".candidate")[self.highlighted].scroll_visible(animate=False)

    def mark_picked(self, rank: int) -> None:
        for i, child in enumerate(self.query(".candidate")):
            child.set_class(i == rank - 1, "picked")

    def clear(self) -> None:
        self.candidates = []
        self._drafts.clear()
        self._draft_view = None
        self._why = {}
        self.marks = {}
        self.remove_children()
        self.add_class("-empty")
