"""Progress on stderr for long offline work (replay, evaluation, export)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line bar redrawn in place on a terminal, sparse lines otherwise."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, max(total, 1)
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self.tty else 5.0) and done < self.total:
            return
        self._last = now
        share = min(done / self.total, 1.0)
        bar = "#" * int(30 * share)
        line = f"{self.label} [{bar:<30}] {done}/{self.total} {now - self.start:.0f}s"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def done(self) -> None:
        self(self.total)
        if self.tty:
            print(file=sys.stderr)
