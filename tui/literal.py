"""Text from the user or the model, made safe to show exactly as written.

Widgets get it with markup off, so `[bold]` or a lone `[` stays literal;
this module makes control characters visible, so an escape sequence in a
model's reply shows as text instead of steering the terminal.
"""

from __future__ import annotations

import re

from rlchat.learner.dialogue import CONTROL


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode control pictures: ESC -> '␛'
    if code == 0x7F:
        return "\u2421"  # '␡'
    return f"\\x{code:02x}"


def literal(text: str) -> str:
    """`text` with every control character except newline and tab made visible."""
    return CONTROL.sub(_visible, text)
