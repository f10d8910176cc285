"""Servers that misbehave, through `rlchat headless --base-url`: every fault
of the misbehaving server's (rlchat.testkit.misbehaving) is one coded answer within the deadline
plus a second, the process lives on and exits 0, nothing of a failed turn
is kept, the key is nowhere in the data dir, and every export is strict
JSON holding exactly the turns answered `ok`."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlchat.learner.remote.client import BACKOFF_FLOOR, MAX_ATTEMPTS
from rlchat.testkit.misbehaving import MODEL, WRONG_TYPES, MisbehavingServer

DEADLINE = 2.0  # --request-timeout of these sessions
KEY_VAR, KEY = "RLCHAT_MIS_KEY", "sk-mis-s3cret-4711"


@pytest.fixture(scope="module")
def server():
    started = MisbehavingServer().start()
    yield started
    started.stop()


class Session:
    """`rlchat headless` against one base URL; each answer is timed."""

    def __init__(self, base_url: str, data_dir: Path, *extra: str, model: str = MODEL) -> None:
        env = {**os.environ, KEY_VAR: KEY}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlchat.tui.cli", "headless", "--base-url", base_url,
             "--model", model, "--data-dir", str(data_dir), "--seed", "0",
             "--request-timeout", str(DEADLINE), "--api-key-env", KEY_VAR, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ok: list[tuple[str, str]] = []  # (turn id, message) answered ok
        ready, _ = self.send(op="stats")  # answered once the start (and its probe) is over
        assert ready["ok"], ready

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, **request) -> tuple[dict, float]:
        assert self.proc.stdin is not None
        began = time.monotonic()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=DEADLINE + 30)  # a hang fails below, not here
        return json.loads(line), time.monotonic() - began

    def say(self, text: str, *, code: str | None = None) -> dict:
        """`say`, answered within the deadline + 1 s, `ok` or with `code`."""
        answer, took = self.send(op="say", text=text)
        assert took < DEADLINE + 1.0, (text, took, answer)
        assert self.proc.poll() is None
        if code is None:
            assert answer["ok"], (text, answer)
            self.ok.append((answer["turn"], text))
            pick = answer["candidates"][0]["id"]
            chosen, _ = self.send(op="choose", turn=answer["turn"], id=pick, rating=5)
            assert chosen["ok"], chosen
        else:
            assert not answer["ok"] and answer["error"]["code"] == code, (text, answer)
            assert "\n" not in answer["error"]["message"] and KEY not in answer["error"]["message"]
        return answer

    def finish(self, data_dir: Path, tmp_path: Path) -> str:
        """Stats right, exit 0 at the end of input, no traceback; the key in no
        file; every export strict JSON of exactly the ok turns.  Returns stderr."""
        stats, _ = self.send(op="stats")
        assert stats["turns"] == len(self.ok), stats
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err
        for path in data_dir.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
        check_exports(data_dir, tmp_path, self.ok)
        return err


def strict(line: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def check_exports(data_dir: Path, tmp_path: Path, ok: list[tuple[str, str]]) -> None:
    jq = shutil.which("jq")
    for kind in ("turns", "dpo", "kto", "markdown"):
        out = tmp_path / f"export.{kind}"
        done = subprocess.run([sys.executable, "-m", "rlchat.tui.cli", "export", "--format",
                               kind, "--data-dir", str(data_dir), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        text = out.read_bytes().decode("utf-8")  # strict UTF-8: no lone surrogate
        assert KEY not in text
        if kind == "markdown":
            for _, message in ok:
                assert message in text
            continue
        rows = [strict(line) for line in text.splitlines()]
        if jq:
            assert subprocess.run([jq, "-c", "."], stdin=out.open("rb"), capture_output=True,
                                  timeout=60).returncode == 0
        if kind == "turns":
            assert sorted(r["id"] for r in rows) == sorted(t for t, _ in ok)
            assert sorted(r["user_text"] for r in rows) == sorted(m for _, m in ok)
        else:
            assert rows or len(ok) < 2
            said = {m for _, m in ok}
            for row in rows:
                prompt = json.dumps(row["prompt"])
                assert any(json.dumps(m)[1:-1] in prompt for m in said), row["prompt"]


# A fault in the turn, by the words `fault NAME` in the message.
TURN_FAULTS = {
    "trickle": "backend_unreachable",
    "no-headers": "backend_unreachable",
    "trickle-headers": "backend_unreachable",
    "early-end": "backend_unreachable",
    "error-in-stream": "backend_error",
    "html": "backend_error",
    "not-json": "backend_error",
    "bad-gzip": "backend_error",
    "redirect": "backend_error",
    "echo-key-refusal": "backend_error",
    "retry-0": "backend_busy",
    "retry-negative": "backend_busy",
    "retry-date": "backend_busy",
    **dict.fromkeys(WRONG_TYPES, "backend_error"),
}
# Faults a turn survives: what the server sent is mended before it is kept.
TURN_MENDED = ("nan-logprobs", "broken-unicode", "gzip-stream", "echo-key", "huge-3-small",
               "huge-3-large", "greedy")


def test_every_fault_in_a_turn_is_one_coded_answer_and_keeps_nothing(server, data_dir,
                                                                      tmp_path):
    session = Session(server.url(), data_dir)
    session.say("a first good message")
    for fault, code in TURN_FAULTS.items():
        session.say(f"please fault {fault} now", code=code)
        session.say(f"and a good one after {fault}")
    for fault in TURN_MENDED:
        answer = session.say(f"this one may fault {fault} but is kept")
        texts = [c["text"] for c in answer["candidates"]]
        if fault.startswith("huge"):  # capped at --max-new-tokens, and kept
            assert all(c["truncated"] for c in answer["candidates"])
            assert all(len(t) <= 128 * 32 for t in texts)
        if fault == "broken-unicode":
            assert all(t.encode("utf-8") for t in texts)  # no lone surrogate left
        if fault == "greedy":
            assert answer["warning"]["code"] == "identical_replies"
            assert "same reply" in answer["warning"]["message"]
    session.finish(data_dir, tmp_path)
    # Each redirect stayed with the server that sent it; the key went nowhere else.
    assert server.keys <= {"", f"Bearer {KEY}"}
    # Busy: a few attempts, the waits between them never under the floor, and
    # growing, whatever Retry-After said (0, negative, a date gone by).
    for fault in ("retry-0", "retry-negative", "retry-date"):
        times = server.times[fault]
        assert 2 <= len(times) <= MAX_ATTEMPTS
        waits = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(w >= BACKOFF_FLOOR * 0.9 for w in waits)
        assert all(b > a for a, b in zip(waits, waits[1:], strict=False))


def test_the_stored_turns_hold_no_bad_numbers_or_text(server, data_dir, tmp_path):
    session = Session(server.url(), data_dir)
    session.say("fault nan-logprobs in a kept turn")
    session.say("fault broken-unicode in a kept turn")
    session.say("fault echo-key in a kept turn")
    session.finish(data_dir, tmp_path)
    rows = [strict(line) for line in (tmp_path / "export.turns").read_text().splitlines()]
    assert all(c["logprob"] is None for c in rows[0]["candidates"])  # absent, not NaN
    assert all(c["logprob"] == -0.5 for c in rows[1]["candidates"])
    assert all("***" in c["text"] for c in rows[2]["candidates"])  # the echoed key, masked


@pytest.mark.parametrize("fault,code", [
    ("no-headers", "backend_unreachable"), ("trickle-headers", "backend_unreachable"),
    ("html", "backend_error"), ("not-json", "backend_error"), ("bad-gzip", "backend_error"),
    ("redirect", "backend_error"), ("retry-days", "backend_busy"),
    ("retry-junk", "backend_busy"), ("busy-503", "backend_busy"),
    ("choices-string", "backend_error"), ("index-float", "backend_error"),
    ("error-in-stream", "backend_error"), ("early-end", "backend_unreachable"),
])
def test_a_fault_at_start_opens_as_a_server_that_is_down(server, data_dir, tmp_path,
                                                         fault, code):
    session = Session(server.url(fault), data_dir)
    answer = session.say("hello", code=code)
    if fault == "redirect":
        assert "198.51.100.7" in answer["error"]["message"]
    if fault in ("no-headers", "trickle-headers"):
        assert "--request-timeout" in answer["error"]["message"]
    err = session.finish(data_dir, tmp_path)
    assert "rlchat" in err  # the start's sentence, as for a server that is down


def test_a_model_the_server_does_not_list_is_tried_on_request(server, data_dir, tmp_path):
    session = Session(server.url("unlisted"), data_dir)
    session.say("served though not listed")
    session.finish(data_dir, tmp_path)
    refused = Session(server.url("refuse-unlisted"), tmp_path / "other", model="other")
    answer = refused.say("no such model", code="backend_model")
    assert "'other'" in answer["error"]["message"]
    refused.finish(tmp_path / "other", tmp_path)


@pytest.mark.parametrize("message", ["fault trickle", "fault no-headers", "fault retry-0"])
def test_cancel_ends_a_request_at_once_whatever_the_server_does(server, message):
    from rlchat.learner.errors import GenerationCancelled
    from rlchat.learner.remote import RemoteGenerator

    remote = RemoteGenerator(server.url(), MODEL, timeout=60.0)
    remote.connect()
    cancel, outcome = threading.Event(), queue.Queue()

    def turn() -> None:
        try:
            remote.propose([], message, 2, cancel=cancel)
            outcome.put("answered")
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.put(exc)

    before = server.hits[message.split()[1]]
    worker = threading.Thread(target=turn, daemon=True)
    worker.start()
    while server.hits[message.split()[1]] == before:  # the request is in flight
        assert worker.is_alive()
        time.sleep(0.01)
    cancel.set()
    began = time.monotonic()
    result = outcome.get(timeout=10)
    assert isinstance(result, GenerationCancelled), result
    assert time.monotonic() - began < 0.5  # not the 60 s deadline
    remote.close()


def test_a_data_dir_holding_bad_numbers_and_text_exports_strict_json(tmp_path, data_dir):
    """Turns stored before rlchat checked what servers send: NaN log-probs,
    lone surrogates.  The export writer mends them (and the reader reads such
    a log-prob as absent)."""
    from rlchat.learner.agent import Agent
    from rlchat.learner.records import Candidate, Proposal
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store
    from tests.helpers import ScriptedSource

    class OldServer(ScriptedSource):
        def propose(self, history, message, n, **options) -> Proposal:
            proposal = super().propose(history, message, n, **options)
            proposal.candidates = [
                Candidate(text=c.text + " \ud800", logprob=float("nan"), tokens=c.tokens,
                          hidden=c.hidden) for c in proposal.candidates]
            proposal.prompt = f"User: {message} \udfff\nAssistant:"
            return proposal

    agent = Agent(Store(data_dir), OldServer(["one", "two", "three"]),
                  Settings(model="old", candidates=3, samples=3), seed=0)
    said = []
    for i in range(3):
        view = agent.say(f"message {i} \udfff")
        agent.choose(view.turn, view.candidates[0].id, 5)
        said.append((view.turn, f"message {i} ?"))  # a person's text is mended as it comes
    agent.end()
    agent.store.close()
    # As the writer before this release stored a server's NaN log-prob:
    for shard in (data_dir / "turns").glob("turns-*.json"):
        shard.write_bytes(shard.read_bytes().replace(b'"logprob":null', b'"logprob":NaN'))
    assert b"NaN" in (data_dir / "turns" / "turns-000001.json").read_bytes()
    check_exports(data_dir, tmp_path, said)
    rows = [strict(line) for line in (tmp_path / "export.turns").read_text().splitlines()]
    assert all(c["logprob"] is None and c["text"].endswith(" ?") for r in rows
               for c in r["candidates"])
