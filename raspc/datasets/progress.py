"""A progress bar on stderr: count, rate, ETA and the statuses so far.

On a terminal the line is redrawn in place (at most 10 times a second); in a log or a pipe a plain
line is written every `interval` seconds, so captured output stays short.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import IO, Optional


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        done: int = 0,
        *,
        stream: Optional[IO[str]] = None,
        enabled: bool = True,
        interval: float = 5.0,
        width: int = 24,
    ):
        self.total, self.start_done, self.done = total, done, done
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.width = width
        self.counts: Counter[str] = Counter()
        self.started = time.perf_counter()
        self.last = 0.0

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        rate = self.rate()
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        statuses = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"[{bar}] {self.done}/{self.total} {frac:4.0%} {rate:.1f} programs/s ETA {eta}" + (
            f"  {statuses}" if statuses else ""
        )

    def update(self, status: str) -> None:
        self.done += 1
        self.counts[status] += 1
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done == self.total):
            self.last = now
            self._show()

    def _show(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


__all__ = ["Progress"]
