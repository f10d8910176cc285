"""The context window on its own: blocks, eviction, and flat per-turn work."""

from __future__ import annotations

from rlchat.learner.context_window import ContextWindow
from rlchat.learner.dialogue import exchange_block, message_block
from rlchat.learner.prompt_format import PlainFormat


def byte_tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def test_each_turn_tokenizes_only_its_new_exchange_and_message():
    calls: list[str] = []

    def tokenize(text: str) -> list[int]:
        calls.append(text)
        return byte_tokens(text)

    window = ContextWindow(PlainFormat(tokenize, frozenset()), budget=2000)
    history: list[tuple[str, str]] = []
    for i in range(300):
        calls.clear()
        window.prompt(history, f"message {i}")
        expected = [message_block(f"message {i}")]
        if history:
            expected.insert(0, exchange_block(*history[-1]))
        assert calls == expected  # never the whole dialogue again
        history.append((f"message {i}", f"reply {i}"))


def test_the_prompt_is_the_kept_blocks_then_the_message_and_evicts_to_half():
    window = ContextWindow(PlainFormat(byte_tokens, frozenset()), budget=300)
    history = [(f"q{i}", f"answer {i}") for i in range(40)]
    ids = window.prompt(history, "last one")
    assert len(ids) <= 150  # evicted down to half the budget at once
    kept = history[window.start:]
    text = "".join(exchange_block(u, r) for u, r in kept) + message_block("last one")
    assert bytes(ids).decode() == text
    # One more exchange extends the prompt instead of cutting it again.
    history.append(("last one", "fine"))
    longer = window.prompt(history, "and more")
    assert longer[: len(ids) - len(byte_tokens(message_block("last one")))] == ids[
        : len(ids) - len(byte_tokens(message_block("last one")))]
    assert window.start == len(history) - len(kept) - 1


def test_another_dialogue_starts_over():
    window = ContextWindow(PlainFormat(byte_tokens, frozenset()), budget=300)
    window.prompt([(f"q{i}", f"answer {i}") for i in range(40)], "x")
    assert window.start > 0
    ids = window.prompt([("hello", "hi")], "and?")
    assert window.start == 0
    assert bytes(ids).decode() == exchange_block("hello", "hi") + message_block("and?")


def test_the_system_prompt_heads_every_prompt_and_never_leaves():
    window = ContextWindow(PlainFormat(byte_tokens, frozenset()), budget=300)
    history = [(f"q{i}", f"answer {i}") for i in range(40)]
    ids = window.prompt(history, "last", system="Be brief.")
    assert window.start > 0  # old exchanges left, the head did not
    assert bytes(ids).decode().startswith("Be brief.\nUser: q")
    other = window.prompt(history, "last", system="Be kind.")
    assert bytes(other).decode().startswith("Be kind.\n")
