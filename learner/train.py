"""`rlchat train`: the generator itself learns from the logged preferences.

The rows are the DPO export's pairs or the KTO export's labelled replies
(learner/export.py): the prompt the model continued and the replies as
sampled; the newest 20 % are held out.  TRL
trains on the CPU with settings that suit it: LoRA (or the full model),
bfloat16 only where the CPU has it, no gradient checkpointing, shuffled
pairs, KTO's weights balanced from its label counts, sequences as long as the
model's context (the stored prompts already fit it, as the generator cut them).

The result is a merged safetensors model folder (models/<run>/ in the data
dir) with the tokenizer and a lineage file; it is written to a temp folder
and renamed into place, so an interrupted or failed run leaves no model.
Nothing switches to it by itself: `--model PATH`, the settings form, or
`rlchat train --use` does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rlchat.learner.export import kto_rows, preference_pairs, summary
from rlchat.learner.records import Turn
from rlchat.learner.version import installed_version

METHODS = ("dpo", "kto")
HOLDOUT = 0.2  # the newest share of pairs, for the held-out accuracy
# Chosen on benchmarks/train.py's simulated user: the rate at which LoRA
# moves the samples within the default steps.
LORA_RATE, FULL_RATE = 1e-3, 1e-5

Progress = Callable[[str], None]


class TrainError(Exception):
    """Training cannot go on; the message is one sentence with the fix."""


class MissingExtra(TrainError):
    """The `train` extra (TRL, peft, datasets) is not installed."""


@dataclass
class TrainOptions:
    model: str | None  # the base: a name or a folder; None: the model the turns record
    method: str = "dpo"
    lora: bool = True
    adapter: bool = False  # LoRA left unmerged: a PEFT adapter folder (vLLM --lora-modules)
    steps: int = 150
    since: dt.date | None = None
    out: Path | None = None  # default: DATA/models/<run>/
    dry_run: bool = False
    seed: int = 0
    beta: float = 0.25  # above TRL's 0.1: held out better on benchmarks/train.py
    batch_size: int = 8
    learning_rate: float | None = None  # default: by LoRA or full


@dataclass
class Dataset:
    train: list[dict[str, Any]]  # rows in the method's format
    held_out: list[dict[str, Any]]  # the newest rows, in the same format
    pairs: int  # all rows: DPO's pairs, or KTO's labelled completions
    turns: int
    dropped: Counter = field(default_factory=Counter)
    first: float | None = None  # created time of the first and last turn used
    last: float | None = None


def held_out_count(rows: int) -> int:
    """How many of `rows` preference rows a run holds out: the newest HOLDOUT."""
    return math.floor(rows * HOLDOUT) if rows >= 5 else 0


def build_dataset(turns: Iterable[Turn], method: str, since: dt.date | None) -> Dataset:
    """The method's rows from the turns, the newest HOLDOUT of them held out:
    DPO's pairs, or KTO's labelled completions (learner/export.py)."""
    turns = list(turns)
    dropped: Counter = Counter()
    rows, times = [], []
    current: list[Turn] = []

    def tracked() -> Iterable[Turn]:  # which turn each row came from
        for turn in turns:
            current[:] = [turn]
            yield turn

    made = kto_rows if method == "kto" else preference_pairs
    for row in made(tracked(), since=since, dropped=dropped):
        rows.append(row)
        times.append(current[0].created)
    held = held_out_count(len(rows))
    return Dataset(rows[: len(rows) - held], rows[len(rows) - held:], len(rows), len(turns),
                   dropped, times[0] if times else None, times[-1] if times else None)


def recorded_base(turns: list[Turn]) -> str:
    """The model that generated the turns: the newest turn's, where all come
    from one family (a model and the models rlchat train made from it)."""
    recorded = [t.generator for t in turns if t.generator and t.generator.get("model")]
    if not recorded:
        raise TrainError("the logged turns do not record the model that generated them "
                         "(older turns); name the base with --model PATH")
    families = {g.get("family") or g.get("weights") or g["model"] for g in recorded}
    if len(families) > 1:
        models = sorted({g["model"] for g in recorded})
        shown = ", ".join(models[:4]) + (", …" if len(models) > 4 else "")
        raise TrainError(f"the logged turns come from {len(families)} different models "
                         f"({shown}); name the base with --model PATH")
    return recorded[-1]["model"]


def rendered(data: Dataset, tokenizer) -> Dataset:
    """The dataset with every conversational row (a served model's turn whose
    prompt the server could not render) put in plain strings by the local
    model's own chat template, as the other rows are."""
    def plain(row: dict[str, Any]) -> dict[str, Any]:
        if isinstance(row["prompt"], str):
            return row
        out = dict(row, prompt=tokenizer.apply_chat_template(
            row["prompt"], tokenize=False, add_generation_prompt=True))
        for key in ("chosen", "rejected", "completion"):
            if isinstance(row.get(key), list):
                out[key] = "".join(m.get("content", "") for m in row[key])
        return out

    return replace(data, train=[plain(r) for r in data.train],
                   held_out=[plain(r) for r in data.held_out])


def _require_trl() -> None:
    try:
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"rlchat train needs TRL, peft and datasets ({exc.name} is missing): "
            f"pip install 'rlchat[train]'"
        ) from None


def main_process() -> bool:
    """Whether this process writes and speaks for the run.  Under `accelerate
    launch` (or torchrun) every process trains its share and has a RANK; only
    rank 0 saves the model and reports, so a run writes one model."""
    return os.environ.get("RANK", "0") == "0"


def world_size() -> int:
    """How many processes train this run (1 unless launched as several)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def next_run(models: Path) -> int:
    """The number of the next training run in DATA/models/."""
    runs = [int(p.name) for p in models.glob("*") if p.name.isdigit()] if models.is_dir() else []
    return max(runs, default=0) + 1


def train(store_dir: Path, options: TrainOptions, say: Progress) -> dict[str, Any]:
    """Train, save and describe the run (what `rlchat train` prints as JSON).
    Launched as several processes, each trains its share of every batch and
    only the main one (main_process) speaks through `say` and saves."""
    from rlchat.storage import Store

    if not main_process():
        def say(message: str) -> None:  # the main process says it once
            pass

    if options.method not in METHODS:
        raise TrainError(f"unknown method {options.method!r}; use dpo or kto")
    store = Store(store_dir, readonly=True)  # works while the chat runs
    try:
        turns = [Turn.from_dict(t) for t in store.turns()]
    finally:
        store.close()
    if not turns:
        raise TrainError("the log holds no turns yet; chat first, then train")
    if options.model is None:
        options = replace(options, model=recorded_base(turns))
        say(f"base model: {options.model} (the model that generated the logged turns; "
            "--model names another)")
    served = any((t.generator or {}).get("server") for t in turns)
    if served and not options.dry_run and not Path(options.model).expanduser().is_dir():
        raise TrainError(f"these turns come from a served model, and training needs its "
                         f"weights on this machine: pass --model PATH to the folder of the "
                         f"model the server serves (not {options.model!r})")
    data = build_dataset(turns, options.method, options.since)
    unit = "labelled replies" if options.method == "kto" else "preference pairs"
    say(f"{data.pairs} {unit} from {data.turns} turns "
        f"({len(data.held_out)} newest held out); {summary(data.dropped)}")
    if not data.train:
        raise TrainError(f"the log holds no usable {unit} yet (picks rated 3 or more, or own "
                         "replies, with a candidate passed over, or thumbs); chat on first")
    report: dict[str, Any] = {"method": options.method, "lora": options.lora,
                              "base": options.model,
                              "rows" if options.method == "kto" else "pairs": data.pairs,
                              "train_rows": len(data.train), "held_out": len(data.held_out),
                              "dropped": dict(data.dropped)}
    if options.dry_run:
        return {**report, "dry_run": True}
    _require_trl()
    models = store_dir / "models"
    run = next_run(models)
    target = (options.out or models / str(run)).expanduser()
    if target.exists():
        raise TrainError(f"{target} exists already; pass --out DIR to a new folder")
    began = time.perf_counter()
    model, tokenizer, base_weights, metrics = _fit(data, options, say)
    report.update(metrics, train_s=round(time.perf_counter() - began, 1))
    from rlchat.learner.generator import read_lineage

    lineage = {
        "run": run, "base": options.model, "base_weights": base_weights,
        # The family of the first model in the chain: its policy features carry over.
        "family": read_lineage(options.model).get("family") or base_weights,
        "method": options.method, "lora": options.lora, "steps": options.steps,
        "data": {"turns": data.turns, "pairs": data.pairs, "held_out": len(data.held_out),
                 "last_seq": max(t.seq for t in turns),
                 "from": _iso(data.first), "to": _iso(data.last),
                 "since": options.since.isoformat() if options.since else None},
        "settings": {k: (str(v) if isinstance(v, Path | dt.date) else v)
                     for k, v in asdict(options).items()},
        "metrics": metrics, "train_s": report["train_s"], "created": _iso(time.time()),
        "rlchat": installed_version(),
        "processes": world_size(),
    }
    if not main_process():
        return {**report, "run": run, "path": str(target), "main": False}
    _save(model, tokenizer, lineage, target, say)
    done = {**report, "run": run, "path": str(target)}
    if options.adapter:
        done["adapter"] = True  # a PEFT adapter folder; the base stays as it was
    return done


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _fit(data: Dataset, options: TrainOptions, say: Progress):
    """The model trained on `data`: its base loaded, the trainer built and
    run, the held-out pairs measured.  Returns (model, tokenizer, the base's
    weights fingerprint, metrics)."""
    import torch
    from datasets import disable_progress_bars

    from rlchat.learner.generator import weights_fingerprint

    tokenizer, model = _load_base(options)
    data = rendered(data, tokenizer)
    base_weights = weights_fingerprint(model)
    # Progress is ours (stderr, one line a step); stdout stays for the report.
    disable_progress_bars()
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="trl")
    torch.manual_seed(options.seed)
    output_dir = tempfile.mkdtemp(prefix="rlchat-train-")
    try:
        trainer = _trainer(data, options, model, tokenizer,
                           _trainer_args(options, model, output_dir), say)
        say(f"training {'LoRA adapters' if options.lora else 'the full model'} "
            f"({options.method.upper()}, {options.steps} steps, {len(data.train)} rows)")
        result = trainer.train()
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    trained, metrics = _measured(trainer.model, tokenizer, data, options, say)
    return trained, tokenizer, base_weights, {
        "train_loss": round(float(result.training_loss), 4), **metrics}


def _load_base(options: TrainOptions):
    """(tokenizer, model) of the base, with a pad token the trainers need."""
    from rlchat.learner.errors import ModelUnavailable
    from rlchat.learner.generator import load_model

    try:
        tokenizer, model = load_model(options.model)
    except ModelUnavailable as exc:
        raise TrainError(str(exc).rstrip(".")) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _trainer_args(options: TrainOptions, model, output_dir: str) -> dict[str, Any]:
    """What DPO's and KTO's configs share: CPU, constant rate, no saving."""
    import torch

    from rlchat.learner.generator.weights import bf16_supported

    # The CPU here; the GPUs where `accelerate launch` runs it on a machine that has them.
    gpu = torch.cuda.is_available()
    context = int(getattr(model.config, "n_positions", 0)
                  or getattr(model.config, "max_position_embeddings", 1024))
    return dict(
        output_dir=output_dir, max_steps=options.steps,
        learning_rate=options.learning_rate or (LORA_RATE if options.lora else FULL_RATE),
        per_device_train_batch_size=options.batch_size,
        bf16=torch.cuda.is_bf16_supported() if gpu else bf16_supported(),
        gradient_checkpointing=False, use_cpu=not gpu, logging_steps=1, save_strategy="no",
        report_to="none", seed=options.seed, data_seed=options.seed, disable_tqdm=True,
        max_length=context, beta=options.beta,
        lr_scheduler_type="constant", dataloader_num_workers=0,
    )


def _trainer(data: Dataset, options: TrainOptions, model, tokenizer, common: dict[str, Any],
             say: Progress):
    """TRL's DPO or KTO trainer over the training rows, LoRA where asked,
    reporting each step's loss through `say`."""
    from datasets import Dataset as Rows
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM") if options.lora else None

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                say(f"step {state.global_step}/{options.steps}  loss {logs['loss']:.4f}")

    rows = Rows.from_list(data.train)
    if options.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common), processing_class=tokenizer,
                             train_dataset=rows, peft_config=peft_config, callbacks=[Report()])
    else:
        from trl import KTOConfig, KTOTrainer

        good = sum(row["label"] for row in data.train)
        bad = len(data.train) - good
        if not good or not bad:
            raise TrainError("KTO needs both liked and passed-over replies; use --method dpo")
        # KTO's advice: weight the rarer kind up so both count alike.
        weights = dict(desirable_weight=max(1.0, bad / good),
                       undesirable_weight=max(1.0, good / bad))
        trainer = KTOTrainer(model=model, args=KTOConfig(**common, **weights),
                             processing_class=tokenizer, train_dataset=rows,
                             peft_config=peft_config, callbacks=[Report()])
    trainer.remove_callback(PrinterCallback)
    return trainer


def _measured(trained, tokenizer, data: Dataset, options: TrainOptions,
              say: Progress) -> tuple[Any, dict[str, Any]]:
    """The trained model as it is written (adapters merged unless kept), and
    its held-out preference accuracy against the base."""
    from rlchat.learner.generator import load_model

    reference: list[list[float]] | None = None
    if data.held_out:
        say(f"measuring {len(data.held_out)} held-out pairs")
    if data.held_out and options.lora:
        # The base is the adapted model with its adapters off: no second load.
        with trained.disable_adapter():
            reference = row_logps(trained, tokenizer, data.held_out)
    if options.lora and not options.adapter:
        trained = trained.merge_and_unload()
    trained.eval()
    metrics: dict[str, Any] = {}
    if data.held_out:
        if reference is None:  # a full fine-tune changed the base's own weights
            reference = row_logps(load_model(options.model)[1], tokenizer, data.held_out)
        metrics.update(held_out_accuracy(data.held_out,
                                         row_logps(trained, tokenizer, data.held_out),
                                         reference, options.beta))
    return trained, metrics


def row_logps(net, tokenizer, rows: list[dict[str, Any]]) -> list[list[float]]:
    """Of each row under `net`: a pair's [log p(chosen | prompt), log p(rejected
    | prompt)], or a labelled row's [log p(completion | prompt)]."""
    import torch

    def logp(prompt: str, completion: str) -> float:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = net(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        logprobs = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        return float(logprobs[len(prompt_ids) - 1:].sum())

    return [[logp(r["prompt"], r[key]) for key in ("chosen", "rejected", "completion") if key in r]
            for r in rows]


def held_out_accuracy(rows: list[dict[str, Any]], trained: list[list[float]],
                      reference: list[list[float]], beta: float) -> dict[str, float]:
    """How often the implicit reward of a reply, beta * (log p_trained -
    log p_reference), ranks the better of two replies to one prompt first
    (ties count half: 0.5 before any training), and by how much on average.
    Pairs are a pair's chosen and rejected, or for labelled rows every liked
    and disliked reply to the same prompt; labelled rows without such a
    partner count by the sign of their reward against their label."""
    rewards = [[beta * (a - b) for a, b in zip(now, ref, strict=True)]
               for now, ref in zip(trained, reference, strict=True)]
    margins: list[float] = []
    by_prompt: dict[str, list[tuple[float, bool]]] = {}
    for row, reward in zip(rows, rewards, strict=True):
        if "label" in row:
            by_prompt.setdefault(json.dumps(row["prompt"]), []).append((reward[0], row["label"]))
        else:
            margins.append(reward[0] - reward[1])
    for replies in by_prompt.values():
        liked = [r for r, label in replies if label]
        disliked = [r for r, label in replies if not label]
        if liked and disliked:
            margins += [good - bad for good in liked for bad in disliked]
        else:
            margins += [r if label else -r for r, label in replies]
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    return {"held_out_accuracy": round(wins / len(margins), 4),
            "held_out_reward_margin": round(sum(margins) / len(margins), 4)}


def _save(model, tokenizer, lineage: dict[str, Any], target: Path, say: Progress) -> None:
    """Write the model whole or not at all: a temp folder beside the target,
    renamed into place once complete."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        say(f"saving to {target}")
        _save_files(model, tokenizer, lineage, temp)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _save_files(model, tokenizer, lineage: dict[str, Any], folder: Path) -> None:
    from rlchat.learner.generator import LINEAGE

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / LINEAGE).write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
