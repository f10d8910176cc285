"""How many threads torch may use: the cores other processes leave free.

torch's OpenMP threads wait for each other at every operator by spinning.
With one CPU-bound process beside rlchat on 2 cores, a turn of two spinning
threads took 4x its quiet time (the real model's 8 x 40 tokens: 2.4 s quiet,
10 s beside a busy loop) and the model load minutes, since each thread spins
while the other waits for a core.  One thread took 2.5 s quiet and beside the
busy loop alike: a decode step is bound by reading the weights, so a second
core buys little, while asking for a core that is not free costs a lot.
So a daemon thread reads /proc/stat four times a second, less this process's
own time, and each turn uses as many threads as cores were free over the
last second (at least one).  Where /proc/stat cannot be read, every core is
used.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import torch

# Less than this share of a core left free counts as taken: another process
# that uses a core in bursts still takes it when it bursts.
FREE_CORE = 0.75
SAMPLE_S = 0.25  # how often the sampler reads /proc/stat
MEMORY_S = 1.0  # the window the count covers: a neighbour that starts is seen within it


def usable_cores() -> int:
    """The cores this process may run on (cgroups' affinity included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """Seconds all cores spent busy since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Sampler:
    """A daemon thread that keeps the cores other processes used over the
    last MEMORY_S seconds (a moving average of SAMPLE_S readings)."""

    def __init__(self) -> None:
        self.others = 0.0
        self._stopped = False  # /proc/stat could no longer be read
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._run, name="rlchat-core-share", daemon=True).start()

    def _run(self) -> None:
        last = (time.monotonic(), _busy_seconds(), _own_seconds())
        keep = SAMPLE_S / MEMORY_S
        while True:
            time.sleep(SAMPLE_S)
            now = (time.monotonic(), _busy_seconds(), _own_seconds())
            if now[1] is None or last[1] is None:
                self._stopped = True
                self._ready.set()
                return
            elapsed = now[0] - last[0]
            used = max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / max(elapsed, 1e-3)
            with self._lock:
                first = not self._ready.is_set()
                self.others = used if first else (1 - keep) * self.others + keep * used
            self._ready.set()
            last = now

    def read(self) -> float | None:
        """The cores others kept busy lately; None where it cannot be known."""
        if not self._ready.wait(2 * SAMPLE_S + 0.1) or self._stopped:
            return None
        with self._lock:
            return self.others


_SAMPLER: _Sampler | None = None
_SAMPLER_LOCK = threading.Lock()


def _sampler() -> _Sampler | None:
    global _SAMPLER
    if _busy_seconds() is None:
        return None
    with _SAMPLER_LOCK:
        if _SAMPLER is None:
            _SAMPLER = _Sampler()
        return _SAMPLER


class CoreShare:
    """How many threads this process should use now: the cores that other
    processes left free over the last second, at least one."""

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or usable_cores()
        self.last_threads = self.cores
        self._sampler = _sampler() if self.cores > 1 else None

    def threads(self) -> int:
        others = self._sampler.read() if self._sampler is not None else None
        if others is None:
            return self.cores
        free = self.cores - others
        self.last_threads = max(1, min(self.cores, int(free + (1 - FREE_CORE))))
        return self.last_threads

    def apply(self) -> int:
        """Set torch's thread count to the cores free now; returns it."""
        threads = self.threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads
