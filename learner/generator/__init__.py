"""Candidate replies from a Hugging Face causal language model.

The only package that imports torch and transformers; the agent imports it
lazily, so the command line, replay and export never pay for them.
- loading.py: finding and loading a model (folder, hub name, GGUF file, the
  packaged real model), its weights' fingerprint and lineage;
- local.py: the Generator, which samples candidates with the decode loop
  of decoding.py in the number format of weights.py;
- decoding.py, lean_step.py, attention.py: the decode loop;
- weights.py: the number formats; threads.py: how many cores a turn takes;
- gguf.py: GGUF files converted once into model folders;
- private_api.py: the private or deprecated library APIs, each with a
  supported fallback.
"""

from rlchat.learner.generator.loading import (
    DEFAULT_MODEL,
    FIX,
    LINEAGE,
    ModelSource,
    load_located,
    load_model,
    locate_model,
    quiet_transformers,
    read_lineage,
    weights_fingerprint,
)
from rlchat.learner.generator.local import Generator, calibration_ids, set_threads

__all__ = ["DEFAULT_MODEL", "FIX", "LINEAGE", "Generator", "ModelSource", "calibration_ids",
           "load_located", "load_model", "locate_model", "quiet_transformers", "read_lineage",
           "set_threads", "weights_fingerprint"]
