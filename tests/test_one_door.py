"""The agent as the one door to stored state: sessions, the policy view,
settings, storage faults and the learning curves; no model needed."""

from __future__ import annotations

import errno
import json

import pytest

from rlchat.learner.agent import Agent
from rlchat.learner.errors import AgentError
from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.headless import handle_line
from tests.helpers import ScriptedSource

REPLIES = ["Sure.", "No idea.", "Why?", "Thanks!"]


@pytest.fixture
def store(data_dir):
    opened = Store(data_dir)
    yield opened
    opened.close()


@pytest.fixture
def agent(store):
    return Agent(store, ScriptedSource(REPLIES), Settings(samples=4), seed=0)


def answered(agent: Agent, text: str, rating: int = 4) -> str:
    view = agent.say(text)
    agent.choose(view.turn, view.candidates[0].id, rating)
    return view.turn


def test_sessions_and_curves_work_before_any_model(store):
    Agent(store, ScriptedSource(REPLIES), seed=0).say("kept from before")
    core = Agent(store, None, seed=0)  # what the app has while the model loads
    assert [s["title"] for s in core.sessions()] == ["kept from before"]
    assert core.session_messages("1") == [("user", "kept from before"),
                                          ("note", "(no reply chosen)")]
    assert core.learning_curves().unanswered == 1  # closed at this start
    with pytest.raises(AgentError) as refused:
        core.say("hello")
    assert refused.value.code == "no_model"
    core.attach(ScriptedSource(REPLIES))
    assert core.say("hello").candidates


def test_deleting_the_open_session_mid_turn_ends_it_and_the_next_message_starts_another(agent):
    answered(agent, "about cats")
    view = agent.say("more cats")  # candidates on screen
    assert len(agent.history) == 1
    deleted = agent.delete_session(view.session)
    assert deleted.was_open and deleted.turns == 2
    assert agent.session is None and agent.history == [] and agent.open_turn is None
    with pytest.raises(AgentError) as late:  # the pick that follows on screen
        agent.choose(view.turn, view.candidates[0].id, 5)
    assert late.value.code == "unknown_turn"
    new = agent.say("a fresh start")
    assert new.session == "2"
    assert [s["id"] for s in agent.sessions()] == ["2"]
    assert agent.stats()["sessions"] == 2  # numbers are never reused


def test_a_generation_that_outlives_its_session_is_refused_not_stored(store):
    class EndsMidway(ScriptedSource):
        def propose(self, history, message, n, **kwargs):
            agent.end()  # as if the session were deleted while generating
            return super().propose(history, message, n)

    agent = Agent(store, EndsMidway(REPLIES), seed=0)
    with pytest.raises(AgentError) as gone:
        agent.say("hello")
    assert gone.value.code == "session_gone" and store.count_turns() == 0


def test_rename_goes_through_the_agent_and_is_one_line(agent):
    answered(agent, "hello")
    assert agent.rename_session("1", "  new\ntitle  " + "x" * 100) == ("new title " + "x" * 70)
    with pytest.raises(AgentError):
        agent.rename_session("99", "nope")


def test_reconfigure_applies_settings_and_says_when_the_model_must_change(agent):
    assert agent.reconfigure(Settings(candidates=2, samples=4, gamma=0.8, temperature=0.7)) is False
    assert len(agent.say("hi").candidates) == 2
    assert agent.policy_view().config.gamma == 0.8
    assert agent.source.sampling.temperature == 0.7
    assert agent.reconfigure(Settings(model="other", samples=4)) is True
    with pytest.raises(AgentError) as bad:
        agent.reconfigure(Settings(candidates=5, samples=4))
    assert bad.value.code == "bad_settings"


def test_the_policy_view_is_a_copy(agent):
    answered(agent, "hi", 5)
    view = agent.policy_view()
    assert view.version == 1 and len(view.weights) == len(view.names)
    answered(agent, "again", 1)
    assert view.version == 1 and agent.policy_view().version == 2


def test_curves_are_kept_turn_by_turn_and_survive_a_restart(store):
    agent = Agent(store, ScriptedSource(REPLIES), seed=0)
    for rating in (5, 1, 3):
        answered(agent, "hi", rating)
    agent.say("left open")
    agent.end()
    curves = agent.learning_curves()
    assert (curves.answered, curves.unanswered, len(curves.reward())) == (3, 1, 3)
    read = []
    every_turn = store.turns

    def counted(after_seq: int = 0):
        for record in every_turn(after_seq):
            read.append(record["seq"])
            yield record

    store.turns = counted
    # As after a kill: the turns since the last checkpoint are read once more.
    again = Agent(store, ScriptedSource(REPLIES), seed=0)
    assert again.learning_curves().to_dict() == curves.to_dict()
    assert read == [1, 2, 3, 4]
    again.checkpoint()  # a clean exit: a restart and F3 read no stored turn again
    read.clear()
    third = Agent(store, ScriptedSource(REPLIES), seed=0)
    assert third.learning_curves().to_dict() == curves.to_dict()
    assert read == []


def test_curves_stay_bounded_and_keep_the_means():
    from rlchat.learner.curves import MAX_POINTS, Curves
    from rlchat.learner.records import CHOSEN, StoredCandidate, Turn

    curves = Curves()
    for seq in range(1, 5 * MAX_POINTS + 1):
        reward = 1.0 if seq % 2 else -1.0
        curves.fold(Turn("1", "m", [StoredCandidate("a", 0, 1, [0.0])], "v1", [0.0], [0], 1,
                         [1.0], 0, 0.0, status=CHOSEN, choice=0, rewards=[reward],
                         weights=[1.0], temperature=0.5, seq=seq))
    assert len(curves.points) <= MAX_POINTS and curves.answered == 5 * MAX_POINTS
    assert curves.x()[-1] == 5 * MAX_POINTS
    assert all(abs(r) < 1e-9 for r in curves.reward()[:-1])  # +1/-1 pairs average out
    assert set(curves.temperature()[1]) == {0.5}


def fail_writes(monkeypatch, code: int) -> None:
    from rlchat.storage import atomic

    def full(*args, **kwargs):
        raise OSError(code, "injected")

    monkeypatch.setattr(atomic, "write_atomic", full)


@pytest.mark.parametrize(("errno_", "code"), [(errno.ENOSPC, "storage_full"),
                                              (errno.EROFS, "storage_readonly"),
                                              (errno.EACCES, "storage_denied")])
def test_storage_faults_are_one_sentence_and_lose_nothing_acknowledged(
    agent, store, monkeypatch, errno_, code
):
    answered(agent, "before the fault", 5)
    view = agent.say("the turn on screen")
    with monkeypatch.context() as patch:
        fail_writes(patch, errno_)
        with pytest.raises(AgentError) as pick:
            agent.choose(view.turn, view.candidates[0].id, 4)
        assert pick.value.code == code and "not saved" in pick.value.message
        with pytest.raises(AgentError) as say:
            agent.say("while the disk is full")
        assert say.value.code == code
        answer = handle_line(agent, json.dumps({"op": "say", "text": "headless"}))
        assert answer["ok"] is False and answer["error"]["code"] == code
        message = answer["error"]["message"]
        assert "\n" not in message and "Errno" not in message and "not saved" in message
    # The fault is gone: everything acknowledged is there, the open turn can be answered.
    assert agent.policy_view().version == 1
    agent.choose(view.turn, view.candidates[0].id, 4)
    assert agent.policy_view().version == 2
    assert [t["status"] for t in store.turns()] == ["chosen", "chosen"]


def test_a_policy_that_cannot_be_saved_is_a_warning_and_relearned_at_start(
    agent, store, data_dir, monkeypatch
):
    view = agent.say("hello")
    original = store.save_policy

    def full(snapshot):
        raise __import__("rlchat.storage", fromlist=["StorageFault"]).StorageFault(
            "storage_full", "The disk is full.")

    monkeypatch.setattr(store, "save_policy", full)
    agent.choose(view.turn, view.candidates[0].id, 5)  # the turn is stored: no error
    agent.checkpoint()  # as at a clean exit, onto a full disk
    warning = agent.take_warning()
    assert warning is not None and warning.code == "storage_full"
    assert agent.take_warning() is None  # said once
    monkeypatch.setattr(store, "save_policy", original)
    store.close()
    reopened = Agent(Store(data_dir), None, seed=0)
    assert reopened.policy_view().version == 1  # relearned from the stored turn
    reopened.store.close()


def test_no_module_of_tui_imports_storage_without_saying_why():
    """The front ends reach the data dir through the learner (learner/data_dir.py,
    learner/offline.py); an import of storage in tui/ says on its line why."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted(root.glob("tui/**/*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(re.match(r"rlchat\.storage\b", name) for name in names) and \
                    not re.search(r"# storage: \S", lines[node.lineno - 1]):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_no_mixin_is_left_in_the_product():
    """State lives in one object per job and collaborators take it: no class
    of learner/ or tui/ mixes in another of the project's, and no method
    types `self` as some other class (the mark of a mixin)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    paths = sorted([*root.glob("learner/**/*.py"), *root.glob("tui/**/*.py")])
    trees = {path: ast.parse(path.read_text()) for path in paths}
    ours = {node.name for tree in trees.values() for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)}
    offenders = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                mixed = [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in ours]
                if len(node.bases) > 1 and mixed:
                    offenders.append(f"{path.relative_to(root)}: {node.name}{mixed}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.args.args:
                first = node.args.args[0]
                if first.arg == "self" and first.annotation is not None:
                    offenders.append(f"{path.relative_to(root)}: {node.name}(self: ...)")
    assert offenders == []
