"""The settings form; saved to config.toml and applied at once."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from learner.sampling import DTYPES
from tui.settings import Settings

# (field, label, help); the order of the form.
FIELDS = [
    ("model", "Model", "Hugging Face name or local folder; a change reloads it"),
    ("candidates", "Candidates K", "shown per turn, 1-9"),
    ("samples", "Samples N", "generated per turn, K-32"),
    ("temperature", "Temperature", "sampling temperature"),
    ("top_p", "Top-p", "nucleus share, within the top 50 tokens"),
    ("dtype", "Number format", "auto, qint8, int8, bfloat16 or float32; a change reloads"),
    ("exploration", "Exploration", "share of uniform exploration (epsilon)"),
    ("gamma", "Gamma", "discount across the turns of a session"),
    ("forgetting", "Forgetting", "per learned turn; lower adapts faster"),
]
NUMBERS = {"candidates": int, "samples": int, "temperature": float, "top_p": float,
           "exploration": float, "gamma": float, "forgetting": float}


class SettingsScreen(ModalScreen[Settings | None]):
    """Dismissed with the new settings, or None if cancelled."""

    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > VerticalScroll { width: 80; height: 90%; border: thick $accent;
                                      background: $surface; padding: 0 2; }
    SettingsScreen .row { height: auto; }
    SettingsScreen Label { width: 16; padding-top: 1; }
    SettingsScreen Input, SettingsScreen Select { width: 1fr; }
    SettingsScreen .help { color: $text-muted; padding-left: 16; }
    SettingsScreen #error { color: $error; height: auto; }
    SettingsScreen #buttons { height: auto; margin: 1 0; }
    """
    BINDINGS = [
        Binding("ctrl+s", "save", "save", id="settings-save"),
        Binding("escape", "cancel", "cancel", id="settings-cancel"),
    ]

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("Settings", style="bold"))
            for name, label, help_text in FIELDS:
                with Horizontal(classes="row"):
                    yield Label(label)
                    value = getattr(self.settings, name)
                    if name == "dtype":
                        yield Select([(d, d) for d in DTYPES], value=value, allow_blank=False,
                                     id=name)
                    else:
                        yield Input("" if value is None else str(value), id=name,
                                    placeholder="as stored" if value is None else "")
                yield Static(Text(help_text), classes="help")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (Esc)", id="cancel")

    def read(self) -> Settings:
        """The form as settings; ValueError naming what is wrong."""
        values: dict = {}
        for name, _label, _help in FIELDS:
            if name == "dtype":
                values[name] = self.query_one("#dtype", Select).value
                continue
            raw = self.query_one(f"#{name}", Input).value.strip()
            if name in NUMBERS:
                if not raw and name in ("exploration", "gamma", "forgetting"):
                    values[name] = None
                    continue
                try:
                    values[name] = NUMBERS[name](raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number") from None
            else:
                values[name] = raw
        settings = replace(self.settings, **values)
        problems = settings.problems()
        if problems:
            raise ValueError(problems[0][1])
        return settings

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        try:
            settings = self.read()
        except ValueError as exc:
            self.query_one("#error", Static).update(Text(str(exc).capitalize() + "."))
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
