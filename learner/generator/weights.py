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
  Runs on plain AVX2.  Its prompt pass runs on a float32 copy (see
  `apply_dtype`).

`auto` takes `qint8` wherever torch has an int8 engine for the CPU: it is
the fastest on both kinds of CPU in `benchmarks/generation.py`, at the
quality bars that benchmark checks.
`int8` is the fallback on a bfloat16 CPU without the engine, then float32.
"""

from __future__ import annotations

import copy
import logging
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rlchat.learner.generator.attention import use_shared_prefix_attention
from rlchat.learner.generator.lean_step import shared_input_groups
from rlchat.learner.generator.private_api import (
    cpu_bf16_instructions,
    int8pack_mm,
    quantize_dynamic,
)
from rlchat.learner.sampling import DTYPES

log = logging.getLogger(__name__)



def bf16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) and
    torch's kernels may use them.

    Asks the instructions themselves, not oneDNN's "bf16 supported", which
    also says yes on AVX-512 CPUs that only emulate bfloat16; and honours
    ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, which cap what torch uses.
    """
    native = cpu_bf16_instructions()
    try:
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
        if _quantized_engine() is not None:
            return "qint8"
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
        self.kernel = int8pack_mm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()
        y = self.kernel(flat, self.weight_int8, self.scale)
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
    if int8pack_mm() is None:
        return False
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


SMOOTHING = 0.7  # alpha: the share of activation range moved into the weights
# A trained model's first positions (the attention sink) carry activations far
# above the rest; they run only in the float32 prompt pass, so the ranges the
# int8 steps are smoothed for leave them out.
SINK_POSITIONS = 4
# A layer whose input, smoothed, still peaks above this many times its RMS is
# left in float32: one int8 scale over such a tensor leaves the typical value
# a handful of levels.  Trained transformers have a few such layers (early
# FFN outputs); typical layers sit far below the limit.
OUTLIER_LIMIT = 20.0


class SmoothedLinear(nn.Module):
    """y = linear(x / s), with the linear's input columns scaled by s.

    Dynamic int8 rounds a call's activations with one scale, so a few outlier
    channels (trained transformers have them) cost every other channel its
    precision.  Dividing each input channel by s_j = a_j^alpha / w_j^(1-alpha)
    (a_j: its largest activation on calibration text, w_j: its largest
    weight) evens the channels out, and the weights, quantized per output
    channel, absorb the scale (SmoothQuant, Xiao et al. 2023).  Same result
    in exact arithmetic; benchmarks/generation.py measures how much closer
    to float32 it keeps a trained model."""

    def __init__(self, linear: nn.Linear, activation_max: torch.Tensor) -> None:
        super().__init__()
        weight = linear.weight.detach()
        scale = (activation_max.clamp(min=1e-5).pow(SMOOTHING)
                 / weight.abs().amax(dim=0).clamp(min=1e-5).pow(1 - SMOOTHING)).clamp(min=1e-5)
        self.linear = nn.Linear(linear.in_features, linear.out_features,
                                bias=linear.bias is not None)
        self.linear.weight = nn.Parameter(weight * scale[None, :], requires_grad=False)
        if linear.bias is not None:
            self.linear.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.register_buffer("inverse_scale", (1.0 / scale).to(weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse_scale)


Calibrate = Callable[[nn.Module], None]  # runs sample inputs through the model


@torch.inference_mode()
def _smooth(model: nn.Module, calibrate: Calibrate) -> set[int]:
    """Each linear layer becomes a SmoothedLinear, from its input ranges on
    calibration; returns the ids of those left in float32 instead, whose
    inputs stay dominated by outliers even smoothed."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    peaks: dict[int, torch.Tensor] = {}
    squares: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].detach().float()
        if x.dim() == 3 and x.shape[1] > 4 * SINK_POSITIONS:
            x = x[:, SINK_POSITIONS:]  # steps never meet them: they sit in the prompt cache
        x = x.reshape(-1, x.shape[-1])
        key = id(module)
        peak, square = x.abs().amax(dim=0), x.pow(2).sum(dim=0)
        peaks[key] = torch.maximum(peaks[key], peak) if key in peaks else peak
        squares[key] = squares[key] + square if key in squares else square
        counts[key] = counts.get(key, 0) + x.shape[0]

    hooks = [m.register_forward_hook(record) for m in linears]
    try:
        calibrate(model)
    finally:
        for hook in hooks:
            hook.remove()
    _fuse_shared_inputs(model, (peaks, squares, counts))
    kept_float: set[int] = set()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or id(child) not in peaks:
                continue
            smoothed = SmoothedLinear(child, peaks[id(child)])
            # Peak and RMS of the smoothed input x / s, from the per-channel figures.
            inverse = smoothed.inverse_scale.float()
            peak = (peaks[id(child)] * inverse).max()
            rms = (squares[id(child)] / counts[id(child)] * inverse.pow(2)).mean().sqrt()
            if peak > OUTLIER_LIMIT * rms.clamp(min=1e-12):
                kept_float.add(id(child))
            else:
                setattr(parent, child_name, smoothed)
    _fold_into_norms(model)
    return kept_float


def _fuse_shared_inputs(model: nn.Module, stats: tuple[dict, ...]) -> None:
    """Layers that read one input (q/k/v, gate/up of Llama-style blocks) made
    one layer, which takes over their calibrated input ranges."""
    for parent, name, members, _norm in shared_input_groups(model):
        parts = [getattr(parent, member) for member in members]
        if any(id(part) not in stats[0] for part in parts):
            continue
        fused = _concatenated(parts)
        for table in stats:  # one input: the first member's ranges
            table[id(fused)] = table[id(parts[0])]
        for member in members:  # from here on only the lean step runs these layers
            delattr(parent, member)
        setattr(parent, name, fused)


def _concatenated(parts: list[nn.Linear]) -> nn.Linear:
    """One linear layer computing `parts` side by side (their outputs concatenated)."""
    weight = torch.cat([p.weight.detach() for p in parts])
    biased = any(p.bias is not None for p in parts)
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=biased)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if biased:
        fused.bias = nn.Parameter(torch.cat([
            p.bias.detach() if p.bias is not None else weight.new_zeros(p.out_features)
            for p in parts]), requires_grad=False)
    return fused


def _fold_into_norms(model: nn.Module) -> None:
    """A fused layer that reads a norm's output alone divides its input by the
    smoothing scale: the norm's own weight does it instead, one multiply less
    per layer and step."""
    for parent, name, _members, norm in shared_input_groups(model, fused=True):
        smoothed = getattr(parent, name)
        if isinstance(smoothed, SmoothedLinear) and hasattr(norm, "weight"):
            norm.weight.data.mul_(smoothed.inverse_scale.to(norm.weight.dtype))
            setattr(parent, name, smoothed.linear)


def _dynamic_int8(model: nn.Module, calibrate: Calibrate | None) -> nn.Module | None:
    """Every linear layer (the output head included) as dynamic int8, smoothed
    first where there is calibration; None where this torch build has no int8
    engine for the CPU."""
    engine, api = _quantized_engine(), quantize_dynamic()
    if engine is None or api is None:
        return None
    quantize, per_channel_dynamic_qconfig = api
    torch.backends.quantized.engine = engine
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv1D":
                setattr(parent, child_name, _as_linear(child))
    kept_float = _smooth(model, calibrate) if calibrate is not None else set()
    # The output head may be tied to the embedding: quantize_dynamic swaps the
    # head module and leaves the embedding's float weight as it is.
    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and id(module) not in kept_float}
    if kept_float:
        log.info("%d linear layers stay in float32 (activation outliers)", len(kept_float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that torchao is its successor
        return quantize(model, spec, dtype=torch.qint8, inplace=True)


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


def quantize_linears(model: nn.Module, name: str,
                     calibrate: Calibrate | None = None) -> nn.Module | None:
    """`model`'s linear layers in the int8 format `name` ("qint8" or "int8"),
    converted in place; None where this machine has no kernel for it.
    `calibrate` runs sample inputs, for qint8's smoothing."""
    if name == "qint8":
        return _dynamic_int8(model, calibrate)
    if name == "int8":
        return _weight_only_int8(model) if _int8_works(torch.bfloat16) else None
    raise ValueError(f"{name!r} is not an int8 format")


@dataclass
class Formatted:
    prompt_model: nn.Module  # runs the prompt once per turn
    step_model: nn.Module  # runs every new token, in the chosen format
    dtype: str


def apply_dtype(model: nn.Module, name: str, calibration: list[int] | None = None) -> Formatted:
    """The model made ready to decode in a --dtype choice (converted in
    place), with the model its prompt pass runs on.  `calibration`: token ids
    of sample text, which qint8 smooths its activations on."""
    chosen = resolve_dtype(name)
    _fast_activations(model)
    use_shared_prefix_attention(model)
    model = model.float()
    if chosen == "float32":
        return Formatted(model, model, chosen)
    # The prompt pass runs in float32 in every format.  For int8 it is bound by
    # arithmetic, where float32 is the fastest.  For qint8, one activation scale
    # per call spans the whole prompt, and a trained model's first positions
    # (the attention sink) carry activations hundreds of times the rest: on a
    # real 30-layer model that cost a quarter of the top-10 next tokens, while
    # steps of a few rows, from a float32 prompt cache, keep them.
    prompt_model = copy.deepcopy(model)
    if chosen == "qint8":
        def calibrate(m: nn.Module) -> None:
            m(input_ids=torch.tensor([calibration]))

        quantized = quantize_linears(model, "qint8", calibrate if calibration else None)
        if quantized is not None:
            return Formatted(prompt_model, quantized, chosen)
        log.warning("no int8 engine for this CPU in this torch build; using float32")
        return Formatted(prompt_model, prompt_model, "float32")
    if chosen == "int8":
        quantized = quantize_linears(model, "int8")
        if quantized is not None:
            return Formatted(prompt_model, quantized, chosen)
        log.warning("int8 weight kernels are missing in this torch build; using bfloat16")
    return Formatted(prompt_model, model.to(torch.bfloat16), "bfloat16")
