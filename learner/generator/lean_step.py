"""One decode step of a GPT-2 or Llama-style model without the library's
per-call plumbing.

A step at k = 8 spends about as long in Python (argument handling,
decorators, the attention mask, output bookkeeping: a dozen calls per block)
as in its arithmetic; a chat model of 30 blocks pays it 30 times a token.
This runs the same modules with the same weights, in the same order, for one
new token per row over a shared-prefix cache; the tests check that it draws
what the library's forward draws.  Other architectures, and variants with
options it does not cover, use the library's forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rlchat.learner.generator.attention import shared_prefix_attention

Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]]


def lean_step(model) -> Step | None:
    """step(tokens, cache) -> (last-layer states, logits), one row per token,
    over a cache of SharedPrefixLayer; None for a model it does not cover."""
    return _gpt2_step(model) or _llama_step(model)


# Llama's block as these families write it: RMS norms, rotary positions from
# the body's own rotary module, grouped-query attention, a gated SiLU MLP (Qwen2
# adds biases to q/k/v, which its linear layers carry).
LLAMA_LIKE = ("llama", "mistral", "qwen2")


def _llama_blocks(model) -> list | None:
    """The blocks of a model the Llama step covers, else None."""
    config = getattr(model, "config", None)
    body = getattr(model, "model", None)
    if getattr(config, "model_type", "") not in LLAMA_LIKE or body is None or any(
            getattr(config, name, None) for name in ("sliding_window", "use_sliding_window")):
        return None
    layers = list(getattr(body, "layers", ()))
    if not layers or not hasattr(body, "rotary_emb") or any(
            hasattr(block.self_attn, "q_norm") for block in layers):
        return None
    return layers


# Layers that read the same input, run as one int8 layer in the steps (one
# call and one rounding of the input instead of three, or two): (the module
# holding them, the fused layer's name, theirs, the norm whose output they read).
FUSED = (("self_attn", "qkv_proj", ("q_proj", "k_proj", "v_proj"), "input_layernorm"),
         ("mlp", "gate_up_proj", ("gate_proj", "up_proj"), "post_attention_layernorm"))


def shared_input_groups(model, *, fused: bool = False
                        ) -> list[tuple[nn.Module, str, tuple[str, ...], nn.Module]]:
    """(parent, fused name, member names, the norm before them) for every
    group of linear layers that the Llama step can run fused, still apart (or
    with `fused`, already fused); [] for other models."""
    groups = []
    for block in _llama_blocks(model) or ():
        for holder, name, members, norm in FUSED:
            parent = getattr(block, holder)
            found = hasattr(parent, name) if fused else all(
                isinstance(getattr(parent, m, None), nn.Linear) for m in members)
            if found:
                groups.append((parent, name, members, getattr(block, norm)))
    return groups


def _llama_step(model) -> Step | None:
    config = model.config
    layers = _llama_blocks(model)
    if layers is None:
        return None
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    body, head = model.model, model.lm_head
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    q_width, kv_width = heads * dim, kv_heads * dim
    inner = config.intermediate_size

    def projections(attn, x):
        if hasattr(attn, "qkv_proj"):
            qkv = attn.qkv_proj(x)
            return (qkv[:, :q_width], qkv[:, q_width:q_width + kv_width],
                    qkv[:, q_width + kv_width:])
        return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)

    def feed_forward(mlp, x):
        if hasattr(mlp, "gate_up_proj"):
            gate_up = mlp.gate_up_proj(x)
            return mlp.down_proj(mlp.act_fn(gate_up[:, :inner]) * gate_up[:, inner:])
        return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))

    def step(tokens: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor]:
        rows = tokens.shape[0]
        position = torch.tensor([[cache.get_seq_length()]])
        hidden = body.embed_tokens(tokens)
        cos, sin = body.rotary_emb(hidden[None], position)
        for index, block in enumerate(layers):
            attn, mlp = block.self_attn, block.mlp
            x = block.input_layernorm(hidden)
            query, key, value = projections(attn, x)
            query = query.reshape(rows, heads, 1, dim)
            key = key.reshape(rows, kv_heads, 1, dim)
            value = value.reshape(rows, kv_heads, 1, dim)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            key, value = cache.layers[index].update(key, value)
            attended, _ = shared_prefix_attention(attn, query, key, value, None,
                                                  scaling=attn.scaling, shared_cache=cache)
            hidden = hidden + attn.o_proj(attended.reshape(rows, heads * dim))
            x = block.post_attention_layernorm(hidden)
            hidden = hidden + feed_forward(mlp, x)
        hidden = body.norm(hidden)
        return hidden, head(hidden)

    return step


def _gpt2_step(model) -> Step | None:
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
