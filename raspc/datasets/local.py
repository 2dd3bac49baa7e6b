"""Local worker processes: one per core by default, each compiling one program at a time.

A worker is a `multiprocessing` process (forkserver where the platform has it, so the compiler is
imported once and forked, else spawn) with a duplex pipe. The driver hands out one program at a
time; a worker over its deadline (the time budget plus a grace period, for a compile stuck where
the in-worker alarm cannot reach it) is killed and replaced, and the program recorded as a timeout;
a worker that dies is replaced and its program recorded as an error; a worker whose memory guard
tripped is replaced too (its heap may be fragmented).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import types
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Optional, Sequence

from raspc.datasets.sources import DatasetError, ProgramSpec
from raspc.datasets.worker import (
    ERROR,
    MEMORY,
    TIMEOUT,
    Options,
    Result,
    compile_one,
    failure,
    install_memory_guard,
    resident_bytes,
)

PRELOAD = [
    "raspc.datasets.worker",
    "raspc.compiler",
    "raspc.lowering.program_to_rasp",
    "raspc.lowering.rasp_to_craft",
    "raspc.lowering.craft_to_tensor",
    "raspc.lowering.tensor_to_onnx",
    "raspc.random_programs",
    "raspc.lib",
]
STARTUP_SECONDS = 120.0
DRIVER_MARGIN_MB = 512  # the driver stops a worker this far past the memory guard (its watchdog trips at it)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def hard_deadline(options: Options) -> Optional[float]:
    """Seconds after which the driver stops a program: the budget plus as long again (at least 2 s),
    for a compile stuck where the in-worker alarm cannot interrupt it."""
    if options.time_budget <= 0:
        return None
    return options.time_budget + max(2.0, options.time_budget)


def _worker_name(pid: int) -> str:
    return f"{os.uname().nodename}:{pid}"


def _worker_main(conn: Connection, options: Options) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    install_memory_guard(options.memory_limit_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        result = compile_one(spec, options)
        conn.send(("result", result))
        if result.record["status"] == MEMORY:
            return


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Starts a worker without telling it the caller's main module: spawn and forkserver children
    otherwise run it again, which breaks on a script without a main guard, on stdin, and inside a
    Ray worker (whose main is Ray's own worker script). A worker needs nothing from it: it is given
    picklable specs and imports raspc."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # not '__main__': the caller's script is not run again
        return ctx
    return mp.get_context("spawn")


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    ready: bool = False
    spec: Optional[ProgramSpec] = None
    started: float = 0.0
    pid: int = 0
    created: float = 0.0


class LocalPool:
    def __init__(self, workers: int, options: Options):
        self.workers = max(1, workers)
        self.options = options
        self.ctx = _context()
        self.slots: list[_Slot] = []
        self.failed_starts = 0

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, self.options), daemon=True)
        with _main_module_hidden():
            proc.start()
        child.close()
        return _Slot(proc, parent, created=time.perf_counter())

    def _stop(self, slot: _Slot) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(timeout=5)
        slot.conn.close()

    def _replace(self, slot: _Slot) -> None:
        self._stop(slot)
        self.slots[self.slots.index(slot)] = self._start()

    def run(self, specs: Sequence[ProgramSpec], on_result: Callable[[Result], None]) -> None:
        """Compiles `specs`, calling `on_result` as each finishes; the workers stay up for the next
        call until `close`."""
        queue = deque(specs)
        limit = hard_deadline(self.options)
        while len(self.slots) < min(self.workers, len(queue)):
            self.slots.append(self._start())
        while queue or any(s.spec is not None for s in self.slots):
            now = time.perf_counter()
            for slot in self.slots:
                if slot.ready and slot.spec is None and queue:
                    slot.spec, slot.started = queue.popleft(), now
                    slot.conn.send(slot.spec)
            deadlines = [s.started + limit for s in self.slots if s.spec is not None and limit is not None]
            timeout = max(0.0, min(deadlines) - now) if deadlines else 1.0
            for conn in wait([s.conn for s in self.slots], timeout=min(timeout, 1.0)):
                slot = next(s for s in self.slots if s.conn is conn)
                self._receive(slot, on_result)
            now = time.perf_counter()
            for slot in list(self.slots):
                if slot.spec is not None and limit is not None and now - slot.started > limit:
                    spec, seconds = slot.spec, now - slot.started
                    self._replace(slot)
                    on_result(
                        failure(
                            spec,
                            TIMEOUT,
                            "Timeout",
                            f"compilation took more than the {self.options.time_budget:g} s budget "
                            f"(worker stopped after {seconds:.0f} s)",
                            seconds,
                            _worker_name(slot.pid),
                        )
                    )
                elif slot.spec is not None and self._over_memory(slot):
                    spec, seconds = slot.spec, now - slot.started
                    self._replace(slot)
                    on_result(
                        failure(
                            spec,
                            MEMORY,
                            "MemoryError",
                            f"compilation needed more than the {self.options.memory_limit_mb} MiB memory guard "
                            "(worker stopped)",
                            seconds,
                            _worker_name(slot.pid),
                        )
                    )
                elif not slot.ready and now - slot.created > STARTUP_SECONDS:
                    raise RuntimeError(f"a worker process did not start within {STARTUP_SECONDS:g} s")

    def _receive(self, slot: _Slot, on_result: Callable[[Result], None]) -> None:
        try:
            kind, payload = slot.conn.recv()
        except (EOFError, OSError):  # the worker died
            spec = slot.spec
            slot.proc.join(timeout=1)
            code = slot.proc.exitcode if slot.proc.exitcode is not None else "?"
            seconds = time.perf_counter() - slot.started
            if not slot.ready:
                self.failed_starts += 1
                if self.failed_starts >= 3:
                    raise DatasetError(
                        f"worker processes die as they start (exit code {code}); run with "
                        "RASPC_DEBUG=1 and workers=1 to see why"
                    )
            self._replace(slot)
            if spec is not None:
                on_result(self._death(spec, code, seconds, slot.pid))
            return
        if kind == "ready":
            self.failed_starts = 0
            slot.ready, slot.pid = True, payload
            return
        slot.spec = None
        on_result(payload)
        if payload.record["status"] == MEMORY:
            self._replace(slot)

    def _over_memory(self, slot: _Slot) -> bool:
        """A worker whose resident memory is past the guard by a margin: its own watchdog (which trips
        at the guard) cannot run, a C call holds it."""
        limit = self.options.memory_limit_mb
        return (
            limit > 0 and slot.pid > 0 and resident_bytes(slot.pid) > (limit + DRIVER_MARGIN_MB) * 1024 * 1024
        )

    def _death(self, spec: ProgramSpec, code: Any, seconds: float, pid: int) -> Result:
        """The row of a program whose worker died (a crash in a C extension, or killed from outside)."""
        if isinstance(code, int) and code < 0 and -code in signal.Signals._value2member_map_:
            code = f"{code}, {signal.Signals(-code).name}"
        return failure(
            spec,
            ERROR,
            "WorkerDied",
            f"the worker process died (exit code {code}) while compiling this program",
            seconds,
            _worker_name(pid),
        )

    def close(self) -> None:
        for slot in self.slots:
            try:
                if slot.spec is None and slot.proc.is_alive():
                    slot.conn.send(None)
            except OSError:
                pass
        for slot in self.slots:
            slot.proc.join(timeout=2)
            self._stop(slot)
        self.slots = []


def run_local(
    specs: Sequence[ProgramSpec],
    options: Options,
    on_result: Callable[[Result], None],
    workers: Optional[int] = None,
) -> int:
    """Compiles `specs` in local worker processes, calling `on_result` in the driver as each finishes.
    Returns the number of workers used."""
    n = workers or default_workers()
    if specs:
        pool = LocalPool(n, options)
        try:
            pool.run(specs, on_result)
        finally:
            pool.close()
    return n


_GUARDS: dict[Options, LocalPool] = {}


def compile_guarded(spec: ProgramSpec, options: Options) -> Result:
    """`compile_one` in a child process of this one, under the same deadline and memory guard as a
    local worker: what a Ray task runs, so the guards never touch the Ray worker itself (whose own
    threads an address-space limit would break). The child stays up for the next program."""
    pool = _GUARDS.get(options)
    if pool is None:
        pool = _GUARDS[options] = LocalPool(1, options)
    results: list[Result] = []
    pool.run([spec], results.append)
    return results[0]


__all__ = ["run_local", "compile_guarded", "LocalPool", "default_workers", "hard_deadline"]
