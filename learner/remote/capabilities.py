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

from rlchat.learner.dialogue import valid_unicode
from rlchat.learner.errors import (
    BACKEND_AUTH,
    BACKEND_ERROR,
    BACKEND_MODEL,
    BackendError,
)
from rlchat.learner.remote.client import Refused, ServerClient
from rlchat.learner.remote.streaming import stream_assembly, stream_draws

CHAT, COMPLETIONS = "chat", "completions"
PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions"}
# Samplers some servers add by default (llama.cpp: top-k 40, min-p 0.05):
# sent explicitly so that only the settings shape the draw.
EXTRA_SAMPLERS = ("top_k", "min_p")
_PROBE_MESSAGE = "Hello"
# Enough tokens, drawn hot enough, that two samples of a server that samples
# at all differ; two that agree mean the server decodes greedily.
_PROBE_TOKENS, _PROBE_TEMPERATURE = 8, 2.0
SAME_SAMPLES = ("the server returns the same reply for every sample: it ignores the "
                "sampling settings and decodes greedily (transformers serve does so for a "
                "model whose generation config does not sample); serve a model that samples, "
                "or another server")


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
    listed: bool = True  # /v1/models lists it (else it is served on request)
    samples_vary: bool | None = None  # two probe samples differed (None: not measured)
    # The LoRA adapters the server loaded at its start (llama-server --lora):
    # (id, path), which a request applies by id; None: it has no such list.
    lora: tuple[tuple[int, str], ...] | None = None
    # It loads adapters while it runs (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING).
    runtime_lora: bool = False
    # It embeds text with the chat's model id (/v1/embeddings): the meaning
    # columns' `served` source (learner/embeddings.py).
    embeddings: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    def lines(self) -> list[str]:
        """The probe's findings in words, one per line."""
        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        vary = {True: "yes", False: f"no: {SAME_SAMPLES}", None: "not measured"}
        return [
            f"model: {self.model} (weights {self.weights})"
            + ("" if self.listed else ", served on request (the server does not list it)"),
            f"endpoint: {self.endpoint}",
            f"n choices in one request: {yes(self.n_choices)}",
            f"log-probs: {yes(self.logprobs)}",
            f"top-k and min-p sent: {yes(self.extra_samplers)}",
            "context: " + (f"{self.context} tokens" if self.context else "not told"),
            "token counts: " + ("the server's /tokenize" if self.tokenize else "estimated"),
            "prompt stored as: " + ("rendered by the server" if self.render
                                    or self.endpoint == COMPLETIONS else "messages"),
            f"samples differ: {vary[self.samples_vary]}",
            "LoRA adapters: " + ("loaded on request (/v1/load_lora_adapter)"
                                 if self.runtime_lora else
                                 ", ".join(f"{i}: {path}" for i, path in self.lora)
                                 if self.lora else "none loaded" if self.lora is not None
                                 else "not supported"),
            "embeddings: " + ("yes (/v1/embeddings)" if self.embeddings else "no"),
            f"server: {self.build or 'not told'}",
        ]


def refusal(client: ServerClient, exc: Refused, model: str,
            listed: tuple[str, ...] = (), *, unlisted: bool = False) -> BackendError:
    """One sentence for an HTTP refusal; `unlisted`: the server does not list
    the model, so a refusal that speaks of the model is that it does not serve it."""
    if exc.status in (401, 403):
        fix = (f"check the key in ${client.api_key_env}" if client.api_key_env else
               "name the environment variable that holds the key with --api-key-env NAME")
        return BackendError(BACKEND_AUTH, f"The server at {client.host} refused the request "
                            f"({exc.status}: {exc.message}); {fix}.")
    if "model" in exc.message.lower() and (exc.status == 404 or unlisted
                                           and exc.status in (400, 422)):
        return unknown_model(client, model, listed)
    return BackendError(BACKEND_ERROR, f"The server at {client.host} refused the request "
                        f"({exc.status}: {exc.message}).")


def unknown_model(client: ServerClient, model: str, listed: tuple[str, ...]) -> BackendError:
    shown = ", ".join(listed[:8]) + (", …" if len(listed) > 8 else "")
    where = f"it lists: {shown}" if listed else "it lists none"
    return BackendError(BACKEND_MODEL, f"The server at {client.host} does not serve model "
                        f"'{model}'; {where}. Pass one with --model.")


def _listing(client: ServerClient, model: str) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The ids the server lists and its entry for `model`, if it lists one:
    a hint only, since some servers (`transformers serve` without a model,
    gateways) load any model they are asked for."""
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
    ids = tuple(client.mask(valid_unicode(e["id"]))[:200] for e in entries)
    return ids, next((e for e in entries if e["id"] == model), None)


def optional(client: ServerClient, method: str, path: str, body: Any = None) -> Any:
    """A server-specific endpoint's answer, or None where there is none (a
    server that stops answering, or the deadline, still ends the probe)."""
    try:
        return client.call(method, path, body, root=True)
    except Refused:
        return None
    except BackendError as exc:
        if exc.code == BACKEND_ERROR:
            return None
        raise


def _context(client: ServerClient, entry: dict[str, Any], model: str, props: Any) -> int | None:
    for value in (entry.get("max_model_len"), entry.get("context_length")):
        if isinstance(value, int) and value > 0:
            return value  # vLLM and SGLang list it with the model
    if isinstance(props, dict):  # llama.cpp: per slot
        settings = props.get("default_generation_settings")
        per_slot = settings.get("n_ctx") if isinstance(settings, dict) else None
        for value in (per_slot, props.get("n_ctx")):
            if isinstance(value, int) and value > 0:
                return value
    show = optional(client, "POST", "/api/show", {"model": model})  # Ollama
    info = show.get("model_info") if isinstance(show, dict) else None
    if isinstance(info, dict):
        for key, value in info.items():
            if key.endswith(".context_length") and isinstance(value, int) and value > 0:
                return value
    return None


def _build(client: ServerClient, props: Any) -> str:
    if isinstance(props, dict) and isinstance(props.get("build_info"), str):
        return client.mask(valid_unicode(f"llama.cpp {props['build_info']}"))[:200]
    for path in ("/version", "/api/version"):  # vLLM, Ollama
        answer = optional(client, "GET", path)
        if isinstance(answer, dict) and isinstance(answer.get("version"), str):
            return client.mask(valid_unicode(f"version {answer['version']}"))[:200]
    return ""


def weights_of(entry: dict[str, Any]) -> str:
    """A stable hash of how the server describes the model (its id, owner,
    root or path, size): the same served weights keep it across restarts."""
    stable = {k: v for k, v in entry.items() if k not in ("created", "status", "object")}
    text = json.dumps(stable, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _named_fields(message: str, sent: list[str]) -> list[str]:
    return [name for name in sent if re.search(rf"\b{name}\b", message)]


def _probe_draw(client: ServerClient, model: str, endpoint: str,
                listed: tuple[str, ...] | None) -> tuple[bool, bool, bool, bool]:
    """(n choices, log-probs, extra samplers, samples differ) from tiny
    requests, dropping what the server refuses: first a field it names, else
    the extras, then log-probs, then n.  `listed`: the ids the server lists
    where `model` is not among them; an answer from one of those instead
    (llama-server answers any id with the model it has) is backend_model."""
    body: dict[str, Any] = {"model": model, "max_tokens": _PROBE_TOKENS,
                            "temperature": _PROBE_TEMPERATURE, "n": 2, "top_k": 50,
                            "min_p": 0.0}
    if endpoint == CHAT:
        body.update(messages=[{"role": "user", "content": _PROBE_MESSAGE}], logprobs=True)
    else:
        body.update(prompt=f"User: {_PROBE_MESSAGE}\nAssistant:", logprobs=1)
    order = ["top_k", "min_p", "logprobs", "n"]
    while True:
        try:
            assembly = stream_assembly(client, PATHS[endpoint], body,
                                       rows=2 if "n" in body else 1)
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
    if listed and assembly.model != model and assembly.model in listed:
        raise unknown_model(client, model, listed)
    draws = assembly.draws
    came = [d for d in draws if d.text or d.finish]
    n_choices = "n" in body and len(came) >= 2
    if not n_choices:  # the second sample from a request of its own
        came = came[:1] + stream_draws(client, PATHS[endpoint],
                                       {k: v for k, v in body.items() if k != "n"}, rows=1)
    texts = [d.text for d in came if d.text]
    vary = len(set(texts)) > 1 if len(texts) >= 2 else None
    return n_choices, any(d.logprob_count for d in draws), "top_k" in body, vary


def _tokenizer(client: ServerClient, model: str) -> str | None:
    for key in ("content", "prompt"):  # llama.cpp's, then vLLM's
        answer = optional(client, "POST", "/tokenize", {key: _PROBE_MESSAGE, "model": model})
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list) \
                and answer["tokens"]:
            return key
    return None


def _renderer(client: ServerClient, model: str) -> str | None:
    messages = [{"role": "user", "content": _PROBE_MESSAGE}]
    answer = optional(client, "POST", "/apply-template", {"messages": messages})
    if isinstance(answer, dict) and isinstance(answer.get("prompt"), str):
        return "apply-template"  # llama.cpp
    answer = optional(client, "POST", "/tokenize",
                       {"model": model, "messages": messages, "add_generation_prompt": True})
    if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
        text = optional(client, "POST", "/detokenize",
                         {"model": model, "tokens": answer["tokens"]})
        if isinstance(text, dict) and isinstance(text.get("prompt"), str):
            return "tokenize-messages"  # vLLM
    return None


def probe(client: ServerClient, model: str, prompt_format: str) -> Capabilities:
    """The server's capabilities for `model`; BackendError when it cannot serve it."""
    if prompt_format == "dialogpt":
        raise BackendError(BACKEND_ERROR, "The dialogpt format needs a local model; use "
                           "--format chat-template or gpt2 with --base-url.")
    try:
        return _probe(client, model, prompt_format)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        # A field of a type no server documents, somewhere in an answer.
        raise BackendError(BACKEND_ERROR, f"The server at {client.host} answered the probe "
                           "in a way rlchat does not understand "
                           f"({type(exc).__name__}).") from exc


def _probe(client: ServerClient, model: str, prompt_format: str) -> Capabilities:
    models, entry = _listing(client, model)
    endpoints = {"chat-template": [CHAT], "gpt2": [COMPLETIONS]}.get(
        prompt_format, [CHAT, COMPLETIONS])
    found: tuple[bool, bool, bool, bool] | None = None
    endpoint = endpoints[0]
    for endpoint in endpoints:
        try:
            found = _probe_draw(client, model, endpoint, models if entry is None else None)
            break
        except Refused as exc:
            if exc.status in (401, 403) or endpoint == endpoints[-1] or (
                    entry is None and "model" in exc.message.lower()):
                raise refusal(client, exc, model, models, unlisted=entry is None) from exc
    assert found is not None
    n_choices, logprobs, extras, vary = found
    listed = entry is not None
    entry = entry if entry is not None else {"id": model}
    props = optional(client, "GET", "/props")  # llama.cpp's: its context and build
    return Capabilities(
        model=model, models=models, endpoint=endpoint, n_choices=n_choices,
        logprobs=logprobs, extra_samplers=extras, context=_context(client, entry, model, props),
        tokenize=_tokenizer(client, model),
        render=_renderer(client, model) if endpoint == CHAT else None,
        build=_build(client, props), weights=weights_of(entry),
        listed=listed, samples_vary=vary, lora=_lora_adapters(client),
        runtime_lora=_runtime_lora(client), embeddings=embed(client, model, ["Hello"]) is not None,
    )


def _runtime_lora(client: ServerClient) -> bool:
    """Whether the server loads LoRA adapters on request (vLLM's
    /v1/load_lora_adapter): it refuses an empty request as invalid (400 or
    422) where the endpoint exists; a server without it does not know the path."""
    try:
        client.call("POST", "/load_lora_adapter", {})
    except Refused as exc:
        return exc.status in (400, 422)
    except BackendError as exc:
        if exc.code == BACKEND_ERROR:
            return False
        raise
    return False


def embed(client: ServerClient, model: str, texts: list[str]) -> list[list[float]] | None:
    """The server's /v1/embeddings of `texts` with `model`, a list of numbers
    each; None where the server has no such endpoint for that model (it
    refuses, or answers something else)."""
    try:
        answer = client.call("POST", "/embeddings", {"model": model, "input": texts})
    except Refused:
        return None
    except BackendError as exc:
        if exc.code == BACKEND_ERROR:
            return None
        raise
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != len(texts):
        return None
    rows = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [d.get("embedding") if isinstance(d, dict) else None for d in rows]
    if not all(isinstance(v, list) and v and all(isinstance(x, int | float)
                                                 and not isinstance(x, bool) for x in v)
               and len(v) == len(vectors[0]) for v in vectors):
        return None
    return vectors


def _lora_adapters(client: ServerClient) -> tuple[tuple[int, str], ...] | None:
    """llama-server's GET /lora-adapters: the adapters it loaded with --lora
    (None where the server has no such list)."""
    answer = optional(client, "GET", "/lora-adapters")
    if not isinstance(answer, list):
        return None
    return tuple((a["id"], valid_unicode(a["path"])) for a in answer
                 if isinstance(a, dict) and isinstance(a.get("id"), int)
                 and not isinstance(a.get("id"), bool) and isinstance(a.get("path"), str))
