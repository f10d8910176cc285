"""The agent's collaborator for the model that learns while the user chats:
the background run (learner/background_training.py) started between two
turns, its adapter swapped in where it beats the held-out bar, and the
user's choice of adapter (learner/adapters.py).

A swap loads the base with the adapter merged beside the running model and
attaches it under the conversation's lock, so the turn being generated
finishes on the old one and the next turn is the new one's; the session
goes on.  Turns record the adapter in their generator.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rlchat.learner.adapters import (
    AdapterRun,
    adapter_runs,
    find_run,
    read_in_use,
    run_in_use,
    set_in_use,
)
from rlchat.learner.background_training import AUTO_STEPS, BackgroundTraining, Finished
from rlchat.learner.candidate_source import CandidateSource
from rlchat.learner.conversation import Conversation
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.records import Turn

log = logging.getLogger(__name__)

KEYS_HOLD_S = 3.0  # a background run holds this long after the user's last key

# The adapter folder (None: the base) -> the chat's model loaded with it
Loader = Callable[[Path | None], CandidateSource]


def is_local(source: CandidateSource | None) -> bool:
    """A model in this process (a served one names its server): the one
    kind whose weights the chat can fold an adapter into."""
    return source is not None and not source.identity.get("server")


class ModelLearning:
    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.training: BackgroundTraining | None = None
        # Steps of each background run; RLCHAT_AUTO_STEPS sets another count
        # for benchmarks that need a run to last (benchmarks/tui.py).
        given = os.environ.get("RLCHAT_AUTO_STEPS", "")
        self._steps = int(given) if given.isdigit() and int(given) > 0 else AUTO_STEPS
        self._keys_until = 0.0  # the run holds until then: the user types
        self._named = read_in_use(self.data_dir)  # DATA/models/in_use.json, as last followed
        # One switch of model at a time (a load takes seconds): a check
        # between turns that finds one going on leaves it be.
        self.switching = threading.RLock()

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, steps: int) -> None:
        self._steps = steps
        if self.training is not None:
            self.training.steps = steps

    @property
    def data_dir(self) -> Path:
        return self.conversation.store.data_dir

    def configure(self) -> None:
        """Follow the settings and the model: auto_train on a local model
        starts the background bookkeeping; off, or a served model, stops it."""
        c = self.conversation
        every = c.settings.auto_train
        source = c.source
        if not every or not is_local(source):
            self.stop()
            return
        base = str(getattr(source, "name", ""))
        if self.training is not None and self.training.base != base:
            self.stop()
        if self.training is None:
            self.training = BackgroundTraining(self.data_dir, every, base, steps=self._steps)
        self.training.every = every

    def status(self) -> str:
        """The run's progress, or the rows to the next one; '' when off."""
        return self.training.status() if self.training is not None else ""

    @contextmanager
    def generating(self) -> Iterator[None]:
        """The model generates (a turn, a reply continued): a background run
        holds meanwhile, so it never shares the cores with the user's wait."""
        training = self.training
        if training is not None:
            training.pause("turn")
        try:
            yield
        finally:
            if training is not None:
                training.resume("turn")

    def typing(self) -> None:
        """A key: the run holds until the keys stop for KEYS_HOLD_S.  With
        both cores of a small machine (or two threads of one core) busy
        training, even at the lowest priority, keys took 180 ms to show
        against 39 ms (benchmarks/tui.py); held, they take what they take idle."""
        self._keys_until = time.monotonic() + KEYS_HOLD_S
        if self.training is not None:
            self.training.pause("keys")

    def idle_check(self) -> None:
        """Let the run go on once the keys have stopped (a timer calls it)."""
        if self.training is not None and time.monotonic() >= self._keys_until:
            self.training.resume("keys")

    def named_elsewhere(self) -> tuple[bool, int | None]:
        """(whether in_use.json changed since the chat last followed it, the
        run it names): `rlchat adapters use` while the chat runs."""
        named = read_in_use(self.data_dir)
        changed, self._named = named != self._named, named
        return changed, named

    def between_turns(self) -> Finished | None:
        """A background run that has ended, or None; starts one where enough
        new preference rows wait.  Call it between two turns (it reads the
        turns since the last run)."""
        c = self.conversation
        training = self.training
        if training is None:
            return None
        with c.lock:
            turns = [Turn.from_dict(doc) for doc in c.store.turns(training.read_after)]
            return training.check(turns)

    def adopt(self, finished: Finished, load: Loader) -> str:
        """What a finished run means for the chat, as one line: its adapter
        in use from the next turn where it beats the bar, else kept unused."""
        run = finished.run
        if run is None:
            return f"Background training wrote no adapter: {finished.failure}."
        if not run.passed:
            return (f"Adapter run {run.run} did not beat the held-out bar "
                    f"({_accuracy(run)}); it is kept, not used (rlchat adapters list).")
        return self.use(run.run, load, why=f"held-out accuracy {_accuracy(run)}")

    def use(self, run: int | None, load: Loader, why: str = "") -> str:
        """Switch the chat's model to adapter `run`, or to the base (None),
        from the next turn on; one line that says what happened."""
        with self.switching:
            return self._use(run, load, why)

    def _use(self, run: int | None, load: Loader, why: str) -> str:
        source = load(self._folder(run))
        notice = getattr(source, "notice", "")
        if run is not None and not getattr(source, "adapter", ""):
            return notice or f"Adapter run {run} could not be used."
        c = self.conversation
        with c.lock:
            c.source = source
            source.sampling = c.settings.sampling()
        return self._chosen(run, why)

    def _folder(self, run: int | None) -> Path | None:
        if run is None:
            return None
        found = find_run(self.data_dir, run)
        if found is None:
            raise AgentError(ErrorCode.BAD_FIELD, f"There is no adapter run {run} "
                             "(rlchat adapters list shows them).")
        return found.path

    def _chosen(self, run: int | None, why: str = "") -> str:
        """The choice kept (it outlives the process), in one line."""
        set_in_use(self.data_dir, run)
        self._named = run
        if run is None:
            return "The base model is in use (no adapter)."
        return f"Adapter run {run} is in use" + (f" ({why})." if why else ".")

    def use_served(self, run: int | None) -> str:
        """A served model's adapter, which its server applies to this chat's
        requests (vLLM loads it on request; llama-server where it loaded the
        run's GGUF file at its start)."""
        self.conversation.source.use_lora(self._folder(run), "" if run is None else str(run))
        return self._chosen(run, "the server applies it")

    def in_use(self) -> AdapterRun | None:
        return run_in_use(self.data_dir)

    def runs(self) -> list[AdapterRun]:
        return adapter_runs(self.data_dir)

    def lines(self, running: int | None) -> list[str]:
        """What F3 says of the model's own learning: the adapter it runs
        with (`running`), the background run, the latest runs."""
        runs = self.runs()
        if running is None and not runs and not self.status():
            return []
        lines = [f"model: adapter run {running}" if running is not None
                 else "model: the base (no adapter)"]
        if self.status():
            lines.append(f"auto_train: {self.status()}")
        for run in runs[-3:]:
            lines.append(f"adapter run {run.run}: {run.pairs} rows of {run.turns} turns, "
                         f"held-out {_accuracy(run)}, "
                         f"{'passed' if run.passed else 'kept, not used'}")
        return lines

    def stop(self) -> None:
        """End a background run (quitting, or auto_train turned off)."""
        if self.training is not None:
            self.training.stop()
            self.training = None


def _accuracy(run: AdapterRun) -> str:
    accuracy = "none" if run.accuracy is None else f"{run.accuracy:.2f}"
    return f"{accuracy} on {run.held_out} held-out rows"
