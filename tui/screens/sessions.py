"""Past sessions: browse, resume, rename, delete, all through the agent.
Works without a model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from rlchat.learner.dialogue import one_line
from rlchat.learner.errors import AgentError
from rlchat.tui.literal import literal
from rlchat.tui.screens.dialogs import AskText, Confirm

if TYPE_CHECKING:
    from rlchat.learner.agent import Agent


def session_date(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "?"


class SessionsScreen(Screen[str | None]):
    """Newest first.  Dismissed with the id of a session to resume, or None."""

    DEFAULT_CSS = """
    SessionsScreen DataTable { width: 3fr; height: 1fr; }
    SessionsScreen #preview { width: 2fr; height: 1fr; border-left: solid $accent;
                              padding: 0 1; overflow-y: auto; }
    """
    BINDINGS = [
        Binding("enter", "resume", "resume", id="session-resume", priority=True),
        Binding("r", "rename", "rename", id="session-rename"),
        Binding("d,delete", "delete", "delete", id="session-delete"),
        Binding("escape", "back", "back", id="session-back"),
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

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
            yield Static("", id="preview")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "Sessions"
        table = self.query_one(DataTable)
        table.add_columns("date", "title", "turns")
        self.reload()
        table.focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.titles = {}
        for session in self.agent.sessions():
            self.titles[session["id"]] = session.get("title") or ""
            # Cells are Text, never str: DataTable would read a str as markup.
            table.add_row(
                Text(session_date(session.get("started"))),
                Text(literal(one_line(session.get("title") or "(untitled)"))),
                Text(str(session.get("turns", 0)), justify="right"),
                key=session["id"],
            )
        self._preview()

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._preview()

    def _preview(self) -> None:
        session = self.selected()
        preview = self.query_one("#preview", Static)
        if session is None:
            preview.update("No sessions yet.")
            return
        text = Text()
        for role, line in self.agent.session_messages(session):
            label = {"user": "You: ", "assistant": "Assistant: "}.get(role, "")
            text.append(label, style="bold")
            text.append(literal(line) + "\n\n")
        preview.update(text if text else Text("(no turns)"))

    def action_resume(self) -> None:
        session = self.selected()
        if session is None:
            return
        if not self.can_resume:
            self.notify("The model is not loaded: sessions can be read, not continued.",
                        severity="warning")
            return
        self.dismiss(session)

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
