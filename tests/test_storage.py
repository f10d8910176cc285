"""The durable store: atomic writes, reopening, corrupt files, schema, modes."""

import json
import os
import stat
import subprocess
import sys

import pytest
from tinydb import TinyDB

from rlchat.storage import AtomicJSONStorage, CorruptFileError, Store


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "db.json"
    db = TinyDB(path, storage=AtomicJSONStorage)
    first_inode = None
    for i in range(3):
        db.insert({"i": i})
        inode = os.stat(path).st_ino
        assert inode != first_inode  # a new file each time: rename, not rewrite
        first_inode = inode
    assert [d["i"] for d in db.all()] == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]
    assert json.loads(path.read_text())["_default"]["3"] == {"i": 2}


def test_leftover_temp_files_are_cleaned_on_open(tmp_path):
    path = tmp_path / "db.json"
    TinyDB(path, storage=AtomicJSONStorage).insert({"a": 1})
    leftover = tmp_path / ".db.json.abc123.tmp"
    leftover.write_text('{"_default": {"1": {"half"')
    db = TinyDB(path, storage=AtomicJSONStorage)
    assert not leftover.exists()
    assert db.all() == [{"a": 1}]


def test_failed_write_keeps_the_old_state(tmp_path):
    path = tmp_path / "db.json"
    db = TinyDB(path, storage=AtomicJSONStorage)
    db.insert({"ok": 1})
    with pytest.raises(TypeError):
        db.insert({"bad": object()})  # not JSON-serialisable: the write fails midway
    assert json.loads(path.read_text()) == {"_default": {"1": {"ok": 1}}}
    assert TinyDB(path, storage=AtomicJSONStorage).all() == [{"ok": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]


def test_change_by_another_process_is_seen(tmp_path):
    path = tmp_path / "db.json"
    db = TinyDB(path, storage=AtomicJSONStorage)
    db.insert({"a": 1})
    assert len(db.all()) == 1
    code = (
        "import sys; from tinydb import TinyDB; from rlchat.storage import AtomicJSONStorage;"
        "TinyDB(sys.argv[1], storage=AtomicJSONStorage).insert({'b': 2})"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=tmp_path)
    assert db.all() == [{"a": 1}, {"b": 2}]


def test_unparsable_file_raises_corrupt(tmp_path):
    path = tmp_path / "db.json"
    path.write_text('{"_default": {"1": ')
    with pytest.raises(CorruptFileError):
        TinyDB(path, storage=AtomicJSONStorage).all()


def test_store_quarantines_a_corrupt_shard_and_keeps_the_rest(tmp_path):
    store = Store(tmp_path)
    sid = store.new_session("hello")
    store.add_turn({"n": 1})
    store.save_policy({"version": 3})
    store.close()
    shard = tmp_path / "turns" / "turns-000001.json"
    shard.write_bytes(b"\x00garbage{")
    store = Store(tmp_path)
    assert store.get_session(sid)["title"] == "hello"
    assert store.load_policy()["version"] == 3
    assert store.count_turns() == 0
    moved = [p for p in shard.parent.iterdir() if p.name.startswith("turns-000001.json.corrupt-")]
    assert len(moved) == 1 and moved[0].read_bytes() == b"\x00garbage{"
    assert len(store.warnings) == 1 and "turns-000001.json" in store.warnings[0]
    store.add_turn({"n": 2})  # and it goes on working
    store.close()
    assert Store(tmp_path).warnings == []  # reported once


def _files(data):
    return [p for p in data.rglob("*") if p.is_file() and p.suffix == ".json"]


def test_schema_version_in_every_file_and_private_modes(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    store.new_session()
    store.add_turn({"session": "1", "status": "pending"})
    store.save_policy({"version": 0})
    store.close()
    files = _files(data)
    from rlchat.storage.schema import SCHEMA_VERSION

    assert {p.name for p in files} == {"sessions-000001.json", "turns-000001.json", "policy.json",
                                       "sessions.manifest.json", "turns.manifest.json"}
    for path in files:
        assert json.loads(path.read_text())["meta"] == {"1": {"schema": SCHEMA_VERSION}}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (data, data / "turns", data / "sessions"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_upgrade_steps_run_in_order(tmp_path, monkeypatch):
    from rlchat.storage import schema, upgrades

    store = Store(tmp_path)
    store.save_policy({"version": 1, "old": True})
    store.close()
    now = schema.SCHEMA_VERSION
    steps = {
        now: lambda data: {**data, "policy": {"1": {**data["policy"]["1"], "step2": True}}},
        now + 1: lambda data: {**data, "policy": {"1": {**data["policy"]["1"], "step3": True}}},
    }
    monkeypatch.setattr(upgrades, "UPGRADES", steps)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 2)
    store = Store(tmp_path)
    assert store.load_policy() == {"version": 1, "old": True, "step2": True, "step3": True}
    store.close()
    assert json.loads((tmp_path / "policy.json").read_text())["meta"]["1"]["schema"] == now + 2


def test_turns_keep_their_order_and_ids_across_files(tmp_path, monkeypatch):
    import rlchat.storage.store as store_module

    monkeypatch.setattr(store_module, "TURNS_PER_FILE", 3)
    store = Store(tmp_path)
    ids = [store.add_turn({"n": n})["id"] for n in range(8)]
    assert ids == [str(i) for i in range(1, 9)]
    store.update_turn("5", status="chosen")
    assert [t["n"] for t in store.turns()] == list(range(8))
    assert [t["n"] for t in store.turns(after_seq=4)] == [4, 5, 6, 7]
    assert store.get_turn("5")["status"] == "chosen"
    assert store.get_turn("nope") is None and store.get_turn("99") is None
    assert store.get_turn("0") is None
    store.close()
    names = sorted(p.name for p in (tmp_path / "turns").glob("turns-*.json"))
    assert names == ["turns-000001.json", "turns-000002.json", "turns-000003.json"]
    again = Store(tmp_path)
    assert again.count_turns() == 8 and again.add_turn({"n": 8})["id"] == "9"


def test_a_second_writer_is_refused_and_a_reader_still_works(tmp_path):
    writer = Store(tmp_path)
    writer.add_turn({"n": 1})
    code = (
        "import sys\n"
        "from rlchat.storage import Store, DataDirInUse\n"
        "try:\n"
        "    Store(sys.argv[1])\n"
        "except DataDirInUse as exc:\n"
        "    print(exc)\n"
        "    reader = Store(sys.argv[1], readonly=True)\n"
        "    print(reader.count_turns(), [t['n'] for t in reader.turns()])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True, timeout=60, cwd=tmp_path).stdout.splitlines()
    assert f"in use by process {os.getpid()}" in out[0] and "--data-dir" in out[0]
    assert out[1] == "1 [1]"
    writer.close()
    Store(tmp_path).close()  # free again once the writer has closed


def test_the_lock_dies_with_its_process(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from rlchat.storage import Store; Store(sys.argv[1]); print('held', "
         "flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,  # names work from anywhere
    )
    assert child.stdout.readline().strip() == "held"
    from rlchat.storage import DataDirInUse

    with pytest.raises(DataDirInUse):
        Store(tmp_path)
    child.kill()
    child.wait()
    Store(tmp_path).close()


def test_readonly_store_writes_nothing(tmp_path):
    Store(tmp_path / "empty", readonly=True)
    assert not (tmp_path / "empty").exists()
    store = Store(tmp_path / "d")
    store.add_turn({"n": 1})
    store.close()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*")}
    reader = Store(tmp_path / "d", readonly=True)
    assert [t["n"] for t in reader.turns()] == [1]
    with pytest.raises(PermissionError):
        reader.add_turn({"n": 2})
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*")} == before
