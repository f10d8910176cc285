"""The number format the model computes in: the dtype choice and weight-only int8.

On 2 CPU cores a decode step is bound by reading the weights, so the format
decides its speed; the prompt pass is bound by arithmetic instead, and float32
matrix products are the fastest there, so it keeps a float32 copy.
Weight-only int8 (per output channel, activations kept in bfloat16) halves
the bytes of bfloat16 and keeps the next-token distribution close to float32
(`benchmarks/generation.py` measures both).  Dynamic int8, which also rounds
the activations, is not offered: it moved the top-10 tokens too much.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from learner.sampling import DTYPES

log = logging.getLogger(__name__)



def bf16_supported() -> bool:
    """Whether this CPU has fast bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str) -> str:
    """The concrete format for a --dtype value ('auto' picks by the CPU)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {name!r}")
    if name == "auto":
        return "int8" if bf16_supported() else "float32"
    return name


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows and one scale per row."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        w = weight.detach().float().contiguous()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def _linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a linear layer, GPT-2's Conv1D included."""
    if isinstance(module, nn.Linear):
        return module.weight
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return module.weight.t()  # Conv1D stores (in, out)
    return None


def _int8_works(dtype: torch.dtype) -> bool:
    try:
        layer = Int8Linear(torch.randn(16, 32), torch.zeros(16), dtype)
        return layer(torch.randn(2, 32, dtype=dtype)).shape == (2, 16)
    except (AttributeError, RuntimeError):
        return False


def _fast_activations(model: nn.Module) -> None:
    """GPT-2's tanh GELU written out in Python is five kernels per layer and
    step; torch has it as one, with the same formula."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, child_name, GELUTanh())


@dataclass
class Formatted:
    prompt_model: nn.Module  # runs the prompt once per turn, in float32
    step_model: nn.Module  # runs every new token, in the chosen format
    dtype: str


def apply_dtype(model: nn.Module, name: str) -> Formatted:
    """The model in a --dtype choice (converted in place), with its prompt-pass copy."""
    chosen = resolve_dtype(name)
    _fast_activations(model)
    model = model.float()
    if chosen == "float32":
        return Formatted(model, model, chosen)
    prompt_model = copy.deepcopy(model)
    model = model.to(torch.bfloat16)
    if chosen == "bfloat16":
        return Formatted(prompt_model, model, chosen)
    if not _int8_works(torch.bfloat16):
        log.warning("int8 weight kernels are missing in this torch build; using bfloat16")
        return Formatted(prompt_model, model, "bfloat16")
    # The output head is often tied to the input embedding: quantise a copy of
    # it for the head and leave the embedding lookup in bfloat16.
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            weight = _linear_weight(child)
            if weight is not None:
                setattr(parent, child_name, Int8Linear(weight, child.bias, torch.bfloat16))
    return Formatted(prompt_model, model, chosen)
