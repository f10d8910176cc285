"""`rlchat train`: fine-tune the generator on the logged preferences (learner/train.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from rlchat.tui.exit_status import ExitStatus
from rlchat.tui.log_file import log_to_data_dir


def add_train_command(sub, add_common) -> None:
    train = sub.add_parser(
        "train", help="fine-tune the model on the logged preferences (needs rlchat[train])")
    train.add_argument("--method", choices=("dpo", "kto"), default="dpo",
                       help="DPO on preference pairs, or KTO on liked/passed-over replies "
                       "(default: dpo)")
    kind = train.add_mutually_exclusive_group()
    kind.add_argument("--lora", dest="lora", action="store_true", default=True,
                      help="train LoRA adapters and merge them (the default)")
    kind.add_argument("--full", dest="lora", action="store_false",
                      help="train every weight (slower, more memory)")
    train.add_argument("--adapter", action="store_true",
                       help="with LoRA: keep the adapter unmerged and write a PEFT adapter "
                       "folder (serve it with vLLM's --lora-modules NAME=DIR)")
    train.add_argument("--steps", type=int, default=150, metavar="N",
                       help="optimizer steps of 8 pairs (default: 150)")
    train.add_argument("--batch-size", type=int, default=8, metavar="N",
                       help="rows per optimizer step and process (default: 8)")
    train.add_argument("--learning-rate", type=float, default=None, metavar="R",
                       help="the optimizer's rate (default: 1e-3 with LoRA, 1e-5 full)")
    train.add_argument("--since", metavar="DATE", type=dt.date.fromisoformat, default=None,
                       help="only turns from this day on (YYYY-MM-DD, UTC)")
    train.add_argument("--out", metavar="DIR", type=Path, default=None,
                       help="write the model here (default: DATA/models/<run>/)")
    train.add_argument("--dry-run", action="store_true",
                       help="build the training set and report it; train nothing")
    train.add_argument("--use", action="store_true",
                       help="then make the trained model the chat's model (config.toml)")
    train.add_argument("--json", action="store_true", help="the report as one JSON object")
    add_common(train, suppress=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_train(args: argparse.Namespace, data_dir: Path) -> int:
    """`--model` names the base; without it, the model the logged turns record."""
    from rlchat.learner.train import MissingExtra, TrainError, TrainOptions, train

    def say(message: str) -> None:
        print(f"train: {message}", file=sys.stderr, flush=True)

    if args.steps < 1:
        print("rlchat: --steps must be at least 1", file=sys.stderr)
        return ExitStatus.UNUSABLE
    if args.learning_rate is not None and not 0 < args.learning_rate < 1:
        print("rlchat: --learning-rate must be above 0 and below 1", file=sys.stderr)
        return ExitStatus.UNUSABLE
    if args.batch_size < 1:
        print("rlchat: --batch-size must be at least 1", file=sys.stderr)
        return ExitStatus.UNUSABLE
    if args.adapter and not args.lora:
        print("rlchat: --adapter keeps LoRA adapters; it does not go with --full",
              file=sys.stderr)
        return ExitStatus.UNUSABLE
    options = TrainOptions(model=getattr(args, "model", None), method=args.method,
                           lora=args.lora,
                           adapter=args.adapter,
                           steps=args.steps, batch_size=args.batch_size,
                           learning_rate=args.learning_rate,
                           since=args.since, out=args.out,
                           dry_run=args.dry_run, seed=args.seed or 0)
    # A stop from outside (the chat quitting its background run) unwinds as
    # Ctrl+C does, so the temp folders go and no model is left half written.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = train(data_dir.expanduser(), options, say)
    except TrainError as exc:
        print(f"rlchat: {exc}.", file=sys.stderr)
        return ExitStatus.UNUSABLE if isinstance(exc, MissingExtra) else ExitStatus.FAILED
    except KeyboardInterrupt:
        print("rlchat: interrupted; no model was written.", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except OSError as exc:  # a full disk, a folder that cannot be written
        print(f"rlchat: could not write the model ({exc.strerror or exc}); no model was "
              f"written.", file=sys.stderr)
        return ExitStatus.FAILED
    except Exception as exc:  # from TRL or torch: one line, the details in the log
        try:
            log_file = log_to_data_dir(data_dir.expanduser())
        except OSError:  # a data dir that cannot be written: the line is all there is
            details = ""
        else:
            logging.getLogger(__name__).error("training failed", exc_info=True)
            details = f" The details are in {log_file}."
        print(f"rlchat: training failed ({type(exc).__name__}: {exc}); no model was "
              f"written.{details}", file=sys.stderr)
        return ExitStatus.FAILED
    if report.get("main") is False:  # one of several processes: the main one reports
        return ExitStatus.OK
    if args.json:
        print(json.dumps(report))
    elif report.get("dry_run"):
        print(f"{report['train_rows']} training rows, {report['held_out']} held out; "
              f"dry run: nothing trained")
    else:
        accuracy = report.get("held_out_accuracy")
        held = f", held-out preference accuracy {accuracy:.2f}" if accuracy is not None else ""
        if report.get("adapter"):
            print(f"trained run {report['run']} in {report['train_s']:.0f} s "
                  f"(loss {report['train_loss']:.3f}{held}); a PEFT adapter in "
                  f"{report['path']}: serve it with vllm serve BASE --enable-lora "
                  f"--lora-modules rlchat={report['path']}, then rlchat --base-url URL "
                  f"--model rlchat")
        else:
            print(f"trained run {report['run']} in {report['train_s']:.0f} s "
                  f"(loss {report['train_loss']:.3f}{held}); start with: "
                  f"rlchat --model {report['path']}")
    if args.use and not report.get("dry_run") and not report.get("adapter"):
        from rlchat.tui.config_file import load_settings, save_settings

        saved, _ = load_settings()
        path = save_settings(replace(saved, model=report["path"]))
        print(f"the chat uses it from its next start ({path})", file=sys.stderr)
    return ExitStatus.OK
