"""Past sessions: browse, resume, rename, delete.  Works without a model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from learner.dialogue import one_line
from tui.literal import literal
from tui.screens.dialogs import AskText, Confirm

if TYPE_CHECKING:
    from storage import Store


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

    def __init__(self, store: Store, *, can_resume: bool = True) -> None:
        super().__init__()
        self.store = store
        self.can_resume = can_resume

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
        rows = sorted(self.store.sessions(), key=lambda s: s["seq"], reverse=True)
        for session in rows:
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
        from learner.agent import session_messages  # numpy: not before the first paint

        session = self.selected()
        preview = self.query_one("#preview", Static)
        if session is None:
            preview.update("No sessions yet.")
            return
        text = Text()
        for role, line in session_messages(self.store, session):
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
        current = (self.store.get_session(session) or {}).get("title", "")

        def done(title: str | None) -> None:
            if title is not None and title.strip():
                self.store.update_session(session, title=one_line(title)[:80])
                self.reload()

        self.app.push_screen(AskText("New title:", current), done)

    def action_delete(self) -> None:
        session = self.selected()
        if session is None:
            return
        title = (self.store.get_session(session) or {}).get("title", "")

        def done(yes: bool | None) -> None:
            if yes:
                removed = self.store.delete_session(session)
                self.notify(f"Deleted the session and its {removed} turns.")
                self.reload()

        self.app.push_screen(Confirm(f"Delete session “{one_line(title)}” and its turns?"), done)

    def action_back(self) -> None:
        self.dismiss(None)
