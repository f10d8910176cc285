"""The conversation so far."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Static

from rlchat.tui.literal import literal

LABELS = {"user": "You", "assistant": "Assistant", "note": ""}


class Transcript(VerticalScroll):
    """Messages, oldest first, scrolled to the newest."""

    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; }
    Transcript > .message { margin: 0 0 1 0; }
    Transcript > .user { color: $text; text-style: bold; }
    Transcript > .assistant { color: $success; }
    Transcript > .note { color: $text-muted; text-style: italic; }
    """

    def on_mount(self) -> None:
        # Stay at the newest message when this area shrinks (tall candidates
        # below it) or grows, until the user scrolls up to read back.
        self.anchor()

    def add_message(self, role: str, text: str) -> Static:
        label = LABELS.get(role, role)
        body = f"{label}: {literal(text)}" if label else literal(text)
        message = Static(body, markup=False, classes=f"message {role}")
        self.mount(message)
        self.scroll_end(animate=False)
        return message

    def show(self, messages: list[tuple[str, str]]) -> None:
        """Replace the transcript with these (role, text) messages."""
        self.remove_children()
        for role, text in messages:
            self.add_message(role, text)

    def remove_last(self, role: str) -> None:
        """Take back the newest message if it has this role (a cancelled send)."""
        messages = self.query(".message")
        if messages and messages.last().has_class(role):
            messages.last().remove()

    def messages(self) -> list[str]:
        """The plain text of every message, for tests and copy."""
        return [str(m.render()) for m in self.query(".message").results(Static)]
