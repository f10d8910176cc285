"""Candidate replies from a Hugging Face causal language model.

The only module that imports torch and transformers; the agent imports it
lazily, so the command line, replay and export never pay for them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria
from transformers.utils import logging as hf_logging

from learner.dialogue import cut_reply, format_turns, unique_nonempty
from learner.errors import ModelUnavailable
from learner.records import Candidate, Proposal

log = logging.getLogger(__name__)

HUB_PROBE_SECONDS = 1.5


def quiet_transformers() -> None:
    # The TUI owns the terminal: no progress bars or advice from the hub.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module="transformers")


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the model hub answers a TCP connect within `timeout` seconds.

    Without this check an unreachable hub costs transformers' retry loop
    (20 s or more) before it fails.  Name resolution is not bounded by the
    socket timeout, hence the thread.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or 443
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep + os.sep in name


def _from_pretrained(name: str, local_only: bool):
    kwargs = {"local_files_only": local_only, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        name, use_safetensors=True, dtype=torch.float32, **kwargs
    )
    return tokenizer, model


def load_model(name: str):
    """(tokenizer, model) for a local folder or a hub name, or ModelUnavailable."""
    quiet_transformers()
    fix = "run `rlchat init-model PATH` to make a small offline model and start with --model PATH"
    path = Path(name).expanduser()
    if path.exists():
        try:
            return _from_pretrained(str(path), local_only=True)
        except Exception as exc:  # transformers raises many types for a bad folder
            raise ModelUnavailable(
                f"{path} does not hold a loadable causal language model with safetensors "
                f"weights ({type(exc).__name__}); pass --model PATH to a model folder, or {fix}."
            ) from exc
    if _looks_like_path(name):
        raise ModelUnavailable(f"There is no model folder at {name}; {fix}.")
    try:
        return _from_pretrained(name, local_only=True)  # the hub cache, no network
    except Exception:
        pass
    if not _hub_reachable():
        raise ModelUnavailable(
            f"Model '{name}' is not on this machine and the model hub cannot be reached; {fix}, "
            f"or pass --model PATH to a downloaded model folder."
        )
    try:
        return _from_pretrained(name, local_only=False)
    except Exception as exc:
        raise ModelUnavailable(
            f"Model '{name}' could not be loaded from the model hub ({type(exc).__name__}); "
            f"check the name, or pass --model PATH to a local model folder."
        ) from exc


class _StopAtTurnEnd(StoppingCriteria):
    """Per sequence: done once it has produced a line break or end of text."""

    def __init__(self, prompt_len: int, stop_ids: torch.Tensor) -> None:
        self.prompt_len = prompt_len
        self.stop_ids = stop_ids

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len :]
        return torch.isin(new, self.stop_ids).any(dim=1)


class Generator:
    """Samples candidate replies and measures their signals for the features."""

    def __init__(
        self,
        tokenizer,
        model,
        *,
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_p: float = 0.95,
        seed: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self._calls = 0
        self.context_size = int(getattr(model.config, "n_positions", 0)
                                or getattr(model.config, "max_position_embeddings", 1024))
        eos = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        stops = [i for tok, i in tokenizer.get_vocab().items()
                 if "\n" in tokenizer.convert_tokens_to_string([tok])]
        if eos is not None:
            stops.append(eos)
        self._stop_ids = torch.tensor(sorted(set(stops)), dtype=torch.long)

    def reseed(self, seed: int | None) -> None:
        """Restart the sampling sequence (for runs that must see the same draws)."""
        self.seed, self._calls = seed, 0

    @classmethod
    def load(cls, name: str, **kwargs) -> Generator:
        tokenizer, model = load_model(name)
        return cls(tokenizer, model, **kwargs)

    def prompt_ids(self, history: list[tuple[str, str]], message: str) -> list[int]:
        """Token ids of the dialogue prompt, oldest lines dropped to fit the context."""
        budget = max(self.context_size - self.max_new_tokens, 8)
        lines = format_turns(history, message)
        ids: list[int] = []
        for start in range(len(lines) - 1, -1, -1):
            text = "\n".join(lines[start:])
            candidate = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(candidate) > budget:
                # Even the newest lines alone are too long: keep their end.
                return ids or candidate[-budget:]
            ids = candidate
        return ids

    @torch.inference_mode()
    def propose(self, history: list[tuple[str, str]], message: str, n: int) -> Proposal:
        """Sample n continuations in one batched call; empty and repeated replies dropped."""
        ids = self.prompt_ids(history, message)
        input_ids = torch.tensor([ids], dtype=torch.long)
        if self.seed is not None:
            torch.manual_seed(self.seed + self._calls)
        self._calls += 1
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            num_return_sequences=n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,
            pad_token_id=self.pad_id,
            stopping_criteria=[_StopAtTurnEnd(len(ids), self._stop_ids)],
            output_logits=True,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, len(ids) :]
        steps = len(out.logits)
        logprobs = torch.stack(
            [torch.log_softmax(out.logits[t].float(), dim=-1) for t in range(steps)], dim=1
        ).gather(2, new_tokens[:, :steps, None]).squeeze(2)
        # hidden_states[t][-1][:, -1] is the state from which token t was drawn.
        states = torch.stack([out.hidden_states[t][-1][:, -1] for t in range(steps)], dim=1)
        context_hidden = out.hidden_states[0][-1][0].float().mean(dim=0).numpy()
        stop = set(self._stop_ids.tolist())

        texts, spans = [], []
        for row in range(n):
            tokens = new_tokens[row, :steps].tolist()
            end = next((i for i, tok in enumerate(tokens) if tok in stop), len(tokens))
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
            texts.append(cut_reply(text))
            spans.append(end)
        candidates = []
        for row in unique_nonempty(texts):
            end = max(spans[row], 1)
            candidates.append(
                Candidate(
                    text=texts[row],
                    logprob=float(logprobs[row, :end].mean()),
                    tokens=spans[row],
                    hidden=states[row, :end].float().mean(dim=0).numpy().astype(np.float64),
                )
            )
        return Proposal(candidates=candidates, context_hidden=context_hidden.astype(np.float64))
