"""The conversation so far."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from rlchat.tui.literal import literal

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

LABELS = {"user": "You", "assistant": "Assistant", "note": ""}


def _line_breaks_kept() -> MarkdownIt:
    """A Markdown parser for which a reply's line break is the writer's, shown
    as one, not joined into its paragraph (Textual's widget renders only
    hard breaks as breaks, whatever markdown-it's `breaks` option says)."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("gfm-like")

    def hard(state) -> None:
        for token in state.tokens:
            for child in token.children or ():
                if child.type == "softbreak":
                    child.type = "hardbreak"

    parser.core.ruler.push("hard_line_breaks", hard)
    return parser


class Reply(Vertical):
    """A reply that continued the conversation, rendered as Markdown (lists,
    code fences, its own line breaks).  Markdown is not Rich markup: `[bold]`
    in a reply stays as written, and control characters are made visible first."""

    DEFAULT_CSS = """
    Reply { height: auto; }
    Reply > .label { text-style: bold; height: 1; }
    Reply > Markdown { margin: 0; padding: 0 0 0 2; }
    Reply > Markdown > MarkdownBlock:last-child { margin-bottom: 0; }
    """

    def __init__(self, text: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text

    def compose(self):
        # Imported with the first reply, not before the first paint.
        from textual.widgets import Markdown

        yield Static(f"{LABELS['assistant']}:", markup=False, classes="label")
        # Links are shown, never opened: a click must not start a browser.
        yield Markdown(literal(self.text), open_links=False, parser_factory=_line_breaks_kept)


class Transcript(VerticalScroll):
    """Messages, oldest first, scrolled to the newest."""

    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; }
    Transcript > .message { margin: 0 0 1 0; }
    Transcript > .user { color: $text; text-style: bold; }
    Transcript > .assistant { color: $success; }
    Transcript > .note { color: $text-muted; text-style: italic; }
    Transcript > .found { background: $accent 20%; }
    """

    def on_mount(self) -> None:
        # Stay at the newest message when this area shrinks (tall candidates
        # below it) or grows, until the user scrolls up to read back.
        self.anchor()

    def add_message(self, role: str, text: str) -> Widget:
        if role == "assistant":
            message: Widget = Reply(text, classes="message assistant")
        else:
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

    def show_turn(self, position: int) -> None:
        """Scroll to the message of the turn at `position` (0-based, two
        messages a turn, as `show` gets them) and mark it."""
        messages = self.query(".message")
        if 2 * position < len(messages):
            found = messages[2 * position]
            found.add_class("found")
            self.release_anchor()  # else the view would stay at the newest message
            self.call_after_refresh(self.scroll_to_widget, found, animate=False, top=True)

    def remove_last(self, role: str) -> None:
        """Take back the newest message if it has this role (a cancelled send)."""
        messages = self.query(".message")
        if messages and messages.last().has_class(role):
            messages.last().remove()

    def last_reply(self) -> str | None:
        """The source text of the newest reply, if any."""
        replies = self.query(Reply)
        return replies.last().text if replies else None

    def messages(self) -> list[str]:
        """Every message as "Role: text" (a reply's source text, before Markdown)."""
        out = []
        for message in self.query(".message"):
            if isinstance(message, Reply):
                out.append(f"{LABELS['assistant']}: {literal(message.text)}")
            elif isinstance(message, Static):
                out.append(str(message.render()))
        return out
