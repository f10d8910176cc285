"""The model learns while the user chats: auto_train's background runs, the
adapter swapped in between two turns, `rlchat adapters`, and undo.

Each run is the real `rlchat train --adapter` in its own process, on the
tiny GPT-2, a few steps long."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from rlchat.learner.adapters import MIN_HELD_OUT, adapter_runs, read_in_use
from rlchat.learner.agent import Agent, load_source, open_agent
from rlchat.learner.background_training import AUTO_MAX_STEPS, BATCH, BackgroundTraining
from rlchat.learner.errors import AgentError
from rlchat.learner.settings import Settings
from rlchat.learner.tiny_model import corpus_lines
from rlchat.learner.train import held_out_count
from rlchat.storage import Store
from rlchat.testkit.servers import llama_dir, llama_server
from tests.helpers import turns_of

pytest.importorskip("trl")

USERS = [line.removeprefix("User:").strip() for line in corpus_lines() if line.startswith("User:")]


def answer(agent: Agent, i: int) -> None:
    """A user who likes questions, else the shortest reply."""
    view = agent.say(USERS[i % len(USERS)])
    best = max(view.candidates, key=lambda c: ("?" in c.text, -len(c.text)))
    agent.choose(view.turn, best.id, 5 if "?" in best.text else 3)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    """A data dir whose auto_train wrote one adapter run, chatting on until
    it did: (the data dir, the notice the chat gave)."""
    data = tmp_path_factory.mktemp("auto") / "data"
    agent = open_agent(Store(data), Settings(model=str(tiny_model), auto_train=45), seed=0)
    agent.model_learning.steps = 4
    notices, i = [], 0
    try:
        while not adapter_runs(data):
            assert i < 60, "auto_train never started a run"
            notices.append(agent.between_turns())
            answer(agent, i)
            i += 1
            training = agent.model_learning.training
            if training.running:
                # The run is held while a turn is generated: it is stopped
                # ('T') from within the generation's own token callback.
                states: list[str] = []
                pid = training.pid
                view = agent.say(USERS[0], on_token=lambda row, text, states=states, pid=pid:
                                 states.append(_state(pid)))
                agent.choose(view.turn, view.candidates[0].id, 3)
                assert states and states[-1] == "T"  # (a stop lands within a moment)
                assert _settles(training.pid, stopped=False)  # and continued after
                training.wait(300)
        notices.append(agent.between_turns())
        (data.parent / "notices.json").write_text(json.dumps(notices))
        (data.parent / "identity.json").write_text(json.dumps(agent.source.identity))
        answer(agent, i)  # a turn after the run: on the adapter if it passed
    finally:
        agent.stop_training()
        agent.store.close()
    return data


def _settles(pid: int, *, stopped: bool) -> bool:
    """Whether the process comes to be stopped (or running) within 10 s: a
    signal takes effect when the kernel next schedules it."""
    deadline = time.monotonic() + 10
    while (_state(pid) == "T") != stopped:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _state(pid: int) -> str:
    """A process's state letter from /proc ('T': stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def test_auto_train_runs_in_the_background_and_swaps_in_a_run_that_passes(trained,
                                                                          tiny_model):
    [run] = adapter_runs(trained)
    assert run.base == str(tiny_model) and (run.path / "adapter_config.json").is_file()
    assert run.pairs >= 45 and run.held_out >= MIN_HELD_OUT  # the whole log, newest held out
    notices = [n for n in json.loads((trained.parent / "notices.json").read_text()) if n]
    identity = json.loads((trained.parent / "identity.json").read_text())
    last = turns_of(trained)[-1]
    if run.passed:  # in use from the next turn, and the turns say so
        assert notices[-1].startswith(f"Adapter run {run.run} is in use")
        assert identity["adapter"] == str(run.path) and identity["lineage"] == str(run.run)
        assert last.generator["adapter"] == str(run.path)
        assert read_in_use(trained) == run.run
        # The family of the base: the policy keeps its model columns.
        first = turns_of(trained)[0]
        assert last.generator["family"] == first.generator["family"]
        assert last.generator["weights"] != first.generator["weights"]
    else:  # kept on disk, not used, and said so
        assert "did not beat the held-out bar" in notices[-1]
        assert "adapter" not in identity and "adapter" not in last.generator
        assert read_in_use(trained) is None


def test_a_run_reads_its_whole_log_once_within_the_step_cap(trained, tiny_model):
    [run] = adapter_runs(trained)
    lineage = json.loads((run.path / "rlchat_lineage.json").read_text())
    # The fixture asks for 4 steps; the 45-odd rows it counted, less those held
    # out, are more batches (the run read a turn or two more, chatted as it began).
    train_rows = run.pairs - held_out_count(run.pairs)
    assert 4 < lineage["steps"] <= math.ceil(train_rows / BATCH)
    # The next run: the last run's rows and those counted since.
    training = BackgroundTraining(trained, every=1, base=str(tiny_model), steps=4)
    assert training.run_steps() == math.ceil(train_rows / BATCH)
    training.rows = 10 * run.pairs  # a log that has outgrown the cap
    assert training.run_steps() == AUTO_MAX_STEPS
    training.steps = AUTO_MAX_STEPS + 6  # more asked for than the cap: as asked
    assert training.run_steps() == AUTO_MAX_STEPS + 6


def test_use_and_off_switch_between_turns_and_off_is_the_base_bit_for_bit(trained, tiny_model,
                                                                          tmp_path):
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    (data / ".lock").unlink(missing_ok=True)
    [run] = adapter_runs(data)
    settings = Settings(model=str(tiny_model))

    def draws(source) -> list[tuple[str, float]]:
        source.reseed(7)
        proposal = source.propose([], "What do you like to read?", 8)
        return [(c.text, c.logprob) for c in proposal.candidates]

    base = draws(load_source(settings, seed=1))
    agent = Agent(Store(data), load_source(settings, seed=1), settings, seed=1)
    try:
        assert agent.use_adapter(run.run).startswith(f"Adapter run {run.run} is in use")
        assert agent.adapter_run() == run.run and read_in_use(data) == run.run
        adapted = draws(agent.source)
        assert adapted != base  # other weights draw otherwise
        assert agent.use_adapter(None) == "The base model is in use (no adapter)."
        assert agent.adapter_run() is None and read_in_use(data) is None
        assert draws(agent.source) == base  # undo: the base's turn, bit for bit
    finally:
        agent.store.close()


def test_the_adapter_in_use_comes_back_at_start_and_follows_rlchat_adapters(
        trained, tiny_model, tmp_path, capsys):
    from rlchat.tui.cli import main

    data = tmp_path / "data"
    shutil.copytree(trained, data)
    (data / ".lock").unlink(missing_ok=True)
    [run] = adapter_runs(data)
    assert main(["adapters", "use", str(run.run), "--data-dir", str(data)]) == 0
    agent = open_agent(Store(data), Settings(model=str(tiny_model)), seed=0)
    try:
        assert agent.adapter_run() == run.run  # the choice outlives the process
        assert main(["adapters", "off", "--data-dir", str(data)]) == 0
        # A chat that runs follows the command at its next turn.
        assert agent.between_turns() == "The base model is in use (no adapter)."
        assert agent.adapter_run() is None
        assert agent.between_turns() == ""  # followed once
    finally:
        agent.store.close()
    capsys.readouterr()
    assert main(["adapters", "list", "--json", "--data-dir", str(data)]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["run"] == run.run and listed["in_use"] is False
    assert listed["passed"] == run.passed and listed["pairs"] == run.pairs
    assert main(["adapters", "use", "99", "--data-dir", str(data)]) == 2
    assert "there is no adapter run 99" in capsys.readouterr().err


def test_an_adapter_of_another_model_is_left_off_with_a_notice(trained, tiny_chat_model,
                                                               tmp_path):
    [run] = adapter_runs(trained)
    source = load_source(Settings(model=str(tiny_chat_model)), adapter=run.path)
    assert "adapter" not in source.identity
    assert source.notice == (f"The adapter {run.run} was trained on another model than the "
                             "one loaded; the model runs without it.")


def test_quitting_stops_a_run_and_leaves_nothing_half_written(trained, tiny_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    (data / ".lock").unlink(missing_ok=True)
    shutil.rmtree(data / "models")
    training = BackgroundTraining(data, every=1, base=str(tiny_model), steps=100000)
    training.check(turns_of(data))
    assert training.running
    process = training._process
    assert training.stepped.wait(300), "\n".join(training._error)  # its temp folders exist
    # Held while a turn is generated and while the user types: it goes on
    # only once neither holds it.
    training.pause("turn")
    training.pause("keys")
    training.resume("turn")
    assert _settles(process.pid, stopped=True)
    training.resume("keys")
    assert _settles(process.pid, stopped=False)
    training.pause()  # held, as while a turn is generated: a stop still ends it
    training.stop()
    assert process.returncode == 130  # unwound as Ctrl+C
    assert "interrupted; no model was written" in "\n".join(training._error)
    models = data / "models"
    assert not models.exists() or not list(models.iterdir())


def _adapter_of(model: Path, folder: Path, run: int) -> None:
    """A PEFT adapter of `model` as rlchat train writes one (its lineage
    included), made here untrained: random B weights, so it changes samples."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlchat.learner.generator import LINEAGE, weights_fingerprint

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    weights = weights_fingerprint(base)
    torch.manual_seed(0)
    adapted = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                              init_lora_weights=False, task_type="CAUSAL_LM"))
    adapted.save_pretrained(folder)
    (folder / LINEAGE).write_text(json.dumps({
        "run": run, "base": str(model), "base_weights": weights, "family": weights,
        "method": "dpo", "data": {"turns": 1, "pairs": 10, "held_out": 10, "last_seq": 1},
        "metrics": {"held_out_accuracy": 0.9}}))


@pytest.mark.skipif(llama_dir() is None and not os.environ.get("CI"),
                    reason="llama-server is not built here (.ci/llama-server.sh builds it)")
def test_llama_server_applies_an_adapter_rlchat_converted_and_off_is_the_base(
        real_model, real_gguf, tmp_path, capsys):
    """`rlchat adapters gguf` converts a run with llama.cpp's converter; the
    real llama-server serving the real model loads it at start (--lora);
    `use` applies it to this chat's requests, `off` sends none."""
    from rlchat.tui.cli import main

    data = tmp_path / "data"
    _adapter_of(real_model, data / "models" / "1", 1)
    assert main(["adapters", "gguf", "1", "--data-dir", str(data)]) == 2  # no source tree
    assert "--llama-cpp DIR" in capsys.readouterr().err
    assert main(["adapters", "gguf", "1", "--data-dir", str(data),
                 "--llama-cpp", str(llama_dir() / "src")]) == 0
    gguf = data / "models" / "1" / "adapter.gguf"
    assert gguf.is_file() and f"--lora {gguf}" in capsys.readouterr().out
    server = llama_server(real_gguf, tmp_path / "server.log", parallel=4,
                          extra=("--lora", str(gguf), "--lora-init-without-apply")).start()
    settings = Settings(model="tinychat", base_url=server.base_url, max_new_tokens=12,
                        temperature=0.7)
    agent = Agent(Store(data), load_source(settings, seed=1), settings, seed=1)
    try:
        source = agent.source
        assert source.connect().lora == ((0, str(gguf)),)

        def draws() -> list[str]:
            source.reseed(3)
            return [c.text for c in source.propose([], "Name three fruits.", 4).candidates]

        base = draws()
        assert draws() == base  # the server's seeded samples repeat
        assert agent.use_adapter(1) == "Adapter run 1 is in use (the server applies it)."
        assert agent.adapter_run() == 1 and source.identity["adapter"] == str(gguf)
        assert draws() != base
        assert agent.use_adapter(None) == "The base model is in use (no adapter)."
        assert draws() == base and agent.adapter_run() is None
    finally:
        agent.store.close()
        server.stop()
    # A served model whose server did not load the file: the restart, in one sentence.
    other = tmp_path / "other"
    _adapter_of(real_model, other / "models" / "1", 1)
    (other / "models" / "1" / "adapter.gguf").write_bytes(gguf.read_bytes())
    server = llama_server(real_gguf, tmp_path / "plain.log", parallel=2).start()
    settings = Settings(model="tinychat", base_url=server.base_url, max_new_tokens=4)
    agent = Agent(Store(other), load_source(settings, seed=1), settings, seed=1)
    try:
        with pytest.raises(AgentError, match="restart it with it: llama-server -m MODEL.gguf"):
            agent.use_adapter(1)
    finally:
        agent.store.close()
        server.stop()


def test_a_vllm_server_with_runtime_lora_loads_the_adapter_on_request(tmp_path):
    """vLLM's runtime LoRA API (VLLM_ALLOW_RUNTIME_LORA_UPDATING), as the
    project's test server speaks it: the probe finds /v1/load_lora_adapter,
    `use` loads the run's PEFT folder under its own name and the turns ask
    for that name; `off` asks for the base again.  A server with no way to
    apply adapters is told in one sentence."""
    from rlchat.learner.generator import LINEAGE
    from rlchat.testkit.misbehaving import MODEL, MisbehavingServer

    data = tmp_path / "data"
    folder = data / "models" / "3"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / LINEAGE).write_text(json.dumps({"run": 3, "data": {"held_out": 9},
                                              "metrics": {"held_out_accuracy": 0.8}}))
    server = MisbehavingServer().start()
    try:
        for fault, works in (("vllm-lora", True), ("", False)):
            settings = Settings(model=MODEL, base_url=server.url(fault), candidates=2,
                                samples=2)
            store = Store(data)
            agent = Agent(store, load_source(settings, seed=1), settings, seed=1)
            try:
                assert agent.source.connect().runtime_lora is works
                if not works:
                    with pytest.raises(AgentError, match="This server cannot apply adapters"):
                        agent.use_adapter(3)
                    continue
                assert agent.use_adapter(3) == "Adapter run 3 is in use (the server applies it)."
                assert server.loras == {"rlchat-3": str(folder)}
                view = agent.say("hello there")
                assert all("adapted by rlchat-3" in c.text for c in view.candidates)
                agent.choose(view.turn, view.candidates[0].id, 4)
                assert turns_of(data)[-1].generator["adapter"] == str(folder)
                assert agent.use_adapter(None) == "The base model is in use (no adapter)."
                assert not any("adapted" in c.text for c in agent.say("hello").candidates)
            finally:
                store.close()
    finally:
        server.stop()


async def test_f4_switches_the_adapter_f3_shows_it_and_a_restart_keeps_it(
        trained, tiny_model, tmp_path, config_dir):
    """The app: F4's Adapter field lists the runs and switches between two
    turns without a restart; F3 says which adapter runs; the next start of
    the app comes back with it."""
    from textual.widgets import Select, Static

    from rlchat.learner.adapters import set_in_use
    from rlchat.tui.app import RlchatApp
    from rlchat.tui.screens.learning import LearningScreen
    from rlchat.tui.screens.settings_form import BASE, SettingsForm

    data = tmp_path / "data"
    shutil.copytree(trained, data)
    (data / ".lock").unlink(missing_ok=True)
    [run] = adapter_runs(data)
    set_in_use(data, None)
    store = Store(data)
    app = RlchatApp(settings=Settings(model=str(tiny_model)), store=store, seed=0)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.agent.adapter_run() is None
            await pilot.press("f4")
            await pilot.pause()
            assert isinstance(app.screen, SettingsForm)
            field = app.screen.query_one("#adapter", Select)
            assert field.value == BASE
            field.value = run.run
            await pilot.press("ctrl+s")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.agent.adapter_run() == run.run and read_in_use(data) == run.run
            assert f"trained run {run.run}" in app.sub_title
            await pilot.press("f3")
            await pilot.pause()
            assert isinstance(app.screen, LearningScreen)
            summary = str(app.screen.query_one("#summary", Static).render())
            assert f"model: adapter run {run.run}" in summary
    finally:
        store.close()
    store = Store(data)  # the next start comes back with it
    app = RlchatApp(settings=Settings(model=str(tiny_model)), store=store, seed=0)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.agent.adapter_run() == run.run
    finally:
        store.close()


def test_a_killed_chat_takes_its_run_with_it_even_a_held_one(trained, tiny_model, tmp_path):
    """A chat killed (not quit) while it holds its run stopped: the run must
    not sit stopped for ever; it goes with the chat."""
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    shutil.copytree(trained, data)
    (data / ".lock").unlink(missing_ok=True)
    shutil.rmtree(data / "models")
    chat = subprocess.Popen([sys.executable, "-c", f"""
import sys, threading
from pathlib import Path
from rlchat.learner.background_training import BackgroundTraining
from rlchat.learner.records import Turn
from rlchat.storage import Store
store = Store(Path({str(data)!r}), readonly=True)
turns = [Turn.from_dict(t) for t in store.turns()]
store.close()
training = BackgroundTraining(Path({str(data)!r}), every=1, base={str(tiny_model)!r}, steps=100000)
threading.Thread(target=training.check, args=(turns,)).start()  # started from a worker
while training.pid is None:
    pass
training.pause("keys")
print(training.pid, flush=True)
threading.Event().wait()
"""], stdout=subprocess.PIPE, text=True)
    run = int(chat.stdout.readline())
    assert _settles(run, stopped=True)
    chat.send_signal(signal.SIGKILL)
    chat.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{run}").exists() and _state(run) != "Z":
        assert time.monotonic() < deadline, "the held run outlived the killed chat"
        time.sleep(0.05)
