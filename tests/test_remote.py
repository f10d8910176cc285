"""Candidates from real OpenAI-compatible servers: llama.cpp's llama-server
(n choices and log-probs in one request) and `transformers serve` (neither),
both serving the tiny chat model on 127.0.0.1, and their faults."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from rlchat.learner.agent import Agent, load_source
from rlchat.learner.errors import AgentError, GenerationCancelled
from rlchat.learner.features import FEATURE_NAMES, MODEL_COLUMNS
from rlchat.learner.policy_store import new_policy
from rlchat.learner.remote import RemoteGenerator
from rlchat.learner.settings import Settings
from rlchat.learner.update import current, replay
from rlchat.storage import Store
from rlchat.testkit.servers import free_port, llama_dir, llama_server, to_gguf, transformers_server

needs_llama = pytest.mark.skipif(
    llama_dir() is None and not os.environ.get("CI"),
    reason="llama-server is not built here (.ci/llama-server.sh builds it)")
HIDDEN = [i for i, name in enumerate(FEATURE_NAMES) if name.startswith("hidden_")]
LOGPROB = FEATURE_NAMES.index("logprob")


@pytest.fixture(scope="module")
def gguf(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if llama_dir() is None:
        pytest.fail("llama-server is required in CI: .ci/llama-server.sh builds it")
    return to_gguf(tiny_chat_model, tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")


@pytest.fixture(scope="module")
def llama(gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    server = llama_server(gguf, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tserve(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = transformers_server(tiny_chat_model, tmp_path_factory.mktemp("ts") / "serve.log")
    server.start()
    yield server
    server.stop()


def settings_for(server, model: str = "tinychat", **kw) -> Settings:
    return Settings(model=model, base_url=server.base_url, candidates=4, samples=8, **kw)


def open_remote(data_dir: Path, settings: Settings, seed: int = 1) -> Agent:
    return Agent(Store(data_dir), load_source(settings, seed=seed), settings, seed=seed)


@needs_llama
def test_llama_server_probe_measures_n_logprobs_context_and_rendering(llama):
    remote = RemoteGenerator(llama.base_url, "tinychat")
    caps = remote.connect()
    assert caps.endpoint == "chat" and caps.n_choices and caps.logprobs
    assert caps.context == 4096 // 8  # per slot
    assert caps.tokenize == "content" and caps.render == "apply-template"
    assert caps.extra_samplers and caps.build.startswith("llama.cpp")
    assert "tinychat" in caps.models
    remote.close()


@needs_llama
def test_llama_server_turns_one_request_logprobs_rendered_prompt(llama, data_dir):
    agent = open_remote(data_dir, settings_for(llama))
    rows: set[int] = set()
    for turn in range(3):
        view = agent.say(f"Hello number {turn}", on_token=lambda row, _t: rows.add(row))
        assert agent.source.last_requests == 1  # 8 candidates, one sampling request
        agent.choose(view.turn, view.candidates[-1].id, 4)
    assert len(rows) > 1  # the choices streamed side by side, each on its row
    agent.end()
    turns = [current(r) for r in agent.store.turns()]
    for turn in turns:
        assert turn.prompt.startswith("<|im_start|>user\n") and turn.messages is None
        assert turn.prompt.endswith("<|im_start|>assistant\n")
        assert all(c.logprob is not None and c.logprob < 0 for c in turn.candidates)
        phi = turn.features()
        assert np.all(phi[:, HIDDEN] == 0) and np.any(phi[:, LOGPROB] != 0)
        assert turn.generator["server"] == llama.base_url
        assert turn.generator["format"] == "chat-template"
        assert turn.generator["family"].startswith("remote:tinychat:")
    assert "Hello number 0" in turns[1].prompt  # the dialogue so far goes with the message
    # Replaying the stored turns gives the live policy, bit for bit.
    replayed = new_policy(agent.policy.config)
    replay(replayed, turns)
    assert np.array_equal(replayed.w, agent.policy.w)
    agent.store.close()


@needs_llama
def test_switching_local_to_remote_forgets_the_model_columns(llama, make_agent):
    agent = make_agent(seed=3)
    for i in range(3):
        view = agent.say(f"local message {i}")
        agent.choose(view.turn, view.candidates[0].id, 5)
    assert np.any(agent.policy.w[MODEL_COLUMNS] != 0)
    settings = settings_for(llama)
    agent.end()
    agent.attach(load_source(settings, seed=3))
    view = agent.say("now served")
    assert np.all(agent.policy.w[MODEL_COLUMNS] == 0)  # forgotten at the switch
    agent.choose(view.turn, view.candidates[0].id, 5)
    replayed = new_policy(agent.policy.config)
    replay(replayed, [current(r) for r in agent.store.turns()])
    assert np.array_equal(replayed.w, agent.policy.w)


def test_transformers_serve_one_request_per_candidate_no_logprobs(tserve, data_dir):
    model = str(tserve.command[2])
    agent = open_remote(data_dir, settings_for(tserve, model=model))
    caps = agent.source.capabilities
    assert caps is not None and not caps.n_choices and not caps.logprobs
    assert not caps.extra_samplers  # it refuses top_k and min_p, so they are not sent
    for turn in range(2):
        view = agent.say(f"What is for dinner {turn}?", system="Be brief.")
        assert agent.source.last_requests == 8
        assert len(view.candidates) > 1  # the 8 requests drew different replies
        agent.choose(view.turn, view.candidates[0].id, 3)
    turns = [current(r) for r in agent.store.turns()]
    for turn in turns:
        assert all(c.logprob is None for c in turn.candidates)
        assert np.all(turn.features()[:, LOGPROB] == 0)  # absent, not invented
        assert turn.prompt is None  # the server cannot render it: the messages are kept
        assert turn.messages[0] == {"role": "system", "content": "Be brief."}
        assert turn.messages[-1]["role"] == "user"
    assert turns[1].messages[1]["content"] == "What is for dinner 0?"
    agent.store.close()


def test_transformers_serve_without_a_model_serves_one_on_request_and_greedy_is_told(
        tiny_chat_model, data_dir, tmp_path, capsys):
    """It lists no model and loads any it is asked for; a model whose
    generation config does not sample is decoded greedily whatever is sent."""
    import json
    import shutil

    from rlchat.tui.cli import main

    greedy = tmp_path / "greedy"
    shutil.copytree(tiny_chat_model, greedy)
    config = json.loads((greedy / "generation_config.json").read_text())
    (greedy / "generation_config.json").write_text(json.dumps({**config, "do_sample": False}))
    server = transformers_server(None, tmp_path / "serve.log").start()
    try:
        agent = open_remote(data_dir, settings_for(server, model=str(greedy)))
        caps = agent.source.capabilities
        assert caps is not None, agent.source.problem
        assert caps.models == () and not caps.listed and caps.samples_vary is False
        view = agent.say("What is for dinner?")
        assert len(view.candidates) == 1  # 8 requests, 8 times the same reply
        warning = agent.take_warning()
        assert warning is not None and warning.code == "identical_replies"
        assert "greedily" in warning.message
        agent.store.close()
        assert main(["probe", "--base-url", server.base_url, "--model", str(greedy)]) == 0
        assert "samples differ: no" in capsys.readouterr().out
    finally:
        server.stop()


@needs_llama
def test_server_down_at_start_then_up(gguf, data_dir, tmp_path):
    port = free_port()
    server = llama_server(gguf, tmp_path / "late.log", port=port)
    settings = settings_for(server)
    agent = open_remote(data_dir, settings)  # opens without the server
    assert agent.source.problem is not None
    assert agent.source.problem.code == "backend_unreachable"
    with pytest.raises(AgentError) as caught:
        agent.say("anyone there?")
    assert caught.value.code == "backend_unreachable"
    assert "--base-url" in caught.value.message and "\n" not in caught.value.message
    assert agent.store.count_turns() == 0
    server.start()
    try:
        view = agent.say("anyone there?")  # the retry is just sending again
        assert view.candidates
    finally:
        server.stop()
        agent.store.close()


@needs_llama
def test_wrong_model_names_the_served_ones(llama):
    remote = RemoteGenerator(llama.base_url, "gpt-5")
    with pytest.raises(AgentError) as caught:
        remote.connect()
    assert caught.value.code == "backend_model"
    assert "'gpt-5'" in caught.value.message and "tinychat" in caught.value.message


@needs_llama
def test_wrong_key_names_its_variable_and_is_never_stored(gguf, data_dir, tmp_path,
                                                          monkeypatch):
    server = llama_server(gguf, tmp_path / "key.log", extra=("--api-key", "s3cret-right"))
    server.start()
    try:
        monkeypatch.setenv("RLCHAT_TEST_KEY", "s3cret-wrong")
        remote = RemoteGenerator(server.base_url, "tinychat", api_key_env="RLCHAT_TEST_KEY")
        with pytest.raises(AgentError) as caught:
            remote.connect()
        assert caught.value.code == "backend_auth"
        assert "RLCHAT_TEST_KEY" in caught.value.message
        assert "s3cret" not in caught.value.message
        monkeypatch.setenv("RLCHAT_TEST_KEY", "s3cret-right")
        agent = open_remote(data_dir, settings_for(server, api_key_env="RLCHAT_TEST_KEY"))
        view = agent.say("with the right key")
        agent.choose(view.turn, view.candidates[0].id, 4)
        agent.end()
        agent.store.close()
        for path in data_dir.rglob("*"):
            if path.is_file():
                assert b"s3cret" not in path.read_bytes(), path
    finally:
        server.stop()


@needs_llama
def test_server_killed_mid_stream_loses_nothing(gguf, data_dir, tmp_path):
    server = llama_server(gguf, tmp_path / "kill.log").start()
    # Long, hot samples: the kill at the first token lands while the server is
    # still drawing (short replies could all be in the socket already).
    agent = open_remote(data_dir, settings_for(server, max_new_tokens=400, temperature=2.0))
    view = agent.say("first")
    agent.choose(view.turn, view.candidates[0].id, 5)
    version = agent.policy.version

    def kill_on_first_token(row: int, text: str) -> None:
        server.kill()

    with pytest.raises(AgentError) as caught:
        agent.say("second", on_token=kill_on_first_token)
    assert caught.value.code == "backend_unreachable"
    assert agent.store.count_turns() == 1 and agent.policy.version == version
    agent.store.close()


@needs_llama
def test_cancel_closes_the_stream_and_the_next_message_works(llama, data_dir):
    agent = open_remote(data_dir, settings_for(llama, max_new_tokens=400))
    cancel = threading.Event()
    with pytest.raises(GenerationCancelled):
        agent.say("tell me a long story", on_token=lambda r, t: cancel.set(), cancel=cancel)
    assert agent.store.count_turns() == 0
    view = agent.say("short one then")
    assert view.candidates
    agent.store.close()


@needs_llama
def test_prompt_over_the_context_evicts_more_and_retries(gguf, data_dir, tmp_path):
    server = llama_server(gguf, tmp_path / "ctx.log", parallel=1, context=256).start()
    try:
        agent = open_remote(data_dir, settings_for(server, max_new_tokens=16))
        remote = agent.source
        remote._window.budget = 10_000  # as if the server's context had been overstated
        for i in range(6):
            view = agent.say(f"message {i} " + "words " * 20)
            agent.choose(view.turn, view.candidates[0].id, 3)
        assert remote._window.budget < 256  # the server's refusal taught it the real size
        assert remote._window.start > 0  # old exchanges left the prompt
        agent.store.close()
    finally:
        server.stop()


def test_transformers_serve_context_refusal_evicts_and_retries(tserve, data_dir):
    """It tells no context length, and refuses a prompt over the model's in
    words of its own ("takes at most 512"): the window learns the size."""
    agent = open_remote(data_dir, settings_for(tserve, model=str(tserve.command[2]),
                                               max_new_tokens=8))
    for i in range(6):
        view = agent.say(f"message {i} " + "words " * 120)
        agent.choose(view.turn, view.candidates[0].id, 3)
    window = agent.source._window
    assert window.budget == 512 - 8 and window.start > 0
    agent.store.close()


def test_served_turns_export_conversational_pairs_and_train_an_adapter(
        tserve, tiny_chat_model, data_dir, tmp_path, capsys):
    from rlchat.learner.export import preference_pairs
    from rlchat.learner.records import Turn
    from rlchat.tui.cli import main

    agent = open_remote(data_dir, settings_for(tserve, model=str(tserve.command[2])), seed=5)
    for i in range(6):
        view = agent.say(f"Tell me about dinner {i}", system="Be brief.")
        agent.choose(view.turn, view.candidates[0].id, 5)
    agent.end()
    agent.store.close()
    reader = Store(data_dir, readonly=True)
    turns = [Turn.from_dict(r) for r in reader.turns()]
    reader.close()
    pairs = list(preference_pairs(turns))
    assert pairs
    for pair in pairs:  # TRL's conversational form: the prompt is the messages sent
        assert pair["prompt"][0] == {"role": "system", "content": "Be brief."}
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
    # Training needs the served model's weights here, named by --model PATH.
    assert main(["train", "--data-dir", str(data_dir), "--model", "tinychat",
                 "--steps", "1"]) != 0
    assert "--model PATH" in capsys.readouterr().err
    out = tmp_path / "adapter"
    assert main(["train", "--data-dir", str(data_dir), "--model", str(tiny_chat_model),
                 "--steps", "2", "--adapter", "--out", str(out)]) == 0
    assert (out / "adapter_config.json").is_file()  # a PEFT adapter, left unmerged
    assert not (out / "model.safetensors").exists()


@needs_llama
def test_probe_command_prints_what_the_server_can_do(llama, capsys):
    import json

    from rlchat.tui.cli import main

    assert main(["probe", "--base-url", llama.base_url, "--model", "tinychat", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["n_choices"] and found["logprobs"] and found["context"] == 512
    assert main(["probe", "--base-url", llama.base_url, "--model", "nope", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "backend_model"
