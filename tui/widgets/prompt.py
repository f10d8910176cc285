"""The message box, with the messages sent before one key away (up/down)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    """An Input that recalls earlier messages like a shell does."""

    BINDINGS = [
        Binding("up", "older", "earlier message", id="history-older", show=False),
        Binding("down", "newer", "later message", id="history-newer", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._index: int | None = None  # position in history while browsing
        self._draft = ""  # what was typed before browsing started

    def remember(self, text: str) -> None:
        if text.strip() and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._index = None

    def action_older(self) -> None:
        if not self.history:
            return
        if self._index is None:
            self._draft, self._index = self.value, len(self.history)
        self._index = max(0, self._index - 1)
        self._show(self.history[self._index])

    def action_newer(self) -> None:
        if self._index is None:
            return
        self._index += 1
        if self._index >= len(self.history):
            self._index = None
            self._show(self._draft)
        else:
            self._show(self.history[self._index])

    def _show(self, text: str) -> None:
        self.value = text
        self.cursor_position = len(text)
