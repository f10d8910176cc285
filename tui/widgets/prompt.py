"""The message box: several lines, and the messages sent before one key away.

Enter sends (or accepts an edit, an own reply, an order).  A line break is
Ctrl+J, which every terminal sends as its own key; Shift+Enter and
Alt+Enter do the same where the terminal tells them apart from Enter.
Pasted text keeps its line breaks.  Up on the first line and down on the
last recall earlier messages, like a shell.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")
KEYS_HINT = "Enter sends · Ctrl+J new line"


class PromptInput(TextArea):
    """A TextArea that sends on Enter and recalls earlier messages."""

    DEFAULT_CSS = """
    PromptInput { height: auto; max-height: 10; }
    """
    # Send and line break are taken in the box's own key handler, in the order
    # the keys came (a priority binding would run before the characters typed
    # just before it had reached the box); listed here for help and [keys].
    BINDINGS = [
        Binding("enter", "submit", "send", id="message-send", show=False,
                tooltip="send the message (or accept an edit, an own reply, an order)"),
        Binding(",".join(NEWLINE_KEYS), "newline", "new line", id="message-newline",
                show=False, tooltip="a line break in the message box"),
        Binding("up", "older", "earlier message", id="history-older", show=False,
                tooltip="on the first line: the message sent before"),
        Binding("down", "newer", "later message", id="history-newer", show=False,
                tooltip="on the last line: the message sent after"),
    ]
    OWN_KEYS = ("message-send", "message-newline")

    class Submitted(Message):
        """Enter was pressed: `value` is the box's text."""

        def __init__(self, box: PromptInput, value: str) -> None:
            super().__init__()
            self.input, self.value = box, value

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, tab_behavior="focus", show_line_numbers=False,
                         highlight_cursor_line=False, **kwargs)
        self.sent: list[str] = []  # messages sent, oldest first (TextArea has a `history`)
        self._index: int | None = None  # position in history while browsing
        self._draft = ""  # what was typed before browsing started
        self.keymap: dict[str, str] = {}  # [keys] remaps of the app (binding id -> keys)

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        """Replace the text; the cursor goes to its end, nothing selected."""
        self.load_text(text)
        self.move_cursor(self.document.end)

    def clear(self) -> None:  # TextArea's returns an edit result; the box's callers need none
        self.value = ""

    async def _on_key(self, event: events.Key) -> None:
        if self.read_only or self.disabled:
            return
        for binding in self.BINDINGS:
            if binding.id in self.OWN_KEYS and event.key in self._keys(binding):
                event.stop()
                event.prevent_default()  # TextArea's own handler would insert a line break
                await self.run_action(binding.action)
                return

    def _keys(self, binding: Binding) -> list[str]:
        return [k.strip() for k in self.keymap.get(binding.id, binding.key).split(",")]

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)

    # history ------------------------------------------------------------
    def remember(self, text: str) -> None:
        if text.strip() and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._index = None

    def action_older(self) -> None:
        if self.cursor_location[0] > 0 or not self.sent:
            self.action_cursor_up()
            return
        if self._index is None:
            self._draft, self._index = self.text, len(self.sent)
        self._index = max(0, self._index - 1)
        self.value = self.sent[self._index]

    def action_newer(self) -> None:
        if self.cursor_location[0] < self.document.line_count - 1 or self._index is None:
            self.action_cursor_down()
            return
        self._index += 1
        if self._index >= len(self.sent):
            self._index = None
            self.value = self._draft
        else:
            self.value = self.sent[self._index]
