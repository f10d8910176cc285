"""End to end in a real terminal: `rlchat --model TINY` in tmux, three turns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

if shutil.which("tmux") is None:
    if os.environ.get("CI"):
        raise RuntimeError("tmux is required in CI (.ci/run installs it)")
    pytest.skip("tmux is not installed", allow_module_level=True)

SESSION = f"rlchat-test-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_for(*texts: str, after: str = "", timeout: float = 60.0) -> str:
    """Poll the screen until all `texts` show up at once, below the last
    `after` if given (a deadline, not a sleep for timing): a frame can hold the
    new status before the rows or the reply it announces are painted."""
    deadline = time.monotonic() + timeout
    while True:
        shown = screen()
        below = shown
        if after:
            below = shown.rsplit(after, 1)[-1] if after in shown else ""
        if all(text in below for text in texts):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{texts!r} never appeared together; screen:\n{shown}")
        time.sleep(0.1)


def wait_quit(timeout: float = 30.0) -> None:
    """Until the app has quit and its tmux session is gone (a deadline)."""
    deadline = time.monotonic() + timeout
    alive = ["tmux", "has-session", "-t", SESSION]
    while subprocess.run(alive, capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the app did not quit"
        time.sleep(0.1)


def say(message: str) -> str:
    """Type a message, send it, and wait for its candidates."""
    tmux("send-keys", "-t", SESSION, "-l", message)
    tmux("send-keys", "-t", SESSION, "Enter")
    return wait_for("Pick a reply", "1. ", f"You: {message}")


@pytest.fixture
def terminal(tiny_model: Path, data_dir: Path, config_dir: Path):
    rlchat = Path(sys.executable).with_name("rlchat")
    # The tmux server keeps the environment it started with: pass ours explicitly.
    command = (f"env RLCHAT_CONFIG_DIR={config_dir} "
               f"{rlchat} --model {tiny_model} --data-dir {data_dir} --seed 1")
    tmux("new-session", "-d", "-s", SESSION, "-x", "100", "-y", "30", command)
    yield
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def test_three_turns_picked_and_rated_through_keys(terminal, data_dir):
    wait_for("Ready. Type a message")
    for turn, (message, pick, rating) in enumerate(
        [("hello there", "1", "5"), ("what should I cook?", "2", "3"), ("thanks", "1", "4")],
        start=1,
    ):
        say(message)
        tmux("send-keys", "-t", SESSION, pick)
        wait_for("Rate reply")
        tmux("send-keys", "-t", SESSION, rating)
        shown = wait_for(f"policy v{turn}.")
        stars = "★" * int(rating) + "☆" * (5 - int(rating))
        assert f"Learned ({stars}" in shown
    # The newest exchange is on screen (older ones may have scrolled up: the
    # tiny model's replies can wrap over several lines); all three are stored.
    wait_for("Assistant:", after="You: thanks")
    tmux("send-keys", "-t", SESSION, "C-q")
    wait_quit()

    from rlchat.storage import Store

    assert (data_dir / "rlchat.log").stat().st_mode & 0o777 == 0o600  # private like the rest
    store = Store(data_dir)
    assert [t["rating"] for t in store.turns()] == [5, 3, 4]
    assert store.load_policy()["version"] == 3


def test_deleting_the_open_session_mid_turn_then_going_on(terminal, data_dir):
    wait_for("Ready. Type a message")

    say("hello there")
    tmux("send-keys", "-t", SESSION, "1", "5")
    wait_for("policy v1.")
    say("second message")  # its candidates are on screen
    tmux("send-keys", "-t", SESSION, "F2")
    wait_for("hello there", "turns")
    tmux("send-keys", "-t", SESSION, "C-d")
    wait_for("Delete session")
    tmux("send-keys", "-t", SESSION, "y")
    wait_for("No sessions yet")
    tmux("send-keys", "-t", SESSION, "Escape")
    shown = wait_for("The open session was deleted")
    assert "Candidates" not in shown and "You: second message" not in shown
    tmux("send-keys", "-t", SESSION, "1")  # the pick the user had in mind: now just text
    wait_for("▊ 1   ")
    tmux("send-keys", "-t", SESSION, "BSpace")
    say("a fresh start")
    tmux("send-keys", "-t", SESSION, "1", "4")
    shown = wait_for("policy v2.")
    for error in ("There is no turn", "Error", "Traceback", "failed"):
        assert error not in shown
    tmux("send-keys", "-t", SESSION, "F2")
    shown = wait_for("a fresh start")
    assert "hello there" not in shown and "second message" not in shown
    tmux("send-keys", "-t", SESSION, "Escape", "C-q")
    wait_quit()

    from rlchat.storage import Store

    store = Store(data_dir, readonly=True)
    sessions = list(store.sessions())
    assert [s["title"] for s in sessions] == ["a fresh start"] and sessions[0]["turns"] == 1
    assert [t["user_text"] for t in store.turns()] == ["a fresh start"]
    store.close()


def test_edit_a_reply_write_one_of_two_lines_and_copy(tiny_chat_model: Path, data_dir: Path,
                                                      config_dir: Path):
    rlchat = Path(sys.executable).with_name("rlchat")
    command = (f"env RLCHAT_CONFIG_DIR={config_dir} "
               f"{rlchat} --model {tiny_chat_model} --data-dir {data_dir} --seed 1")
    tmux("new-session", "-d", "-s", SESSION, "-x", "110", "-y", "34", command)
    try:
        wait_for("Ready. Type a message")

        say("hello there")
        tmux("send-keys", "-t", SESSION, "m")
        wait_for("Edit the reply")
        tmux("send-keys", "-t", SESSION, "-l", " (edited)")
        tmux("send-keys", "-t", SESSION, "Enter")
        wait_for("Rate your edit")
        tmux("send-keys", "-t", SESSION, "5")
        wait_for("policy v1.")

        say("write it yourself")
        tmux("send-keys", "-t", SESSION, "e")
        wait_for("Write the reply you wanted")
        tmux("send-keys", "-t", SESSION, "-l", "line one")
        tmux("send-keys", "-t", SESSION, "C-j")  # a line break, in any terminal
        tmux("send-keys", "-t", SESSION, "-l", "line two")
        tmux("send-keys", "-t", SESSION, "Enter")
        shown = wait_for("Learned from your own reply", "line two", after="write it yourself")
        rows = [row.strip() for row in shown.splitlines()]
        one = next(i for i, row in enumerate(rows) if row.endswith("line one"))
        assert rows[one + 1] == "line two"  # shown as two lines

        say("copy this")
        tmux("send-keys", "-t", SESSION, "c")
        wait_for("Copied reply 1")
        tmux("send-keys", "-t", SESSION, "Escape", "C-q")
        wait_quit()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)

    from rlchat.storage import Store

    store = Store(data_dir, readonly=True)
    edited, own, _ = list(store.turns())
    pick = edited["candidates"][edited["choice"]]["text"]
    assert edited["choice"] == edited["order"][0]  # the highlighted one: the first
    assert edited["edit"] == pick + " (edited)"
    assert own["own_reply"] == "line one\nline two"
    store.close()


def test_served_model_in_a_real_terminal_survives_its_server_dying(
        tiny_chat_model: Path, data_dir: Path, config_dir: Path, tmp_path: Path):
    from rlchat.testkit.servers import free_port, llama_dir, llama_server, to_gguf

    if llama_dir() is None:
        if os.environ.get("CI"):
            raise RuntimeError("llama-server is required in CI (.ci/llama-server.sh)")
        pytest.skip("llama-server is not built here (.ci/llama-server.sh builds it)")
    gguf = to_gguf(tiny_chat_model, tmp_path / "tiny.gguf")
    port = free_port()
    server = llama_server(gguf, tmp_path / "server.log", port=port).start()
    rlchat = Path(sys.executable).with_name("rlchat")
    command = (f"env RLCHAT_CONFIG_DIR={config_dir} {rlchat} --base-url {server.base_url} "
               f"--model tinychat --data-dir {data_dir} --seed 1")
    tmux("new-session", "-d", "-s", SESSION, "-x", "110", "-y", "34", command)
    try:
        shown = wait_for("Ready. Type a message")
        assert f"tinychat @ 127.0.0.1:{port}" in shown  # the title names the server
        say("hello server")
        tmux("send-keys", "-t", SESSION, "1", "5")
        wait_for("policy v1.")
        server.kill()
        tmux("send-keys", "-t", SESSION, "-l", "are you still there")
        tmux("send-keys", "-t", SESSION, "Enter")
        shown = wait_for("cannot be reached", "are you still there")
        assert "You: are you still there" not in shown  # back in the box, not sent
        server.start()  # back on the same port: sending again works
        tmux("send-keys", "-t", SESSION, "Enter")
        wait_for("Pick a reply", "You: are you still there")
        tmux("send-keys", "-t", SESSION, "Escape", "C-q")
        wait_quit()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        server.stop()

    from rlchat.storage import Store

    store = Store(data_dir, readonly=True)
    assert [t["user_text"] for t in store.turns()] == ["hello server", "are you still there"]
    store.close()


def test_the_run_command_without_the_hub_shows_real_replies(real_model: Path, data_dir: Path,
                                                           config_dir: Path, tmp_path: Path):
    """`rlchat` as the README runs it, on a machine that cannot reach the
    hub (and has no hub cache): the real packaged model, said in one line,
    and candidates that are English sentences."""
    from rlchat.learner.generator import DEFAULT_MODEL
    from rlchat.storage import Store
    from tests.test_real_model import english

    rlchat = Path(sys.executable).with_name("rlchat")
    (config_dir).mkdir(parents=True, exist_ok=True)
    # Short replies keep the turn to seconds; the model is the default's.
    (config_dir / "config.toml").write_text("max_new_tokens = 24\n", encoding="utf-8")
    command = (f"env RLCHAT_CONFIG_DIR={config_dir} HF_HUB_OFFLINE=1 HF_HOME={tmp_path / 'hf'} "
               f"{rlchat} --data-dir {data_dir} --seed 1")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command)
    try:
        shown = wait_for("Ready. Type a message", "cannot be reached", timeout=180)
        assert "rlchat — SmolLM2-135M-Instruct (qint8, chat-template)" in shown  # the title
        say("How do I make a cup of tea?")
        tmux("send-keys", "-t", SESSION, "1", "5")
        wait_for("policy v1.")
        tmux("send-keys", "-t", SESSION, "C-q")
        wait_quit()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    store = Store(data_dir, readonly=True)
    turn = next(store.turns())
    store.close()
    texts = [c["text"] for c in turn["candidates"]]
    assert sum(english(t) for t in texts) >= len(texts) // 2, texts
    assert turn["generator"]["gguf"] and turn["generator"]["format"] == "chat-template"
    assert DEFAULT_MODEL == "gpt2"
