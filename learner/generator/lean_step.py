"""One decode step of a GPT-2 model without the library's per-call plumbing.

A step at k = 8 spends about as long in Python (argument handling,
decorators, the attention mask, output bookkeeping: a dozen calls per block)
as in its arithmetic.  This runs the same modules with the same weights, in
the same order, for one new token per row over a shared-prefix cache; the
tests check that it draws what the library's forward draws.  Other
architectures, and GPT-2 variants with options it does not cover, use the
library's forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlchat.learner.generator.attention import shared_prefix_attention

Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]]


def lean_step(model) -> Step | None:
    """step(tokens, cache) -> (last-layer states, logits), one row per token,
    over a cache of SharedPrefixLayer; None for a model it does not cover."""
    config = model.config
    if type(model).__name__ != "GPT2LMHeadModel" or any(
            getattr(config, name, False) for name in
            ("add_cross_attention", "reorder_and_upcast_attn")):
        return None
    body, head = model.transformer, model.lm_head
    width, heads = config.n_embd, config.n_head

    def step(tokens: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor]:
        rows = tokens.shape[0]
        position = cache.get_seq_length()
        hidden = body.wte(tokens) + body.wpe.weight[position]
        for index, block in enumerate(body.h):
            layer = cache.layers[index]  # a SharedPrefixLayer: the caller shares the prompt
            query, key, value = block.attn.c_attn(block.ln_1(hidden)).split(width, dim=-1)
            query, key, value = (t.view(rows, heads, 1, -1) for t in (query, key, value))
            key, value = layer.update(key, value)
            attended, _ = shared_prefix_attention(block.attn, query, key, value, None,
                                                  scaling=block.attn.scaling, shared_cache=cache)
            hidden = hidden + block.attn.c_proj(attended.reshape(rows, width))
            hidden = hidden + block.mlp.c_proj(block.mlp.act(block.mlp.c_fc(block.ln_2(hidden))))
        hidden = body.ln_f(hidden)
        return hidden, head(hidden)

    return step
