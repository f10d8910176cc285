"""The embeddings source of the meaning columns: a local sentence model, a
server's /v1/embeddings, the generator's hidden state, or none; what a turn
records of it, and what the policy forgets when it changes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rlchat.learner import embeddings as embeddings_module
from rlchat.learner.agent import Agent, load_source
from rlchat.learner.embeddings import EMBED_SECONDS, parse, resolve
from rlchat.learner.errors import ErrorCode, ModelUnavailable
from rlchat.learner.features import FEATURE_NAMES, MEANING_COLUMNS
from rlchat.learner.policy import QPolicy
from rlchat.learner.settings import Settings
from rlchat.learner.update import current, replay
from rlchat.storage import Store
from rlchat.testkit.misbehaving import HOLD_SECONDS, MODEL, MisbehavingServer

SIMILARITY = FEATURE_NAMES.index("similarity")
LOGPROB = FEATURE_NAMES.index("logprob")


def chat(agent: Agent, messages: list[str]) -> None:
    for message in messages:
        view = agent.say(message)
        agent.choose(view.turn, view.candidates[-1].id, 5)


def replayed(agent: Agent) -> QPolicy:
    policy = QPolicy(agent.policy.dim, agent.policy.config, population=agent.policy.population)
    replay(policy, [current(r) for r in agent.store.turns()])
    return policy


def test_the_values_parse_and_a_wrong_one_says_which_are_right():
    assert parse("generator") == ("generator", "")
    assert parse(" local:/models/minilm ") == ("local", "/models/minilm")
    assert parse("served") == ("served", "")
    assert parse("served:nomic-embed") == ("served", "nomic-embed")
    assert parse("off") == ("off", "")
    for wrong in ("local:", "hidden", "off:x", ""):
        with pytest.raises(ValueError, match="generator, local:PATH"):
            parse(wrong)
    problems = Settings(embeddings="minilm").problems()
    assert problems == [(("embeddings",), "embeddings must be generator, local:PATH (a "
                         "sentence-embedding model), served (or served:MODEL_ID) or off")]
    assert Settings(embeddings="local:/x").problems() == []


def test_unset_a_local_model_reads_its_hidden_state_a_served_one_the_server():
    assert resolve(None, served=False, server_embeds=True) == "generator"
    assert resolve("off", served=False, server_embeds=True) == "off"
    assert resolve("generator", served=True, server_embeds=True) == "off"  # no hidden state
    assert resolve("local:/m", served=True, server_embeds=True) == "local:/m"  # configured
    assert resolve(None, served=True, server_embeds=True) == "served"
    assert resolve(None, served=True, server_embeds=False) == "off"


def test_a_sentence_model_that_cannot_be_had_gets_one_sentence_with_the_fix(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = Settings(model=str(tiny_model), embeddings=f"local:{tmp_path / 'nowhere'}")
    with pytest.raises(ModelUnavailable, match=r"set --embeddings local:PATH .* or "
                       r"--embeddings off\.$"):
        load_source(settings)
    monkeypatch.setattr(embeddings_module, "packaged_model", lambda: None)  # not installed
    with pytest.raises(ModelUnavailable, match=r"install it with pip install 'rlchat\[embed\]'"):
        embeddings_module.SentenceEmbedder("all-MiniLM-L6-v2")


def test_a_local_sentence_model_fills_the_meaning_columns_and_replay_equals_live(
        tiny_model: Path, data_dir: Path):
    settings = Settings(model=str(tiny_model), candidates=3, samples=4,
                        embeddings=f"local:{tiny_model}")
    agent = Agent(Store(data_dir), load_source(settings, seed=2), settings, seed=2)
    try:
        embedder = agent.embeddings().embedder
        assert embedder is not None and agent.embeddings().line() == \
            f"embeddings: local:{tiny_model}"
        chat(agent, ["hello there", "what should I cook tonight?", "tell me a joke"])
        turns = [current(r) for r in agent.store.turns()]
        assert {t.generator["embeddings"] for t in turns} == {embedder.identity}
        turn = turns[1]
        vectors = embedder.embed([turn.user_text, *(c.text for c in turn.candidates)])
        np.testing.assert_allclose(turn.features()[:, SIMILARITY], vectors[1:] @ vectors[0],
                                   atol=1e-9)
        assert np.any(agent.policy.w[MEANING_COLUMNS] != 0)
        assert np.array_equal(replayed(agent).w, agent.policy.w)
    finally:
        agent.store.close()


def test_another_source_forgets_the_meaning_columns_and_keeps_the_rest(
        tiny_model: Path, data_dir: Path):
    settings = Settings(model=str(tiny_model), candidates=3, samples=4)
    agent = Agent(Store(data_dir), load_source(settings, seed=4), settings, seed=4)
    try:
        chat(agent, ["good morning", "why is the sky blue?", "recommend a film please"])
        learned = agent.policy.w.copy()
        assert np.any(learned[MEANING_COLUMNS] != 0) and learned[LOGPROB] != 0
        off = replace(settings, embeddings="off")
        assert agent.reconfigure(off)  # a new source loads the model again
        agent.attach(load_source(off, seed=4))
        view = agent.say("I am tired today")
        assert np.all(agent.policy.w[MEANING_COLUMNS] == 0)  # forgotten at the change
        assert agent.policy.w[LOGPROB] != 0  # the same generator: its log-prob kept
        turn = current(list(agent.store.turns())[-1])
        assert turn.generator["embeddings"] == "off"
        assert np.all(turn.features()[:, MEANING_COLUMNS] == 0)
        agent.choose(view.turn, view.candidates[0].id, 5)
        assert np.array_equal(replayed(agent).w, agent.policy.w)
    finally:
        agent.store.close()


def test_a_server_that_embeds_fills_the_columns_and_one_that_fails_loses_no_turn(
        data_dir: Path):
    server = MisbehavingServer().start()
    try:
        settings = Settings(model=MODEL, base_url=server.url("embeds"), candidates=2,
                            samples=3, embeddings="served")
        agent = Agent(Store(data_dir), load_source(settings, seed=1), settings, seed=1)
        try:
            assert agent.source.connect().embeddings
            assert "embeddings: yes (/v1/embeddings)" in agent.source.connect().lines()
            chat(agent, ["cook pasta tonight", "pasta with tomato"])
            turns = [current(r) for r in agent.store.turns()]
            assert turns[0].generator["embeddings"].startswith(f"served:{MODEL}:")
            assert np.any(turns[0].features()[:, SIMILARITY] != 0)
            learned = agent.policy.w[MEANING_COLUMNS].copy()
            assert np.any(learned != 0)

            view = agent.say("fault embed-nonsense: and yet a turn")  # answers nonsense
            warning = agent.take_warning()
            assert warning is not None and warning.code == ErrorCode.NO_EMBEDDINGS
            turn = current(list(agent.store.turns())[-1])
            assert np.all(turn.features()[:, MEANING_COLUMNS] == 0)
            assert turn.generator["embeddings"] == turns[0].generator["embeddings"]
            agent.choose(view.turn, view.candidates[0].id, 5)
            assert agent.say("fault embed-refuse please").candidates  # a refusal, the same
            assert agent.take_warning().code == ErrorCode.NO_EMBEDDINGS
            began = time.monotonic()
            assert agent.say("fault embed-slow: no answer at all").candidates
            assert time.monotonic() - began < EMBED_SECONDS + 3 < HOLD_SECONDS
            assert agent.take_warning().code == ErrorCode.NO_EMBEDDINGS
            # The source did not change: what the columns learned is kept.
            assert np.array_equal(agent.policy.w[MEANING_COLUMNS] != 0, learned != 0)
            assert np.array_equal(replayed(agent).w, agent.policy.w)
        finally:
            agent.store.close()
        # A server without /v1/embeddings: the probe says so.
        plain = Settings(model=MODEL, base_url=server.url(), candidates=2, samples=2)
        source = load_source(plain, seed=1)
        assert source.connect().embeddings is False
    finally:
        server.stop()

