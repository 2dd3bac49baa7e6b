"""Datasets of compiled programs: `compile_many` (and `raspc compile-many`).

    from raspc.datasets import compile_many
    summary = compile_many("random:seed=0,n=1000,max_seq_len=4-16", "ds/")   # local processes
    summary = compile_many("lib:*", "lib_ds/", backend="ray")                # Ray, local instance
    import pandas as pd; df = pd.read_parquet("ds/index.parquet")           # or read_json(..., lines=True)

A SOURCE names a program set (raspc.datasets.sources): `random:...`, `lib:...`, a Python file, an
IR file or a directory of them. Every program compiles in a worker (a local process, or a Ray
task) under a time budget and a memory guard; a refusal, a timeout or a compiler error is a row of
the index, never the end of the run. The output directory (raspc.datasets.store) holds one ONNX
file per compiled program and the index; a rerun compiles only what is missing, and the index,
models and weights are byte-identical for the same SOURCE and options whatever the backend.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Optional, Sequence

from raspc.datasets.progress import Progress
from raspc.datasets.sources import DatasetError, ProgramSet, ProgramSpec, parse_source
from raspc.datasets.store import COLUMNS, DatasetDir, read_index
from raspc.datasets.worker import COMPILED, ERROR, MEMORY, REFUSED, TIMEOUT, Options, Result

BACKENDS = ("local", "ray")


@dataclass
class Summary:
    """What a `compile_many` run did: counts over the whole set (earlier runs included) and this run's."""

    out: str
    programs: int
    compiled_now: int
    skipped: int
    seconds: float
    workers: int
    backend: str
    counts: dict[str, int]  # status -> programs, over the set
    refusals: dict[str, int]  # "ErrorClass: reason pattern" -> programs, over the set
    index_files: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Programs compiled (any status) per second in this run."""
        return self.compiled_now / self.seconds if self.seconds > 0 else 0.0

    def text(self, top: int = 8) -> str:
        c = self.counts
        lines = [
            f"{self.programs} programs: {c.get(COMPILED, 0)} compiled, {c.get(REFUSED, 0)} refused, "
            f"{c.get(TIMEOUT, 0)} timed out, {c.get(MEMORY, 0)} over the memory guard, "
            f"{c.get(ERROR, 0)} errors",
            f"this run: {self.compiled_now} programs in {self.seconds:.1f} s ({self.rate:.1f}/s) "
            f"on {self.workers} "
            f"{self.backend} worker{'s' if self.workers != 1 else ''}"
            + (f"; {self.skipped} already done" if self.skipped else ""),
        ]
        if self.refusals:
            lines.append("refused by reason:")
            for reason, n in sorted(self.refusals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
                lines.append(f"  {n:6d}  {reason}")
            if len(self.refusals) > top:
                lines.append(
                    f"  ({len(self.refusals) - top} more reasons in the index's error_class / reason columns)"
                )
        lines.append("index: " + ", ".join(self.index_files))
        return "\n".join(lines)


def reason_pattern(error_class: Optional[str], reason: Optional[str]) -> str:
    """A refusal's class and message with labels, values and locations abstracted away, for counting."""
    import re

    text = reason or ""
    text = re.sub(r"^(built-in )?s-op '[^']*'(?: \([^)]*\))?: ", "", text)
    text = re.sub(r"(?<!\w)'[^']*'", "'…'", text)
    text = re.sub(r'"[^"]*"', "'…'", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    text = re.sub(r"\((?:[^()]|\([^()]*\))*\)", "(…)", text)
    text = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])", "N", text)
    text = re.split(r"[;:] ", text)[0]
    return f"{error_class}: {text[:100]}"


def compile_many(
    source: str | ProgramSet,
    out: str,
    *,
    backend: str = "local",
    workers: Optional[int] = None,
    address: Optional[str] = None,
    time_budget: float = 10.0,
    memory_limit_mb: int = 4096,
    weights: bool = False,
    pipeline: Optional[str] = None,
    retry: Sequence[str] = (),
    vocab: Optional[Sequence[Any]] = None,
    max_seq_len: Optional[int] = None,
    causal: bool = False,
    progress: bool | IO[str] = True,
) -> Summary:
    """Compiles every program of `source` into the dataset directory `out` (see the module docstring).

    - `backend`: "local" (worker processes, `workers` of them, default one per core) or "ray" (tasks on
      the cluster at `address`, or on the Ray instance this process started, or on a local one);
    - `time_budget` seconds and `memory_limit_mb` MiB of resident memory per program (0: no limit);
    - `weights`: also write each model's weights as safetensors;
    - `retry`: statuses to compile again on a rerun (e.g. ("timeout",)); others are skipped;
    - `vocab`, `max_seq_len`, `causal`: for library programs and Python programs without their own;
    - `progress`: a progress bar on stderr (or on the given stream); False for none.
    """
    if backend not in BACKENDS:
        raise DatasetError(f"unknown backend '{backend}'; known: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    if time_budget < 0 or memory_limit_mb < 0:
        raise DatasetError("the time budget and the memory limit must be >= 0 (0: no limit)")
    unknown = [s for s in retry if s not in (REFUSED, TIMEOUT, MEMORY, ERROR)]
    if unknown:
        raise DatasetError(
            f"cannot retry status {', '.join(unknown)}; retry takes refused, timeout, memory, error"
        )
    if pipeline is not None:
        from raspc.compiler import build_pipeline

        build_pipeline(pipeline)  # a bad pipeline fails here, once, not in every worker
    pset = (
        source
        if isinstance(source, ProgramSet)
        else parse_source(source, vocab=vocab, max_seq_len=max_seq_len, causal=causal)
    )
    options = Options(
        time_budget=float(time_budget),
        memory_limit_mb=int(memory_limit_mb),
        weights=weights,
        pipeline=pipeline,
    )
    store = DatasetDir(out, pset, {"weights": weights, "pipeline": pipeline})
    store.open()
    todo = store.pending(retry)
    stream = progress if not isinstance(progress, bool) else sys.stderr
    bar = Progress(
        len(pset), len(pset) - len(todo), stream=stream, enabled=progress is not False and bool(todo)
    )

    def on_result(result: Result) -> None:
        store.add(result)
        bar.update(result.record["status"])

    start = time.perf_counter()
    try:
        if backend == "ray":
            from raspc.datasets.ray_backend import run_ray

            used = run_ray(todo, options, on_result, workers=workers, address=address)
        else:
            from raspc.datasets.local import default_workers, run_local

            used = (
                run_local(todo, options, on_result, workers=workers)
                if todo
                else (workers or default_workers())
            )
    finally:
        bar.close()
        index_files = store.write_index()  # what finished is in the index, even after Ctrl-C
    seconds = time.perf_counter() - start
    rows = store.rows()
    counts = Counter(r["status"] for r in rows)
    refusals = Counter(reason_pattern(r["error_class"], r["reason"]) for r in rows if r["status"] == REFUSED)
    return Summary(
        out=out,
        programs=len(pset),
        compiled_now=len(todo),
        skipped=len(pset) - len(todo),
        seconds=seconds,
        workers=used,
        backend=backend,
        counts=dict(counts),
        refusals=dict(refusals),
        index_files=index_files,
    )


__all__ = [
    "compile_many",
    "Summary",
    "DatasetError",
    "ProgramSet",
    "ProgramSpec",
    "parse_source",
    "read_index",
    "COLUMNS",
    "BACKENDS",
    "reason_pattern",
]
