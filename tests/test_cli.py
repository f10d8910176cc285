"""The command line: help without torch, version, init-model, option checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlchat.tui.cli import build_parser, main


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout


def test_only_the_generator_package_imports_torch_at_module_level():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    allowed = {root / "learner" / "generator"}
    offenders = []
    for path in [*root.glob("learner/**/*.py"), *root.glob("tui/**/*.py"),
                 *root.glob("storage/**/*.py")]:
        if path.parent in allowed:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("torch", "transformers") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_help_imports_neither_torch_nor_transformers():
    out = run_python(
        "import sys, json, contextlib, io\n"
        "from rlchat.tui.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'textual'))\n"
        "print(json.dumps({'help': buf.getvalue(), 'heavy': heavy}))\n"
    )
    result = json.loads(out)
    assert result["heavy"] == []
    for word in ("chat", "headless", "init-model", "--model", "--data-dir", "--candidates",
                 "--samples", "--seed"):
        assert word in result["help"]


def _release(version: str) -> tuple[int, ...]:
    numbers = [int(n) for n in version.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def test_one_version_number():
    """pyproject's version is the CHANGELOG's newest release, and it is what
    `rlchat --version` and a trained model's lineage say (the installed
    package's metadata)."""
    import re
    import tomllib
    from pathlib import Path

    from rlchat.learner.version import installed_version

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    newest = re.search(r"^## (\d+(?:\.\d+)*) \(", (root / "CHANGELOG.md").read_text(),
                       re.MULTILINE)
    assert newest is not None and _release(newest.group(1)) == _release(declared)
    assert installed_version() == declared  # reinstall (`pip install -e .`) after a bump
    result = subprocess.run([sys.executable, "-m", "rlchat.tui.cli", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"rlchat {declared}"


def test_common_options_before_or_after_the_subcommand_win_over_the_config_file(config_dir):
    from rlchat.tui.cli import _settings

    parser = build_parser()
    before = parser.parse_args(["--model", "m", "--candidates", "3", "headless"])
    after = parser.parse_args(["headless", "--model", "m", "--candidates", "3"])
    for args in (before, after):
        settings = _settings(args, parser)
        assert (args.command, settings.model, settings.candidates, settings.samples) == (
            "headless", "m", 3, 8)
    default = parser.parse_args([])
    assert default.command is None and _settings(default, parser).model == "gpt2"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text('model = "from-file"\nsamples = 6\ngamma = 0.7\n')
    settings = _settings(before, parser)
    assert (settings.model, settings.candidates, settings.samples) == ("m", 3, 6)
    assert settings.learner() == {"gamma": 0.7}
    assert _settings(default, parser).model == "from-file"


def test_samples_below_candidates_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlchat.tui.cli", "headless", "--candidates", "5", "--samples", "3",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--samples (3) must be at least --candidates (5)" in (
        result.stderr)


@pytest.mark.parametrize("bad", ["0", "-1", "x", "10"])
def test_candidates_out_of_range_are_refused_with_the_range(bad, capsys, data_dir):
    with pytest.raises(SystemExit) as exit_:
        main(["--candidates", bad, "--data-dir", str(data_dir), "headless"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--candidates" in err and ("from 1 to 9" in err or "invalid int" in err)
    assert not data_dir.exists()  # refused before anything was opened


def test_init_model_writes_a_loadable_model(tiny_model):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, local_files_only=True)
    assert model.config.model_type == "gpt2" and model.config.n_layer == 2
    assert tokenizer.decode(tokenizer("User: hello")["input_ids"]) == "User: hello"


def test_missing_model_folder_names_the_fix(tmp_path):
    from rlchat.learner.errors import ModelUnavailable
    from rlchat.learner.generator import load_model

    with pytest.raises(ModelUnavailable) as err:
        load_model(str(tmp_path / "nothing-here"))
    assert "init-model" in str(err.value) and "--model PATH" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailable) as err:
        load_model(str(empty))
    assert "does not hold a loadable" in str(err.value)


def test_the_product_imports_no_test_code():
    """tests/ and benchmarks/ share rlchat.testkit; the product never imports it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in [*root.glob("learner/**/*.py"), *root.glob("tui/**/*.py"),
                 *root.glob("storage/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n.startswith(("rlchat.testkit", "tests", "benchmarks")) for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_installed_under_one_name(tmp_path):
    """Only `rlchat` is added to site-packages: the folders' own names are not importable."""
    for name in ("storage", "learner", "tui", "testkit"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                                capture_output=True, text=True)
        assert result.returncode != 0 and f"No module named '{name}'" in result.stderr
    result = subprocess.run(
        [sys.executable, "-c", "import rlchat.storage, rlchat.learner.agent, rlchat.tui.app, "
         "rlchat.testkit.servers, rlchat.testkit.crash"],
        cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
