"""Candidate replies from a model an OpenAI-compatible server serves.

vLLM, SGLang, llama.cpp's llama-server, Ollama, `transformers serve` and
hosted APIs all speak this API; what each can do is probed when rlchat
connects (capabilities.py), never assumed.  Where one request returns n
choices, all samples come in it; elsewhere n requests run side by side.
Chat models get the chat endpoint with messages; base models the
completions endpoint in the `gpt2` format.  The dialogue is fitted to the
server's context length with the same block eviction as the local model.

No hidden state comes from a server, so those feature columns stay empty;
log-probs are used where the server returns them and are absent otherwise.
"""

from __future__ import annotations

import contextvars
import os
import random
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlchat.learner.adapters import ADAPTER_GGUF
from rlchat.learner.context_window import ContextWindow
from rlchat.learner.dialogue import (
    cut_reply,
    exchange_block,
    message_block,
    one_line,
    unique_nonempty,
    valid_unicode,
)
from rlchat.learner.errors import (
    BACKEND_ERROR,
    AgentError,
    BackendError,
    ErrorCode,
    GenerationCancelled,
)
from rlchat.learner.prompt_format import DEFAULT_MAX_NEW_TOKENS
from rlchat.learner.records import Candidate, Proposal
from rlchat.learner.remote.capabilities import (
    CHAT,
    COMPLETIONS,
    PATHS,
    SAME_SAMPLES,
    Capabilities,
    optional,
    probe,
    refusal,
)
from rlchat.learner.remote.client import Refused, ServerClient
from rlchat.learner.remote.deadline import guarded
from rlchat.learner.remote.streaming import Draw, stream_draws
from rlchat.learner.sampling import Sampling, TokenCallback

MAX_CONCURRENT = 8  # requests at once where the server gives one choice per request
MESSAGE_OVERHEAD = 8  # tokens a chat template adds around one message, at most
ASSUMED_CONTEXT = 4096  # where the server does not tell its context length
_CONTEXT_ERROR = re.compile(r"context|too long|exceed|maximum.*length|n_ctx|max-model-len",
                            re.IGNORECASE)
# How llama.cpp, vLLM and `transformers serve` ("the model takes at most 512,
# prompt and answer") name the context size in that refusal.
_CONTEXT_SIZE = re.compile(r"(?:context size|context length is|takes at most)\D{0,8}(\d+)",
                           re.IGNORECASE)
FORMAT_OF = {CHAT: "chat-template", COMPLETIONS: "gpt2"}


class _Counts:
    """A prompt format for the context window whose blocks stand for token
    counts: a block of k tokens is k placeholders.  The window's eviction
    only needs lengths, so the served model's dialogue is fitted by the very
    rule the local model's is."""

    def __init__(self, count, endpoint: str) -> None:
        self.count = count
        self.name = FORMAT_OF[endpoint]
        self.chat = endpoint == CHAT

    def _text(self, text: str) -> list[int]:
        return [0] * (self.count(text) + (MESSAGE_OVERHEAD if self.chat else 0))

    def head(self, system: str) -> list[int]:
        if not system:
            return []
        return self._text(system) if self.chat else [0] * self.count(one_line(system) + "\n")

    def exchange(self, user: str, reply: str) -> list[int]:
        if self.chat:
            return self._text(user) + self._text(reply)
        return [0] * self.count(exchange_block(user, reply))

    def message(self, message: str) -> list[int]:
        return self._text(message) if self.chat else [0] * self.count(message_block(message))

    def reply_text(self, decoded: str) -> str:
        return decoded.strip() if self.chat else cut_reply(decoded)


class RemoteGenerator:
    """A CandidateSource backed by a served model."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "",
        timeout: float = 60.0,
        sampling: Sampling | None = None,
        seed: int | None = None,
        prompt_format: str = "auto",
        max_new_tokens: int | None = None,
    ) -> None:
        self.client = ServerClient(base_url, api_key_env=api_key_env, timeout=timeout)
        self.model = model
        self.prompt_format = prompt_format
        self.sampling = sampling or Sampling()
        self.seed = seed
        self._max_new_tokens = max_new_tokens
        self._calls = 0
        self._lock = threading.Lock()
        self.capabilities: Capabilities | None = None
        self.problem: BackendError | None = None  # why the last connect failed
        self._window: ContextWindow | None = None
        self._token_cache: dict[str, int] = {}
        self.last_requests = 0  # sampling requests of the latest propose
        self.adapter = ""  # the GGUF adapter the server applies to this chat's requests
        self._adapter_run = ""
        self._lora_id: int | None = None  # llama-server's id of the adapter
        self._lora_model = ""  # vLLM's name of the adapter it loaded for this chat

    @contextmanager
    def _served(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """One deadline for all the requests of a turn or a probe, and the
        key's value masked in any sentence built from the server's words."""
        try:
            with guarded(self.client.timeout, cancel):
                yield
        except BackendError as exc:
            exc.message = self.client.mask(exc.message)
            exc.args = (exc.message,)
            raise

    # connecting -----------------------------------------------------------
    def connect(self) -> Capabilities:
        """Probe the server once it answers; BackendError while it cannot serve."""
        with self._lock:
            if self.capabilities is not None:
                return self.capabilities
            try:
                with self._served():
                    caps = probe(self.client, self.model, self.prompt_format)
            except BackendError as exc:
                self.problem = exc
                raise
            self.capabilities, self.problem = caps, None
            fmt = _Counts(self._count, caps.endpoint)
            budget = (caps.context or ASSUMED_CONTEXT) - self.max_new_tokens
            self._window = ContextWindow(fmt, budget)  # type: ignore[arg-type]
            return caps

    @property
    def max_new_tokens(self) -> int:
        fmt = FORMAT_OF[self.capabilities.endpoint] if self.capabilities else "chat-template"
        return self._max_new_tokens or DEFAULT_MAX_NEW_TOKENS[fmt]

    @property
    def identity(self) -> dict[str, str]:
        """What generated a turn: the server, the model id, what the server
        reports of its build and weights, and the format.  The family (what
        the model features are comparable across) is the model id with the
        served weights: another server's model is another family."""
        caps = self.capabilities
        weights = caps.weights if caps else ""
        return {"model": self.model, "weights": weights,
                "family": f"remote:{self.model}:{weights}",
                "format": FORMAT_OF[caps.endpoint] if caps else "", "dtype": "",
                "lineage": self._adapter_run, "server": self.client.base_url,
                "build": caps.build if caps else "", "host": self.client.host,
                **({"adapter": self.adapter} if self.adapter else {})}

    def use_lora(self, folder: Path | None, run: str = "") -> None:
        """Apply the adapter of rlchat train in `folder` to this chat's
        requests (None: none).  vLLM with runtime LoRA loads the PEFT folder
        on request and serves it under its own model name; llama-server
        applies the folder's adapter.gguf where it loaded it at its start
        (--lora FILE).  AgentError with the fix otherwise."""
        caps = self.connect()
        self.adapter, self._adapter_run, self._lora_id, self._lora_model = "", "", None, ""
        if folder is None:
            return
        if caps.runtime_lora:
            name = f"rlchat-{run}"
            try:
                with self._served():
                    self.client.call_text("POST", "/load_lora_adapter",
                                          {"lora_name": name, "lora_path": str(folder)})
            except Refused as exc:
                if "already" not in exc.message.lower():  # loaded by an earlier chat
                    raise AgentError(ErrorCode.BAD_SETTINGS, f"The server did not load adapter "
                                     f"{folder} ({exc.status}: {exc.message}).") from exc
            self.adapter, self._adapter_run, self._lora_model = str(folder), run, name
            return
        gguf = folder / ADAPTER_GGUF
        if caps.lora is None:
            raise AgentError(ErrorCode.BAD_SETTINGS, "This server cannot apply adapters: serve "
                             "the model with vLLM (--enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING"
                             "=True) or llama-server (--lora FILE) (docs/training.md).")
        if not gguf.is_file():
            raise AgentError(ErrorCode.BAD_SETTINGS, f"Adapter run {run} has no GGUF file for "
                             f"llama-server yet: rlchat adapters gguf {run} converts it.")
        wanted = os.path.realpath(gguf)
        found = next((i for i, path in caps.lora if os.path.realpath(path) == wanted), None)
        if found is None:
            raise AgentError(ErrorCode.BAD_SETTINGS, f"The server did not load {gguf}; restart "
                             f"it with it: llama-server -m MODEL.gguf --lora {gguf} "
                             "--lora-init-without-apply (docs/training.md).")
        self.adapter, self._adapter_run, self._lora_id = str(gguf), run, found

    def reseed(self, seed: int | None) -> None:
        self.seed, self._calls = seed, 0

    def close(self) -> None:
        self.client.close()

    # tokens ---------------------------------------------------------------
    def _count(self, text: str) -> int:
        """Tokens of a text: the server's count where it has /tokenize, else
        its UTF-8 bytes (a byte-level or byte-fallback tokenizer never makes
        more tokens than bytes)."""
        cached = self._token_cache.get(text)
        if cached is not None:
            return cached
        caps = self.capabilities
        count = len(text.encode("utf-8"))
        if caps is not None and caps.tokenize and text:
            try:
                answer = self.client.call("POST", "/tokenize",
                                          {caps.tokenize: text, "model": self.model}, root=True)
                tokens = answer.get("tokens") if isinstance(answer, dict) else None
                count = len(tokens) if isinstance(tokens, list) else count
            except (Refused, BackendError):
                pass
        if len(self._token_cache) > 4096:
            self._token_cache.clear()
        self._token_cache[text] = count
        return count

    # one turn -------------------------------------------------------------
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
        with self._served(cancel):
            return self._propose(history, message, n, system, on_token, cancel)

    def _propose(self, history: list[tuple[str, str]], message: str, n: int, system: str,
                 on_token: TokenCallback | None,
                 cancel: threading.Event | None) -> Proposal:
        caps = self.connect()
        assert self._window is not None
        seed = self._next_seed()
        for attempt in range(2):
            sent = len(self._window.prompt(history, message, system))
            kept = history[self._window.start:]
            body = self._body(caps, kept, message, system)
            try:
                draws = self._draw(caps, body, n, seed, on_token, cancel)
                break
            except Refused as exc:
                if attempt == 0 and exc.status in (400, 413, 422) \
                        and _CONTEXT_ERROR.search(exc.message):
                    # The server counts more tokens than we did: leave more out,
                    # down to the size it names, else half of what it refused.
                    told = _CONTEXT_SIZE.search(exc.message)
                    budget = (int(told.group(1)) - self.max_new_tokens if told
                              else sent // 2)
                    self._window.budget = max(8, min(self._window.budget, budget))
                    continue
                raise refusal(self.client, exc, self.model, caps.models) from exc
        return self._proposal(caps, draws, body)

    def _next_seed(self) -> int:
        with self._lock:
            self._calls += 1
            if self.seed is None:
                return random.getrandbits(31)
            return (self.seed * 1_000_003 + self._calls) % (2**31)

    def _messages(self, kept: list[tuple[str, str]], message: str,
                  system: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": system}] if system else []
        for user, reply in kept:
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": reply}]
        return messages + [{"role": "user", "content": message}]

    def _body(self, caps: Capabilities, kept: list[tuple[str, str]], message: str,
              system: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._lora_model or self.model, "max_tokens": self.max_new_tokens,
            "temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
        }
        if caps.extra_samplers:
            body.update(top_k=self.sampling.top_k, min_p=0.0)
        if caps.lora:
            # Every adapter the server loaded, scaled: this chat's one at 1, the
            # rest at 0.  Each is named, since an empty list means the server's
            # own global scales (all 1 unless --lora-init-without-apply).
            body["lora"] = [{"id": i, "scale": 1.0 if i == self._lora_id else 0.0}
                            for i, _ in caps.lora]
        if caps.endpoint == CHAT:
            body["messages"] = self._messages(kept, message, system)
            if caps.logprobs:
                body.update(logprobs=True, top_logprobs=1)
        else:
            head = one_line(system) + "\n" if one_line(system) else ""
            body["prompt"] = head + "".join(exchange_block(u, r) for u, r in kept) \
                + message_block(message)
            body["stop"] = ["\n"]  # the plain format's turn ends at the line break
            if caps.logprobs:
                body["logprobs"] = 1
        return body

    def _draw(self, caps: Capabilities, body: dict[str, Any], n: int, seed: int,
              on_token: TokenCallback | None, cancel: threading.Event | None) -> list[Draw]:
        path = PATHS[caps.endpoint]
        if caps.n_choices:
            self.last_requests = 1
            return stream_draws(self.client, path, {**body, "n": n, "seed": seed}, n,
                                on_token=on_token, cancel=cancel)
        self.last_requests = n
        stop = threading.Event()  # the user's cancel, or a sibling's failure
        watcher = threading.Thread(target=_follow, args=(cancel, stop), daemon=True)
        watcher.start()

        def one(row: int) -> Draw:
            return stream_draws(self.client, path, {**body, "seed": seed + row}, 1,
                                first_row=row, on_token=on_token, cancel=stop)[0]

        try:
            with ThreadPoolExecutor(max_workers=min(n, MAX_CONCURRENT)) as pool:
                # Each request carries the turn's deadline (a copy of this context).
                futures = [pool.submit(contextvars.copy_context().run, one, row)
                           for row in range(n)]
                draws, failure = [], None
                for future in futures:
                    try:
                        draws.append(future.result())
                    except Exception as exc:  # the first real failure is the one to report
                        stop.set()
                        if failure is None or isinstance(failure, GenerationCancelled):
                            failure = exc
                        draws.append(Draw())
        finally:
            stop.set()
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.")
        if failure is not None:
            raise failure
        return draws

    def _proposal(self, caps: Capabilities, draws: list[Draw],
                  body: dict[str, Any]) -> Proposal:
        assert self._window is not None
        drawn = [self.client.mask(d.text) for d in draws]  # a key split across pieces
        texts = [self._window.format.reply_text(text) for text in drawn]
        candidates = [
            Candidate(
                text=texts[row],
                logprob=draws[row].logprob,
                tokens=draws[row].tokens,
                hidden=None,
                truncated=draws[row].finish == "length" or draws[row].capped,
                sampled=drawn[row] if drawn[row].strip() == texts[row] else None,
            )
            for row in unique_nonempty(texts)
        ]
        if not candidates and not any(d.finish for d in draws):
            raise BackendError(BACKEND_ERROR, f"The server at {self.client.host} answered "
                               "without any choices; try again.")
        messages = body.get("messages")
        prompt = body.get("prompt") or (self._render(caps, messages) if messages else None)
        same = len(draws) > 1 and len(set(texts)) == 1 and bool(candidates)
        return Proposal(candidates=candidates, context_hidden=None, prompt=prompt or "",
                        generator=self.identity,
                        messages=None if prompt else messages,
                        notice=f"All {len(draws)} replies are the same: {SAME_SAMPLES}."
                        if same else None)

    def _render(self, caps: Capabilities, messages: list[dict[str, str]]) -> str | None:
        """The prompt as the server's template renders it, where it can."""
        rendered = self._rendered(caps, messages)
        if not isinstance(rendered, str):
            return None
        return self.client.mask(valid_unicode(rendered))

    def _rendered(self, caps: Capabilities, messages: list[dict[str, str]]) -> Any:
        if caps.render == "apply-template":
            answer = optional(self.client, "POST", "/apply-template", {"messages": messages})
            return answer.get("prompt") if isinstance(answer, dict) else None
        if caps.render == "tokenize-messages":
            answer = optional(self.client, "POST", "/tokenize", {
                "model": self.model, "messages": messages, "add_generation_prompt": True})
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(tokens, list):
                return None
            answer = optional(self.client, "POST", "/detokenize",
                              {"model": self.model, "tokens": tokens})
            return answer.get("prompt") if isinstance(answer, dict) else None
        return None


def _follow(cancel: threading.Event | None, stop: threading.Event) -> None:
    """Pass the user's cancel on to `stop` until the draws are over."""
    while not stop.wait(0.05):
        if cancel is not None and cancel.is_set():
            stop.set()
