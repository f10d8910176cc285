"""Features v3: the general columns, and v1 and v2 logs replayed into v3."""

from __future__ import annotations

import numpy as np

from rlchat.learner.features import (
    DIM,
    FEATURE_NAMES,
    FEATURE_VERSION,
    HIDDEN_DIMS,
    HIDDEN_SCALE,
    V1_NAMES,
    V2_NAMES,
    featurize,
    refeaturize,
    text_features,
    text_row,
)
from rlchat.learner.policy import REFRESH_EVERY, PolicyConfig, QPolicy
from rlchat.learner.policy_store import new_policy
from rlchat.learner.records import Candidate, StoredCandidate, Turn
from rlchat.learner.update import feedback_rows, learnable, replay

TEXTS = ["Sure, here is a list:\n- eggs\n- milk", "Why not try jazz?", "I love `code` 42!"]


def rows(user: str, texts: list[str]) -> np.ndarray:
    rng = np.random.default_rng(0)
    cands = [Candidate(t, -2.0, 5, rng.standard_normal(16)) for t in texts]
    return featurize(user, rng.standard_normal(16), cands)


def column(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_general_columns_read_the_shape_of_the_text():
    phi = rows("do you like jazz music?", TEXTS)
    assert phi.shape == (3, DIM) and np.all(np.abs(phi) <= 2.0)
    assert phi[0, column("list")] == 1.0 and phi[0, column("lines")] == 2 / 3
    assert phi[1, column("ends_question")] == 1.0 and phi[1, column("shared_first")] == 0.0
    assert phi[2, column("code")] == 1.0 and phi[2, column("digits")] == 2 / 3
    assert phi[2, column("ends_exclaim")] == 1.0
    assert phi[1, column("recall")] == 1 / 3  # "jazz" of "like", "jazz", "music"
    # Exactly one length band each.
    bands = [column(f"length_band_{i}") for i in range(5)]
    assert np.all(phi[:, bands].sum(axis=1) == 1.0)


def test_a_common_word_has_a_column_of_its_own():
    phi = rows("", ["the cat and the dog", "a cat and a dog", "the the the the the"])
    the, a, an = column("word_the"), column("word_a"), column("word_an")
    assert phi[0, the] == 2 * phi[2, the] / 5 > 0 and phi[1, the] == 0.0
    assert phi[1, a] > 0 and phi[0, a] == 0.0 and not phi[:, an].any()
    hashed = [column(f"word_hashed_{i}") for i in range(16)]
    # "cat" and "dog" share the hashed columns; the common words are not in them.
    assert np.array_equal(phi[0, hashed], phi[1, hashed]) and phi[0, hashed].any()
    assert not phi[2, hashed].any()


def test_a_word_moves_its_hashed_bucket_the_same_way_in_every_process():
    _, with_word = text_features("", "the cat sat down", 0.0)
    _, without = text_features("", "the dog sat down", 0.0)
    assert with_word != without
    # crc32, not Python's salted hash: the same values in processes with
    # different PYTHONHASHSEEDs (within one process a salted hash agrees too).
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from rlchat.learner.features import text_features; "
            "print(json.dumps(text_features('', 'the cat sat down', 0.0)[1]))")
    seen = set()
    for seed in ("1", "2", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        seen.add(out)
        assert json.loads(out) == with_word
    assert len(seen) == 1


def v1_turn() -> Turn:
    phi = rows("tell me a joke", TEXTS)
    v1 = phi[:, : len(V1_NAMES)].copy()
    v1[:, -HIDDEN_DIMS:] /= HIDDEN_SCALE  # v1 kept the projection unscaled
    return Turn(
        session="1", user_text="tell me a joke",
        candidates=[StoredCandidate(t, -2.0, 5, [float(x) for x in row])
                    for t, row in zip(TEXTS, v1, strict=True)],
        feature_version="v1", scores=[0.0] * 3, order=[2, 0, 1], shown_count=3,
        propensities=[1 / 3] * 3, policy_version=0, created=0.0, status="chosen", choice=0,
        rating=5, rewards=[1.0, -0.2, -0.2], weights=[1.0, 1.0, 0.7], seq=1, id="1",
    )


def test_a_v1_turn_replays_into_v3_exactly_without_the_model():
    old = v1_turn()
    assert not learnable(old)
    new = refeaturize(old)
    assert learnable(new) and new.feature_version == FEATURE_VERSION == "v3"
    # v1's columns as stored (the projection scaled), the new ones read off
    # the stored texts: what a v3 agent would have stored for these candidates.
    assert np.array_equal(new.features(), rows("tell me a joke", TEXTS))
    assert old.feature_version == "v1"  # the stored record is left as it was
    policy = QPolicy(DIM)
    assert replay(policy, [new]) == 1 and policy.version == 1


def test_a_v2_turn_and_its_edit_replay_into_v3_exactly_without_the_model():
    from dataclasses import replace

    today = rows("tell me a joke", TEXTS)
    # v2 had the same columns up to the words, then 64 hashed word columns.
    words_from = len(V2_NAMES) - 64
    v2 = np.hstack([today[:, :words_from], np.full((3, 64), 0.25)])
    edit = "Sure, here is a list: eggs, milk and bread"
    old = replace(v1_turn(), feature_version="v2", edit=edit,
                  edit_features=[float(x) for x in v2[0]],
                  candidates=[replace(c, features=[float(x) for x in row])
                              for c, row in zip(v1_turn().candidates, v2, strict=True)])
    assert not learnable(old)
    new = refeaturize(old)
    assert learnable(new) and np.array_equal(new.features(), today)
    # The edit: its text columns read again, its model columns as stored.
    assert new.edit_features == text_row("tell me a joke", edit, [float(x) for x in today[0]])
    assert len(new.edit_features) == DIM
    policy = QPolicy(DIM)
    assert replay(policy, [new]) == 1 and policy.version == 1


def test_rank_one_updates_stay_close_to_the_exact_ridge_solution():
    rng = np.random.default_rng(1)
    one_ridge = PolicyConfig(relevance=False)  # a refit of the prior every turn is another fit
    live, exact = QPolicy(40, one_ridge), QPolicy(40, one_ridge)
    for t in range(100):
        x = rng.standard_normal((5, 40))
        y, c = rng.uniform(-1, 1, 5), rng.uniform(0.2, 1, 5)
        live.learn(x, y, c, None)
        exact.learn(x, y, c, None)
        exact._solve()  # what a full inverse a turn gives
        # The approximation forgets the ridge until the next exact inverse.
        assert np.allclose(live.w, exact.w, atol=0.05), t
    assert live.since_exact == 100 % REFRESH_EVERY


def test_feedback_rows_of_an_order_with_a_tie_and_an_edit():
    phi = np.eye(4)
    rows_, targets, weights, chosen, preferences = feedback_rows(
        phi, [0, 1, 2, 3], "chosen", 1, [0.5, 1.0, 1.0, -0.2], [1.0] * 4,
        ranking=[[1, 2], [0, 3]], edit_phi=np.full(4, 0.5))
    pairs = {(tuple(r), bool(p)) for r, p in zip(rows_[1:-2], preferences[1:-2], strict=True)}
    assert ((0.0, 1.0, -1.0, 0.0), False) in pairs  # the tie: a row with target 0
    assert ((-1.0, 1.0, 0.0, 0.0), True) in pairs and ((0.0, 0.0, 1.0, -1.0), True) in pairs
    assert ((1.0, 0.0, 0.0, -1.0), False) in pairs  # the tie below
    assert len(pairs) == 2 + 4
    assert np.array_equal(rows_[-2], np.full(4, 0.5)) and targets[-2] == 1.0
    assert np.array_equal(rows_[-1], np.full(4, 0.5) - phi[1]) and preferences[-1]
    assert np.array_equal(chosen, phi[1]) and np.all(weights == 1.0)
    assert not preferences[0] and np.all(targets[~preferences][1:-1] == 0.0)


def test_a_v1_data_dir_is_learned_again_on_v2_at_start(tmp_path):
    from dataclasses import replace

    from rlchat.learner.agent import Agent
    from rlchat.storage import Store

    store = Store(tmp_path)
    old = v1_turn()
    for i in range(3):
        store.add_turn(replace(old, user_text=f"tell me a joke {i}").to_dict())
    snapshot = QPolicy(len(V1_NAMES)).to_dict()
    snapshot["config"].update(gamma=0.3, temperature_floor=0.02)
    store.save_policy({**snapshot, "features": "v1"})
    store.close()

    agent = Agent(Store(tmp_path), None, seed=0)
    assert agent.policy.dim == DIM and agent.policy.version == 3
    # What a person set carries over; the rest takes today's defaults.
    assert agent.policy.config.gamma == 0.3 and agent.policy.config.temperature_floor == 0.002
    fresh = new_policy(agent.policy.config)
    replay(fresh, [refeaturize(Turn.from_dict(t)) for t in agent.store.turns()])
    assert np.array_equal(fresh.w, agent.policy.w)
    assert agent.store.load_policy()["features"] == FEATURE_VERSION
    # The log itself is left as it was written.
    assert all(t["feature_version"] == "v1" for t in agent.store.turns())
    agent.store.close()
