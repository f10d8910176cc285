"""The number format the model computes in: the --dtype choice.

On 2 CPU cores a decode step is bound by reading the weights, so the format
decides its speed.  Two int8 formats, one per kind of CPU:

- `int8`: weight-only int8 (one scale per output channel) with bfloat16
  arithmetic.  Fast only where the CPU has bfloat16 instructions
  (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated and ten times slower.
  Its prompt pass, bound by arithmetic rather than weights, keeps a float32
  copy, the fastest format there.
- `qint8`: dynamic int8 (torch's fbgemm/x86 kernels, qnnpack on ARM): int8
  weights per output channel, and activations rounded to int8 per call.
  Runs on plain AVX2, and runs the prompt pass too, faster than float32.

`auto` takes `int8` on a bfloat16 CPU and `qint8` elsewhere, as measured by
`benchmarks/generation.py`, which also checks that each keeps the
next-token distribution of float32.
"""

from __future__ import annotations

import copy
import logging
import platform
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from learner.generator.attention import use_shared_prefix_attention
from learner.sampling import DTYPES

log = logging.getLogger(__name__)



def bf16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) and
    torch's kernels may use them.

    Asks the instructions themselves, not oneDNN's "bf16 supported", which
    also says yes on AVX-512 CPUs that only emulate bfloat16; and honours
    ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, which cap what torch uses.
    """
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        allowed = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    capped = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2")
    return native and allowed and not capped


def cpu_summary() -> dict[str, object]:
    """What decides the format on this machine, for benchmarks and bug reports."""
    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "bfloat16": bf16_supported(), "machine": platform.machine()}


def resolve_dtype(name: str) -> str:
    """The concrete format for a --dtype value ('auto' picks by the CPU)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {name!r}")
    if name == "auto":
        return "int8" if bf16_supported() else "qint8"
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


def _as_linear(module: nn.Module) -> nn.Linear:
    """GPT-2's Conv1D as the nn.Linear it computes, for the int8 kernels."""
    weight = _linear_weight(module)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
    linear.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)
    if module.bias is not None:
        linear.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
    return linear


def _quantized_engine() -> str | None:
    engines = torch.backends.quantized.supported_engines
    preferred = ("qnnpack",) if platform.machine().lower() in ("arm64", "aarch64") else (
        "x86", "fbgemm")
    return next((e for e in preferred if e in engines), None)


def _dynamic_int8(model: nn.Module) -> nn.Module | None:
    """Every linear layer (the output head included) as dynamic int8, or None
    where this torch build has no int8 engine for the CPU."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    engine = _quantized_engine()
    if engine is None:
        return None
    torch.backends.quantized.engine = engine
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv1D":
                setattr(parent, child_name, _as_linear(child))
    # The output head may be tied to the embedding: quantize_dynamic swaps the
    # head module and leaves the embedding's float weight as it is.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that torchao is its successor
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, inplace=True)


def _weight_only_int8(model: nn.Module) -> nn.Module:
    """Every linear layer as int8 weights with bfloat16 arithmetic."""
    model = model.to(torch.bfloat16)
    # The output head is often tied to the input embedding: quantise a copy of
    # it for the head and leave the embedding lookup in bfloat16.
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            weight = _linear_weight(child)
            if weight is not None:
                setattr(parent, child_name, Int8Linear(weight, child.bias, torch.bfloat16))
    return model


def quantize_linears(model: nn.Module, name: str) -> nn.Module | None:
    """`model`'s linear layers in the int8 format `name` ("qint8" or "int8"),
    converted in place; None where this machine has no kernel for it."""
    if name == "qint8":
        return _dynamic_int8(model)
    if name == "int8":
        return _weight_only_int8(model) if _int8_works(torch.bfloat16) else None
    raise ValueError(f"{name!r} is not an int8 format")


@dataclass
class Formatted:
    prompt_model: nn.Module  # runs the prompt once per turn
    step_model: nn.Module  # runs every new token, in the chosen format
    dtype: str


def apply_dtype(model: nn.Module, name: str) -> Formatted:
    """The model made ready to decode in a --dtype choice (converted in
    place), with the model its prompt pass runs on."""
    chosen = resolve_dtype(name)
    _fast_activations(model)
    use_shared_prefix_attention(model)
    model = model.float()
    if chosen == "float32":
        return Formatted(model, model, chosen)
    if chosen == "qint8":
        quantized = quantize_linears(model, "qint8")
        if quantized is not None:
            return Formatted(quantized, quantized, chosen)
        log.warning("no int8 engine for this CPU in this torch build; using float32")
        return Formatted(model, model, "float32")
    # The prompt pass is bound by arithmetic, where float32 is the fastest of these.
    prompt_model = copy.deepcopy(model)
    if chosen == "int8":
        quantized = quantize_linears(model, "int8")
        if quantized is not None:
            return Formatted(prompt_model, quantized, chosen)
        log.warning("int8 weight kernels are missing in this torch build; using bfloat16")
    return Formatted(prompt_model, model.to(torch.bfloat16), "bfloat16")
