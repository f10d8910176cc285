"""Shared fixtures: a tiny GPT-2 built by `rlchat init-model`, and agents over it.

Nothing here touches the network: the model is written locally, and the
hub is switched off for every test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 written by the same code path as `rlchat init-model PATH`."""
    from rlchat.tui.cli import main

    path = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["init-model", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-style chat model with a ChatML template (`rlchat init-model --chat PATH`)."""
    from rlchat.tui.cli import main

    path = tmp_path_factory.mktemp("model") / "tiny-chat"
    assert main(["init-model", "--chat", str(path)]) == 0
    return path


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's config.toml."""
    folder = tmp_path / "config"
    monkeypatch.setenv("RLCHAT_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_agent(tiny_model: Path, data_dir: Path):
    """Open agents over the tiny model and close their stores afterwards."""
    from rlchat.learner.agent import open_agent
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store

    opened = []

    def make(seed: int = 0, candidates: int = 4, samples: int = 8, directory: Path = data_dir):
        for agent in opened:  # one writer per data dir: the previous one steps back
            agent.store.close()
        settings = Settings(model=str(tiny_model), candidates=candidates, samples=samples)
        agent = open_agent(Store(directory), settings, seed=seed)
        opened.append(agent)
        return agent

    yield make
    for agent in opened:
        agent.store.close()


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, as `rlchat init-model --real` fetches
    it: a fixture cached per machine (`.ci/real-model.sh` fetches it), never
    fetched by a test.  Skipped where it is missing, except in CI."""
    from rlchat.learner.model_files import PACKAGED_SHA256, file_sha256, packaged_gguf_path

    path = packaged_gguf_path()
    if not path.is_file() or file_sha256(path) != PACKAGED_SHA256:
        if os.environ.get("CI"):
            raise RuntimeError(f"the real model is missing at {path}: run .ci/real-model.sh")
        pytest.skip("the real model is not fetched here: bash .ci/real-model.sh")
    return path


@pytest.fixture(scope="session")
def real_model(real_gguf: Path) -> Path:
    """The real model as an ordinary model folder (the cached conversion)."""
    from rlchat.learner.generator.gguf import converted_folder

    return converted_folder(real_gguf)
