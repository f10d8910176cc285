"""The installed release of rlchat: pyproject.toml's version, read from the
package's metadata, so that the command line, model lineages and the
CHANGELOG cannot disagree (tests/test_cli.py holds the last two equal)."""

from __future__ import annotations


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rlchat")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
