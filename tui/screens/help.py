"""Every key, what it does and its binding id (for [keys] in config.toml)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (where, key, description, binding id)
KeyRow = tuple[str, str, str, str]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: 90%; border: thick $accent;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "close", id="help-close")]

    def __init__(self, rows: list[KeyRow], config_file: str) -> None:
        super().__init__()
        self.rows = rows
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, show_edge=False)
        for column, ratio in (("where", 2), ("key", 2), ("does", 5), ("binding id", 3)):
            table.add_column(column, style="bold" if column == "key" else "", ratio=ratio)
        for where, key, description, binding_id in self.rows:
            table.add_row(where, key, description, Text(binding_id, style="dim"))
        with VerticalScroll():
            yield Static(Text("rlchat keys", style="bold"))
            yield Static(table)
            yield Static(Text(
                "Remap any key in the [keys] table of " + self.config_file
                + ', e.g.  "new-session" = "ctrl+o".  Ctrl+P opens the command palette. '
                "Esc closes this help."
            ))

    def action_close(self) -> None:
        self.dismiss(None)
