"""Progress of long work on stderr: silent for the first second, then what is being done.

    from raspc import progress

    with progress.task("compiling make_sort_freq", total=12) as t:
        for p in passes:
            t.step(p.name)          # "raspc: compiling make_sort_freq [5/12] lower-rasp-to-craft"
    # "raspc: compiling make_sort_freq: done in 3.1 s" (only if a line was shown)

Work that ends within `delay` seconds (1 s) prints nothing, so short commands stay quiet. On a
terminal the line is rewritten in place (a bar when the total is known); elsewhere (a log, a
pipe) a plain line is written at most every `interval` seconds. Nested tasks show as
"outer > inner". The `raspc` CLI turns reporting on (off with -q); a library user calls
`progress.configure(enabled=True)`. Reporting never changes what the work computes.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, Sequence, TypeVar

PREFIX = "raspc: "
BAR_WIDTH = 24
T = TypeVar("T")


@dataclass
class Settings:
    """Where and when progress is shown (one per process; see `configure`)."""

    enabled: bool = False
    delay: float = 1.0  # seconds of silence before the first line
    interval: float = 1.0  # at most one plain line per interval (terminals: 0.1 s)
    stream: IO[str] | None = None  # default: sys.stderr at the time of writing


_settings = Settings()
_stack: list["Task"] = []
_lock = threading.RLock()  # the timer thread and the work write lines one at a time


def configure(*, enabled: bool | None = None, delay: float | None = None, interval: float | None = None,
              stream: IO[str] | None = None) -> Settings:
    """Changes the reporting settings; returns the previous ones (pass them to `restore`)."""
    global _settings
    previous = _settings
    _settings = Settings(
        enabled=previous.enabled if enabled is None else enabled,
        delay=previous.delay if delay is None else delay,
        interval=previous.interval if interval is None else interval,
        stream=previous.stream if stream is None else stream,
    )
    return previous


def restore(settings: Settings) -> None:
    global _settings
    _settings = settings


def _stream() -> IO[str]:
    return _settings.stream if _settings.stream is not None else sys.stderr


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60)} s"


@dataclass
class Task:
    """One piece of long work: `step(detail)` after each unit, or `update(done, detail)`."""

    title: str
    total: int | None = None
    done: int = 0
    detail: str = ""
    start: float = field(default_factory=time.monotonic)
    shown: bool = False  # a line was written for this task (so it reports "done")
    _last_write: float = 0.0
    _open_line: bool = False  # a terminal line without its newline yet
    _timer: Any = None  # shows the task once `delay` has passed, even if it never steps
    _finished: bool = False

    def step(self, detail: str = "", n: int = 1) -> None:
        """`n` more units done; `detail` says what is being worked on now."""
        self.update(self.done + n, detail)

    def update(self, done: int | None = None, detail: str | None = None) -> None:
        if done is not None:
            self.done = done
        if detail is not None:
            self.detail = detail
        if _settings.enabled:
            with _lock:
                self._show()

    def _path(self) -> str:
        titles = [t.title for t in _stack[: _stack.index(self) + 1]] if self in _stack else [self.title]
        return " > ".join(titles)

    def _line(self) -> str:
        parts = [PREFIX + self._path()]
        if self.total:
            done = min(self.done, self.total)
            parts.append(f"[{done}/{self.total}]")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.start < _settings.delay and not force:
            return
        stream = _stream()
        terminal = _is_terminal(stream)
        interval = 0.1 if terminal else _settings.interval
        if not force and self.shown and now - self._last_write < interval:
            return
        self._last_write = now
        self.shown = True
        line = self._line()
        if terminal:
            if self.total:
                filled = int(BAR_WIDTH * min(self.done, self.total) / self.total)
                line += f" |{'#' * filled}{'.' * (BAR_WIDTH - filled)}|"
            stream.write("\r\x1b[K" + line)
            self._open_line = True
        else:
            stream.write(line + "\n")
        stream.flush()

    def _start_timer(self) -> None:
        if _settings.enabled:
            self._timer = threading.Timer(_settings.delay, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with _lock:
            if not self._finished and not self.shown:
                self._show(force=True)

    def _finish(self, failed: bool) -> None:
        with _lock:
            self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        if not (_settings.enabled and self.shown):
            return
        stream = _stream()
        elapsed = _seconds(time.monotonic() - self.start)
        end = "stopped" if failed else "done"
        text = f"{PREFIX}{self._path()}: {end} in {elapsed}"
        if self._open_line:
            stream.write("\r\x1b[K" + text + "\n")
        else:
            stream.write(text + "\n")
        stream.flush()


@contextmanager
def task(title: str, total: int | None = None) -> Iterator[Task]:
    """A task for the duration of the `with` block (reports "done in ..." when it showed a line)."""
    t = Task(title, total)
    _stack.append(t)
    t._start_timer()
    failed = True
    try:
        yield t
        failed = False
    finally:
        t._finish(failed)
        _stack.remove(t)


def iterate(items: Sequence[T], title: str, detail: Callable[[T], str] | None = None) -> Iterator[T]:
    """`items` one by one inside a task counting them (`detail(item)` says which one)."""
    with task(title, total=len(items)) as t:
        for i, item in enumerate(items):
            t.update(i, detail(item) if detail is not None else "")
            yield item
        t.update(len(items), "")


def current() -> Task | None:
    """The innermost running task (a place to report detail from deep inside the work)."""
    return _stack[-1] if _stack else None


def note(detail: str) -> None:
    """Sets what the innermost task is working on now (a no-op outside any task)."""
    t = current()
    if t is not None:
        t.update(detail=detail)


def say(message: str) -> None:
    """One line on stderr when reporting is on (e.g. `wrote hist.onnx: 1 layer, ...`)."""
    if _settings.enabled:
        stream = _stream()
        stream.write(PREFIX + message + "\n")
        stream.flush()


__all__ = ["Settings", "Task", "configure", "restore", "task", "iterate", "current", "note", "say"]
