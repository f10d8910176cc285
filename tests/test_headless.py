"""The headless JSON-lines protocol, driven as a real child process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlchat.storage import Store


class Headless:
    """`rlchat headless` as a child: one request line in, one answer line out."""

    def __init__(self, model, data_dir, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlchat.tui.cli", "headless", "--model", str(model),
             "--data-dir", str(data_dir), "--seed", "0", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8",
        )

    def send_raw(self, line: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        # Reading before closing stdin shows each answer is flushed on its own.
        answer = self.proc.stdout.readline()
        assert answer.endswith("\n"), answer
        return json.loads(answer)

    def send(self, **request) -> dict:
        return self.send_raw(json.dumps(request))

    def close(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture
def headless(tiny_model, data_dir):
    opened = []

    def start(*extra: str) -> Headless:
        child = Headless(tiny_model, data_dir, *extra)
        opened.append(child)
        return child

    yield start
    for child in opened:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def check_say(answer: dict, k: int = 4) -> None:
    assert answer["ok"] is True
    assert isinstance(answer["session"], str) and isinstance(answer["turn"], str)
    assert 1 <= len(answer["candidates"]) <= k
    for cand in answer["candidates"]:
        assert set(cand) == {"id", "text", "score", "propensity", "truncated"}
        assert isinstance(cand["id"], int) and isinstance(cand["text"], str)
        assert isinstance(cand["score"], float) and 0 < cand["propensity"] <= 1
    ids = [c["id"] for c in answer["candidates"]]
    assert len(set(ids)) == len(ids)


def test_round_trip(headless, data_dir):
    child = headless("--candidates", "3", "--samples", "6")
    said = child.send(op="say", text="hello there")
    check_say(said, k=3)
    first = said["candidates"][0]
    chose = child.send(op="choose", turn=said["turn"], id=first["id"], rating=4)
    assert chose == {"ok": True, "reward": 0.5, "policy_version": 1}

    said2 = child.send(op="say", text="and then?")
    check_say(said2, k=3)
    assert said2["session"] == said["session"] and said2["turn"] != said["turn"]
    assert child.send(op="reply", turn=said2["turn"], text="my own words") == {
        "ok": True, "policy_version": 2}

    said3 = child.send(op="say", text="no rating this time")
    chose3 = child.send(op="choose", turn=said3["turn"], id=said3["candidates"][-1]["id"])
    assert chose3["ok"] and chose3["reward"] == 0.5 and chose3["policy_version"] == 3

    assert child.send(op="stats") == {"ok": True, "turns": 3, "sessions": 1, "policy_version": 3,
                                        "unreadable_turns": 0, "adapter": None, "training": "",
                                        "embeddings": "generator"}
    assert child.send(op="end") == {"ok": True, "session": said["session"]}
    said4 = child.send(op="say", text="a new session")
    assert said4["session"] != said["session"]
    code, rest, err = child.close()
    assert code == 0 and rest == ""

    # A new process sees every acknowledged turn, learned.
    again = headless()
    assert again.send(op="stats") == {"ok": True, "turns": 4, "sessions": 2, "policy_version": 3,
                                        "unreadable_turns": 0, "adapter": None, "training": "",
                                        "embeddings": "generator"}
    assert again.close()[0] == 0
    store = Store(data_dir)
    statuses = [t["status"] for t in store.turns()]
    assert statuses == ["chosen", "replied", "chosen", "unanswered"]
    assert store.load_policy()["version"] == 3


def test_order_edit_regenerate_and_none(headless, data_dir):
    child = headless()
    said = child.send(op="say", text="tell me a joke")
    again = child.send(op="regenerate", turn=said["turn"])
    check_say(again)
    assert again["turn"] != said["turn"] and again["session"] == said["session"]
    rejected = child.send(op="none", turn=again["turn"])
    check_say(rejected)
    ids = [c["id"] for c in rejected["candidates"]]
    bad = child.send(op="choose", turn=rejected["turn"], order=[ids[0], ids[0]])
    assert bad["ok"] is False and bad["error"]["code"] == "bad_order"
    # An order alone: its first id is the pick.
    chose = child.send(op="choose", turn=rejected["turn"], order=[ids[1], [ids[0], ids[2]]],
                       rating=5)
    assert chose == {"ok": True, "reward": 1.0, "policy_version": 3}
    said = child.send(op="say", text="and another")
    edited = child.send(op="choose", turn=said["turn"], id=said["candidates"][0]["id"],
                        edit="my better joke")
    assert edited["ok"] and edited["policy_version"] == 4
    assert child.close()[0] == 0
    turns = list(Store(data_dir).turns())
    assert [t["status"] for t in turns] == ["regenerated", "rejected", "chosen", "chosen"]
    assert turns[2]["ranking"][:2] == [[ids[1]], [ids[0], ids[2]]]
    assert turns[3]["edit"] == "my better joke"


def test_rate_marks_candidates_before_and_after_the_pick(headless, data_dir):
    child = headless()
    said = child.send(op="say", text="rate these")
    ids = [c["id"] for c in said["candidates"]]
    assert child.send(op="rate", turn=said["turn"], id=ids[1], good=False) == {
        "ok": True, "turn": said["turn"], "id": ids[1], "good": False, "learned": False,
        "policy_version": 0}
    assert child.send(op="choose", turn=said["turn"], id=ids[0], rating=4)["policy_version"] == 1
    assert child.send(op="rate", turn=said["turn"], id=ids[2], good=True) == {
        "ok": True, "turn": said["turn"], "id": ids[2], "good": True, "learned": True,
        "policy_version": 2}
    for request, code in (({"turn": said["turn"], "id": ids[2], "good": False}, "already_rated"),
                          ({"turn": said["turn"], "id": 99, "good": True}, "bad_id"),
                          ({"turn": said["turn"], "id": ids[0], "good": "yes"}, "bad_field"),
                          ({"turn": said["turn"], "id": ids[0]}, "missing_field"),
                          ({"turn": "77", "id": ids[0], "good": True}, "unknown_turn")):
        answer = child.send(op="rate", **request)
        assert answer["ok"] is False and answer["error"]["code"] == code, answer
    only = child.send(op="say", text="only thumbs here")
    assert child.send(op="rate", turn=only["turn"], id=only["candidates"][0]["id"],
                      good=True)["ok"]
    closed = child.send(op="rate", turn=said["turn"], id=ids[0], good=True)
    assert closed["error"]["code"] == "turn_closed"
    assert child.send(op="end")["ok"]
    assert child.close()[0] == 0
    turns = list(Store(data_dir).turns())
    assert [len(t["thumbs"]) for t in turns] == [2, 1]
    assert turns[1]["status"] == "unanswered"
    assert Store(data_dir, readonly=True).load_policy()["version"] == 3  # the thumb alone


def test_every_bad_line_gets_an_error_and_the_process_goes_on(headless):
    child = headless()
    said = child.send(op="say", text="hi")
    shown = [c["id"] for c in said["candidates"]]
    turn = said["turn"]
    bad = [
        ("not json", "bad_json"),
        ("", "bad_json"),
        ("[1, 2]", "not_object"),
        ('"say"', "not_object"),
        ('{"op": "dance"}', "unknown_op"),
        ('{"text": "no op"}', "unknown_op"),
        ('{"op": "say"}', "missing_field"),
        ('{"op": "say", "text": 5}', "bad_field"),
        ('{"op": "say", "text": "   "}', "empty_text"),
        ('{"op": "choose", "id": 0}', "missing_field"),
        (json.dumps({"op": "choose", "turn": turn}), "missing_field"),
        (json.dumps({"op": "choose", "turn": 1, "id": shown[0]}), "bad_field"),
        (json.dumps({"op": "choose", "turn": "12345", "id": shown[0]}), "unknown_turn"),
        (json.dumps({"op": "choose", "turn": turn, "id": 1000}), "bad_id"),
        (json.dumps({"op": "choose", "turn": turn, "id": -1}), "bad_id"),
        (json.dumps({"op": "choose", "turn": turn, "id": shown[0], "rating": 6}), "bad_rating"),
        (json.dumps({"op": "choose", "turn": turn, "id": shown[0], "rating": 0}), "bad_rating"),
        (json.dumps({"op": "choose", "turn": turn, "id": shown[0], "rating": 2.5}), "bad_rating"),
        (json.dumps({"op": "choose", "turn": turn, "id": shown[0], "rating": True}), "bad_rating"),
        (json.dumps({"op": "reply", "turn": turn}), "missing_field"),
    ]
    for line, code in bad:
        answer = child.send_raw(line)
        assert answer["ok"] is False, line
        assert answer["error"]["code"] == code, (line, answer)
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    # The turn is still answerable after all that, and only once.
    assert child.send(op="choose", turn=turn, id=shown[0], rating=5)["ok"] is True
    twice = child.send(op="choose", turn=turn, id=shown[0])
    assert twice["error"]["code"] == "already_answered"
    assert child.send(op="reply", turn=turn, text="x")["error"]["code"] == "already_answered"
    assert child.send(op="stats")["policy_version"] == 1
    code, _, _ = child.close()
    assert code == 0


def test_say_while_unanswered_logs_the_turn_as_unanswered(headless, data_dir):
    child = headless()
    first = child.send(op="say", text="one")
    second = child.send(op="say", text="two")
    stale = child.send(op="choose", turn=first["turn"], id=first["candidates"][0]["id"])
    assert stale["error"]["code"] == "turn_closed"
    assert child.send(op="choose", turn=second["turn"], id=second["candidates"][0]["id"])["ok"]
    assert child.close()[0] == 0
    store = Store(data_dir)
    one, two = list(store.turns())
    assert one["status"] == "unanswered" and one["rewards"] is None
    assert two["status"] == "chosen"


def test_hostile_text_round_trips(headless):
    child = headless()
    text = "[bold]x[/] [/] [ \x1b[31mred\x1b[0m \u0000 \ud800 日本語"
    said = child.send(op="say", text=text)
    assert said["ok"] is True
    long = child.send(op="say", text="y" * 30_000)
    assert long["error"]["code"] == "too_long"
    assert child.close()[0] == 0


def test_invalid_utf8_on_stdin_is_a_bad_line(tiny_model, data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "rlchat.tui.cli", "headless", "--model", str(tiny_model),
         "--data-dir", str(data_dir)],
        input=b'\xff\xfe{"op":"stats"\n{"op":"stats"}\n', capture_output=True, timeout=60,
    )
    answers = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert result.returncode == 0
    assert answers[0]["error"]["code"] == "bad_json" and answers[1]["ok"] is True


def test_stdout_holds_only_answers(headless):
    child = headless()
    child.send(op="say", text="hello")
    child.send(op="nope")
    code, out, err = child.close()
    assert code == 0 and out == ""


def test_unavailable_model_is_one_sentence_on_stderr(tiny_model, data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "rlchat.tui.cli", "headless", "--model", "no-such/model-xyz",
         "--data-dir", str(data_dir)],
        input='{"op":"stats"}\n', capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--model PATH" in lines[0] and "rlchat init-model" in lines[0]


@pytest.mark.parametrize("command", [["headless"], ["chat"], []])
def test_second_instance_is_refused_naming_the_holder(tiny_model, data_dir, command):
    import os

    holder = Store(data_dir)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rlchat.tui.cli", *command, "--model", str(tiny_model),
             "--data-dir", str(data_dir)],
            input="", capture_output=True, text=True, timeout=60,
        )
    finally:
        holder.close()
    assert result.returncode == 3 and result.stdout == ""
    assert f"in use by process {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr


def test_streamed_say_sends_token_events_then_the_same_answer(headless, tiny_model, tmp_path):
    from rlchat.learner.dialogue import cut_reply

    plain = headless()
    expected = plain.send(op="say", text="hello there")
    assert plain.send(op="say", text="hi", stream="yes")["error"]["code"] == "bad_field"
    plain.close()
    streaming = Headless(tiny_model, tmp_path / "other")
    try:
        assert streaming.proc.stdin and streaming.proc.stdout
        request = {"op": "say", "text": "hello there", "stream": True}
        streaming.proc.stdin.write(json.dumps(request) + "\n")
        streaming.proc.stdin.flush()
        events, streamed = 0, {}
        while "event" in (line := json.loads(streaming.proc.stdout.readline())):
            assert set(line) == {"event", "id", "text"} and line["event"] == "token"
            assert isinstance(line["id"], int) and 0 <= line["id"] < 8
            events += 1
            streamed[line["id"]] = streamed.get(line["id"], "") + line["text"]
        assert events > len(streamed) > 1  # several rows, several tokens each
        # Same seed, so the same answer as without streaming, made of the streamed rows.
        texts = [c["text"] for c in line["candidates"]]
        assert texts == [c["text"] for c in expected["candidates"]]
        assert set(texts) <= {cut_reply(t) for t in streamed.values()}
    finally:
        streaming.close()


def test_the_documented_error_codes_are_exactly_the_codes():
    import re
    from pathlib import Path

    from rlchat.learner.errors import ErrorCode
    from rlchat.storage.faults import _KINDS

    doc = (Path(__file__).parents[1] / "docs" / "headless.md").read_text()
    table = doc.split("Codes:", 1)[1].split("\n\n", 2)[1]
    documented = {code for row in table.splitlines() if row.startswith("| `")
                  for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == {code.value for code in ErrorCode}
    storage = {kind[0] for kind in _KINDS.values()} | {"storage_error"}
    assert storage <= documented  # storage names its own codes: they must be in the enum


def _documented_exchanges() -> list[tuple[dict, list[dict]]]:
    """(request, the lines documented after it) of docs/headless.md's example."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "headless.md").read_text()
    block = text.split("$ rlchat headless", 1)[1].split("```", 1)[0]
    exchanges: list[tuple[dict, list[dict]]] = []
    for line in block.splitlines()[1:]:
        value = json.loads(line)  # every line of the example is JSON
        if "op" in value:
            exchanges.append((value, []))
        else:
            exchanges[-1][1].append(value)
    return exchanges


def _same_names(real, documented, where: str) -> None:
    if isinstance(documented, dict):
        assert isinstance(real, dict) and set(real) == set(documented), (where, real)
        for key, value in documented.items():
            _same_names(real[key], value, f"{where}.{key}")
    elif isinstance(documented, list) and documented and isinstance(documented[0], dict):
        assert isinstance(real, list) and real, (where, real)
        for item in real:
            _same_names(item, documented[0], f"{where}[]")


def test_the_documented_example_has_the_real_field_names(headless):
    """Each request of docs/headless.md's example, sent to a real headless
    process: each answer (and stream event) has the documented field names,
    and an error the documented code.  Candidate ids are mapped by position:
    the documented say's n-th candidate is the real one's n-th."""
    exchanges = _documented_exchanges()
    assert {request["op"] for request, _ in exchanges} >= {"say", "choose", "rate", "end",
                                                          "stats"}
    child = headless()
    ids: dict[int, int] = {}
    for request, documented in exchanges:
        if "id" in request:
            request = {**request, "id": ids[request["id"]]}
        assert child.proc.stdin and child.proc.stdout
        child.proc.stdin.write(json.dumps(request) + "\n")
        child.proc.stdin.flush()
        for expected in documented:
            real = json.loads(child.proc.stdout.readline())
            while "event" in real and "event" not in expected:  # more pieces than shown
                real = json.loads(child.proc.stdout.readline())
            _same_names(real, expected, request["op"])
            if "error" in expected:
                assert real["error"]["code"] == expected["error"]["code"]
            if "candidates" in expected and "event" not in real:
                ids = {doc["id"]: got["id"] for doc, got
                       in zip(expected["candidates"], real["candidates"], strict=False)}
    code, _, err = child.close()
    assert code == 0, err
