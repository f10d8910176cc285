"""The dialogue format, reply cutting and literal display of any text."""

from rlchat.learner.dialogue import (
    cut_reply,
    exchange_block,
    message_block,
    one_line,
    unique_nonempty,
    valid_unicode,
)
from rlchat.tui.literal import literal


def test_prompt_has_one_line_per_turn_and_ends_open():
    text = exchange_block("hi\nthere", "hello!") + message_block("how\r\nare you?")
    assert text.split("\n") == ["User: hi there", "Assistant: hello!", "User: how are you?",
                                "Assistant:"]


def test_prompt_drops_control_characters():
    assert one_line("a\x1b[31mb\x00c") == "a[31mbc"


def test_reply_cut_at_line_break_and_markers():
    assert cut_reply(" fine, thanks\nUser: and you?") == "fine, thanks"
    assert cut_reply("sure User: next") == "sure"
    assert cut_reply("\nnothing") == ""


def test_unique_nonempty_keeps_first_occurrences():
    assert unique_nonempty(["a", "", "b", "a", "c", "b"]) == [0, 2, 4]


def test_lone_surrogates_become_replacement():
    assert valid_unicode("a\ud800b") == "a?b"
    assert valid_unicode("héllo") == "héllo"


def test_literal_makes_controls_visible_and_keeps_markup():
    assert literal("\x1b[31mred\x1b[0m") == "␛[31mred␛[0m"
    assert literal("[bold]x[/] [") == "[bold]x[/] ["
    assert literal("a\tb\nc\x7f\x85") == "a\tb\nc␡\\x85"
