"""The durable store: atomic writes, reopening, corrupt files, schema, modes."""

import json
import os
import stat
import subprocess
import sys

import pytest
from tinydb import TinyDB

from storage import AtomicJSONStorage, CorruptFileError, Store


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
        "import sys; from tinydb import TinyDB; from storage import AtomicJSONStorage;"
        "TinyDB(sys.argv[1], storage=AtomicJSONStorage).insert({'b': 2})"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert db.all() == [{"a": 1}, {"b": 2}]


def test_unparsable_file_raises_corrupt(tmp_path):
    path = tmp_path / "db.json"
    path.write_text('{"_default": {"1": ')
    with pytest.raises(CorruptFileError):
        TinyDB(path, storage=AtomicJSONStorage).all()


def test_store_quarantines_a_corrupt_file_and_keeps_the_rest(tmp_path):
    store = Store(tmp_path)
    sid = store.new_session("hello")
    store.close()
    (tmp_path / "turns.json").write_bytes(b"\x00garbage{")
    store = Store(tmp_path)
    assert store.get_session(sid)["title"] == "hello"
    assert store.count_turns() == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("turns.json.corrupt-")]
    assert len(moved) == 1 and moved[0].read_bytes() == b"\x00garbage{"
    assert len(store.warnings) == 1 and "turns.json" in store.warnings[0]


def test_schema_version_in_every_file_and_private_modes(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    store.add_turn({"session": "1", "status": "pending"})
    store.save_policy({"version": 0})
    for name in ("sessions", "turns", "policy"):
        assert store.schema_version(name) == 1
        path = data / f"{name}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_turns_keep_their_order_and_ids(tmp_path):
    store = Store(tmp_path)
    ids = [store.add_turn({"n": n})["id"] for n in range(5)]
    assert ids == ["1", "2", "3", "4", "5"]
    store.update_turn("3", status="chosen")
    assert [t["n"] for t in store.turns()] == [0, 1, 2, 3, 4]
    assert [t["n"] for t in store.turns(after_seq=3)] == [3, 4]
    assert store.get_turn("3")["status"] == "chosen"
    assert store.get_turn("nope") is None and store.get_turn("99") is None
