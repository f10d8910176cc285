"""The generator on the tiny model: formats, streaming, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from learner.dialogue import cut_reply
from learner.errors import GenerationCancelled
from learner.generator import Generator, load_model
from learner.generator.weights import Int8Linear, apply_dtype, bf16_supported

HISTORY = [("hi", "hello, how are you?")]


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
    prompt_passes, steps = [], []
    hooks = [generator.prompt_model.register_forward_hook(lambda *a: prompt_passes.append(1)),
             generator.model.register_forward_hook(lambda *a: steps.append(1))]
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
    assert len(prompt_passes) == 1 and steps == []
    assert 1 <= len(seen) <= 8  # one token per row at most


def test_a_cancelled_say_stores_nothing(make_agent, tmp_path):
    agent = make_agent(directory=tmp_path / "data")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        agent.say("hello", cancel=cancel)
    assert agent.store.count_turns() == 0 and agent.open_turn is None
    assert agent.say("hello").candidates  # and the next message works


def test_the_stop_ends_rows_early(generator):
    generator.reseed(3)
    proposal = generator.propose(HISTORY, "how are you?", 4)
    # The tiny model ends its replies with a line break well before 40 tokens.
    assert generator.last_steps < generator.max_new_tokens - 1
    assert all("\n" not in c.text for c in proposal.candidates)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "int8"])
def test_each_format_keeps_the_next_token_distribution(tiny_model, name):
    if name != "float32" and not bf16_supported():
        pytest.skip("this CPU has no fast bfloat16")
    tokenizer, reference = load_model(str(tiny_model))
    _, other = load_model(str(tiny_model))
    formatted = apply_dtype(other, name)
    assert formatted.dtype == name
    other = formatted.step_model
    has_int8 = any(isinstance(m, Int8Linear) for m in other.modules())
    assert has_int8 == (name == "int8")
    ids = torch.tensor([tokenizer("User: hello, how are you?\nAssistant:")["input_ids"]])
    with torch.inference_mode():
        p = reference(input_ids=ids).logits[0, -1].float()
        q = other(input_ids=ids).logits[0, -1].float()
    overlap = len(set(p.topk(10).indices.tolist()) & set(q.topk(10).indices.tolist()))
    assert overlap >= 8
    kl = (p.log_softmax(-1).exp() * (p.log_softmax(-1) - q.log_softmax(-1))).sum()
    assert float(kl) < 0.01


def test_auto_picks_a_format_by_the_cpu():
    from learner.generator.weights import resolve_dtype

    assert resolve_dtype("auto") == ("int8" if bf16_supported() else "float32")
    with pytest.raises(ValueError):
        resolve_dtype("fp8")


def test_a_prompt_that_extends_the_last_one_runs_only_its_new_tokens(tiny_model):
    chat = Generator.load(str(tiny_model), seed=5)
    first = chat.propose([], "hello", 4)
    history = [("hello", first.candidates[0].text)]
    full = len(chat.prompt_ids(history, "and then?"))
    chat.reseed(100)
    reused = chat.propose(history, "and then?", 4)
    assert 0 < chat.last_prompt_run < full  # only the new exchange ran
    fresh = Generator.load(str(tiny_model), seed=100)
    expected = fresh.propose(history, "and then?", 4)
    assert fresh.last_prompt_run == full
    assert [c.text for c in reused.candidates] == [c.text for c in expected.candidates]
    np.testing.assert_allclose(reused.context_hidden, expected.context_hidden, atol=1e-4)
    for a, b in zip(reused.candidates, expected.candidates, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    # A prompt that does not extend the last one (a new session) runs whole.
    chat.propose([], "something else", 4)
    assert chat.last_prompt_run == len(chat.prompt_ids([], "something else"))


def test_the_prompt_keeps_the_newest_whole_lines_that_fit(generator):
    from learner.dialogue import format_turns

    budget = generator.context_size - generator.max_new_tokens
    history = [(f"question number {i} about cooking", f"answer number {i}, with rice")
               for i in range(40)]
    ids = generator.prompt_ids(history, "and now?")
    lines = format_turns(history, "and now?")

    def count(start: int) -> int:
        text = "\n".join(lines[start:])
        return len(generator.tokenizer(text, add_special_tokens=False)["input_ids"])

    first = min(s for s in range(len(lines)) if count(s) <= budget)
    assert first > 0 and len(ids) == count(first) <= budget  # the longest suffix that fits
    assert generator.tokenizer.decode(ids).endswith("and now?\nAssistant:")
    huge = generator.prompt_ids([], "word " * 2000)  # one line over the budget
    assert len(huge) == budget and generator.tokenizer.decode(huge).endswith("Assistant:")
