"""`rlchat train` and the export it trains on: what the model saw and sampled,
the generator recorded with every turn, and the policy after a switch."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rlchat.learner.agent import open_agent
from rlchat.learner.export import preference_pairs
from rlchat.learner.offline import replay_logs
from rlchat.learner.policy_store import stored_policy
from rlchat.learner.settings import Settings
from rlchat.learner.tiny_model import corpus_lines
from rlchat.learner.version import installed_version
from rlchat.storage import Store
from tests.helpers import turns_of

USERS = [line.removeprefix("User:").strip() for line in corpus_lines() if line.startswith("User:")]


def chat(model: Path, data: Path, turns: int, seed: int = 0, **options) -> None:
    """A user who likes questions: picks one when there is one (rated 5), else
    the shortest reply (rated 3); every fourth pick they regret (rated 2).
    `options`: more settings (the real model's tests keep replies short)."""
    agent = open_agent(Store(data), Settings(model=str(model), **options), seed=seed)
    # The token ids each prompt had as the model saw them, turn by turn: the
    # generator's own method, recorded on the way (beside the data dir).
    seen: dict[str, list[int]] = {}
    prompt_ids = agent.source.prompt_ids

    def recorded(*args, **kwargs) -> list[int]:
        ids = prompt_ids(*args, **kwargs)
        seen[str(agent.store.count_turns() + 1)] = list(ids)
        return ids

    agent.source.prompt_ids = recorded
    try:
        for i in range(turns):
            view = agent.say(USERS[i % len(USERS)])
            best = max(view.candidates, key=lambda c: ("?" in c.text, -len(c.text)))
            rating = 2 if i % 4 == 3 else 5 if "?" in best.text else 3
            agent.choose(view.turn, best.id, rating)
    finally:
        agent.store.close()
    (data.parent / "prompt_ids.json").write_text(json.dumps(seen))


@pytest.fixture(scope="module")
def logged(tiny_model, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("train") / "data"
    chat(tiny_model, data, 30)
    return data


@pytest.fixture
def copy_of(logged, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(logged, data)
    (data / ".lock").unlink(missing_ok=True)
    return data


@pytest.fixture
def rlchat(capsys):
    """The command line, in this process (each start of one would cost
    seconds of imports): its exit status, stdout and stderr."""
    from rlchat.tui.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def test_pairs_are_each_turns_own_and_what_the_model_saw_and_drew(logged, tiny_model):
    exact = assert_pairs_are_what_the_model_saw_and_drew(logged, tiny_model)
    # The prompt is the one the generator fitted to its 256-token context.
    assert all(len(ids) <= 256 - 40 for ids in exact["seen"].values())


def assert_pairs_are_what_the_model_saw_and_drew(logged: Path, model: Path) -> dict:
    """Each turn's DPO pairs against its own choice and rating; every prompt
    tokenizes to the ids the model saw and every reply to the tokens it drew,
    the documented exceptions counted.  Returns the counts and the ids seen."""
    from transformers import AutoTokenizer

    from rlchat.learner.export import sampled_text

    tokenizer = AutoTokenizer.from_pretrained(model)
    turns = turns_of(logged)
    seen = json.loads((logged.parent / "prompt_ids.json").read_text())
    exact = {"prompt": 0, "reply": 0}
    fallbacks: Counter = Counter()
    dropped: Counter = Counter()
    disliked = 0
    for turn in turns:
        pairs = list(preference_pairs([turn], dropped=dropped))
        # Expected from the turn's own choice and rating (the user of `chat`
        # always picks): a pick rated 3 or more over every other shown
        # candidate, as sampled; a pick rated below 3 gives none.
        if turn.rating is not None and turn.rating < 3:
            disliked += 1
            assert pairs == []
            continue

        def text(i: int, turn=turn) -> str:
            return sampled_text(turn, turn.candidates[i].text, turn.candidates[i].sampled)

        assert pairs == [{"prompt": turn.prompt, "chosen": text(turn.choice),
                          "rejected": text(i)} for i in turn.shown_ids if i != turn.choice
                         if text(i).strip() != text(turn.choice).strip()]
        # The prompt tokenizes to the ids the model saw.
        prompt_ids = tokenizer(turn.prompt, add_special_tokens=False)["input_ids"]
        assert prompt_ids == seen[turn.id]
        exact["prompt"] += 1
        # Each reply, after it, to the tokens the model drew; the documented
        # exceptions are counted: a reply cut at a turn marker (stored as shown,
        # with GPT-2's leading space) and a spelling the tokenizer never makes.
        by_text = {text(i): turn.candidates[i] for i in turn.shown_ids}
        for pair in pairs:
            for reply in (pair["chosen"], pair["rejected"]):
                drawn = by_text[reply].token_ids
                both = tokenizer(turn.prompt + reply, add_special_tokens=False)["input_ids"]
                if drawn is None:
                    fallbacks["cut at a turn marker"] += 1
                elif both == prompt_ids + drawn:
                    exact["reply"] += 1
                else:
                    assert tokenizer(reply, add_special_tokens=False)["input_ids"] != drawn
                    fallbacks["a spelling the tokenizer never makes"] += 1
    assert disliked > 0 and dropped == Counter({"picks rated below 3": disliked})
    assert exact["prompt"] == len(turns) - disliked
    assert exact["reply"] >= 4 * sum(fallbacks.values())  # the exceptions stay exceptions
    return {**exact, "fallbacks": fallbacks, "seen": seen}


def test_every_turn_records_its_generator(logged):
    turn = turns_of(logged)[0]
    assert set(turn.generator) == {"model", "weights", "family", "format", "dtype", "lineage"}
    assert turn.generator["family"] == turn.generator["weights"]  # no training behind it
    assert turn.generator["format"] == "gpt2" and len(turn.generator["weights"]) == 16
    assert turn.generator["lineage"] == ""  # not made by rlchat train


def test_export_says_what_it_left_out(logged, tmp_path, rlchat):
    out = tmp_path / "pairs.jsonl"
    result = rlchat("export", "--format", "dpo", "--out", str(out), "--data-dir", str(logged))
    assert result.returncode == 0
    assert "picks rated below 3" in result.stderr
    # --min-rating works as before: 1 keeps the picks the default leaves out.
    every = rlchat("export", "--format", "dpo", "--min-rating", "1", "--data-dir", str(logged))
    assert len(every.stdout.splitlines()) > len(out.read_text().splitlines())


def test_train_writes_a_model_the_chat_can_switch_to(copy_of, tiny_model, config_dir, rlchat):
    result = rlchat("train", "--data-dir", str(copy_of), "--model", str(tiny_model),
                    "--steps", "2", "--json", "--use")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the report alone
    assert "step 2/2" in result.stderr and "loss" in result.stderr
    path = Path(report["path"])
    assert path == copy_of / "models" / "1" and report["held_out"] > 0
    assert 0.0 <= report["held_out_accuracy"] <= 1.0
    lineage = json.loads((path / "rlchat_lineage.json").read_text())
    assert lineage["base"] == str(tiny_model) and lineage["method"] == "dpo"
    assert lineage["data"]["pairs"] == report["pairs"] and "train_loss" in lineage["metrics"]
    assert lineage["rlchat"] == installed_version() != "unknown"  # the release that trained it
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert f'model = "{path}"' in (config_dir / "config.toml").read_text()  # --use, said so

    # The chat on the new model: its turns say so.  It is a fine-tune of the
    # policy's model (one family): the policy keeps its model features.
    before = stored_policy(Store(copy_of, readonly=True).load_policy())
    agent = open_agent(Store(copy_of), Settings(model=str(path)), seed=1)
    try:
        view = agent.say("hello there")
        agent.choose(view.turn, view.candidates[0].id, 4)
        assert agent.source.identity["lineage"] == "1"
        assert agent.source.identity["family"] == lineage["family"] == lineage["base_weights"]
        assert agent.policy.generator_switches == before.generator_switches == 0
    finally:
        agent.store.close()


def test_another_model_makes_the_policy_forget_its_model_features(copy_of, tiny_chat_model):
    agent = open_agent(Store(copy_of), Settings(model=str(tiny_chat_model)), seed=1)
    try:
        kept = agent.policy.w.copy()
        view = agent.say("hello there")
        assert agent.policy.generator_switches == 1
        from rlchat.learner.features import FEATURE_NAMES, MODEL_COLUMNS

        text = [i for i in range(len(FEATURE_NAMES)) if i not in MODEL_COLUMNS]
        assert np.all(agent.policy.w[MODEL_COLUMNS] == 0)  # learned anew
        assert np.allclose(agent.policy.w[text], kept[text], atol=0.5)  # carried over
        agent.choose(view.turn, view.candidates[0].id, 4)
        live = agent.policy
        turns = list(agent.store.turns())
    finally:
        agent.store.close()
    replayed = replay_logs(turns, live.config)
    assert np.array_equal(replayed.w, live.w)  # replay applies the same rule, bit for bit
    assert replayed.generator_switches == 1


def test_dry_run_and_kto(copy_of, tiny_model, rlchat):
    dry = rlchat("train", "--data-dir", str(copy_of), "--model", str(tiny_model), "--dry-run")
    assert dry.returncode == 0 and "dry run: nothing trained" in dry.stdout
    assert not (copy_of / "models").exists()
    kto = rlchat("train", "--method", "kto", "--data-dir", str(copy_of), "--model",
                 str(tiny_model), "--steps", "1", "--json")
    assert kto.returncode == 0, kto.stderr
    assert json.loads(kto.stdout)["method"] == "kto"


def test_bad_input_is_one_line_and_writes_no_model(tmp_path, copy_of, tiny_model, rlchat):
    empty = rlchat("train", "--data-dir", str(tmp_path / "none"), "--model", str(tiny_model))
    assert empty.returncode == 1 and "no turns yet" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, broken / name)  # weights, no tokenizer
    no_tokenizer = rlchat("train", "--data-dir", str(copy_of), "--model", str(broken))
    assert no_tokenizer.returncode == 1 and "--model PATH" in no_tokenizer.stderr
    assert "Traceback" not in no_tokenizer.stderr
    assert not (copy_of / "models" / "1").exists()


def test_an_interrupted_or_failed_save_leaves_no_model(copy_of, tiny_model, monkeypatch):
    from rlchat.learner import train as training

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "_save_files", full_disk)
    options = training.TrainOptions(model=str(tiny_model), steps=1)
    with pytest.raises(OSError):
        training.train(copy_of, options, lambda message: None)
    models = copy_of / "models"
    assert not models.exists() or not list(models.iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(copy_of, options, lambda message: None)
    assert not models.exists() or not list(models.iterdir())


def test_without_the_train_extra_it_says_how_to_install(copy_of, tiny_model, monkeypatch):
    from rlchat.learner import train as training

    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now fails
    with pytest.raises(training.TrainError, match=r"pip install 'rlchat\[train\]'"):
        training.train(copy_of, training.TrainOptions(model=str(tiny_model)), print)


def test_the_base_defaults_to_the_model_the_turns_record(copy_of, tiny_model, rlchat):
    # Chatted with --model PATH; trained with no --model: PATH, and it says so
    # (not the settings' default, which did not generate these turns).
    done = rlchat("train", "--data-dir", str(copy_of), "--steps", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["base"] == str(tiny_model)
    assert f"base model: {tiny_model}" in done.stderr
    # Turns from two model families and no --model: one sentence, no model written.
    store = Store(copy_of)
    first = next(store.turns())
    store.update_turn(first["id"], generator={**first["generator"], "family": "another",
                                              "model": "/elsewhere/other-model"})
    store.close()
    mixed = rlchat("train", "--data-dir", str(copy_of), "--steps", "1")
    assert mixed.returncode == 1 and "2 different models" in mixed.stderr
    assert "--model PATH" in mixed.stderr and len(mixed.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def thumbs_only(tiny_model, tmp_path_factory) -> Path:
    """50 turns answered with thumbs alone: the shortest shown reply marked
    good and the longest bad; no pick, so every turn closes unanswered."""
    data = tmp_path_factory.mktemp("thumbs") / "data"
    agent = open_agent(Store(data), Settings(model=str(tiny_model)), seed=0)
    try:
        for i in range(50):
            view = agent.say(USERS[i % len(USERS)])
            by_length = sorted(view.candidates, key=lambda c: len(c.text))
            agent.rate(view.turn, by_length[0].id, True)
            agent.rate(view.turn, by_length[-1].id, False)
        agent.end()
    finally:
        agent.store.close()
    return data


def test_a_thumbs_only_log_trains_kto_toward_the_thumbs(thumbs_only, tiny_model, rlchat):
    assert not list(preference_pairs(turns_of(thumbs_only)))  # no pair: thumbs alone
    result = rlchat("train", "--method", "kto", "--data-dir", str(thumbs_only), "--model",
                    str(tiny_model), "--steps", "30", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 100 and report["held_out"] == 20
    # Held out: the newest 10 turns' good and bad reply, ranked by the implicit reward.
    assert report["held_out_accuracy"] > 0.5 and report["held_out_reward_margin"] > 0


def test_kto_export_lines_load_with_trls_kto_trainer(thumbs_only, tiny_model, tmp_path, rlchat):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    out = tmp_path / "kto.jsonl"
    assert rlchat("export", "--format", "kto", "--out", str(out),
                  "--data-dir", str(thumbs_only)).returncode == 0
    rows = load_dataset("json", data_files=str(out), split="train")
    assert rows.num_rows == 100 and sorted(set(rows["label"])) == [False, True]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model), processing_class=tokenizer,
        train_dataset=rows,
        args=KTOConfig(output_dir=str(tmp_path / "run"), max_steps=1, use_cpu=True,
                       per_device_train_batch_size=4, report_to="none", save_strategy="no"))
    assert trainer.train().training_loss > 0


@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_training_moves_the_weights_and_the_margin_on_its_own_pairs(copy_of, tiny_model,
                                                                     rlchat, full):
    from rlchat.learner.generator import load_model
    from rlchat.learner.train import build_dataset, held_out_accuracy, rendered, row_logps

    steps = "6" if full else "20"
    result = rlchat("train", "--data-dir", str(copy_of), "--model", str(tiny_model),
                    "--steps", steps, "--json", *(["--full"] if full else []))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["lora"] is not full
    tokenizer, base = load_model(str(tiny_model))
    _, trained = load_model(report["path"])
    changed = [name for name, weight in trained.state_dict().items()
               if not torch.equal(weight, base.state_dict()[name])]
    assert changed  # a saved copy of the base would pass everything else
    # The implicit reward margin on the pairs it trained on: 0 for the base
    # itself, above 0 once it has learned them.
    data = rendered(build_dataset(turns_of(copy_of), "dpo", None), tokenizer)
    rows = data.train[:24]
    reference = row_logps(base, tokenizer, rows)
    assert held_out_accuracy(rows, reference, reference, 0.25)["held_out_reward_margin"] == 0
    moved = held_out_accuracy(rows, row_logps(trained, tokenizer, rows), reference, 0.25)
    assert moved["held_out_reward_margin"] > 0


def test_an_unexpected_failure_leaves_its_traceback_in_the_data_dirs_log(
        data_dir, tiny_model, monkeypatch, capsys):
    """What TRL or torch raise is one line on the terminal; the traceback goes
    to DATA/rlchat.log, which `train` sets up as the app does."""
    import logging

    import rlchat.learner.train as training
    from rlchat.tui.cli import main

    def broken(*args, **kwargs):  # stands for an error deep inside a trainer
        raise RuntimeError("a tensor of the wrong shape")

    monkeypatch.setattr(training, "train", broken)
    Store(data_dir).close()  # a data dir, as any with turns to train on
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        assert main(["train", "--data-dir", str(data_dir), "--model", str(tiny_model),
                     "--steps", "1"]) != 0
    finally:
        for handler in root.handlers[len(handlers):]:
            handler.close()
        root.handlers[:] = handlers
    err = capsys.readouterr().err
    log_file = data_dir / "rlchat.log"
    assert "a tensor of the wrong shape" in err and str(log_file) in err
    logged = log_file.read_text()
    assert "Traceback" in logged and "RuntimeError: a tensor of the wrong shape" in logged
    assert log_file.stat().st_mode & 0o777 == 0o600


def test_train_under_accelerate_launch_with_two_processes_writes_one_adapter(
        copy_of, tiny_model, tmp_path):
    """`rlchat train` as it is, under `accelerate launch` with 2 CPU processes:
    both train (data parallel), only the main one reports and writes, once."""
    from rlchat.testkit.servers import free_port

    out = tmp_path / "models" / "adapter"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
         "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "-m", "rlchat.tui.cli", "train", "--data-dir", str(copy_of), "--model",
         str(tiny_model), "--steps", "2", "--adapter", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and json.loads(reports[0])["adapter"] is True
    assert result.stderr.count("train: saving to") == 1  # one voice, one writer
    assert (out / "adapter_config.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["adapter"]  # no half-written copy
    lineage = json.loads((out / "rlchat_lineage.json").read_text())
    assert lineage["processes"] == 2
