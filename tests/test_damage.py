"""Damaged data files, found at start by every front end, and salvaged: a turn
shard cut in half, a feature file with flipped bytes, and the manifest that
lets a start skip parsing the shards it vouches for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlchat.learner.records import Turn
from rlchat.storage import Store
from rlchat.tui.headless import serve


@pytest.fixture(scope="module")
def chatted(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 answered turns by the real agent (two turn shards), then a clean exit."""
    from rlchat.learner.agent import open_agent
    from rlchat.learner.settings import Settings

    data = tmp_path_factory.mktemp("damage") / "data"
    agent = open_agent(Store(data), Settings(model=str(tiny_model)), seed=3)
    for t in range(30):
        view = agent.say(f"message number {t}")
        agent.choose(view.turn, view.candidates[t % len(view.candidates)].id, 4)
    agent.end()
    agent.checkpoint()
    agent.store.close()
    return data


@pytest.fixture
def data(chatted: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(chatted, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


def cut_in_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def rlchat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlchat.tui.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_a_clean_start_parses_only_the_newest_shard(data):
    store = Store(data)
    assert list(store._turns._open) == [2]  # the manifest vouched for shard 1
    assert store.warnings == [] and store.unreadable_turns == 0
    store.close()


def test_a_shard_cut_in_half_is_reported_salvaged_and_counted(data, tiny_model):
    from rlchat.learner.agent import open_agent
    from rlchat.learner.settings import Settings

    shard = data / "turns" / "turns-000001.json"
    cut_in_half(shard)
    # A reader (export) counts what it could not read, and leaves the file alone.
    out = rlchat("export", "--format", "turns", "--data-dir", str(data))
    assert out.returncode == 0
    exported = [json.loads(line) for line in out.stdout.splitlines()]
    lost = 30 - len(exported)
    assert 0 < lost < 25
    assert f"{lost} turn(s) could not be read" in out.stderr and "turns-000001.json" in out.stderr
    assert not list((data / "turns").glob("*.corrupt-*"))
    # Headless: said on the first answer, and in stats.
    agent = open_agent(Store(data), Settings(model=str(tiny_model)), seed=0)
    answers = []

    class Out:
        def write(self, text: str) -> None:
            answers.append(json.loads(text))

        def flush(self) -> None:
            pass

    serve(agent, ['{"op":"stats"}\n', '{"op":"stats"}\n'], Out())
    agent.store.close()
    first, second = answers
    assert first["warning"]["code"] == "damaged_files" and "turns-000001.json" in \
        first["warning"]["message"]
    assert "warning" not in second  # once
    assert first["unreadable_turns"] == lost
    # The writer moved the file aside and saved the complete records to a fresh one.
    assert len(list((data / "turns").glob("turns-000001.json.corrupt-*"))) == 1
    again = Store(data, readonly=True)
    kept = [t["seq"] for t in again.turns()]
    assert kept == [s for s in range(1, 31) if s <= 25 - lost or s > 25]
    assert again.warnings == []
    again.close()


def test_flipped_feature_bytes_leave_out_that_turn_only(data):
    blob = data / "turns" / "turns-000001.bin"
    raw = bytearray(blob.read_bytes())
    store = Store(data, readonly=True)
    third = store.get_turn("3")
    offset = json.loads((data / "turns" / "turns-000001.json").read_text())[
        "records"]["3"]["blob"][0]
    assert third is not None
    store.close()
    raw[offset + 5] ^= 0xFF
    blob.write_bytes(bytes(raw))
    store = Store(data, readonly=True)
    seqs = [t["seq"] for t in store.turns()]
    assert 3 not in seqs and len(seqs) == 29
    assert store.unreadable_turns == 1 and "turn 3" in store.warnings[0]
    store.close()


def test_features_come_back_exact_and_deleting_a_session_erases_them(data):
    store = Store(data)
    turns = [Turn.from_dict(t) for t in store.turns()]
    assert all(t.features().shape == (len(t.candidates), len(t.candidates[0].features))
               for t in turns)
    blob = data / "turns" / "turns-000001.bin"
    before = blob.read_bytes()
    first = np.frombuffer(before, dtype="<f8")
    assert np.array_equal(first[: turns[0].features().size], turns[0].features().ravel())
    store.delete_session(turns[0].session)
    assert not any(blob.read_bytes()[: len(before)])  # every turn was in that session
    store.close()


async def test_the_app_says_so_in_a_notice(data):
    from rlchat.learner.settings import Settings
    from rlchat.tui.app import RlchatApp
    from tests.helpers import ScriptedSource

    cut_in_half(data / "turns" / "turns-000001.json")
    store = Store(data)
    app = RlchatApp(settings=Settings(model="scripted"), store=store, seed=0,
                    source_factory=lambda s: ScriptedSource(["a reply", "another"]))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            notices = [n.message for n in app._notifications]
            assert any("turns-000001.json" in n and "complete records" in n for n in notices)
    finally:
        store.close()
