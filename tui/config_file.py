"""config.toml in the user config dir: reading it, checking it, writing it.

Precedence: built-in defaults, then the file, then command-line options.
Learner settings left out of the file keep what the stored policy has.
A file that does not parse or holds bad values is reported in one sentence
and the defaults are used for what is wrong; nothing is lost or rewritten
until the user saves from the settings form.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from rlchat.learner.settings import RENAMED, Settings, coerce
from rlchat.storage.atomic import write_atomic  # storage: its atomic write, for config.toml

CONFIG_DIR_ENV = "RLCHAT_CONFIG_DIR"


def config_path() -> Path:
    """$RLCHAT_CONFIG_DIR/config.toml if set, else the user config dir's."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser() / "config.toml"
    from platformdirs import user_config_dir

    return Path(user_config_dir("rlchat", appauthor=False)) / "config.toml"


def _keys(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("[keys] must map binding ids to key names")
    return dict(value)


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
        if name in RENAMED and RENAMED[name] not in data:
            name = RENAMED[name]  # an older file: read under the new name, saved so
        if name not in known:
            problems.append(f"{path}: unknown setting {name!r} ignored")
            continue
        try:
            values[name] = _keys(value) if name == "keys" else coerce(name, value)
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
    """Write the settings so that the file is whole, old or new (storage's atomic write)."""
    path = path or config_path()
    lines = ["# rlchat settings (written by the settings form)"]
    data = asdict(settings)
    keys = data.pop("keys")
    for name, value in data.items():
        if value is not None:
            lines.append(f"{name} = {_toml_value(value)}")
    if keys:
        lines += ["", "[keys]"]
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(keys.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n", temp_prefix=".config-")
    return path
