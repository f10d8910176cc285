"""Attention for several rows that continue one prompt: the prompt's keys are
stored once and every row's query meets them in one matrix product.

The rows of a turn share their whole prompt and differ only in what they have
drawn since.  Repeating the prompt's cache for every row (what `generate`
does) makes each step read it once per row: on a long chat that is more
memory traffic a step than the int8 weights themselves, and the cost of a
turn then grows with the length of the chat.  Here each layer keeps
the prompt's keys and values once (batch 1) plus a small per-row suffix, and
the attention scores every row against the prompt with one product per key
head, then against its own suffix, under one softmax.  The result is the
same attention, computed in another order.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rlchat.learner.generator.private_api import attention_implementation

NAME = "rlchat_shared_prefix"


class SharedPrefixLayer(DynamicLayer):
    """One layer's cache: the prompt once, then each row's own tokens in a
    buffer with room for the whole reply (a step writes in place)."""

    def __init__(self, layer: DynamicLayer, rows: int, room: int, dtype: torch.dtype) -> None:
        super().__init__()
        keys = layer.keys[0].to(dtype)  # (kv heads, prompt, head dim)
        # Stored transposed once per turn: every step multiplies by it, and
        # a product with a contiguous right side is a third faster than
        # with a transposed view.
        self.prefix_keys_t = keys.transpose(1, 2).contiguous()  # (kv heads, head dim, prompt)
        self.prefix_values = layer.values[0].to(dtype)  # (kv heads, prompt, head dim)
        heads, self.prefix_length, dim = keys.shape
        self.device = keys.device
        self._keys = keys.new_empty((rows, heads, room, dim))
        self._values = keys.new_empty((rows, heads, room, self.prefix_values.shape[-1]))
        self._length = 0
        self._views()
        self.is_initialized = True

    def _views(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(self, key_states, value_states, *args, **kwargs):
        start, end = self._length, self._length + key_states.shape[-2]
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self._length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.prefix_length + self._length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._views()


def shares_prefix(cache: DynamicCache, config) -> bool:
    """Whether this cache and model can use shared-prefix attention: plain
    layers, and no sliding window or score capping that it would skip."""
    plain = all(type(layer) is DynamicLayer for layer in cache.layers)
    special = any(getattr(config, name, None) for name in
                  ("sliding_window", "attn_logit_softcapping", "use_sliding_window"))
    return plain and not special


def share_prefix(cache: DynamicCache, rows: int, room: int, dtype: torch.dtype) -> DynamicCache:
    """The prompt's cache (batch 1) made into shared-prefix layers for `rows` rows."""
    cache.layers = [SharedPrefixLayer(layer, rows, room, dtype) for layer in cache.layers]
    return cache


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None,
                            dropout=0.0, shared_cache=None, **kwargs):
    """Attention of one new token per row over the shared prompt and the row's
    own tokens; anything else (the prompt pass) goes to torch's SDPA."""
    layer = (shared_cache.layers[module.layer_idx]
             if shared_cache is not None and query.shape[2] == 1 else None)
    if not isinstance(layer, SharedPrefixLayer):
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query heads per key head (grouped-query attention)
    scale = scaling if scaling is not None else dim ** -0.5
    # (rows, kv heads, group, dim): query head h reads key head h // group.
    q = query.reshape(rows, kv_heads, group, dim)
    # Every row against the prompt: one (rows * group) x prompt product per key head.
    q_by_head = q.transpose(0, 1).reshape(kv_heads, rows * group, dim)
    prefix_scores = torch.matmul(q_by_head, layer.prefix_keys_t)
    prefix_scores = prefix_scores.view(kv_heads, rows, group, -1).transpose(0, 1)
    own_scores = torch.matmul(q, key.transpose(2, 3))  # (rows, kv heads, group, own)
    scores = torch.cat([prefix_scores, own_scores], dim=-1).float().mul_(scale)
    weights = scores.softmax(dim=-1).to(query.dtype)
    prefix_w, own_w = weights.split([layer.prefix_length, key.shape[2]], dim=-1)
    prefix_out = torch.matmul(prefix_w.transpose(0, 1).reshape(kv_heads, rows * group, -1),
                              layer.prefix_values)
    out = prefix_out.view(kv_heads, rows, group, dim).transpose(0, 1) + torch.matmul(own_w, value)
    # (rows, 1 token, heads, dim), the layout the attention modules expect back.
    return out.reshape(rows, heads, 1, dim).transpose(1, 2), None


def use_shared_prefix_attention(model) -> bool:
    """Route the model's attention through `shared_prefix_attention`; False
    (and no change) for a model that cannot switch its implementation."""
    AttentionInterface.register(NAME, shared_prefix_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    if not getattr(model, "_supports_attention_backend", False):
        return False
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError):
        return False
    return attention_implementation(model.config) == NAME
