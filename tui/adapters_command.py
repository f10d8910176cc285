"""`rlchat adapters list | use RUN | off`: the LoRA adapters rlchat trained
(auto_train, `rlchat train --adapter`) and which one the chat uses.

No torch: it reads and writes DATA/models/ only (learner/adapters.py).  A
chat that is running picks the choice up at its next turn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rlchat.tui.exit_status import ExitStatus

if TYPE_CHECKING:
    from rlchat.learner.adapters import AdapterRun


def add_adapters_command(sub, add_common) -> None:
    adapters = sub.add_parser("adapters", help="list the trained adapters, or pick the one "
                              "the chat uses (use RUN) or none (off)")
    action = adapters.add_subparsers(dest="adapters_action", metavar="ACTION", required=True)
    listing = action.add_parser("list", help="every adapter run: its data, held-out "
                                "accuracy, whether it passed the bar and is in use")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    use = action.add_parser("use", help="the chat uses adapter RUN from its next turn")
    use.add_argument("run", metavar="RUN", type=int)
    off = action.add_parser("off", help="the chat goes back to the base model")
    gguf = action.add_parser("gguf", help="convert adapter RUN to a GGUF file for llama-server "
                             "(llama.cpp's convert_lora_to_gguf.py) and print the command "
                             "that serves it")
    gguf.add_argument("run", metavar="RUN", type=int)
    gguf.add_argument("--llama-cpp", metavar="DIR", type=Path, default=None,
                      help="the llama.cpp source folder (default: $RLCHAT_LLAMA_CPP)")
    for parser in (adapters, listing, use, off, gguf):
        add_common(parser, suppress=True)


def run_adapters(args: argparse.Namespace, data_dir: Path) -> int:
    from rlchat.learner.adapters import MARGIN, adapter_runs, find_run, run_in_use, set_in_use

    if args.adapters_action == "list":
        runs = adapter_runs(data_dir)
        using = run_in_use(data_dir)
        if args.json:
            for run in runs:
                print(json.dumps(run.describe(using is not None and run.run == using.run)))
            return ExitStatus.OK
        if not runs:
            print("no adapters yet: set auto_train, or run rlchat train --adapter")
            return ExitStatus.OK
        for run in runs:
            accuracy = "-" if run.accuracy is None else f"{run.accuracy:.2f}"
            mark = "*" if using is not None and run.run == using.run else " "
            verdict = "passed" if run.passed else "not used"
            print(f"{mark} run {run.run:>3}  {run.method:<3}  {run.turns:>5} turns  "
                  f"{run.pairs:>5} rows  {run.first or '?'} .. {run.last or '?'}  "
                  f"held-out {accuracy} on {run.held_out}  {verdict}")
        print(f"(* in use; the bar: held-out accuracy at least {0.5 + MARGIN:.2f})")
        return ExitStatus.OK
    if args.adapters_action == "off":
        set_in_use(data_dir, None)
        print("the chat uses the base model from its next turn")
        return ExitStatus.OK
    run = find_run(data_dir, args.run)
    if run is not None and args.adapters_action == "gguf":
        return _to_gguf(run, args.llama_cpp)
    if run is None:
        known = ", ".join(str(r.run) for r in adapter_runs(data_dir)) or "none"
        print(f"rlchat: there is no adapter run {args.run} in {data_dir} (runs: {known}).",
              file=sys.stderr)
        return ExitStatus.UNUSABLE
    set_in_use(data_dir, run.run)
    note = "" if run.passed else " (it did not pass the held-out bar)"
    print(f"the chat uses adapter run {run.run} from its next turn{note}")
    return ExitStatus.OK


def _to_gguf(run: AdapterRun, llama_cpp: Path | None) -> int:
    from rlchat.learner.lora_gguf import ConversionError, convert_adapter, llama_cpp_source

    try:
        gguf = convert_adapter(run, llama_cpp_source(llama_cpp))
    except ConversionError as exc:
        print(f"rlchat: {exc}.", file=sys.stderr)
        return ExitStatus.UNUSABLE
    print(f"wrote {gguf}; serve it with: llama-server -m BASE.gguf --lora {gguf} "
          f"--lora-init-without-apply, then rlchat adapters use {run.run} (or F4)")
    return ExitStatus.OK
