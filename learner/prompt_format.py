"""How a dialogue becomes the token ids a model continues: one format per kind of model.

- `gpt2`: plain text, one turn per line (`User: …` / `Assistant: …`); a
  reply ends at the first line break.  For base models.
- `dialogpt`: every turn followed by the end-of-sequence token, as DialoGPT
  was trained; a reply ends at it.
- `chat-template`: the tokenizer's own chat template (roles system, user,
  assistant); a reply ends at the template's end-of-turn token or EOS and may
  span several lines.  For instruct models.

A format hands out token ids in blocks (the head with the system prompt,
each past exchange, the new message), so the context window can keep the
head, drop old exchanges and reuse the previous turn's cache.  Kept free of
torch: a tokenizer is any object with the Hugging Face tokenizer calls used
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rlchat.learner.dialogue import cut_reply, exchange_block, message_block, one_line

FORMATS = ("gpt2", "dialogpt", "chat-template")
DEFAULT_MAX_NEW_TOKENS = {"gpt2": 40, "dialogpt": 40, "chat-template": 128}

Tokenize = Callable[[str], list[int]]


class FormatError(Exception):
    """The model cannot be prompted in this format; the message says why and what to do."""


class PromptFormat(Protocol):
    name: str
    multi_line: bool  # replies may hold line breaks
    stop_ids: frozenset[int]  # a reply ends at any of these (the token is not part of it)

    def head(self, system: str) -> list[int]: ...
    def exchange(self, user: str, reply: str) -> list[int]: ...
    def message(self, message: str) -> list[int]: ...
    def reply_text(self, decoded: str) -> str: ...


class PlainFormat:
    """`User: …` / `Assistant: …` lines (see learner/dialogue.py)."""

    name, multi_line = "gpt2", False

    def __init__(self, tokenize: Tokenize, stop_ids: frozenset[int]) -> None:
        self.tokenize = tokenize
        self.stop_ids = stop_ids

    def head(self, system: str) -> list[int]:
        system = one_line(system)
        return self.tokenize(system + "\n") if system else []

    def exchange(self, user: str, reply: str) -> list[int]:
        return self.tokenize(exchange_block(user, reply))

    def message(self, message: str) -> list[int]:
        return self.tokenize(message_block(message))

    def reply_text(self, decoded: str) -> str:
        return cut_reply(decoded)


class EosFormat:
    """DialoGPT's: each turn's text, then EOS."""

    name, multi_line = "dialogpt", False

    def __init__(self, tokenize: Tokenize, eos: int) -> None:
        self.tokenize = tokenize
        self.eos = eos
        self.stop_ids = frozenset({eos})

    def _turn(self, text: str) -> list[int]:
        return self.tokenize(one_line(text)) + [self.eos]

    def head(self, system: str) -> list[int]:
        # DialoGPT has no system role: the persona is said as a first turn.
        return self._turn(system) if one_line(system) else []

    def exchange(self, user: str, reply: str) -> list[int]:
        return self._turn(user) + self._turn(reply)

    def message(self, message: str) -> list[int]:
        return self._turn(message)

    def reply_text(self, decoded: str) -> str:
        return one_line(decoded)  # an utterance, as the turns it was trained on


# Stand-ins for the texts of an earlier exchange, used to cut a rendered
# conversation into blocks; chosen so that no template rewrites them.
_PROBE_USER, _PROBE_REPLY = "rlchat probe question", "rlchat probe answer"


class TemplateFormat:
    """The tokenizer's chat template, cut into blocks by rendering and differencing.

    A template renders a whole conversation; rlchat needs it as blocks that
    concatenate back to that rendering.  With R(messages) the rendered text:
    an exchange's block is R(s, p, u, a) - R(s, p) where p is an earlier
    stand-in exchange (so first-message specials stay out of it), the head
    is R(s, u, a) minus that block, and the message block is the rendering
    with the generation prompt minus the conversation before it.  At load
    this is checked to reproduce R of a three-exchange conversation exactly;
    a template it does not fit is refused with a clear message.
    """

    name, multi_line = "chat-template", True

    def __init__(self, tokenizer: Any, eos_ids: set[int]) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise FormatError("the tokenizer has no chat template; use --format gpt2")
        self.tokenizer = tokenizer
        self._system: str | None = None
        self._head_text = ""
        # A reply ends where the template ends a turn, or where a model that
        # skipped that goes on to open the next one (a special token).
        end_ids = self._ids(self._after_reply())[:1]
        start_ids = self._ids(self._exchange_text("", "question", "answer"))[:1]
        special = set(getattr(tokenizer, "all_special_ids", []))
        self.stop_ids = frozenset(eos_ids | set(end_ids) | (set(start_ids) & special))
        if not self.stop_ids:
            raise FormatError("the model has no end-of-sequence or end-of-turn token, so its "
                              "replies would never end; use --format gpt2")
        self._check()

    # rendering ------------------------------------------------------------
    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation)
        except Exception as exc:  # jinja raises many kinds; each is the template's fault
            raise FormatError(f"the model's chat template does not render ({exc}); "
                              f"use --format gpt2 to prompt it as plain text") from exc

    @staticmethod
    def _pair(user: str, reply: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    def _system_messages(self, system: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}] if system else []

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _exchange_text(self, system: str, user: str, reply: str) -> str:
        base = self._system_messages(system) + self._pair(_PROBE_USER, _PROBE_REPLY)
        before, after = self._render(base), self._render(base + self._pair(user, reply))
        if not after.startswith(before):
            raise FormatError("the model's chat template renders earlier turns differently "
                              "as the conversation grows; use --format gpt2")
        return after[len(before):]

    def _after_reply(self) -> str:
        """What the template writes after a reply (its end-of-turn marker)."""
        block = self._exchange_text("", "question", "ANSWER")
        return block[block.rindex("ANSWER") + len("ANSWER"):]

    def _set_system(self, system: str) -> None:
        if system == self._system:
            return
        whole = self._render(self._system_messages(system) + self._pair("first", "reply"))
        first = self._exchange_text(system, "first", "reply")
        if not whole.endswith(first):
            raise FormatError("the model's chat template renders the first turn unlike the "
                              "others; use --format gpt2")
        self._system, self._head_text = system, whole[: len(whole) - len(first)]

    def _check(self) -> None:
        turns = [("hello", "hi"), ("how are you?", "fine,\nthanks"), ("bye", "see you")]
        for system in ("", "You are terse."):
            messages = self._system_messages(system)
            for user, reply in turns:
                messages += self._pair(user, reply)
            self._set_system(system)
            built = self._head_text + "".join(self._exchange_text(system, u, r)
                                              for u, r in turns[:-1])
            built += self._message_text(system, turns[-1][0])
            rendered = self._render(messages[:-1], generation=True)
            if built != rendered:
                raise FormatError("the model's chat template cannot be cut into turns "
                                  "(its rendering depends on the whole conversation); "
                                  "use --format gpt2")

    def _message_text(self, system: str, message: str) -> str:
        base = self._system_messages(system) + self._pair(_PROBE_USER, _PROBE_REPLY)
        before = self._render(base)
        after = self._render(base + [{"role": "user", "content": message}], generation=True)
        return after[len(before):]

    # blocks ---------------------------------------------------------------
    def head(self, system: str) -> list[int]:
        self._set_system(system)
        return self._ids(self._head_text)

    def exchange(self, user: str, reply: str) -> list[int]:
        return self._ids(self._exchange_text(self._system or "", user, reply))

    def message(self, message: str) -> list[int]:
        return self._ids(self._message_text(self._system or "", message))

    def reply_text(self, decoded: str) -> str:
        return decoded.strip()


def detect(tokenizer: Any, model_name: str) -> str:
    """The format a model is prompted in unless one is asked for."""
    if getattr(tokenizer, "chat_template", None):
        return "chat-template"
    if "dialogpt" in model_name.lower():
        return "dialogpt"
    return "gpt2"


def make_format(name: str, tokenizer: Any, eos_ids: set[int], model_name: str) -> PromptFormat:
    """The format `name` ("auto" detects it) for this tokenizer; FormatError if it cannot be."""
    name = detect(tokenizer, model_name) if name == "auto" else name

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if name == "chat-template":
        return TemplateFormat(tokenizer, eos_ids)
    if name == "dialogpt":
        if not eos_ids:
            raise FormatError("the model has no end-of-sequence token; use --format gpt2")
        return EosFormat(tokenize, min(eos_ids))
    if name == "gpt2":
        newline = {i for token, i in tokenizer.get_vocab().items()
                   if "\n" in tokenizer.convert_tokens_to_string([token])}
        return PlainFormat(tokenize, frozenset(newline | eos_ids))
    raise FormatError(f"unknown prompt format {name!r}; use one of {', '.join(FORMATS)}")
