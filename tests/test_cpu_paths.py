"""The format choices on CPUs this machine is not (faked capabilities), and
the fallbacks when a private torch or transformers API is gone."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest
import torch

from rlchat.learner.generator import private_api, weights
from rlchat.learner.generator.weights import apply_dtype, bf16_supported, resolve_dtype


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch):
    monkeypatch.setattr(private_api, "_said", set())  # each test sees its one log line


@pytest.mark.parametrize(("instructions", "capability", "engine", "auto", "bf16"), [
    (True, "AVX512", "x86", "qint8", True),  # a bfloat16 CPU with torch's int8 engine
    (False, "AVX512", "x86", "qint8", False),  # AVX-512 without bfloat16
    (False, "AVX2", "fbgemm", "qint8", False),  # the common AVX2 CPU
    (True, "AVX2", None, "float32", False),  # capped at AVX2: its bfloat16 is not used
    (True, "AVX512", None, "int8", True),  # no int8 engine: weight-only int8 on bfloat16
    (False, "DEFAULT", None, "float32", False),  # neither
])
def test_auto_and_bfloat16_follow_the_cpu(monkeypatch, instructions, capability, engine, auto,
                                          bf16):
    monkeypatch.setattr(weights, "cpu_bf16_instructions", lambda: instructions)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(weights, "_quantized_engine", lambda: engine)
    assert bf16_supported() is bf16
    assert resolve_dtype("auto") == auto
    assert resolve_dtype("float32") == "float32"  # a format named is a format taken


def test_without_the_bfloat16_probe_the_cpu_flags_are_read(monkeypatch, caplog):
    from pathlib import Path

    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    expected = "avx512_bf16" in flags or "amx_tile" in flags
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    with caplog.at_level(logging.WARNING):
        assert private_api.cpu_bf16_instructions() is expected
        assert private_api.cpu_bf16_instructions() is expected
    said = [r for r in caplog.records if "_is_avx512_bf16_supported" in r.getMessage()]
    assert len(said) == 1 and "/proc/cpuinfo" in said[0].getMessage()  # one line, once


def test_without_the_int8_kernel_the_int8_format_falls_back_to_bfloat16(tiny_model,
                                                                         monkeypatch, caplog):
    from rlchat.learner.generator import load_model

    _, model = load_model(str(tiny_model))
    monkeypatch.setattr(torch.ops, "aten", SimpleNamespace())  # the kernel is gone
    with caplog.at_level(logging.WARNING):
        formatted = apply_dtype(model, "int8")
    monkeypatch.undo()
    assert formatted.dtype == "bfloat16"
    assert any("_weight_int8pack_mm" in r.getMessage() for r in caplog.records)
    with torch.inference_mode():  # and it runs
        assert formatted.step_model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[1] == 3


def test_without_torch_ao_qint8_falls_back_to_float32(tiny_model, monkeypatch, caplog):
    from rlchat.learner.generator import load_model

    _, model = load_model(str(tiny_model))
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # import fails
    with caplog.at_level(logging.WARNING):
        formatted = apply_dtype(model, "qint8")
    assert formatted.dtype == "float32"
    assert any("quantize_dynamic" in r.getMessage() for r in caplog.records)


def test_without_the_attention_attribute_the_library_attention_is_used(tiny_model, caplog):
    from rlchat.learner.generator import load_model
    from rlchat.learner.generator.decoding import _share

    _, model = load_model(str(tiny_model))
    step = apply_dtype(model, "float32").step_model
    with torch.inference_mode():
        cache = step(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True).past_key_values
    # A transformers that no longer says which attention a model runs:
    unsaid = SimpleNamespace(config=SimpleNamespace(**{
        k: getattr(step.config, k) for k in ("num_hidden_layers", "n_head", "n_embd")}),
        dtype=step.dtype)
    with caplog.at_level(logging.WARNING):
        repeated, shared = _share(cache, unsaid, rows=3, room=8)
    assert not shared  # the library's own way: the prompt's cache repeated for every row
    assert repeated.layers[0].keys.shape[0] == 3
    assert any("_attn_implementation" in r.getMessage() for r in caplog.records)


def test_threads_follow_the_cores_other_processes_leave_free():
    """Busy neighbours on all cores but one: a turn gets one thread (spinning
    threads on a taken core cost a turn 4x); gone, it gets every core again.
    Polled with a deadline: the sampler reads /proc/stat four times a second."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from rlchat.learner.generator.threads import CoreShare, usable_cores

    if not Path("/proc/stat").exists() or usable_cores() < 2:
        pytest.skip("needs /proc/stat and two cores")
    share = CoreShare()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(share.cores - 1)]

    def until(threads: int) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if share.apply() == threads:
                return True
            time.sleep(0.1)
        return False

    try:
        assert until(1) and torch.get_num_threads() == 1
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert until(share.cores) and torch.get_num_threads() == share.cores
