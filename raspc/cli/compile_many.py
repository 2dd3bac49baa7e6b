"""`raspc compile-many SOURCE -o OUT/`: compile a program set into a dataset directory.

    raspc compile-many random:seed=0,n=1000 -o ds/                 # local processes, one per core
    raspc compile-many random:seed=0,n=1000,max_seq_len=4-16 -o ds/ --weights
    raspc compile-many lib:* -o lib_ds/ --backend ray              # a local Ray instance
    raspc compile-many progs/ -o ds/ --backend ray --address auto  # an existing Ray cluster

A progress bar goes to stderr, the summary to stdout. A rerun with the same SOURCE skips what is
done. Refusals, timeouts and compiler errors are rows of the index, not failures of the command.
"""

from __future__ import annotations

import argparse
import re
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from raspc.datasets.sources import RANDOM_KEYS

    m = sub.add_parser(
        "compile-many",
        help="compile a set of programs (random, library, files) into a dataset of ONNX models and an index",
        description="Compile every program of SOURCE in parallel workers into OUT/: models/ID.onnx per "
        "compiled "
        "program, index.jsonl and index.parquet (with pyarrow) with one row per program, timings.jsonl. "
        "A rerun skips what is done; the same SOURCE gives the same bytes.",
        epilog="SOURCE: random:seed=S,n=N[,KEY=VALUE...] (keys: " + ", ".join(RANDOM_KEYS) + "; e.g. "
        "max_seq_len=4-16, depth=6, causal=0.15, vocab=str+int, vocab_size=2-8, encodings=categorical, "
        "ops=map+aggregate or ops=-selector_not) | lib:* | lib:NAME[+NAME...] | FILE.py[:FUNCTION] "
        "(a PROGRAMS "
        "dict, a programs() generator or one `program`) | FILE.mlir | DIRECTORY (its .py and .mlir files)",
    )
    m.add_argument("source", metavar="SOURCE", help="the program set (see below)")
    m.add_argument(
        "-o", "--output", metavar="OUT", required=True, help="the dataset directory (created if needed)"
    )
    m.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local worker processes (default) or Ray tasks (needs the [ray] extra)",
    )
    m.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local: worker processes (default: one per core); ray: tasks in flight (default: the "
        "cluster's CPUs)",
    )
    m.add_argument(
        "--address",
        default=None,
        help="ray: the cluster to join (e.g. auto, ray://HEAD:10001); default: a local Ray instance",
    )
    m.add_argument(
        "--time-budget",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per program; a longer compile is recorded as a timeout (default 10; 0: none)",
    )
    m.add_argument(
        "--memory-limit",
        type=int,
        default=4096,
        metavar="MIB",
        help="resident memory a worker may grow by per program (default 4096; 0: none)",
    )
    m.add_argument("--weights", action="store_true", help="also write each model's weights as safetensors")
    m.add_argument("-p", "--pipeline", default=None, help="pass pipeline (default: raspc's)")
    m.add_argument(
        "--retry",
        action="append",
        default=[],
        choices=("timeout", "memory", "error", "refused"),
        help="compile programs with this status again on a rerun (repeatable)",
    )
    m.add_argument(
        "--vocab", default=None, help="comma-separated tokens, for lib: and Python programs without one"
    )
    m.add_argument("--max-seq-len", type=int, default=None, help="for lib: and Python programs without one")
    m.add_argument(
        "--causal", action="store_true", help="compile lib: and Python programs without a setting causally"
    )
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return m


def parse_vocab(text: str) -> list[Any]:
    """`a,b,c` -> ["a", "b", "c"]; `1,2,3` -> [1, 2, 3] (as `raspc compile --vocab` reads it)."""
    from raspc.datasets import DatasetError

    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise DatasetError(f"--vocab '{text}' has an empty token: tokens are separated by single commas")
    return [int(t) if re.fullmatch(r"-?\d+", t) else t for t in items]


def cmd_compile_many(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc.datasets import compile_many

    summary = compile_many(
        args.source,
        args.output,
        backend=args.backend,
        workers=args.workers,
        address=args.address,
        time_budget=args.time_budget,
        memory_limit_mb=args.memory_limit,
        weights=args.weights,
        pipeline=args.pipeline,
        retry=tuple(args.retry),
        vocab=parse_vocab(args.vocab) if args.vocab else None,
        max_seq_len=args.max_seq_len,
        causal=args.causal,
        progress=not args.quiet,
    )
    print(summary.text())


__all__ = ["add_parser", "cmd_compile_many"]
