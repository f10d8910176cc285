"""config.toml: defaults, bad files, round trips."""

from __future__ import annotations

import tomllib

from rlchat.learner.settings import Settings
from rlchat.tui.config_file import load_settings, save_settings


def test_missing_file_gives_the_defaults(tmp_path):
    assert load_settings(tmp_path / "none.toml") == (Settings(), [])


def test_save_and_load_round_trip_with_awkward_text(tmp_path):
    path = tmp_path / "deep" / "config.toml"
    settings = Settings(model='models/"tiny" \\ \u00e9', candidates=3, samples=5, gamma=0.8,
                        keys={"new-session": "ctrl+o", "digit-1": "a"})
    save_settings(settings, path)
    assert load_settings(path) == (settings, [])
    assert "epsilon" not in tomllib.loads(path.read_text())  # None: keep the stored value
    assert not list(path.parent.glob(".config-*"))  # no temp file left behind


def test_bad_values_and_files_are_reported_and_defaults_kept(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('candidates = 20\nsamples = "many"\ncolour = "red"\ntop_p = 0.5\n')
    settings, problems = load_settings(path)
    assert settings == Settings(top_p=0.5)
    assert len(problems) == 3
    assert any("candidates must be from 1 to 9" in p for p in problems)
    assert any("unknown setting 'colour'" in p for p in problems)
    path.write_text("this is = = not toml")
    settings, problems = load_settings(path)
    assert settings == Settings() and "could not be read" in problems[0]
    assert path.read_text() == "this is = = not toml"  # never rewritten behind the user's back


def test_values_are_judged_together_whatever_their_order(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("samples = 2\ncandidates = 1\n")  # valid only as a pair
    assert load_settings(path) == (Settings(candidates=1, samples=2), [])


def test_a_pair_that_cannot_stand_falls_back_to_both_defaults(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("candidates = 9\nsamples = 40\n")
    settings, problems = load_settings(path)
    assert (settings.candidates, settings.samples) == (4, 8)
    assert len(problems) == 1 and "samples must be from 1 to 32" in problems[0]


def test_an_older_name_is_read_under_the_new_one(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("exploration = 0.1\n")
    assert load_settings(path) == (Settings(epsilon=0.1), [])


def test_the_schema_describes_every_setting_once():
    from rlchat.learner.settings import SPECS, parse

    assert set(SPECS) == {"model", "base_url", "api_key_env", "request_timeout", "candidates",
                          "samples", "temperature", "top_p", "dtype", "prompt_format", "system",
                          "max_new_tokens", "auto_train", "epsilon", "gamma", "forgetting",
                          "embeddings"}
    assert Settings(temperature=0).problems()[0][1] == "temperature must be above 0 and at most 5"
    assert parse("gamma", " ") is None and parse("candidates", "3") == 3
    try:
        parse("candidates", "three")
    except ValueError as exc:
        assert "whole number" in str(exc)
    else:
        raise AssertionError("parsed 'three' as a number")
