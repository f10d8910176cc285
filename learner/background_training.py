"""The model learns while the user chats: `auto_train` runs `rlchat train
--adapter` in the background every N new preference rows.

The run is a separate process at the lowest CPU priority (SCHED_IDLE where
the kernel has it, else nice 19), so it takes only the time the chat leaves
idle; it is stopped (SIGSTOP) while a turn is generated and while the user
types, and continued after, so neither shares the cores with it.  One run
at a time.  Quitting
sends SIGTERM, which `rlchat train` unwinds as Ctrl+C: its temp folders go
and no adapter is left half written.

No torch here: the training process loads it, the chat does not wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from rlchat.learner.adapters import AdapterRun, adapter_runs, read_run
from rlchat.learner.export import preference_pairs
from rlchat.learner.records import Turn
from rlchat.learner.train import TrainOptions, held_out_count

# The least optimizer steps (of 8 rows) of a background run.  On the real model
# (SmolLM2-135M-Instruct) on 2 cores a step takes about 26 s, so a run is
# 6-8 minutes (424-496 s measured, loading included); at AUTO_RATE, 12 steps
# moved the samples toward the taste (below), where more would cost time.
AUTO_STEPS = 12
# The rate of those steps, below `rlchat train`'s LoRA default (1e-3, chosen
# on the tiny model).  On the real model, a simulated user who likes replies
# that lay out steps (benchmarks/generator_learning.py), three runs at 1e-3
# collapsed the samples into "1. 1. 1. ..." (the on-topic cosine fell 71 %);
# one run of 12 steps on that log, 12 held-out messages: 1e-4 left the
# samples as they were (taste utility 0.53 against the base's 0.56), 3e-4
# moved them (0.86) at a cost of 10 % of the on-topic cosine and 1.3 % of
# perplexity.
AUTO_RATE = 3e-4
# A run trains on the whole log, which grows by N rows a run: AUTO_STEPS
# batches read all of it only while it is small (96 rows).  Past that a run
# takes a step per batch of its training rows, so that it reads each once,
# up to AUTO_MAX_STEPS (a run of about 13 minutes on the real model, 776 s measured).  With
# AUTO_STEPS alone, the fourth run on a 204-row log read 59 % of it, and the
# steps taste rose only from 0.62 to 0.64 of samples above the base's median
# between the second run and the fourth; reading its log once, the fifth
# run reached 0.70 (benchmarks/generator_learning.py, docs/benchmarks.md).
AUTO_MAX_STEPS = 24
BATCH = TrainOptions.batch_size
STOP_WAIT_S = 20.0  # for the run to unwind after SIGTERM before it is killed
_STEP = re.compile(r"step (\d+)/(\d+)")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Finished:
    """A background run that ended: its adapter where it wrote one, else why not."""

    run: AdapterRun | None
    failure: str = ""


def turn_rows(turn: Turn) -> tuple[int, int]:
    """(preference pairs, thumbs) a turn gives the trainer."""
    return sum(1 for _ in preference_pairs([turn])), len(turn.thumbs or ())


def _low_priority() -> None:
    # In the child before exec: the chat's turns and keys always come first.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)
    # A chat that is killed (not quit) takes its run with it, even a run it
    # holds stopped, which would otherwise sit stopped for ever.  The signal
    # comes when the thread that started the run ends: a thread that lives
    # as long as the run (BackgroundTraining._start).
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BackgroundTraining:
    """Starts, pauses and reads one background training run at a time."""

    def __init__(self, data_dir: Path, every: int, base: str, *,
                 steps: int = AUTO_STEPS) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.every, self.base, self.steps = every, base, steps
        self.rows = 0  # new preference rows since the last run, as last counted
        self.stage = ""  # the run's latest progress line
        self.failure = ""  # why the latest run wrote no adapter
        self._process: subprocess.Popen | None = None
        self._report: list[str] = []
        self._error: list[str] = []
        self._readers: list[threading.Thread] = []
        self._holds: set[str] = set()  # why the run is stopped now: "turn", "keys"
        # (pairs, thumbs) of each turn after the last run, counted once: only
        # the newest may still change (a late thumb), so only it is read again.
        self._counted: dict[int, tuple[int, int]] = {}
        self.stepped = threading.Event()  # the run has taken an optimizer step
        self._lock = threading.Lock()
        self._since_seq = max((r.last_seq for r in adapter_runs(self.data_dir)), default=0)

    @property
    def running(self) -> bool:
        return self._process is not None

    def status(self) -> str:
        """One line for the status bar and F3: the run's progress, or how
        many rows until the next one."""
        if self._process is not None:
            step = _STEP.search(self.stage)
            done = f"step {step[1]}/{step[2]}" if step else "preparing"
            return f"training an adapter in the background: {done}"
        return f"next adapter training in {max(0, self.every - self.rows)} preference rows"

    def count(self, turns: list[Turn]) -> tuple[int, str]:
        """The new preference rows since the last run, `turns` (those after
        `read_after`) counted in, and the method for them: KTO where thumbs
        outnumber pairs, else DPO."""
        for turn in turns:
            if turn.seq > self._since_seq:
                self._counted[turn.seq] = turn_rows(turn)
        pairs = sum(p for p, _ in self._counted.values())
        thumbs = sum(t for _, t in self._counted.values())
        return pairs + thumbs, "kto" if thumbs > pairs else "dpo"

    def check(self, turns: list[Turn]) -> Finished | None:
        """Between two turns: a run that ended, or None; starts one where
        the turns after the last run (`turns`: those after `read_after`,
        newest last) hold enough new rows and none runs."""
        if self._process is not None:
            return self._finished() if self._process.poll() is not None else None
        self.rows, method = self.count(turns)
        if self.rows >= self.every and self._counted:
            self._start(method, max(self._counted))
        return None

    @property
    def read_after(self) -> int:
        """The turns to read for `check`: those after this seq (the last
        run's newest, or the newest counted but one, which a thumb may still
        change)."""
        return max(self._counted) - 1 if self._counted else self._since_seq

    def run_steps(self) -> int:
        """The next run's optimizer steps: self.steps, or one per batch of
        its training rows where the log has outgrown them (up to
        AUTO_MAX_STEPS).  The log's rows are the last run's and those
        counted since: no read of the whole log between two turns."""
        runs = adapter_runs(self.data_dir)
        rows = (max(runs, key=lambda r: r.run).pairs if runs else 0) + self.rows
        batches = math.ceil((rows - held_out_count(rows)) / BATCH)
        return max(self.steps, min(batches, AUTO_MAX_STEPS))

    def _start(self, method: str, last_seq: int) -> None:
        command = [sys.executable, "-m", "rlchat.tui.cli", "train", "--adapter", "--json",
                   "--method", method, "--steps", str(self.run_steps()),
                   "--learning-rate", str(AUTO_RATE), "--model", self.base,
                   "--data-dir", str(self.data_dir)]
        # Its threads must not spin waiting for cores the chat takes back.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        self.stage, self.failure = "", ""
        self._report, self._error = [], []
        self.stepped.clear()
        started: list = []
        ready = threading.Event()

        def launch() -> None:  # lives as long as the run: see _low_priority
            try:
                started.append(subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                    env=env, preexec_fn=_low_priority, start_new_session=True))
            except BaseException as exc:  # handed to the caller
                started.append(exc)
            ready.set()
            if isinstance(started[0], subprocess.Popen):
                started[0].wait()

        threading.Thread(target=launch, daemon=True, name="background-training").start()
        ready.wait()
        if isinstance(started[0], BaseException):
            raise started[0]
        self._process = started[0]
        self._readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                         for stream, sink in ((self._process.stdout, self._report),
                                              (self._process.stderr, self._error))]
        for reader in self._readers:
            reader.start()
        with self._lock:
            if self._holds:  # started while the user types: held from the start
                self._signal(signal.SIGSTOP)
        self._since_seq = last_seq
        self._counted.clear()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            sink.append(line)
            if sink is self._error and line.startswith("train: "):
                self.stage = line.removeprefix("train: ")
                if _STEP.search(self.stage):
                    self.stepped.set()
        stream.close()

    def _finished(self) -> Finished:
        process, self._process = self._process, None
        for reader in self._readers:
            reader.join(5)
        self.rows, self.stage = 0, ""
        report: dict = {}
        with contextlib.suppress(ValueError, IndexError):
            report = json.loads(self._report[-1])
        path = report.get("path")
        run = read_run(Path(path)) if process.returncode == 0 and path else None
        if run is None:
            said = [line for line in self._error if line.startswith("rlchat: ")]
            self.failure = (said[-1].removeprefix("rlchat: ") if said
                            else f"the training process ended with status {process.returncode}")
            return Finished(None, self.failure)
        return Finished(run)

    def wait(self, timeout: float | None = None) -> None:
        """Until the run ends (for scripts and benchmarks; the chat polls)."""
        if self._process is not None:
            with self._lock:
                self._holds.clear()
                self._signal(signal.SIGCONT)
            self._process.wait(timeout)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def pause(self, why: str = "turn") -> None:
        """Hold the run (it keeps its memory) while a turn is generated, or
        while the user types: it runs while nobody waits on this machine."""
        with self._lock:
            if self._process is not None and not self._holds:
                self._signal(signal.SIGSTOP)
            self._holds.add(why)

    def resume(self, why: str = "turn") -> None:
        """Let go of one hold; the run goes on once none is left."""
        with self._lock:
            if why not in self._holds:
                return
            self._holds.discard(why)
            if self._process is not None and not self._holds:
                self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    def stop(self) -> None:
        """End a run now (the chat quits): SIGTERM, which rlchat train unwinds
        without writing, and SIGKILL only if it does not end in time."""
        process = self._process
        if process is None:
            return
        with self._lock:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a stopped process must run to unwind
            self._holds.clear()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait()
        for reader in self._readers:
            reader.join(5)
        self._process = None
        self.stage = ""
