"""Data dirs written by earlier releases, frozen as they were written.

tests/fixtures/data-0.1 and data-0.2 were written by `rlchat headless` at
the commits of release 0.1 (9d6c511) and 0.2 (1f54db7) over the tiny model:
eight turns of picks (rated and not), own replies and turns left
unanswered, in two sessions.  Today's store reads them in today's form (the
upgrade steps in storage/upgrades/), today's agent opens them and learns
their turns, and a replay of them gives the same policy bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlchat.learner.agent import Agent
from rlchat.learner.features import DIM
from rlchat.learner.offline import replay_logs
from rlchat.learner.policy import QPolicy
from rlchat.learner.policy_store import new_policy
from rlchat.learner.records import Turn
from rlchat.storage import Store
from rlchat.storage.schema import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
RELEASES = ["0.1", "0.2"]


@pytest.fixture(params=RELEASES)
def old_dir(request, tmp_path) -> Path:
    data = tmp_path / f"data-{request.param}"
    shutil.copytree(FIXTURES / f"data-{request.param}", data)
    return data


def raw_files(data: Path) -> dict[str, dict]:
    return {str(p.relative_to(data)): json.loads(p.read_text()) for p in data.rglob("*.json")}


def test_a_reader_gets_todays_form_and_writes_nothing(old_dir):
    before = raw_files(old_dir)
    assert all(f["meta"]["1"]["schema"] == 1 for f in before.values())  # as the release wrote
    store = Store(old_dir, readonly=True)
    try:
        turns = [Turn.from_dict(t) for t in store.turns()]
        snapshot = store.load_policy()
    finally:
        store.close()
    assert [t.status for t in turns] == ["chosen", "replied", "chosen", "unanswered"] * 2
    assert all(t.shown_count == len(t.shown_ids) > 0 for t in turns)
    policy = QPolicy.from_dict(snapshot)
    assert policy.config.relevance is False  # learned without it: goes on so
    assert policy.config.temperature_floor == 0.02 and policy.version == 6
    assert raw_files(old_dir) == before  # read in memory, the files left alone


def test_the_writer_upgrades_the_files_and_the_agent_learns_their_turns(old_dir):
    store = Store(old_dir)
    agent = Agent(store, None, seed=0)
    try:
        # Their features are v1: the policy they kept cannot score today's, so
        # the agent starts one and learns every stored turn through the one
        # update path (features read again off the stored texts).
        assert agent.recovered[0] == 8 and agent.policy.version == 6
        replayed = replay_logs(store.turns(), agent.policy.config)
        assert np.array_equal(replayed.w, agent.policy.w)  # bit for bit
        assert replayed.w.tobytes() == agent.policy.w.tobytes()
        view = agent.session_messages("1")
        assert view[0] == ("user", "hello there") and view[3] == ("assistant", "my own answer")
    finally:
        store.close()
    for name, data in raw_files(old_dir).items():
        assert data["meta"]["1"]["schema"] == SCHEMA_VERSION, name
        for record in data.get("records", {}).values():
            assert "shown" not in record
        for snapshot in data.get("policy", {}).values():
            assert "temperature" not in snapshot["config"]


# tests/fixtures/data-schema2/policy.json was written by `rlchat headless` at
# f5fadd8, the last commit before the population prior (schema 2), over the
# tiny model (six turns learned): a policy on today's features, learned from
# the ridge for every column.  Only the policy is kept: its turns' features
# were bytes beside them, and the turns themselves are the 0.1/0.2 fixtures'
# business.


@pytest.fixture
def schema2_dir(tmp_path) -> Path:
    data = tmp_path / "data-schema2"
    shutil.copytree(FIXTURES / "data-schema2", data)
    return data


def test_a_policy_from_before_the_population_prior_goes_on_as_it_learned(schema2_dir):
    raw = json.loads((schema2_dir / "policy.json").read_text())
    stored = raw["policy"]["1"]
    assert raw["meta"]["1"]["schema"] == 2 and "population" not in stored
    reader = Store(schema2_dir, readonly=True)
    try:
        assert QPolicy.from_dict(reader.load_policy()).population is None  # in memory
    finally:
        reader.close()
    assert json.loads((schema2_dir / "policy.json").read_text()) == raw  # files untouched
    store = Store(schema2_dir)
    try:
        agent = Agent(store, None, seed=0)
        # It fits today's features: kept as it learned, the ridge for every column.
        assert agent.policy.version == 6 and agent.policy.population is None
        assert np.all(agent.policy.base_prior() == agent.policy.config.ridge)
        assert agent.policy.w.tolist() == stored["w"]  # bit for bit
        # A policy made today starts from the population prior instead.
        fresh = new_policy(agent.policy.config)
        assert fresh.population is not None and fresh.dim == DIM
        agent.checkpoint()
    finally:
        store.close()
    upgraded = json.loads((schema2_dir / "policy.json").read_text())
    assert upgraded["meta"]["1"]["schema"] == SCHEMA_VERSION
    assert upgraded["policy"]["1"]["population"] is None
