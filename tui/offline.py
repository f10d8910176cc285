"""`rlchat replay | evaluate | export | stats`: offline work on the logs.

None of these loads torch.  All but a saving `replay` open the store
read-only, so they work while the chat app holds the data dir, and none of
them modifies the logs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rlchat.tui.exit_status import ExitStatus


def _learner_options() -> dict:
    """option -> (PolicyConfig field, its Spec), every numeric learner
    parameter as settings.LEARNER_PARAMETERS describes it."""
    from rlchat.learner.settings import LEARNER_PARAMETERS

    return {f"--{name.replace('_', '-')}": (name, spec)
            for name, spec in LEARNER_PARAMETERS.items() if not spec.choices}


LEARNER_OPTIONS = _learner_options()


def _number_in(spec: Any):
    """An argparse type: a finite number that the Spec admits."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not spec.admits(value):
            raise argparse.ArgumentTypeError(f"{text}: must be {spec.range_text()}")
        return value

    return parse


def add_learner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("learner options (default: the live policy's settings)")
    for option, (_, spec) in LEARNER_OPTIONS.items():
        group.add_argument(option, type=_number_in(spec), metavar="X", default=None,
                           help=f"{spec.help} ({spec.range_text()})")
    from rlchat.learner.settings import LEARNER_PARAMETERS

    relevance = LEARNER_PARAMETERS["relevance"]
    group.add_argument("--relevance", choices=relevance.choices, default=None,
                       help=f"{relevance.help}; a policy learned before it existed has it off")


def add_offline_commands(sub, add_common) -> None:
    """The four offline subcommands, on the main parser's subparsers."""
    replay = sub.add_parser("replay", help="rebuild the policy from all stored turns")
    replay.add_argument("--dry-run", action="store_true", help="rebuild and report, save nothing")
    evaluate = sub.add_parser("evaluate", help="estimate how other settings would have done")
    evaluate.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    evaluate.add_argument("--bootstrap", type=int, default=500, metavar="N",
                          help="bootstrap resamples for the intervals (default: 500)")
    for parser in (replay, evaluate):
        add_learner_options(parser)
    export = sub.add_parser("export", help="write the logs as turns, preference data or a "
                            "Markdown transcript")
    export.add_argument("--format", choices=("turns", "dpo", "kto", "markdown"), required=True)
    export.add_argument("--out", metavar="FILE", type=Path, default=None,
                        help="write here (default: stdout)")
    export.add_argument("--session", metavar="ID", default=None,
                        help="only this session (default: all; `rlchat stats` and F2 show ids)")
    export.add_argument("--candidates", action="store_true",
                        help="markdown: list every candidate shown, and what you said of it")
    export.add_argument("--min-rating", metavar="R", type=int, choices=range(1, 6), default=None,
                        help="only picks rated at least R (own replies are kept); without it "
                        "dpo keeps unrated picks and those rated 3 or more")
    export.add_argument("--since", metavar="DATE", type=dt.date.fromisoformat, default=None,
                        help="only turns from this day on (YYYY-MM-DD, UTC)")
    stats = sub.add_parser("stats", help="turns, sessions, ratings and rewards by week")
    stats.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    for parser in (replay, evaluate, export, stats):
        add_common(parser, suppress=True)


def report_damage(store) -> int:
    """What a reader could not read, on stderr: the damaged files found, and
    how many turns are missing from what it read.  Returns that count."""
    for warning in store.warnings:
        print(f"rlchat: {warning}", file=sys.stderr)
    lost = store.unreadable_turns
    if lost:
        print(f"rlchat: {lost} turn(s) could not be read and are left out.", file=sys.stderr)
    return lost


def _reader(data_dir: Path):
    from rlchat.learner.data_dir import open_store

    return open_store(data_dir, readonly=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The learner options given on the command line, by PolicyConfig field."""
    overrides: dict[str, Any] = {name: getattr(args, name) for name, _ in LEARNER_OPTIONS.values()
                                 if getattr(args, name, None) is not None}
    if getattr(args, "relevance", None) is not None:
        overrides["relevance"] = args.relevance == "on"
    return overrides


def run_replay(args: argparse.Namespace, data_dir: Path) -> int:
    from rlchat.learner.data_dir import StoreUnavailable, open_store
    from rlchat.learner.errors import AgentError
    from rlchat.learner.offline import replay_store, save_replayed
    from rlchat.tui.progress import Progress

    try:
        store = open_store(data_dir, readonly=args.dry_run)
    except StoreUnavailable as exc:
        print(f"rlchat: {exc}", file=sys.stderr)
        return ExitStatus.IN_USE
    try:
        progress = Progress("replay", store.count_turns())
        replayed = replay_store(store, _overrides(args), progress)
        progress.done()
        report_damage(store)
        policy = replayed.policy
        print(f"replayed {replayed.turns} turns; {policy.version} learned")
        if policy.generator_switches:
            print(f"the generator or the embeddings source changed {policy.generator_switches} "
                  "time(s): at each change the model features it fills (log-prob, similarity, "
                  "hidden state) were learned anew, the text features carried over, as in the "
                  "live policy")
        if replayed.same_as_live is not None:
            print("equal to the live policy, bit for bit" if replayed.same_as_live
                  else "differs from the live policy")
        if args.dry_run:
            print("dry run: nothing saved")
            return ExitStatus.OK
        print(f"saved as policy version {save_replayed(store, replayed)}")
        return ExitStatus.OK
    except AgentError as fault:  # the disk refused the saved policy
        print(f"rlchat: {fault.message}", file=sys.stderr)
        return ExitStatus.FAILED
    finally:
        store.close()


def run_evaluate(args: argparse.Namespace, data_dir: Path) -> int:
    from rlchat.learner.offline import evaluate_store
    from rlchat.tui.progress import Progress

    store = _reader(data_dir)
    try:
        progress = Progress("evaluate", store.count_turns())
        config, result = evaluate_store(store, _overrides(args), args.bootstrap, progress)
        progress.done()
        report_damage(store)
    finally:
        store.close()
    if result is None:
        print("rlchat: no answered turns to evaluate on yet", file=sys.stderr)
        return ExitStatus.FAILED
    if args.json:
        print(json.dumps({"config": config.__dict__, **result.to_dict()}))
        return ExitStatus.OK
    print(f"{result.n} answered turns; effective sample size {result.ess:.1f}; "
          f"smallest logged propensity {result.min_propensity:.4f}")
    print(f"logged policy's value (mean reward of what it placed first): "
          f"{result.logged_value:+.4f}")
    print(f"{'estimator':10s} {'value':>9s}   95% interval")
    for name, est in result.estimates.items():
        print(f"{name.upper():10s} {est.value:+9.4f}   [{est.low:+.4f}, {est.high:+.4f}]")
    if result.warning:
        print(f"warning: {result.warning}")
    return ExitStatus.OK


def _write(chunks, out: Path | None) -> None:
    """Text to stdout, or to a file that appears whole or not at all."""
    if out is None:
        try:
            for text in chunks:
                sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    from rlchat.storage.atomic import write_atomic  # storage: the data dir's atomic writer

    write_atomic(out.expanduser(), chunks)


def run_export(args: argparse.Namespace, data_dir: Path) -> int:
    from rlchat.learner.export import summary
    from rlchat.learner.offline import export_run, has_session

    store = _reader(data_dir)
    if args.session is not None and not has_session(store, args.session):
        store.close()
        print(f"rlchat: there is no session {args.session!r}; `rlchat stats` counts them, "
              "F2 in the app lists them", file=sys.stderr)
        return ExitStatus.FAILED
    try:
        run = export_run(store, args.format, session=args.session, min_rating=args.min_rating,
                         since=args.since, candidates=args.candidates)
        _write(run.chunks, args.out)
        unreadable = report_damage(store)
    except OSError as exc:  # a full disk, a folder that is not there
        print(f"rlchat: could not write {args.out}: {exc.strerror or exc}; nothing was "
              f"written there", file=sys.stderr)
        return ExitStatus.FAILED
    finally:
        store.close()
    kind = {"turns": "turns", "dpo": "pairs", "kto": "labelled replies",
            "markdown": "sessions"}[args.format]
    where = f" to {args.out}" if args.out else ""
    extra = f"; {summary(run.dropped)}" if args.format in ("dpo", "kto") else ""
    extra += f"; {unreadable} turn(s) could not be read" if unreadable else ""
    print(f"exported {run.counted} {kind}{where}{extra}", file=sys.stderr)
    return ExitStatus.OK


def run_stats(args: argparse.Namespace, data_dir: Path) -> int:
    from rlchat.learner.offline import log_stats

    store = _reader(data_dir)
    try:
        stats = log_stats(store)
        stats["unreadable_turns"] = report_damage(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(stats))
        return ExitStatus.OK
    print(f"{stats['turns']} turns in {stats['sessions']} sessions; "
          f"policy version {stats['policy_version']}")
    header = ("week", "turns", "answered", "rating", "reward", "top pick")
    print("{:9s} {:>6s} {:>8s} {:>7s} {:>7s} {:>8s}".format(*header))

    def cell(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for w in stats["weeks"]:
        print(f"{w['week']:9s} {w['turns']:6d} {w['answered']:8d} "
              f"{cell(w['mean_rating'], '7.2f'):>7s} {cell(w['mean_reward'], '+7.3f'):>7s} "
              f"{cell(w['top_pick_rate'], '8.2f'):>8s}")
    return ExitStatus.OK


RUNNERS = {"replay": run_replay, "evaluate": run_evaluate, "export": run_export,
           "stats": run_stats}
