"""Prompt formats end to end: a chat-template model (the tiny Llama-style one
from `init-model --chat`), DialoGPT's EOS turns, and GPT-2's lines."""

from __future__ import annotations

import json

import pytest

from rlchat.learner.agent import open_agent
from rlchat.learner.export import export_dpo, export_turns
from rlchat.learner.prompt_format import FormatError, PlainFormat, make_format
from rlchat.learner.records import Turn
from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.headless import handle_line


@pytest.fixture
def chat_agent(tiny_chat_model, data_dir):
    agent = open_agent(Store(data_dir), Settings(model=str(tiny_chat_model)), seed=0)
    yield agent
    agent.store.close()


def request(agent, **fields) -> dict:
    answer = handle_line(agent, json.dumps(fields))
    assert answer["ok"], answer
    return answer


def test_a_chat_model_is_prompted_through_its_template_over_many_turns(chat_agent):
    generator = chat_agent.source
    assert generator.identity["format"] == "chat-template"
    assert generator.max_new_tokens == 128  # the chat default
    multi_line = 0
    for i in range(20):
        fields = {"op": "say", "text": f"what should I cook tonight? ({i})"}
        if i == 0:
            fields["system"] = "You are a terse cook."
        answer = request(chat_agent, **fields)
        texts = [c["text"] for c in answer["candidates"]]
        multi_line += sum("\n" in t for t in texts)
        for text in texts:  # the stop tokens end replies; none leaks into the text
            assert "<|im_" not in text and "im_start" not in text
        if i == 1:  # the second turn runs only its new exchange and message
            assert 0 < generator.last_prompt_run < len(generator.tokenizer(
                Turn.from_dict(chat_agent.store.get_turn(answer["turn"])).prompt,
                add_special_tokens=False)["input_ids"])
        request(chat_agent, op="choose", turn=answer["turn"], id=answer["candidates"][0]["id"],
                rating=4)
    assert multi_line >= 1
    turns = [Turn.from_dict(t) for t in chat_agent.store.turns()]
    for turn in turns:
        assert turn.prompt.startswith("<|im_start|>system\nYou are a terse cook.<|im_end|>\n")
        assert "<|im_start|>user\n" in turn.prompt
        assert turn.prompt.endswith("<|im_start|>assistant\n")
        assert turn.system == "You are a terse cook."
        assert turn.generator["format"] == "chat-template"
    assert chat_agent.store.get_session("1")["system"] == "You are a terse cook."
    # The DPO prompt is the rendered template, system prompt included.
    pairs = list(export_dpo(turns))
    assert pairs and all(p["prompt"] == turns[0].prompt for p in pairs[:1])
    assert all(p["prompt"].startswith("<|im_start|>system\nYou are a terse cook.")
               for p in pairs)
    record = next(export_turns(turns))
    assert record["system"] == "You are a terse cook." and record["prompt"] == turns[0].prompt


def test_the_system_prompt_is_set_on_a_sessions_first_turn_only(chat_agent):
    first = request(chat_agent, op="say", text="hello", system="Speak like a pirate.")
    again = handle_line(chat_agent, json.dumps({"op": "say", "text": "hi", "system": "Be calm."}))
    assert again["error"]["code"] == "system_fixed"
    same = request(chat_agent, op="say", text="hi", system="Speak like a pirate.")
    assert same["session"] == first["session"]
    request(chat_agent, op="end")
    other = request(chat_agent, op="say", text="hello", system="Be calm.")
    assert other["session"] != first["session"]
    assert chat_agent.store.get_session(other["session"])["system"] == "Be calm."
    bad = handle_line(chat_agent, json.dumps({"op": "say", "text": "x", "system": 3}))
    assert bad["error"]["code"] == "bad_field"


def test_a_reply_that_never_ends_is_cut_and_marked(tiny_chat_model, data_dir):
    agent = open_agent(Store(data_dir), Settings(model=str(tiny_chat_model), max_new_tokens=3),
                       seed=0)
    try:
        answer = request(agent, op="say", text="tell me about the weather")
        assert any(c["truncated"] for c in answer["candidates"])
        assert all(c["truncated"] == (Turn.from_dict(agent.store.get_turn(answer["turn"]))
                                      .candidates[c["id"]].truncated)
                   for c in answer["candidates"])
    finally:
        agent.store.close()


def test_dialogpt_turns_end_with_eos(tiny_model, data_dir):
    agent = open_agent(Store(data_dir), Settings(model=str(tiny_model), prompt_format="dialogpt"),
                       seed=0)
    try:
        generator = agent.source
        eos = generator.tokenizer.eos_token
        first = request(agent, op="say", text="hello there")
        request(agent, op="choose", turn=first["turn"], id=first["candidates"][0]["id"])
        second = request(agent, op="say", text="and you?")
        prompt = Turn.from_dict(agent.store.get_turn(second["turn"])).prompt
        reply = first["candidates"][0]["text"]
        assert prompt == f"hello there{eos}{reply}{eos}and you?{eos}"
        assert generator.format.stop_ids == {generator.tokenizer.eos_token_id}
    finally:
        agent.store.close()


def test_gpt2_keeps_its_plain_lines(tiny_model, data_dir):
    agent = open_agent(Store(data_dir), Settings(model=str(tiny_model), system="Be kind."),
                       seed=0)
    try:
        assert agent.source.identity["format"] == "gpt2" and agent.source.max_new_tokens == 40
        answer = request(agent, op="say", text="hello there")
        prompt = Turn.from_dict(agent.store.get_turn(answer["turn"])).prompt
        assert prompt == "Be kind.\nUser: hello there\nAssistant:"
        assert all("\n" not in c["text"] for c in answer["candidates"])
    finally:
        agent.store.close()


class FakeTokenizer:
    """A tokenizer whose chat template misbehaves as asked."""

    eos_token_id = 0
    all_special_ids = [0]

    def __init__(self, render) -> None:
        self.chat_template = "{{ broken }}"
        self.render = render

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return self.render(messages, add_generation_prompt)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}


def test_templates_that_cannot_be_used_are_refused_in_one_sentence():
    def fails(messages, generation):
        raise ValueError("unknown tag 'broken'")

    with pytest.raises(FormatError, match="does not render.*--format gpt2"):
        make_format("chat-template", FakeTokenizer(fails), {0}, "m")

    def whole_conversation(messages, generation):  # every turn numbered from the end
        n = len(messages)
        return "".join(f"[{n - i}]{m['content']}" for i, m in enumerate(messages))

    with pytest.raises(FormatError, match="--format gpt2"):
        make_format("chat-template", FakeTokenizer(whole_conversation), {0}, "m")

    class Plain:
        chat_template = None

    with pytest.raises(FormatError, match="no chat template"):
        make_format("chat-template", Plain(), {0}, "m")
    with pytest.raises(FormatError, match="no end-of-sequence"):
        make_format("dialogpt", Plain(), set(), "m")


def test_auto_detects_the_format():
    class Plain:
        chat_template = None

        def get_vocab(self):
            return {"a": 1, "\n": 2}

        def convert_tokens_to_string(self, tokens):
            return "".join(tokens)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1]}

    assert make_format("auto", Plain(), {0}, "microsoft/DialoGPT-small").name == "dialogpt"
    plain = make_format("auto", Plain(), {0}, "gpt2")
    assert isinstance(plain, PlainFormat) and plain.stop_ids == {0, 2}


@pytest.fixture
def cut_agent(tiny_chat_model, data_dir):
    """An agent whose replies stop at 4 tokens: most are cut there."""
    agent = open_agent(Store(data_dir), Settings(model=str(tiny_chat_model), max_new_tokens=4),
                       seed=0)
    yield agent
    agent.store.close()


def say_until_cut(agent) -> tuple[dict, dict]:
    """A turn's answer and one of its candidates that was cut."""
    answer = request(agent, op="say", text="tell me about the weather")
    return answer, next(c for c in answer["candidates"] if c["truncated"])


def test_a_cut_reply_is_continued_and_the_pick_stores_and_exports_it(cut_agent):
    agent = cut_agent
    answer, cut = say_until_cut(agent)
    events = []
    more = handle_line(agent, json.dumps({"op": "continue", "turn": answer["turn"],
                                          "id": cut["id"], "stream": True}), events.append)
    assert more["ok"] and more["id"] == cut["id"] and more["turn"] == answer["turn"]
    assert len(more["text"]) > len(cut["text"]) and more["text"].startswith(cut["text"][:8])
    assert events and all(e["event"] == "token" and e["id"] == cut["id"] for e in events)
    stored = Turn.from_dict(agent.store.get_turn(answer["turn"])).candidates[cut["id"]]
    assert stored.text == more["text"] and stored.truncated == more["truncated"]
    assert stored.tokens > 4
    # Features stay those it was ranked by (replay learns what was shown).
    ranked = Turn.from_dict(agent.store.get_turn(answer["turn"]))
    assert ranked.features().shape[0] == len(ranked.candidates)
    ended = [c for c in answer["candidates"] if not c["truncated"]]
    if ended:
        refused = handle_line(agent, json.dumps({"op": "continue", "turn": answer["turn"],
                                                 "id": ended[0]["id"]}))
        assert refused["error"]["code"] == "not_cut"
    request(agent, op="choose", turn=answer["turn"], id=cut["id"], rating=4)
    after = request(agent, op="say", text="and tomorrow?")
    prompt = Turn.from_dict(agent.store.get_turn(after["turn"])).prompt
    assert more["text"] in prompt  # the whole reply continued the conversation
    record = next(export_turns([Turn.from_dict(t) for t in agent.store.turns()]))
    assert record["candidates"][cut["id"]]["text"] == more["text"]
    gone = handle_line(agent, json.dumps({"op": "continue", "turn": answer["turn"],
                                          "id": cut["id"]}))
    assert gone["error"]["code"] == "already_answered"


def test_a_cut_pick_never_continued_is_exported_as_shown(cut_agent):
    answer, cut = say_until_cut(cut_agent)
    request(cut_agent, op="choose", turn=answer["turn"], id=cut["id"], rating=5)
    record = next(export_turns([Turn.from_dict(t) for t in cut_agent.store.turns()]))
    exported = record["candidates"][cut["id"]]
    assert exported["text"] == cut["text"] and exported["truncated"] is True
