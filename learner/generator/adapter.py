"""A LoRA adapter of `rlchat train --adapter` merged into the base model it
was trained on, for the local decode loop (which runs plain weights in its
own number formats, so the adapter is folded in rather than run beside)."""

from __future__ import annotations

from pathlib import Path

from rlchat.learner.errors import ModelUnavailable
from rlchat.learner.model_files import read_lineage


class AdapterMismatch(Exception):
    """The adapter was trained on other weights than the model loaded."""


def merged_adapter(model, folder: Path, base_weights: str):
    """`model` (whose weights hash to `base_weights`) with the adapter in
    `folder` merged in; AdapterMismatch where it was trained on another model."""
    trained_on = read_lineage(folder).get("base_weights")
    if trained_on != base_weights:
        raise AdapterMismatch(
            f"adapter {folder.name} was trained on another model than the one loaded")
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelUnavailable("Using a trained adapter needs peft: pip install "
                               "'rlchat[train]'.") from None
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
