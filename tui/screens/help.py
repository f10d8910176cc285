"""Every key, what it does and its binding id (for [keys] in config.toml)."""

from __future__ import annotations

from dataclasses import replace

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (where, key, description, binding id)
KeyRow = tuple[str, str, str, str]

COMMANDS = [  # the command palette's entries: (title, help, action)
    ("New session", "End this session and start another", "new_session"),
    ("Sessions", "Search, browse, resume, rename or delete sessions", "sessions"),
    ("Learning", "Plots of reward, top picks, exploration and weights", "learning"),
    ("Settings", "Model, candidates, sampling and learner settings", "settings"),
    ("Help", "Every key and its binding id", "help"),
    ("Regenerate", "Sample new candidates for the same message", "regenerate"),
    ("Write own reply", "Answer with your own text instead", "own_reply"),
    ("Why", "Show or hide what sets each candidate apart", "toggle_why"),
    ("All lines", "Show every line of long candidates, or their first lines", "toggle_expand"),
    ("System prompt", "Set the persona of this session (or the next)", "system_prompt"),
    ("Cancel generation", "Stop the candidates being generated", "cancel"),
    ("Skip rating", "Keep the pick without a rating", "skip_rating"),
]


def key_rows(app: App, owners: list[tuple[str, object]], keymap: dict[str, str]) -> list[KeyRow]:
    """Every binding of `owners` with the key it has now (after [keys] remaps);
    the nine digit bindings share a row while none is remapped."""
    digits_remapped = any(k.startswith("digit-") for k in keymap)
    rows: list[KeyRow] = []
    for where, owner in owners:
        for binding in getattr(owner, "BINDINGS", []):
            if not isinstance(binding, Binding) or not binding.id:
                continue
            if binding.id.startswith("digit-") and not digits_remapped:
                if binding.id == "digit-1":
                    rows.append((where, "1 … 9", "pick a candidate, then rate 1-5",
                                 "digit-1 … digit-9"))
                continue
            keys = keymap.get(binding.id, binding.key).split(",")
            shown = ", ".join(
                app.get_key_display(replace(binding, key=k.strip(), key_display=None))
                for k in keys
            )
            rows.append((where, shown, binding.tooltip or binding.description, binding.id))
    return rows


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
