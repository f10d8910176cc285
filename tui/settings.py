"""The user's settings: `config.toml` in the user config dir.

Precedence: built-in defaults, then the file, then command-line options.
Learner settings left out of the file keep what the stored policy has.
A file that does not parse or holds bad values is reported in one sentence
and the defaults are used for what is wrong; nothing is lost or rewritten
until the user saves from the settings screen.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learner.sampling import DTYPES, Sampling

if TYPE_CHECKING:
    from learner.agent import Agent
    from storage import Store

CONFIG_DIR_ENV = "RLCHAT_CONFIG_DIR"
DEFAULT_MODEL = "gpt2"


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    candidates: int = 4  # K, shown
    samples: int = 8  # N, generated
    temperature: float = 1.0  # sampling
    top_p: float = 0.95
    dtype: str = "auto"
    # Learner settings; None keeps what the stored policy has.
    exploration: float | None = None  # share of uniform exploration (epsilon)
    gamma: float | None = None
    forgetting: float | None = None
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p)

    def learner(self) -> dict[str, float]:
        """The learner settings the file sets, under the policy's names."""
        named = {"epsilon": self.exploration, "gamma": self.gamma, "forgetting": self.forgetting}
        return {k: v for k, v in named.items() if v is not None}

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """(the settings involved, what is wrong), one sentence each."""
        checks = [
            ("model", bool(self.model.strip()), "model must not be empty"),
            ("candidates", 1 <= self.candidates <= 9, "candidates must be from 1 to 9"),
            ("candidates samples", self.candidates <= self.samples <= 32,
             "samples must be from candidates to 32"),
            ("temperature", 0 < self.temperature <= 5,
             "temperature must be above 0 and at most 5"),
            ("top_p", 0 < self.top_p <= 1, "top_p must be above 0 and at most 1"),
            ("dtype", self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}"),
            ("exploration", self.exploration is None or 0 < self.exploration < 1,
             "exploration must be between 0 and 1"),
            ("gamma", self.gamma is None or 0 <= self.gamma < 1,
             "gamma must be at least 0 and below 1"),
            ("forgetting", self.forgetting is None or 0.5 <= self.forgetting <= 1,
             "forgetting must be from 0.5 to 1"),
        ]
        return [(tuple(names.split()), message) for names, ok, message in checks if not ok]


def config_path() -> Path:
    """$RLCHAT_CONFIG_DIR/config.toml if set, else the user config dir's."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser() / "config.toml"
    from platformdirs import user_config_dir

    return Path(user_config_dir("rlchat", appauthor=False)) / "config.toml"


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if name == "keys":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError("[keys] must map binding ids to key names")
        return dict(value)
    if "float" in kind and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    raise ValueError(f"{name} has the wrong type")


def load_settings(path: Path | None = None) -> tuple[Settings, list[str]]:
    """The settings in the file (defaults where missing) and what was wrong."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings(), []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return Settings(), [f"{path} could not be read ({exc}); using the defaults"]
    values, problems = {}, []
    known = {f.name for f in fields(Settings)}
    for name, value in data.items():
        if name not in known:
            problems.append(f"{path}: unknown setting {name!r} ignored")
            continue
        try:
            values[name] = _coerce(name, value)
        except ValueError as exc:
            problems.append(f"{path}: {exc}; default kept")
    # Judge the file's values together (samples depends on candidates) and
    # put back the defaults of those involved in each problem.  The defaults
    # are valid, so every round restores at least one value and this ends.
    defaults = Settings()
    settings = replace(defaults, **values)
    while wrong := settings.problems():
        names, message = wrong[0]
        problems.append(f"{path}: {message}; default kept")
        settings = replace(settings, **{name: getattr(defaults, name) for name in names})
    return settings, problems


def _toml_value(value: Any) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value) if isinstance(value, str) else repr(value)


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings atomically (temp file, fsync, rename)."""
    path = path or config_path()
    lines = ["# rlchat settings (written by the settings screen)"]
    data = asdict(settings)
    keys = data.pop("keys")
    for name, value in data.items():
        if value is not None:
            lines.append(f"{name} = {_toml_value(value)}")
    if keys:
        lines += ["", "[keys]"]
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(keys.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def open_agent(settings: Settings, store: Store, *, seed: int | None = None) -> Agent:
    """Load the model and make the agent these settings describe (ModelUnavailable if not)."""
    from learner.agent import AgentConfig
    from learner.agent import open_agent as load

    agent = load(
        settings.model, store, AgentConfig(settings.candidates, settings.samples),
        seed=seed, dtype=settings.dtype, sampling=settings.sampling(),
    )
    agent.tune(**settings.learner())
    return agent
