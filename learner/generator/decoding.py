"""Sampling several continuations of one prompt, one token step at a time.

The prompt is run once and its key/value cache is shared by every row, stored
once (`attention.py`); rows that reach a turn boundary leave the batch; each
step can be streamed and the whole run cancelled between two steps.  Own loop
rather than `generate`: it streams a batch, cancels, and skips the per-step
work `generate` does for features we do not use.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from rlchat.learner.errors import ErrorCode, GenerationCancelled
from rlchat.learner.generator.attention import NAME as ATTENTION
from rlchat.learner.generator.attention import share_prefix, shares_prefix
from rlchat.learner.generator.lean_step import lean_step
from rlchat.learner.generator.private_api import attention_implementation
from rlchat.learner.sampling import Sampling


@dataclass
class Rows:
    """What each sampled row produced, up to and including its stop token."""

    tokens: list[list[int]]
    logprobs: list[list[float]]  # log p(token) under the model, before temperature
    states: list[list[torch.Tensor]]  # last-layer state each token was drawn from
    context_state: torch.Tensor  # mean last-layer state over the prompt
    steps: int = 0  # forward passes after the prompt
    prompt_pass: PromptPass | None = None  # for the next call to build on
    prompt_tokens_run: int = 0  # prompt tokens this call ran (the rest came cached)


@dataclass
class PromptPass:
    """One prompt's cache, kept so that the next prompt, which in a chat
    extends it by one exchange, runs only its new tokens."""

    ids: list[int]
    cache: DynamicCache  # batch 1, exactly len(ids) positions
    state_sum: torch.Tensor  # sum of the last-layer states over ids

    def extended_by(self, prompt: list[int]) -> bool:
        return len(self.ids) < len(prompt) and prompt[: len(self.ids)] == self.ids

    def fork(self) -> DynamicCache:
        return _detached(self.cache)


def _detached(cache: DynamicCache) -> DynamicCache:
    """A cache that can grow while `cache` stays as it is: its layers grow by
    rebinding their tensors, never by writing into them, so copies of the
    layer objects are enough."""
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in cache.layers]
    return copied


def _share(cache: DynamicCache, model, rows: int, room: int) -> tuple[DynamicCache, bool]:
    """The prompt's cache made ready for `rows` rows in the step model's dtype,
    and whether the steps attend through the shared prefix."""
    if attention_implementation(model.config) == ATTENTION and shares_prefix(cache,
                                                                              model.config):
        return share_prefix(cache, rows, room, model.dtype), True
    # Sliding windows and other special layers: the library's own way.
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.to(model.dtype), layer.values.to(model.dtype)
    cache.batch_repeat_interleave(rows)
    return cache, False


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """One token per row: temperature, top-k, then top-p inside the top-k."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    values, indices = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(values / sampling.temperature, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always).
    outside = probs.cumsum(dim=-1) - probs >= sampling.top_p
    probs = probs.masked_fill(outside, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(1, choice).squeeze(1)


StepCallback = Callable[[list[int], list[int]], None]


@torch.inference_mode()
def sample_rows(
    model,
    prompt: list[int],
    rows: int,
    *,
    max_new_tokens: int,
    sampling: Sampling,
    stop_ids: torch.Tensor | None,
    generator: torch.Generator,
    on_step: StepCallback | None = None,
    cancel: threading.Event | None = None,
    prompt_model=None,
    reuse: PromptPass | None = None,
) -> Rows:
    """Sample `rows` continuations of `prompt` with `model`; the prompt pass
    runs on `prompt_model` (default: `model`), only on what `prompt` adds to
    `reuse` when it extends it.

    `on_step(row_ids, token_ids)` is called after every step with the rows
    that drew a token.  `cancel`, once set, stops the run before the next
    forward pass with GenerationCancelled.
    """
    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(ErrorCode.CANCELLED, "Generation was cancelled.")

    check_cancel()
    start, past, state_sum = 0, None, 0.0
    if reuse is not None and reuse.extended_by(prompt):
        start, past, state_sum = len(reuse.ids), reuse.fork(), reuse.state_sum
    ids = torch.tensor([prompt[start:]], dtype=torch.long)
    last, first_logits, prompt_cache = _forward(prompt_model or model, input_ids=ids, cache=past)
    state_sum = state_sum + last[0].float().sum(dim=0)
    result = Rows(
        tokens=[[] for _ in range(rows)],
        logprobs=[[] for _ in range(rows)],
        states=[[] for _ in range(rows)],
        context_state=state_sum / len(prompt),
        prompt_tokens_run=len(prompt) - start,
    )
    if all(type(layer) is DynamicLayer for layer in prompt_cache.layers):
        result.prompt_pass = PromptPass(list(prompt), _detached(prompt_cache), state_sum)
    logits = first_logits.float().expand(rows, -1)
    state = last[:, -1].expand(rows, -1)
    cache, shared = _share(prompt_cache, model, rows, max_new_tokens)
    extra = {"shared_cache": cache} if shared else {}
    lean = lean_step(model) if shared else None
    active = list(range(rows))  # batch position -> row
    for step in range(max_new_tokens):
        tokens = _sample(logits, sampling, generator)
        logprobs = logits.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
        token_list = tokens.tolist()
        for pos, row in enumerate(active):
            result.tokens[row].append(token_list[pos])
            result.logprobs[row].append(float(logprobs[pos]))
            result.states[row].append(state[pos].float())
        if on_step is not None:
            on_step(list(active), token_list)
        keep = list(range(len(active)))
        if stop_ids is not None:
            done = torch.isin(tokens, stop_ids).tolist()
            keep = [pos for pos in keep if not done[pos]]
        if not keep or step == max_new_tokens - 1:
            break
        check_cancel()
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            tokens = tokens[index]
            active = [active[pos] for pos in keep]
        if lean is not None:
            state, logits = lean(tokens, cache)
        else:
            states, logits, cache = _forward(model, input_ids=tokens[:, None], cache=cache, **extra)
            state = states[:, -1]
        result.steps += 1
        logits = logits.float()
    return result


@torch.inference_mode()
def forced_steps(model, prompt: list[int], tokens: list[int], *,
                 prompt_model=None) -> list[torch.Tensor]:
    """The next-token logits after each of `tokens`, fed one at a time after
    `prompt`, as a turn runs them (the prompt pass on `prompt_model`, the
    steps on `model`, one row): for checking a number format against float32."""
    _, _, cache = _forward(prompt_model or model, input_ids=torch.tensor([prompt]), cache=None)
    cache, shared = _share(cache, model, 1, len(tokens) + 1)
    lean = lean_step(model) if shared else None
    extra = {"shared_cache": cache} if shared else {}
    out = []
    for token in tokens:
        step = torch.tensor([token])
        if lean is not None:
            _, logits = lean(step, cache)
        else:
            _, logits, cache = _forward(model, input_ids=step[:, None], cache=cache, **extra)
        out.append(logits[0].float())
    return out


# Configuration fields of models whose logits are more than the head applied
# to the last state; those run their own forward.
_LOGIT_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "logit_softcapping")


def _forward(model, **inputs) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """(last-layer states of every position, logits at the last, the cache).

    The body's output is the last-layer state, so the head runs on the last
    position alone; asking the whole model for its hidden states instead
    would record every layer's output on every step."""
    head = model.get_output_embeddings()
    body = model.base_model
    if head is None or body is model or any(
            getattr(model.config, name, None) for name in _LOGIT_EXTRAS):
        out = model(**inputs, use_cache=True, output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[-1], out.logits[:, -1], out.cache
    out = body(**inputs, use_cache=True)
    states = out.last_hidden_state
    return states, head(states[:, -1]), out.cache
