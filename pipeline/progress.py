"""Progress lines with counts, rate and ETA for long loops, at most one every few seconds."""

from __future__ import annotations

import logging
import time


class Progress:
    def __init__(self, what: str, total: int, log: logging.Logger | None = None, every_s: float = 10):
        self.what, self.total, self.every_s = what, total, every_s
        self.log = log or logging.getLogger("schoolhouse")
        self.done = 0
        self.started = self._last = time.monotonic()

    def advance(self, n: int = 1, **extra: object) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self.log.info(self.line(**extra))

    def line(self, **extra: object) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f}s" if left != float("inf") else "?"
        tail = "".join(f", {k} {v}" for k, v in extra.items())
        return (
            f"{self.what}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
            f"{rate:.2f}/s, ETA {eta}{tail}"
        )
