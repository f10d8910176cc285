"""The settings form, built from the settings schema; saved to config.toml and
applied at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from rlchat.learner.settings import LEARNER, SPECS, Settings, Spec, parse


def help_line(name: str, spec: Spec) -> str:
    """The form's line under a field: what it does, its range, whether it reloads."""
    parts = [spec.help]
    if spec.range_text() and not spec.choices:
        parts.append(spec.range_text())
    if spec.reload:
        parts.append("a change reloads the model")
    if name in LEARNER:
        parts.append("empty keeps the learner's")
    return "; ".join(parts)


BASE = -1  # the Select's value for "no adapter" (runs count from 1)


class SettingsForm(ModalScreen[Settings | None]):
    """Dismissed with the new settings, or None if cancelled."""

    DEFAULT_CSS = """
    SettingsForm { align: center middle; }
    SettingsForm > VerticalScroll { width: 80; height: 90%; border: thick $accent;
                                    background: $surface; padding: 0 2; }
    SettingsForm .row { height: auto; }
    SettingsForm Label { width: 16; padding-top: 1; }
    SettingsForm Input, SettingsForm Select { width: 1fr; }
    SettingsForm .help { color: $text-muted; padding-left: 16; }
    SettingsForm #error { color: $error; height: auto; }
    SettingsForm #buttons { height: auto; margin: 1 0; }
    """
    BINDINGS = [
        Binding("ctrl+s", "save", "save", id="settings-save"),
        Binding("escape", "cancel", "cancel", id="settings-cancel"),
    ]

    def __init__(self, settings: Settings, server: list[str] | None = None,
                 adapters: list[tuple[str, int]] | None = None,
                 adapter: int | None = None,
                 on_adapter: Callable[[int | None], None] | None = None,
                 embeddings: str = "") -> None:
        """`server`: what the probe of a served model found, shown at the top.
        `embeddings`: the source of the meaning columns in use, in words.
        `adapters`: (label, run) of the adapter runs a local model can use,
        `adapter` the one in use; `on_adapter` hears a new choice at save
        (None: the base model)."""
        super().__init__()
        self.settings = settings
        self.server = server or []
        self.adapters = adapters or []
        self.adapter = adapter
        self.on_adapter = on_adapter
        self.embeddings = embeddings

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("Settings", style="bold"))
            if self.server:
                yield Static(Text("Server\n" + "\n".join(f"  {line}" for line in self.server)),
                             id="server")
            for name, spec in SPECS.items():
                with Horizontal(classes="row"):
                    yield Label(spec.label)
                    value = getattr(self.settings, name)
                    if spec.choices:
                        yield Select([(c, c) for c in spec.choices], value=value,
                                     allow_blank=False, id=name)
                    else:
                        yield Input("" if value is None else str(value), id=name,
                                    placeholder="as stored" if value is None else "")
                yield Static(Text(help_line(name, spec)), classes="help")
                if name == "embeddings" and self.embeddings:
                    yield Static(Text(f"in use: {self.embeddings}"), classes="help",
                                 id="embeddings-in-use")
            if self.adapters:
                with Horizontal(classes="row"):
                    yield Label("Adapter")
                    yield Select([("base model (off)", BASE), *self.adapters],
                                 value=BASE if self.adapter is None else self.adapter,
                                 allow_blank=False, id="adapter")
                yield Static(Text("the LoRA adapter the model runs with, from the next turn "
                                  "(rlchat adapters list)"), classes="help")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (Esc)", id="cancel")

    def read(self) -> Settings:
        """The form as settings; ValueError naming what is wrong."""
        values = {}
        for name, spec in SPECS.items():
            if spec.choices:
                values[name] = self.query_one(f"#{name}", Select).value
            else:
                values[name] = parse(name, self.query_one(f"#{name}", Input).value)
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
        if self.adapters and self.on_adapter is not None:
            chosen = self.query_one("#adapter", Select).value
            chosen = None if chosen == BASE else chosen
            if chosen != self.adapter:
                self.on_adapter(chosen)
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
