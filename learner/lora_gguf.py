"""An adapter run as a GGUF LoRA file for llama-server (`rlchat adapters gguf`).

llama.cpp's own converter (convert_lora_to_gguf.py, in its source tree) does
the work; rlchat runs it with the tree's gguf-py on the path, on the run's
PEFT folder and the config of the base it was trained on.  The file is
written beside the adapter (DATA/models/<run>/adapter.gguf) whole or not
at all.  llama-server loads adapters only at its start (--lora), so the
result is the one command that restarts it with the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rlchat.learner.adapters import ADAPTER_GGUF, AdapterRun

LLAMA_CPP_ENV = "RLCHAT_LLAMA_CPP"
CONVERTER = "convert_lora_to_gguf.py"
_RUN = """
import runpy, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/gguf-py"]
sys.argv = [root + "/convert_lora_to_gguf.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ConversionError(Exception):
    """One sentence with the fix."""


def llama_cpp_source(given: Path | None) -> Path:
    """The llama.cpp source tree: --llama-cpp DIR, else $RLCHAT_LLAMA_CPP."""
    folder = given or (Path(os.environ[LLAMA_CPP_ENV]) if os.environ.get(LLAMA_CPP_ENV)
                       else None)
    if folder is None or not (folder.expanduser() / CONVERTER).is_file():
        where = f"{folder} holds no {CONVERTER}" if folder else "no llama.cpp source tree given"
        raise ConversionError(f"{where}; pass --llama-cpp DIR (or set ${LLAMA_CPP_ENV}) to the "
                              "llama.cpp source folder, the one that holds " + CONVERTER)
    return folder.expanduser()


def base_folder(run: AdapterRun) -> Path:
    """The base's model folder (its config.json): a GGUF base is its converted folder."""
    from rlchat.learner.errors import ModelUnavailable
    from rlchat.learner.generator import locate_model

    try:
        folder = Path(locate_model(run.base).path)
    except ModelUnavailable as exc:
        raise ConversionError(f"the base of adapter run {run.run} cannot be found ({exc})") \
            from None
    if not (folder / "config.json").is_file():
        raise ConversionError(f"the base of adapter run {run.run}, {run.base}, is not a model "
                              "folder on this machine")
    return folder


def convert_adapter(run: AdapterRun, source: Path) -> Path:
    """DATA/models/<run>/adapter.gguf from the run's PEFT adapter (f16)."""
    target = run.path / ADAPTER_GGUF
    temp = run.path / f".{ADAPTER_GGUF}.partial"
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(source), str(run.path), "--base", str(base_folder(run)),
         "--outfile", str(temp), "--outtype", "f16"],
        capture_output=True, text=True, errors="replace")
    if result.returncode != 0 or not temp.is_file():
        temp.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConversionError(f"llama.cpp's converter failed on adapter run {run.run}: {last}")
    os.replace(temp, target)
    return target
