"""The private or deprecated torch and transformers APIs the generator uses,
each behind one guard: where a release renames or drops one, rlchat takes a
supported path instead and says so once in the log, rather than failing or
slowing down without a word.

- `torch.cpu._is_avx512_bf16_supported` / `_is_amx_tile_supported`: whether
  the CPU has bfloat16 instructions.  Fallback: the flags in /proc/cpuinfo
  (none there: no bfloat16).
- `torch.ops.aten._weight_int8pack_mm`: the `int8` format's kernel.
  Fallback: bfloat16 (weights.apply_dtype).
- `torch.ao.quantization.quantize_dynamic`: the `qint8` format.  Fallback:
  as on a CPU without an int8 engine (float32).
- `config._attn_implementation`: which attention a model runs.  Fallback:
  the library's own attention over a repeated cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
_said: set[str] = set()


def missing(api: str, instead: str) -> None:
    """Log, once a process, that `api` is not there and what is done instead."""
    if api not in _said:
        _said.add(api)
        log.warning("%s is not in this torch/transformers; %s", api, instead)


def cpu_bf16_instructions() -> bool:
    """Whether the CPU has AVX512-BF16 or AMX."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        missing("torch.cpu._is_avx512_bf16_supported", "reading the CPU flags in /proc/cpuinfo")
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_tile" in flags


def int8pack_mm() -> Callable[..., torch.Tensor] | None:
    """The weight-only int8 matrix product, or None."""
    kernel = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
    if kernel is None:
        missing("torch.ops.aten._weight_int8pack_mm", "the int8 format falls back to bfloat16")
    return kernel


def quantize_dynamic() -> tuple[Callable[..., Any], Any] | None:
    """(quantize_dynamic, per_channel_dynamic_qconfig), or None."""
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig
        from torch.ao.quantization import quantize_dynamic as quantize
    except ImportError:
        missing("torch.ao.quantization.quantize_dynamic", "the qint8 format falls back to "
                "float32")
        return None
    return quantize, per_channel_dynamic_qconfig


def attention_implementation(config: Any) -> str | None:
    """The attention a model's config says it runs, or None if it does not say."""
    name = getattr(config, "_attn_implementation", None)
    if name is None:
        missing("config._attn_implementation", "the library's own attention over a repeated "
                "cache (slower on long prompts)")
    return name
