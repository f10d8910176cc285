"""The local model's generator: candidate replies sampled by rlchat's own
decode loop (decoding.py) in the number format weights.py applies, with
the signals the policy reads (log-probs, hidden states)."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlchat.learner.context_window import ContextWindow
from rlchat.learner.dialogue import unique_nonempty
from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.generator.adapter import AdapterMismatch, merged_adapter
from rlchat.learner.generator.decoding import PromptPass, sample_rows
from rlchat.learner.generator.loading import (
    load_located,
    locate_model,
    read_lineage,
    weights_fingerprint,
)
from rlchat.learner.generator.threads import CoreShare
from rlchat.learner.generator.weights import apply_dtype
from rlchat.learner.model_files import (
    Progress,
    no_progress,
)
from rlchat.learner.prompt_format import DEFAULT_MAX_NEW_TOKENS, FormatError, make_format
from rlchat.learner.records import Candidate, Proposal
from rlchat.learner.sampling import Sampling, TokenCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrawnReply:
    """One sampled row read as a reply."""

    text: str  # as shown: the format's reply, trimmed
    sampled: str | None  # as drawn (leading space too), where the reply is all of it
    span: int  # the reply's tokens, up to the end of its turn
    cut: bool  # it reached max_new_tokens before its turn ended


class Generator:
    """Samples candidate replies and measures their signals for the features."""

    def __init__(
        self,
        tokenizer,
        model,
        *,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        seed: int | None = None,
        dtype: str = "auto",
        prompt_format: str = "auto",
        name: str = "",
        gguf: str = "",
        warm_up: bool = True,
        adapter: Path | None = None,
    ) -> None:
        """`prompt_format`: auto (from the tokenizer and `name`), gpt2, dialogpt
        or chat-template; FormatError if the model cannot be prompted so.
        `max_new_tokens`: None for the format's default.  `gguf`: the sha256
        of the GGUF file the model was converted from, if it was.  `adapter`:
        the folder of the adapter already merged into `model`, if one is."""
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "")
        self.format = make_format(prompt_format, tokenizer, _eos_ids(tokenizer, model),
                                  self.name)
        self.weights = weights_fingerprint(model)  # before any change of format
        self.gguf = gguf
        self.notice = ""  # one line for the user about how the model was found
        self.label = ""  # the name to show, where not the one asked for (a fallback)
        lineage = read_lineage(adapter or self.name)
        self.lineage = str(lineage.get("run", ""))
        self.adapter = str(adapter) if adapter else ""
        # A model rlchat train made belongs to the family of the one it started from.
        self.family = str(lineage.get("family") or self.weights)
        formatted = apply_dtype(model.eval(), dtype, calibration_ids(tokenizer, model.config))
        self.model, self.prompt_model = formatted.step_model, formatted.prompt_model
        self.dtype = formatted.dtype
        self.max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.format.name]
        self.sampling = sampling or Sampling()
        self.seed = seed
        self._calls = 0
        self._cores = CoreShare()  # threads per turn: the cores other processes leave free
        self.last_steps = 0  # forward passes of the latest call, after the prompt
        self.last_prompt_run = 0  # prompt tokens the latest call ran (not cached)
        self._prompt_pass: PromptPass | None = None  # the latest prompt, for the next
        self.context_size = int(getattr(model.config, "n_positions", 0)
                                or getattr(model.config, "max_position_embeddings", 1024))
        self._window = ContextWindow(self.format, self.context_size - self.max_new_tokens)
        self._stop_ids = torch.tensor(sorted(self.format.stop_ids), dtype=torch.long)
        self._stop_set = set(self.format.stop_ids)
        if warm_up:
            self._warm_up()

    @property
    def identity(self) -> dict[str, str]:
        """What generated a turn's candidates, stored with every turn: the
        model's name or path, a hash of its weights, the prompt and number
        formats, the training run that made it (rlchat train), if any, and
        the sha256 of the GGUF file it came from, if it did."""
        identity = {"model": self.name, "weights": self.weights, "family": self.family,
                    "format": self.format.name, "dtype": self.dtype, "lineage": self.lineage}
        if self.gguf:
            identity["gguf"] = self.gguf
        if self.adapter:
            identity["adapter"] = self.adapter
        return identity

    def _warm_up(self) -> None:
        # The first call pays for kernel selection and allocation; pay it at load.
        prompt = self.tokenizer("Hello", add_special_tokens=False)["input_ids"] or [0]
        sample_rows(self.model, prompt, 2, max_new_tokens=2, sampling=self.sampling,
                    stop_ids=None, generator=torch.Generator().manual_seed(0),
                    prompt_model=self.prompt_model)

    def reseed(self, seed: int | None) -> None:
        """Restart the sampling sequence (for runs that must see the same draws)."""
        self.seed, self._calls = seed, 0

    @classmethod
    def load(cls, name: str, progress: Progress = no_progress, *,
             adapter: Path | None = None, **kwargs) -> Generator:
        """The model `name` (a folder, a GGUF file or a hub name; see
        `locate_model`), loaded, with the LoRA `adapter` folder merged in
        where it was trained on these weights (else without it, and the
        notice says so); `progress` hears each stage."""
        set_threads()
        source = locate_model(name, progress)
        tokenizer, model = load_located(source, progress)
        notice = source.notice
        if adapter is not None:
            progress("merging the adapter")
            try:
                model = merged_adapter(model, adapter, weights_fingerprint(model))
            except AdapterMismatch as exc:
                notice, adapter = f"The {exc}; the model runs without it.", None
        progress("preparing the number format")
        try:
            generator = cls(tokenizer, model, name=source.path if source.notice else name,
                            gguf=source.gguf, adapter=adapter, **kwargs)
        except FormatError as exc:
            raise ModelUnavailable(f"Model '{name}' cannot be prompted as asked: {exc}.") from exc
        generator.notice, generator.label = notice, source.label
        return generator

    def prompt_ids(self, history: list[tuple[str, str]], message: str,
                   system: str = "") -> list[int]:
        """Token ids of the dialogue prompt: the system prompt, then the newest
        exchanges that fit the context, evicted in blocks (see `ContextWindow`)."""
        return self._window.prompt(history, message, system)

    def _rng(self) -> torch.Generator:
        seed = (self.seed + self._calls) if self.seed is not None else torch.seed()
        self._calls += 1
        return torch.Generator().manual_seed(seed)

    def _reply_tokens(self, tokens: list[int]) -> list[int]:
        """A row's tokens before its turn boundary."""
        end = next((i for i, tok in enumerate(tokens) if tok in self._stop_set), len(tokens))
        return tokens[:end]

    def propose(
        self,
        history: list[tuple[str, str]],
        message: str,
        n: int,
        *,
        system: str = "",
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Proposal:
        """Sample n replies sharing one prompt pass; empty and repeated replies dropped.

        `on_token(row, text)` receives each row's new text as it is drawn
        (rows are the n samples, 0..n-1); `cancel` stops it between two steps.
        A FormatError (a template that fails on this text) is the caller's to show.
        """
        ids = self.prompt_ids(history, message, system)
        self._cores.apply()
        rows = sample_rows(
            self.model, ids, n, max_new_tokens=self.max_new_tokens, sampling=self.sampling,
            stop_ids=self._stop_ids, generator=self._rng(),
            on_step=self._streamer(n, on_token) if on_token else None, cancel=cancel,
            prompt_model=self.prompt_model, reuse=self._prompt_pass,
        )
        self._prompt_pass = rows.prompt_pass
        self.last_steps, self.last_prompt_run = rows.steps, rows.prompt_tokens_run
        replies = [self._read_reply(tokens) for tokens in rows.tokens]
        candidates = []
        for row in unique_nonempty([reply.text for reply in replies]):
            reply, end = replies[row], max(replies[row].span, 1)
            candidates.append(
                Candidate(
                    text=reply.text,
                    logprob=float(np.mean(rows.logprobs[row][:end])),
                    tokens=reply.span,
                    hidden=torch.stack(rows.states[row][:end]).mean(dim=0)
                    .numpy().astype(np.float64),
                    truncated=reply.cut,
                    sampled=reply.sampled,
                    token_ids=rows.tokens[row][:reply.span] if reply.sampled is not None
                    else None,
                )
            )
        context = rows.context_state.numpy().astype(np.float64)
        prompt = self.tokenizer.decode(ids, skip_special_tokens=False)
        return Proposal(candidates=candidates, context_hidden=context, prompt=prompt,
                        generator=self.identity)

    def _read_reply(self, tokens: list[int]) -> DrawnReply:
        """One sampled row as a reply: its text, where its turn ended."""
        reply = self._reply_tokens(tokens)
        decoded = self.tokenizer.decode(reply, skip_special_tokens=True)
        text = self.format.reply_text(decoded)
        return DrawnReply(
            text=text,
            # The text exactly as sampled (a leading space too), where the
            # reply is all of it; not where it was cut at a turn marker.
            sampled=decoded if decoded.strip() == text else None,
            span=len(reply),
            # No end of turn within max_new_tokens: the reply was cut there.
            cut=len(reply) == len(tokens) == self.max_new_tokens,
        )

    def extend(self, prompt: str, text: str, token_ids: list[int] | None, *,
               on_token: TokenCallback | None = None,
               cancel: threading.Event | None = None) -> Candidate:
        """A reply cut at max_new_tokens, continued for up to max_new_tokens
        more: the turn's prompt and the reply's own tokens re-prompted (the
        turn's cached prompt pass is reused, so only the reply's tokens run).
        `on_token(0, text)` streams the new text; the returned candidate holds
        the whole reply, its signals those of the continuation."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        drawn = list(token_ids) if token_ids is not None else self.tokenizer(
            text, add_special_tokens=False)["input_ids"]
        budget = min(self.max_new_tokens, self.context_size - len(ids) - len(drawn))
        if budget < 1:
            raise FormatError("the reply already fills the model's context")
        self._cores.apply()
        rows = sample_rows(
            self.model, ids + drawn, 1, max_new_tokens=budget, sampling=self.sampling,
            stop_ids=self._stop_ids, generator=self._rng(),
            on_step=self._streamer(1, on_token, skip=drawn) if on_token else None,
            cancel=cancel, prompt_model=self.prompt_model, reuse=self._prompt_pass,
        )
        self.last_steps, self.last_prompt_run = rows.steps, rows.prompt_tokens_run
        new = rows.tokens[0]
        reply = self._reply_tokens(drawn + new)
        decoded = self.tokenizer.decode(reply, skip_special_tokens=True)
        whole = self.format.reply_text(decoded)
        added = max(len(reply) - len(drawn), 1)
        return Candidate(
            text=whole, logprob=float(np.mean(rows.logprobs[0][:added])), tokens=len(reply),
            hidden=torch.stack(rows.states[0][:added]).mean(dim=0).numpy().astype(np.float64),
            truncated=len(reply) == len(drawn) + len(new) and len(new) == budget,
            sampled=decoded if decoded.strip() == whole else None,
            token_ids=reply if decoded.strip() == whole else None,
        )

    def _streamer(self, n: int, on_token: TokenCallback, skip: list[int] | None = None):
        """An on_step callback that turns token ids into each row's new text
        (after `skip`, tokens already shown, where a reply is continued)."""
        tokens: list[list[int]] = [list(skip or ()) for _ in range(n)]
        start = self.tokenizer.decode(self._reply_tokens(tokens[0]), skip_special_tokens=True)
        shown = [start] * n

        def on_step(row_ids: list[int], token_ids: list[int]) -> None:
            for row, token in zip(row_ids, token_ids, strict=True):
                tokens[row].append(token)
                text = self.tokenizer.decode(self._reply_tokens(tokens[row]),
                                             skip_special_tokens=True)
                # A character split across tokens decodes as U+FFFD until complete.
                if text.endswith("\ufffd") or not text.startswith(shown[row]):
                    continue
                delta, shown[row] = text[len(shown[row]):], text
                if delta:
                    on_token(row, delta)

        return on_step


def _eos_ids(tokenizer, model) -> set[int]:
    """Every end-of-sequence id the tokenizer and the generation config name."""
    ids = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    ids |= set(extra) if isinstance(extra, list | tuple) else {extra}
    return {i for i in ids if isinstance(i, int)}


def calibration_ids(tokenizer, config, tokens: int = 256) -> list[int]:
    """Token ids of sample dialogue (the shipped corpus), for the int8 formats
    to measure the model's activation ranges on: through the chat template
    where the tokenizer has one, since that is the text a chat model runs on."""
    from rlchat.learner.tiny_model import corpus_lines

    lines = corpus_lines()
    text = "\n".join(lines)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user" if line.startswith("User:") else "assistant",
                     "content": line.split(":", 1)[-1].strip()} for line in lines]
        # A template with rules of its own (strict alternation, ...) keeps plain text.
        with contextlib.suppress(Exception):
            text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    context = int(getattr(config, "n_positions", 0) or getattr(config, "max_position_embeddings", 0)
                  or tokens)
    return ids[: min(tokens, context)]


def set_threads() -> int:
    """As many torch threads as cores are free now (see threads.py); returns it."""
    return CoreShare().apply()
