"""Past sessions: search, browse, resume, rename, delete, all through the
agent.  Works without a model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from rlchat.learner.dialogue import one_line
from rlchat.learner.errors import AgentError
from rlchat.learner.search import SearchIndex, words
from rlchat.tui.literal import literal
from rlchat.tui.screens.dialogs import AskText, Confirm

if TYPE_CHECKING:
    from rlchat.learner.agent import Agent


def session_date(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "?"


SHOWN = 500  # rows in the table at most: a long log's sessions are found by search
FOUND = 100  # search results shown: typing on narrows them


class SessionsScreen(Screen["Resume | None"]):
    """Newest first, or those whose messages and replies hold the typed
    words.  Dismissed with what to resume, or None."""

    DEFAULT_CSS = """
    SessionsScreen #search { margin: 0 1; }
    SessionsScreen #found { height: 1; padding: 0 1; color: $text-muted; }
    SessionsScreen DataTable { width: 3fr; height: 1fr; }
    SessionsScreen #preview { width: 2fr; height: 1fr; border-left: solid $accent;
                              padding: 0 1; overflow-y: auto; }
    """
    BINDINGS = [
        Binding("enter", "resume", "resume", id="session-resume", priority=True),
        Binding("ctrl+r", "rename", "rename", id="session-rename", priority=True),
        Binding("ctrl+d", "delete", "delete", id="session-delete", priority=True),
        Binding("escape", "back", "back", id="session-back"),
        Binding("up", "move(-1)", "previous session", id="session-up", show=False),
        Binding("down", "move(1)", "next session", id="session-down", show=False),
        Binding("pageup", "move(-10)", "page up", id="session-page-up", show=False),
        Binding("pagedown", "move(10)", "page down", id="session-page-down", show=False),
    ]

    class Deleted(Message):
        """A session was deleted; `was_open`: it was the one in use."""

        def __init__(self, was_open: bool) -> None:
            super().__init__()
            self.was_open = was_open

    def __init__(self, agent: Agent, *, can_resume: bool = True) -> None:
        super().__init__()
        self.agent = agent
        self.can_resume = can_resume
        self.titles: dict[str, str] = {}
        self.records: dict[str, dict] = {}  # every session, by id, newest first
        self.matched: dict[str, str] = {}  # session -> the turn the search found there
        self.index: SearchIndex | None = None  # once built (a worker)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Search messages and replies: type words", id="search")
        yield Static("", id="found", markup=False)
        with Horizontal():
            yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
            yield Static("", id="preview")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "Sessions"
        table = self.query_one(DataTable)
        table.add_columns("date", "title", "turns")
        table.can_focus = False  # the search box keeps the keys; up/down move the rows
        self.reload()
        self.query_one("#search", Input).focus()
        self.run_worker(self._build_index, thread=True, exclusive=True, group="search")

    class Indexing(Message):
        """How many turns the index has read (from its worker)."""

        def __init__(self, turns: int) -> None:
            super().__init__()
            self.turns = turns

    def _build_index(self) -> None:
        # Posted, not called: a message never waits for the UI thread.
        index = self.agent.search_index(lambda turns: self.post_message(self.Indexing(turns)))
        self.app.call_from_thread(self._indexed, index)

    def on_sessions_screen_indexing(self, event: Indexing) -> None:
        if self.index is None:
            self._say(f"Indexing past chats… {event.turns:,} turns")

    def _indexed(self, index: SearchIndex) -> None:
        self.index = index
        self.refilter()

    def _say(self, text: str) -> None:
        self.query_one("#found", Static).update(text)

    def reload(self) -> None:
        """Read the sessions again (after a rename or delete) and show them."""
        self.records = {s["id"]: s for s in self.agent.sessions()}
        self.titles = {sid: s.get("title") or "" for sid, s in self.records.items()}
        self.refilter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            self.refilter()

    def refilter(self) -> None:
        query = self.query_one("#search", Input).value
        if not words(query):
            self.matched = {}
            shown = list(self.records)[:SHOWN]
            more = len(self.records) - len(shown)
            said = (f"{len(self.records):,} sessions; the newest {len(shown)} shown, type to "
                    "search" if more else "Type to search past chats")
            self._say(said + (" (indexing…)" if self.index is None else "."))
        elif self.index is None:
            shown = []
            self._say("Indexing past chats…")
        else:
            hits = [h for h in self.index.search(query, FOUND) if h.session in self.records]
            self.matched = {h.session: h.turn for h in hits}
            shown = [h.session for h in hits]
            many = f"the newest {FOUND} sessions" if len(hits) == FOUND else (
                f"{len(hits)} session{'s' if len(hits) != 1 else ''}")
            self._say(f"{many} match {query.strip()!r}" if hits
                      else f"Nothing matches {query.strip()!r}.")
        self._fill(shown)

    def _fill(self, sessions: list[str]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for sid in sessions:
            session = self.records[sid]
            # Cells are Text, never str: DataTable would read a str as markup.
            table.add_row(
                Text(session_date(session.get("started"))),
                Text(literal(one_line(session.get("title") or "(untitled)"))),
                Text(str(session.get("turns", 0)), justify="right"),
                key=sid,
            )
        self._preview()

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_move(self, rows: int) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + rows)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._preview()

    def _preview(self) -> None:
        session = self.selected()
        preview = self.query_one("#preview", Static)
        if session is None:
            preview.update("No sessions yet." if not self.records else "")
            return
        lines = self.agent.session_messages(session)
        text = Text()
        turn = self.matched.get(session)
        if turn is not None and self.index is not None:
            # The exchange that matched first, then the whole session.
            at = self.index.position(turn)
            text.append("Found:\n", style="bold")
            _exchange(text, lines[2 * at:2 * at + 2])
            text.append("─" * 20 + "\n\n", style="dim")
        _exchange(text, lines)
        if turn is not None:
            text.highlight_words(words(self.query_one("#search", Input).value),
                                 style="reverse", case_sensitive=False)
        preview.update(text if text else Text("(no turns)"))

    def action_resume(self) -> None:
        session = self.selected()
        if session is None:
            return
        if not self.can_resume:
            self.notify("The model is not loaded: sessions can be read, not continued.",
                        severity="warning")
            return
        turn = self.matched.get(session)
        at = self.index.position(turn) if turn is not None and self.index is not None else None
        self.dismiss(Resume(session, at))

    def action_rename(self) -> None:
        session = self.selected()
        if session is None:
            return
        def done(title: str | None) -> None:
            if title is None or not title.strip():
                return
            try:
                self.agent.rename_session(session, title)
            except AgentError as exc:
                self.notify(exc.message, severity="error", markup=False)
            self.reload()

        self.app.push_screen(AskText("New title:", self.titles.get(session, "")), done)

    def action_delete(self) -> None:
        session = self.selected()
        if session is None:
            return
        title = one_line(self.titles.get(session, ""))

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                deleted = self.agent.delete_session(session)
            except AgentError as exc:
                self.notify(exc.message, severity="error", markup=False)
                return
            self.notify(f"Deleted the session and its {deleted.turns} turns.", markup=False)
            self.app.post_message(self.Deleted(deleted.was_open))
            self.reload()

        self.app.push_screen(Confirm(f"Delete session “{title}” and its turns?"), done)

    def action_back(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class Resume:
    """What F2 asks the chat to continue: a session, shown at a turn (its
    0-based place in the session) where the search found it."""

    session: str
    turn: int | None = None


def _exchange(text: Text, lines: list[tuple[str, str]]) -> None:
    for role, line in lines:
        label = {"user": "You: ", "assistant": "Assistant: "}.get(role, "")
        text.append(label, style="bold")
        text.append(literal(line) + "\n\n")
