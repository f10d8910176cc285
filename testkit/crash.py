"""The crash driver: kill `rlchat headless` at random moments and check that
nothing acknowledged is lost (benchmarks/crash.py runs it long and prints
its figures; tests/test_crash.py runs it short).

Each trial starts `rlchat headless` (tiny model) on one data dir, feeds it
say/choose pairs as fast as it answers, and SIGKILLs it after a random
delay.  Then a fresh process opens the data dir (with the startup recovery)
and checks: every file parses and none was moved aside (corrupt=0); every
turn whose `choose` was acknowledged is stored as chosen, and the policy has
learned exactly the answered turns, with the weights a replay of the stored
turns gives bit for bit (lost=0).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

VERIFY = r"""
import json, sys
import numpy as np
from rlchat.learner.agent import Agent
from rlchat.learner.policy_store import new_policy
from rlchat.learner.records import Turn
from rlchat.learner.update import replay
from rlchat.storage import Store

data, acked = sys.argv[1], set(json.loads(sys.argv[2]))
store = Store(data)
agent = Agent(store, source=None)          # runs the startup recovery
turns = [Turn.from_dict(t) for t in store.turns()]
chosen = {t.id for t in turns if t.status == "chosen"}
answered = sum(t.answered_ok for t in turns)
fresh = new_policy(agent.policy.config)
replay(fresh, turns)
corrupt = len(store.warnings) + len([p for p in store.data_dir.rglob("*.corrupt-*")])
print(json.dumps({
    "corrupt": corrupt,
    "lost": len(acked - chosen),
    "unlearned": answered - agent.policy.version,
    "replay_equal": bool(np.array_equal(fresh.w, agent.policy.w)),
    "turns": len(turns),
    "recovered_turns": agent.recovered[0],
    "recovered_s": agent.recovered[1],
}))
store.close()
"""


def trial(model: Path, data: Path, rng: random.Random, max_delay: float) -> list[str]:
    """One child, killed at a random moment; returns the acknowledged turn ids."""
    child = subprocess.Popen(
        [sys.executable, "-m", "rlchat.tui.cli", "headless", "--model", str(model),
         "--data-dir", str(data), "--seed", str(rng.randrange(1 << 30))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    acked: list[str] = []
    started = threading.Event()
    delay = rng.uniform(0.0, max_delay)

    def killer() -> None:
        started.wait(120)
        time.sleep(delay)  # a random moment, measured from the first answer
        child.kill()

    threading.Thread(target=killer, daemon=True).start()
    try:
        while True:
            child.stdin.write(json.dumps({"op": "say", "text": f"hello {rng.random()}"}) + "\n")
            child.stdin.flush()
            said = json.loads(child.stdout.readline() or "null")
            started.set()
            if not said or not said.get("ok"):
                break
            pick = rng.choice(said["candidates"])["id"]
            rating = rng.choice([None, 1, 2, 3, 4, 5])
            child.stdin.write(json.dumps({"op": "choose", "turn": said["turn"], "id": pick,
                                          "rating": rating}) + "\n")
            child.stdin.flush()
            chose = json.loads(child.stdout.readline() or "null")
            if not chose:
                break
            if chose.get("ok"):
                acked.append(said["turn"])
    except (BrokenPipeError, ValueError, OSError):
        pass
    started.set()
    child.wait()
    return acked


def verify(data: Path, acked: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", VERIFY, str(data), json.dumps(acked)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"corrupt": 1, "lost": len(acked), "error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def run(model: Path, data: Path, trials: int, seconds: float, seed: int = 0,
        max_delay: float = 0.5, progress=None) -> dict:
    """Trials on one data dir until `trials` or `seconds`; checked after each."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    acked: list[str] = []
    totals = {"trials": 0, "corrupt": 0, "lost": 0, "unlearned": 0, "replay_mismatch": 0,
              "recovered_turns": 0, "recovered_s": 0.0}
    while totals["trials"] < trials and time.monotonic() < deadline:
        acked += trial(model, data, rng, max_delay)
        result = verify(data, acked)
        totals["trials"] += 1
        totals["corrupt"] = max(totals["corrupt"], result.get("corrupt", 1))
        totals["lost"] = max(totals["lost"], result.get("lost", 0))
        totals["unlearned"] = max(totals["unlearned"], abs(result.get("unlearned", 0)))
        totals["replay_mismatch"] += not result.get("replay_equal", False)
        totals["recovered_turns"] = max(totals["recovered_turns"],
                                        result.get("recovered_turns", 0))
        totals["recovered_s"] = max(totals["recovered_s"], result.get("recovered_s", 0.0))
        totals["acked"] = len(acked)
        totals["turns"] = result.get("turns", 0)
        if "error" in result:
            totals["error"] = result["error"]
        if progress:
            progress(totals)
    return totals


def worst_start(model: Path, data: Path) -> dict:
    """A process killed one turn before its checkpoint was due: the next start
    learns CHECKPOINT_EVERY - 1 stored turns again.  Returns how long that took
    and how long opening the agent took in all."""
    from rlchat.learner.agent import CHECKPOINT_EVERY, Agent, open_agent
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store

    agent = open_agent(Store(data), Settings(model=str(model)), seed=0)
    for i in range(CHECKPOINT_EVERY - 1):
        view = agent.say(f"message {i}")
        agent.choose(view.turn, view.candidates[0].id, 4)
    agent.store.close()  # no checkpoint: as if killed
    began = time.perf_counter()
    again = Agent(Store(data), None)
    opened = time.perf_counter() - began
    again.store.close()
    return {"turns": again.recovered[0], "learn_s": round(again.recovered[1], 3),
            "open_s": round(opened, 3)}
