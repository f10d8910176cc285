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
INDENT = " " * 5  # under the text of the first line's "1. " prefix
HEIGHT_SHARE = 0.75  # of the room between header and message box: the panel's max-height
AROUND = 6  # rows that are not the panel's room: header, footer, message box and its margin
# Rows a candidate that is not highlighted gets: two where there is room for
# them and a highlighted reply of several lines, else one.
ROOMY_ROWS = 20
WIDE = 90  # text columns from which every candidate shows its Q and propensity


def glimpse(text: str, chars: int) -> str:
    """A candidate in at most `chars` characters on one run of lines: line
    breaks as ⏎, the rest left out with …, enough to tell it from the others."""
    flat = " ⏎ ".join(line.strip() for line in text.strip().split("\n") if line.strip())
    if len(flat) <= chars:
        return flat
    cut = flat[: max(chars - 1, 1)]
    space = cut.rfind(" ")
    if space > chars * 0.6:  # end on a word where one ends close to the limit
        cut = cut[:space]
    return cut.rstrip() + "…"


def score_bar(value: float, low: float, high: float, width: int = BAR_WIDTH) -> str:
    """A bar whose length places `value` between the turn's lowest and highest score."""
    share = 1.0 if high - low < 1e-12 else (value - low) / (high - low)
    filled = round(share * (width - 1)) + 1  # the lowest still shows one block
    return "█" * filled + "░" * (width - filled)


class CandidatePanel(VerticalScroll):
    """Ranked candidates, numbered for the keys that pick them; one is highlighted
    for up/down + Enter."""

    DEFAULT_CSS = """
    CandidatePanel { height: auto; max-height: 75%; border: round $accent; padding: 0 1;
                     scrollbar-size-vertical: 1; }
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
                             "m edit · e own · g go on · r again · n none · c copy · w why)")
        self._render_ranking()
        self.remove_class("-empty")

    def _text_room(self) -> tuple[int, int]:
        """(columns for text on a line, rows for the panel's content) at this screen size."""
        columns = (self.size.width or self.app.size.width - 4) - 1  # the scrollbar's column
        rows = int((self.app.size.height - AROUND) * HEIGHT_SHARE) - 2  # less the border
        return max(columns, 20), max(rows, 4)

    def _fit(self, line: Text, columns: int, rows: int) -> Text:
        """`line` wrapped to `columns`, cut to `rows` display lines (the last
        saying how to see the rest)."""
        lines = line.wrap(self.app.console, columns)
        if len(lines) <= rows:
            return line
        kept = Text("\n").join(lines[: max(rows - 1, 1)])
        kept.append(f"\n{INDENT}… {len(lines) - rows + 1} more lines: x shows all whole",
                    style="dim")
        return kept

    def _render_ranking(self) -> None:
        """Every candidate in view together: the highlighted one whole, the
        others a glimpse in the room left (one or two lines each); x shows
        them all whole."""
        self.remove_children()
        if not self.candidates:
            return
        scores = [c.score for c in self.candidates]
        low, high = min(scores), max(scores)
        columns, rows = self._text_room()
        others = 2 if rows >= ROOMY_ROWS else 1
        widgets = []
        for rank, cand in enumerate(self.candidates, start=1):
            highlighted = rank - 1 == self.highlighted
            line = Text()
            line.append(f"{rank}. ", style="bold")
            line.append(score_bar(cand.score, low, high), style="green")
            if highlighted or self.expanded or columns >= WIDE:
                line.append(f" Q {cand.score:+.2f} p {cand.propensity:.2f}  ", style="dim")
            else:  # a narrow screen keeps its columns for the glimpse
                line.append("  ")
            tail = ""
            if cand.truncated:
                tail = " ✂ cut at the token limit (g goes on)" if highlighted else " ✂"
            mark = ""
            if cand.id in self.marks:
                mark = "  + good" if self.marks[cand.id] else "  − bad"
            # A Text append is never parsed as markup.
            if highlighted or self.expanded:
                line.append(literal(cand.text).replace("\n", "\n" + INDENT))
                if not self.expanded:  # the others keep their glimpses in view
                    room = rows - others * (len(self.candidates) - 1)
                    line = self._fit(line, columns, max(room, 3))
            else:
                room = others * columns - len(line.plain) - len(tail) - len(mark)
                line.append(glimpse(literal(cand.text), room))
            if tail:
                line.append(tail, style="dim italic")
            if mark:
                good = self.marks[cand.id]
                line.append(mark, style="bold green" if good else "bold red")
            classes = "candidate" + (" highlighted" if highlighted else "")
            widgets.append(Static(line, classes=classes))
            if self.show_why and cand.id in self._why:
                parts = ", ".join(f"{name} {value:+.2f}" for name, value in self._why[cand.id])
                widgets.append(Static(Text(f"why: {parts}"), classes="why"))
        self.mount_all(widgets)

    def replace_candidate(self, whole: ShownCandidate) -> None:
        """A candidate's text after the model continued it, in its place."""
        self.candidates = [whole if c.id == whole.id else c for c in self.candidates]
        self._render_ranking()

    def mark(self, candidate_id: int, good: bool) -> None:
        self.marks[candidate_id] = good
        self._render_ranking()

    def toggle_why(self) -> None:
        self.show_why = not self.show_why
        self._render_ranking()

    def toggle_expanded(self) -> None:
        self.expanded = not self.expanded
        self._render_ranking()
        self.call_after_refresh(self._highlight_in_view)

    def move(self, delta: int) -> None:
        if self.candidates:
            self.highlighted = (self.highlighted + delta) % len(self.candidates)
            self._render_ranking()  # the highlighted one is shown whole, the rest in glimpses
            self.call_after_refresh(self._highlight_in_view)

    def _highlight_in_view(self) -> None:
        shown = self.query(".candidate")
        if len(shown) > self.highlighted:
            shown[self.highlighted].scroll_visible(animate=False)

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
