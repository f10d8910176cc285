"""A short version of benchmarks/crash.py: SIGKILL the headless child, lose nothing."""

from __future__ import annotations

from rlchat.testkit.crash import run


def test_killed_headless_loses_no_acknowledged_turn(tiny_model, data_dir):
    result = run(tiny_model, data_dir, trials=4, seconds=240, seed=1, max_delay=0.4)
    assert result["trials"] >= 2
    assert result["acked"] > 0, "the child never acknowledged a turn before being killed"
    assert "error" not in result, result.get("error")
    assert result["corrupt"] == 0 and result["lost"] == 0
    assert result["unlearned"] == 0 and result["replay_mismatch"] == 0
