"""The generator on the tiny model: formats, streaming, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from rlchat.learner.dialogue import cut_reply
from rlchat.learner.errors import GenerationCancelled
from rlchat.learner.generator import Generator, load_model
from rlchat.learner.generator.weights import (
    Int8Linear,
    _quantized_engine,
    apply_dtype,
    bf16_supported,
)

HISTORY = [("hi", "hello, how are you?")]
HAS_INT8_ENGINE = _quantized_engine() is not None


@pytest.fixture(scope="module")
def generator(tiny_model) -> Generator:
    return Generator.load(str(tiny_model), seed=11)


def test_streaming_gives_the_same_candidates_as_not_streaming(generator):
    generator.reseed(11)
    plain = generator.propose(HISTORY, "what do you like?", 8)
    generator.reseed(11)
    streamed: dict[int, str] = {}
    events = []

    def on_token(row: int, text: str) -> None:
        events.append(row)
        streamed[row] = streamed.get(row, "") + text

    live = generator.propose(HISTORY, "what do you like?", 8, on_token=on_token)
    assert [c.text for c in live.candidates] == [c.text for c in plain.candidates]
    assert [c.logprob for c in live.candidates] == [c.logprob for c in plain.candidates]
    assert len(events) > len(streamed) > 1 and set(streamed) <= set(range(8))
    # Every candidate is what one row streamed, cut at the turn's end.
    assert {c.text for c in live.candidates} <= {cut_reply(t) for t in streamed.values()}


def test_cancel_stops_before_the_next_step(generator):
    cancel = threading.Event()
    # Some formats run the prompt and the steps on one model, others on two:
    # count forward passes over whichever distinct models this format uses.
    passes = []
    bodies = (generator.prompt_model.base_model, generator.model.base_model)
    models = {id(m): m for m in bodies}.values()
    hooks = [m.register_forward_hook(lambda *a: passes.append(1)) for m in models]
    seen = []

    def on_token(row: int, text: str) -> None:
        seen.append(row)
        cancel.set()  # during the first step's tokens

    try:
        with pytest.raises(GenerationCancelled):
            generator.propose(HISTORY, "tell me more", 8, on_token=on_token, cancel=cancel)
        # A set cancel before starting runs nothing at all.
        with pytest.raises(GenerationCancelled):
            generator.propose(HISTORY, "again", 4, cancel=cancel)
    finally:
        for hook in hooks:
            hook.remove()
    # The prompt pass drew the first tokens; no step ran after the cancel.
    assert len(passes) == 1
    assert 1 <= len(seen) <= 8  # one token per row at most


def test_a_cancelled_say_stores_nothing(make_agent, tmp_path):
    agent = make_agent(directory=tmp_path / "data")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        agent.say("hello", cancel=cancel)
    assert agent.store.count_turns() == 0 and agent.open_turn is None
    assert agent.say("hello").candidates  # and the next message works


def test_each_row_leaves_the_batch_at_its_turn_boundary(generator):
    from rlchat.learner.generator.decoding import sample_rows

    ids = generator.prompt_ids(HISTORY, "how are you?")
    rows = sample_rows(generator.model, ids, 8, max_new_tokens=40, sampling=generator.sampling,
                       stop_ids=generator._stop_ids, generator=torch.Generator().manual_seed(3),
                       prompt_model=generator.prompt_model)
    stops = set(generator._stop_ids.tolist())
    for tokens in rows.tokens:  # up to and including its first stop token, then nothing
        first = next((i for i, t in enumerate(tokens) if t in stops), None)
        assert first == len(tokens) - 1 if first is not None else len(tokens) == 40
    # The tiny model ends most replies with a line break well before 40 tokens.
    assert sum(len(tokens) < 40 for tokens in rows.tokens) >= 4
    proposal = generator.propose(HISTORY, "how are you?", 4)
    assert all("\n" not in c.text for c in proposal.candidates)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "int8", "qint8"])
def test_each_format_keeps_the_next_token_distribution(tiny_model, name):
    # bfloat16 and int8 run everywhere: emulated (slowly) where the CPU lacks bfloat16.
    if name == "qint8" and not HAS_INT8_ENGINE:
        pytest.skip("this torch build has no int8 engine for this CPU")
    tokenizer, reference = load_model(str(tiny_model))
    _, other = load_model(str(tiny_model))
    formatted = apply_dtype(other, name)
    assert formatted.dtype == name
    other = formatted.step_model
    assert any(isinstance(m, Int8Linear) for m in other.modules()) == (name == "int8")
    dynamic = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in other.modules())
    assert dynamic == (name == "qint8")
    if name != "float32":  # the prompt pass runs on a float32 copy in every format
        assert formatted.prompt_model is not formatted.step_model
        assert all(p.dtype == torch.float32 for p in formatted.prompt_model.parameters())
        assert not any(type(m).__module__.startswith("torch.ao.nn.quantized")
                       for m in formatted.prompt_model.modules())
    ids = torch.tensor([tokenizer("User: hello, how are you?\nAssistant:")["input_ids"]])
    with torch.inference_mode():
        p = reference(input_ids=ids).logits[0, -1].float()
        q = other(input_ids=ids).logits[0, -1].float()
    overlap = len(set(p.topk(10).indices.tolist()) & set(q.topk(10).indices.tolist()))
    assert overlap >= 8
    kl = (p.log_softmax(-1).exp() * (p.log_softmax(-1) - q.log_softmax(-1))).sum()
    assert float(kl) < 0.01


def test_auto_picks_a_format_by_the_cpu():
    from rlchat.learner.generator.weights import resolve_dtype

    # Dynamic int8 measured fastest on CPUs with and without bfloat16; a torch
    # build without its engine falls back by the CPU.
    fallback = "int8" if bf16_supported() else "float32"
    assert resolve_dtype("auto") == ("qint8" if _quantized_engine() else fallback)
    with pytest.raises(ValueError):
        resolve_dtype("fp8")


@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_a_prompt_that_extends_the_last_one_runs_only_its_new_tokens(tiny_model, dtype):
    chat = Generator.load(str(tiny_model), seed=5, dtype=dtype)
    first = chat.propose([], "hello", 4)
    history = [("hello", first.candidates[0].text)]
    full = len(chat.prompt_ids(history, "and then?"))
    chat.reseed(100)
    reused = chat.propose(history, "and then?", 4)
    assert 0 < chat.last_prompt_run < full  # only the new exchange ran
    fresh = Generator.load(str(tiny_model), seed=100, dtype=dtype)
    expected = fresh.propose(history, "and then?", 4)
    assert fresh.last_prompt_run == full
    if chat.dtype == "qint8":
        # Dynamic int8 rounds each call's activations on their own range, so
        # a prompt run in two parts is close to, not equal to, one run whole.
        np.testing.assert_allclose(reused.context_hidden, expected.context_hidden, atol=0.05)
    else:
        assert [c.text for c in reused.candidates] == [c.text for c in expected.candidates]
        np.testing.assert_allclose(reused.context_hidden, expected.context_hidden, atol=1e-4)
        for a, b in zip(reused.candidates, expected.candidates, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    # A prompt that does not extend the last one (a new session) runs whole.
    chat.propose([], "something else", 4)
    assert chat.last_prompt_run == len(chat.prompt_ids([], "something else"))


def test_a_long_dialogue_evicts_old_exchanges_in_blocks_then_extends_again(generator):
    budget = generator.context_size - generator.max_new_tokens
    history: list[tuple[str, str]] = []
    prompts, starts = [], []
    for i in range(60):
        message = f"question number {i} about cooking"
        prompts.append(generator.prompt_ids(history, message))
        starts.append(generator._window.start)
        history.append((message, f"answer number {i}, with rice"))
    assert all(len(ids) <= budget for ids in prompts)
    evictions = [i for i in range(1, 60) if starts[i] != starts[i - 1]]
    assert 2 <= len(evictions) <= 12  # in blocks, not a cut every turn
    for i in evictions:  # each eviction leaves at most half the budget
        assert len(prompts[i]) <= budget // 2
    # Between evictions, every prompt extends the one before it.
    for i in range(evictions[0] + 1, 60):
        if i not in evictions:
            assert prompts[i][: len(prompts[i - 1])] == prompts[i - 1]
    # The blocks, tokenized one by one, are exactly the whole text tokenized.
    text = generator.tokenizer.decode(prompts[-1])
    assert generator.tokenizer(text, add_special_tokens=False)["input_ids"] == prompts[-1]
    assert text.startswith("User: question number")
    assert text.endswith("59 about cooking\nAssistant:")


def test_a_new_dialogue_starts_its_own_window_and_a_huge_message_keeps_its_end(generator):
    budget = generator.context_size - generator.max_new_tokens
    generator.prompt_ids([(f"q{i}", f"a{i}") for i in range(200)], "next")
    assert generator._window.start > 0
    fresh = generator.prompt_ids([("hello", "hi there")], "how are you?")
    assert generator._window.start == 0
    assert generator.tokenizer.decode(fresh) == (
        "User: hello\nAssistant: hi there\nUser: how are you?\nAssistant:")
    huge = generator.prompt_ids([], "word " * 2000)
    assert len(huge) == budget and generator.tokenizer.decode(huge).endswith("Assistant:")


@pytest.mark.parametrize("kind", ["tiny_gpt2", "llama_grouped_query"])
def test_shared_prefix_attention_draws_what_repeating_the_prompt_draws(tiny_model, kind):
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from rlchat.learner.generator.decoding import sample_rows
    from rlchat.learner.generator.lean_step import lean_step
    from rlchat.learner.sampling import Sampling

    torch.manual_seed(0)
    if kind == "tiny_gpt2":
        model = load_model(str(tiny_model))[1]
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=300, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2)).eval()
    plain = copy.deepcopy(model)
    plain.set_attn_implementation("sdpa")
    shared = apply_dtype(model, "float32").step_model
    assert shared.config._attn_implementation == "rlchat_shared_prefix"
    assert lean_step(shared) is not None  # the steps skip the library's plumbing
    prompt = torch.randint(0, model.config.vocab_size, (30,)).tolist()

    def draw(m):
        return sample_rows(m, prompt, 4, max_new_tokens=12, sampling=Sampling(), stop_ids=None,
                           generator=torch.Generator().manual_seed(1))

    a, b = draw(shared), draw(plain)
    assert a.tokens == b.tokens and a.steps == b.steps == 11
    np.testing.assert_allclose(np.array(a.logprobs), np.array(b.logprobs), atol=1e-4)
    for row_a, row_b in zip(a.states, b.states, strict=True):  # the final norm's output
        np.testing.assert_allclose(torch.stack(row_a).numpy(), torch.stack(row_b).numpy(),
                                   atol=1e-4)


def test_smoothing_moves_activation_scale_into_the_weights_without_changing_the_result():
    from torch import nn

    from rlchat.learner.generator.weights import SmoothedLinear

    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    x = torch.randn(5, 16)
    x[:, 3] *= 50  # an outlier channel, as trained transformers have
    smoothed = SmoothedLinear(linear, x.abs().amax(dim=0))
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), linear(x), rtol=1e-5, atol=1e-4)
        evened = (x * smoothed.inverse_scale).abs().amax(dim=0)
    # The outlier channel's range is now much closer to the others'.
    assert evened.max() / evened.median() < (x.abs().amax(0).max() / x.abs().amax(0).median()) / 4


@pytest.mark.skipif(not HAS_INT8_ENGINE, reason="no int8 engine for this CPU")
def test_qint8_leaves_a_layer_whose_inputs_stay_outlier_ridden_in_float32():
    from torch import nn

    from rlchat.learner.generator.weights import quantize_linears

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32), nn.Linear(32, 8)).eval()
    x = torch.randn(256, 32)
    x[5] *= 400  # one token far above the rest in every channel: smoothing cannot even it

    quantized = quantize_linears(model, "qint8", lambda m: m(x))
    first, last = quantized[0], quantized[2]
    assert type(first) is nn.Linear  # kept exact
    # Normal inputs: smoothed, then int8.
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in last.modules())
    with torch.inference_mode():
        torch.testing.assert_close(quantized(x), nn.Sequential(first, quantized[1], last)(x))
