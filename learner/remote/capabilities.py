"""What a server can do for rlchat, measured when rlchat connects.

Nothing is inferred from the server's name: the model list is read, the
context length is asked for where the server tells it, and one tiny
sampling request (two choices, one token, log-probs on) shows whether n
choices come back in one request and whether log-probs do.  The server's
own endpoints for counting tokens and rendering a chat are tried once each.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from rlchat.learner.errors import (
    BACKEND_AUTH,
    BACKEND_ERROR,
    BACKEND_MODEL,
    BackendError,
)
from rlchat.learner.remote.client import Refused, ServerClient
from rlchat.learner.remote.streaming import stream_draws

CHAT, COMPLETIONS = "chat", "completions"
PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions"}
# Samplers some servers add by default (llama.cpp: top-k 40, min-p 0.05):
# sent explicitly so that only the settings shape the draw.
EXTRA_SAMPLERS = ("top_k", "min_p")
_PROBE_MESSAGE = "Hello"


@dataclass(frozen=True)
class Capabilities:
    model: str
    models: tuple[str, ...]  # what the server lists
    endpoint: str  # CHAT or COMPLETIONS
    n_choices: bool  # one request returns n choices
    logprobs: bool  # the drawn tokens' log-probs come back
    extra_samplers: bool  # top_k and min_p are accepted
    context: int | None  # tokens, where the server tells
    tokenize: str | None  # "content" (llama.cpp's /tokenize) or "prompt" (vLLM's), or None
    render: str | None  # "apply-template", "tokenize-messages", or None
    build: str  # what the server says of its build
    weights: str  # a hash of how the server describes the model

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    def lines(self) -> list[str]:
        """The probe's findings in words, one per line."""
        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        return [
            f"model: {self.model} (weights {self.weights})",
            f"endpoint: {self.endpoint}",
            f"n choices in one request: {yes(self.n_choices)}",
            f"log-probs: {yes(self.logprobs)}",
            f"top-k and min-p sent: {yes(self.extra_samplers)}",
            "context: " + (f"{self.context} tokens" if self.context else "not told"),
            "token counts: " + ("the server's /tokenize" if self.tokenize else "estimated"),
            "prompt stored as: " + ("rendered by the server" if self.render
                                    or self.endpoint == COMPLETIONS else "messages"),
            f"server: {self.build or 'not told'}",
        ]


def refusal(client: ServerClient, exc: Refused, model: str,
            listed: tuple[str, ...] = ()) -> BackendError:
    """One sentence for an HTTP refusal."""
    if exc.status in (401, 403):
        fix = (f"check the key in ${client.api_key_env}" if client.api_key_env else
               "name the environment variable that holds the key with --api-key-env NAME")
        return BackendError(BACKEND_AUTH, f"The server at {client.host} refused the request "
                            f"({exc.status}: {exc.message}); {fix}.")
    if exc.status == 404 and "model" in exc.message.lower():
        return unknown_model(client, model, listed)
    return BackendError(BACKEND_ERROR, f"The server at {client.host} refused the request "
                        f"({exc.status}: {exc.message}).")


def unknown_model(client: ServerClient, model: str, listed: tuple[str, ...]) -> BackendError:
    shown = ", ".join(listed[:8]) + (", …" if len(listed) > 8 else "")
    where = f"it lists: {shown}" if listed else "it lists none"
    return BackendError(BACKEND_MODEL, f"The server at {client.host} does not serve model "
                        f"'{model}'; {where}. Pass one with --model.")


def _listing(client: ServerClient, model: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    try:
        answer = client.call("GET", "/models")
    except Refused as exc:
        if exc.status == 404:
            raise BackendError(BACKEND_ERROR, f"The server at {client.host} has no model list "
                               f"at {client.base_url}/models; check --base-url (it usually "
                               "ends in /v1).") from exc
        raise refusal(client, exc, model) from exc
    entries = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        raise BackendError(BACKEND_ERROR, f"The server at {client.host} answered /models "
                           "without a list of models.")
    entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
    ids = tuple(e["id"] for e in entries)
    entry = next((e for e in entries if e["id"] == model), None)
    if entry is None:
        raise unknown_model(client, model, ids)
    return ids, entry


def _optional(client: ServerClient, method: str, path: str, body: Any = None) -> Any:
    """A server-specific endpoint's answer, or None where there is none."""
    try:
        return client.call(method, path, body, root=True)
    except (Refused, BackendError):
        return None


def _context(client: ServerClient, entry: dict[str, Any], model: str, props: Any) -> int | None:
    for value in (entry.get("max_model_len"), entry.get("context_length")):
        if isinstance(value, int) and value > 0:
            return value  # vLLM and SGLang list it with the model
    if isinstance(props, dict):  # llama.cpp: per slot
        settings = props.get("default_generation_settings")
        for value in ((settings or {}).get("n_ctx"), props.get("n_ctx")):
            if isinstance(value, int) and value > 0:
                return value
    show = _optional(client, "POST", "/api/show", {"model": model})  # Ollama
    info = show.get("model_info") if isinstance(show, dict) else None
    if isinstance(info, dict):
        for key, value in info.items():
            if key.endswith(".context_length") and isinstance(value, int) and value > 0:
                return value
    return None


def _build(client: ServerClient, props: Any) -> str:
    if isinstance(props, dict) and props.get("build_info"):
        return f"llama.cpp {props['build_info']}"
    for path in ("/version", "/api/version"):  # vLLM, Ollama
        answer = _optional(client, "GET", path)
        if isinstance(answer, dict) and isinstance(answer.get("version"), str):
            return f"version {answer['version']}"
    return ""


def weights_of(entry: dict[str, Any]) -> str:
    """A stable hash of how the server describes the model (its id, owner,
    root or path, size): the same served weights keep it across restarts."""
    stable = {k: v for k, v in entry.items() if k not in ("created", "status", "object")}
    text = json.dumps(stable, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _named_fields(message: str, sent: list[str]) -> list[str]:
    return [name for name in sent if re.search(rf"\b{name}\b", message)]


def _probe_draw(client: ServerClient, model: str, endpoint: str) -> tuple[bool, bool, bool]:
    """(n choices, log-probs, extra samplers) from one tiny request, dropping
    what the server refuses: first a field it names, else the extras, then
    log-probs, then n."""
    body: dict[str, Any] = {"model": model, "max_tokens": 1, "temperature": 1.0, "n": 2,
                            "top_k": 50, "min_p": 0.0}
    if endpoint == CHAT:
        body.update(messages=[{"role": "user", "content": _PROBE_MESSAGE}], logprobs=True)
    else:
        body.update(prompt=f"User: {_PROBE_MESSAGE}\nAssistant:", logprobs=1)
    order = ["top_k", "min_p", "logprobs", "n"]
    while True:
        try:
            draws = stream_draws(client, PATHS[endpoint], body, rows=2)
            break
        except Refused as exc:
            if exc.status not in (400, 422) or not any(k in body for k in order):
                raise
            named = _named_fields(exc.message, [k for k in order if k in body])
            drop = named or [next(k for k in order if k in body)]
            if drop[0] in EXTRA_SAMPLERS:
                drop = list(EXTRA_SAMPLERS)
            for key in drop:
                body.pop(key, None)
    n_choices = "n" in body and sum(1 for d in draws if d.text or d.finish) >= 2
    logprobs = any(d.logprobs for d in draws)
    return n_choices, logprobs, "top_k" in body


def _tokenizer(client: ServerClient, model: str) -> str | None:
    for key in ("content", "prompt"):  # llama.cpp's, then vLLM's
        answer = _optional(client, "POST", "/tokenize", {key: _PROBE_MESSAGE, "model": model})
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list) \
                and answer["tokens"]:
            return key
    return None


def _renderer(client: ServerClient, model: str) -> str | None:
    messages = [{"role": "user", "content": _PROBE_MESSAGE}]
    answer = _optional(client, "POST", "/apply-template", {"messages": messages})
    if isinstance(answer, dict) and isinstance(answer.get("prompt"), str):
        return "apply-template"  # llama.cpp
    answer = _optional(client, "POST", "/tokenize",
                       {"model": model, "messages": messages, "add_generation_prompt": True})
    if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
        text = _optional(client, "POST", "/detokenize",
                         {"model": model, "tokens": answer["tokens"]})
        if isinstance(text, dict) and isinstance(text.get("prompt"), str):
            return "tokenize-messages"  # vLLM
    return None


def probe(client: ServerClient, model: str, prompt_format: str) -> Capabilities:
    """The server's capabilities for `model`; BackendError when it cannot serve it."""
    if prompt_format == "dialogpt":
        raise BackendError(BACKEND_ERROR, "The dialogpt format needs a local model; use "
                           "--format chat-template or gpt2 with --base-url.")
    models, entry = _listing(client, model)
    endpoints = {"chat-template": [CHAT], "gpt2": [COMPLETIONS]}.get(
        prompt_format, [CHAT, COMPLETIONS])
    found: tuple[bool, bool, bool] | None = None
    endpoint = endpoints[0]
    for endpoint in endpoints:
        try:
            found = _probe_draw(client, model, endpoint)
            break
        except Refused as exc:
            if exc.status in (401, 403) or endpoint == endpoints[-1]:
                raise refusal(client, exc, model, models) from exc
    assert found is not None
    n_choices, logprobs, extras = found
    props = _optional(client, "GET", "/props")  # llama.cpp's: its context and build
    return Capabilities(
        model=model, models=models, endpoint=endpoint, n_choices=n_choices,
        logprobs=logprobs, extra_samplers=extras, context=_context(client, entry, model, props),
        tokenize=_tokenizer(client, model),
        render=_renderer(client, model) if endpoint == CHAT else None,
        build=_build(client, props), weights=weights_of(entry),
    )
