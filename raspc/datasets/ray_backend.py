"""The Ray backend: the same programs as Ray tasks, on an existing cluster or a local Ray instance.

Each program is one task (`num_cpus=1`, no retries). The task hands the program to a child process
of its Ray worker (`raspc.datasets.local.compile_guarded`, kept for the next task), which runs the
same `compile_one` under the same time budget, deadline and memory guard as a local worker, so it
returns the same row and the same bytes, and an address-space limit never touches the Ray worker's
own threads. At most one task per CPU of the cluster is in flight, so a task starts when it is
submitted; a task past a generous deadline (a backstop: the child's own guards come first) is
cancelled with `ray.cancel(force=True)` and the program recorded as a timeout. Results come back
through Ray's object store to the driver, which writes every file: the cluster needs raspc
installed on its nodes, not a shared filesystem.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Optional, Sequence

from raspc.datasets.sources import DatasetError, ProgramSpec
from raspc.datasets.local import compile_guarded
from raspc.datasets.local import hard_deadline as child_deadline
from raspc.datasets.worker import ERROR, MEMORY, TIMEOUT, Options, Result, failure


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DatasetError("the ray backend needs Ray: pip install 'raspc[ray]'") from None
    return ray


def hard_deadline(options: Options) -> Optional[float]:
    """The child's own deadline plus 30 s (a new Ray worker, and its child, take a while to start)."""
    limit = child_deadline(options)
    return None if limit is None else limit + 30.0


def run_ray(
    specs: Sequence[ProgramSpec],
    options: Options,
    on_result: Callable[[Result], None],
    workers: Optional[int] = None,
    address: Optional[str] = None,
) -> int:
    """Compiles `specs` as Ray tasks. Joins the cluster at `address` (e.g. "auto" or
    "ray://head:10001"), or uses the Ray instance this process already started, or starts a local
    one (and stops it at the end). Returns the number of tasks kept in flight."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached: say so in one line
            where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
            raise DatasetError(f"cannot start or join {where}: {type(exc).__name__}: {exc}") from None
        started = True
    try:
        capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if specs:
            _run(ray, specs, options, on_result, capacity)
        return capacity
    finally:
        if started:
            ray.shutdown()


def _run(
    ray: Any,
    specs: Sequence[ProgramSpec],
    options: Options,
    on_result: Callable[[Result], None],
    capacity: int,
) -> None:
    task = ray.remote(num_cpus=1, max_retries=0)(compile_guarded)
    queue = deque(specs)
    in_flight: dict[Any, tuple[ProgramSpec, float]] = {}
    limit = hard_deadline(options)
    while queue or in_flight:
        while queue and len(in_flight) < capacity:
            spec = queue.popleft()
            in_flight[task.remote(spec, options)] = (spec, time.perf_counter())
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            spec, submitted = in_flight.pop(ref)
            try:
                on_result(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - the task failed in Ray itself (worker died, out of memory)
                status = MEMORY if "OutOfMemory" in type(exc).__name__ else ERROR
                on_result(
                    failure(
                        spec,
                        status,
                        type(exc).__name__,
                        str(exc).splitlines()[0][:500] if str(exc) else "",
                        time.perf_counter() - submitted,
                        "ray",
                    )
                )
        now = time.perf_counter()
        for ref, (spec, submitted) in list(in_flight.items()):
            if limit is not None and now - submitted > limit:
                ray.cancel(ref, force=True)
                del in_flight[ref]
                on_result(
                    failure(
                        spec,
                        TIMEOUT,
                        "Timeout",
                        f"compilation took more than the {options.time_budget:g} s budget (task cancelled "
                        f"after {now - submitted:.0f} s)",
                        now - submitted,
                        "ray",
                    )
                )


__all__ = ["run_ray", "import_ray"]
