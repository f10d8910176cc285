"""A GGUF file as an ordinary model folder, converted once and cached by the
file's sha256.

transformers reads GGUF (with the `gguf` package) for the architectures it
maps, and dequantizes the weights to float32.  The model it returns still
carries the GGUF quantization config, so its weights are copied into a model
built from the config without it, and saved with safetensors: from then on
a start costs what an ordinary model folder costs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.model_files import Progress, file_sha256, no_progress
from rlchat.storage.paths import default_cache_dir

MARKER = "rlchat_gguf.json"  # in a converted folder: the file it came from and its sha256


def gguf_sha256(folder: Path) -> str:
    """The sha256 of the GGUF file a converted folder came from ('' for any other folder)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    sha = marker.get("sha256") if isinstance(marker, dict) else None
    return sha if isinstance(sha, str) else ""


def convert(gguf: Path, out: Path, sha256: str, progress: Progress = no_progress) -> Path:
    """Write the GGUF file's model and tokenizer to `out` as a model folder."""
    from rlchat.learner.generator import quiet_transformers

    quiet_transformers()
    folder, name = str(gguf.parent), gguf.name
    # transformers' GGUF reader draws a tqdm bar of its own, on a terminal the
    # app may own; `progress` says the stages instead.
    tqdm_before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        progress(f"reading {name}'s tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        progress(f"dequantizing {name}'s weights")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                      dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a file it cannot map
        raise ModelUnavailable(
            f"{gguf} could not be read as a causal language model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); transformers reads "
            f"GGUF files of the architectures it maps. Pass --model PATH to a model folder."
        ) from exc
    finally:
        if tqdm_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_before
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    progress(f"saving the converted model to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=".converting-"))
    try:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        (scratch / MARKER).write_text(json.dumps({"gguf": name, "sha256": sha256}),
                                      encoding="utf-8")
        if out.exists():  # another start converted it meanwhile: the same bytes
            shutil.rmtree(scratch)
        else:
            os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out


def converted_folder(gguf: Path, progress: Progress = no_progress) -> Path:
    """The cached model folder for a GGUF file, converted now if it is not
    there yet (by the file's sha256: a renamed or moved copy is not
    converted again)."""
    progress(f"hashing {gguf.name}")
    sha = file_sha256(gguf)
    out = default_cache_dir() / "gguf" / sha[:32]
    if gguf_sha256(out) == sha:
        return out
    if out.exists():  # a conversion that never finished its marker: start again
        shutil.rmtree(out, ignore_errors=True)
    progress(f"converting {gguf.name} into a model folder, once (about half a minute "
             f"for 100 MB)")
    return convert(gguf, out, sha, progress)
