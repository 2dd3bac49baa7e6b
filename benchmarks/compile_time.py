"""Compile time, side by side in one run: this raspc, an earlier raspc (a checkout), and Tracr.

    python benchmarks/compile_time.py                              # this raspc and Tracr
    python benchmarks/compile_time.py --baseline /tmp/raspc-old    # + a checkout of an earlier commit
    python benchmarks/compile_time.py --cases scale64 --rounds 3

Each compiler runs in its own worker process (two raspc versions cannot share one), over the same
cases, in alternating rounds (A B C A B C ...) so machine noise hits all alike; a case's time is
the median of its warm compiles (`compile_rasp_to_model` end to end: front end, every pass, ONNX
and its onnxruntime session for raspc; Tracr's `compile_rasp_to_model` for Tracr). The report
gives each time and the ratios (the machine is noisy: compare ratios, not milliseconds).

Case sets: `library` (Tracr's sizes and the vocab-20 cases), `scale64` (vocab = max_seq_len = 64:
a numerical prefix mean, the width and an aggregate of an `or` selector, make_sort, make_hist,
make_sort_unique), `all`. Results: benchmarks/results/compile_time.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, load_cases, machine_info, tracr_available

SCALE64 = [
    {"name": "prefix_mean@64", "call": "rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, "
     "rasp.Comparison.LEQ), rasp.numerical(rasp.Map(lambda t: t, rasp.tokens)), default=0))"},
    {"name": "or_width@64", "call": "rasp.SelectorWidth(rasp.SelectorOr(rasp.Select(rasp.tokens, rasp.tokens, "
     "rasp.Comparison.EQ), rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)))"},
    {"name": "or_aggregate@64", "call": "rasp.Aggregate(rasp.SelectorOr(rasp.Select(rasp.tokens, rasp.tokens, "
     "rasp.Comparison.EQ), rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)), rasp.tokens)"},
    {"name": "sort@64", "call": "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=64, min_key=1)"},
    {"name": "sort_unique@64", "call": "lib.make_sort_unique(rasp.tokens, rasp.tokens)"},
    {"name": "hist@64", "call": "lib.make_hist()"},
]
for c in SCALE64:
    c.update(vocab=list(range(64)), max_seq_len=64)

# One worker: compiles every case `runs` times with the compiler at `root` ("tracr" for Tracr),
# prints one JSON line per case: {"name": ..., "ms": [...]} or {"name": ..., "error": ...}.
WORKER = textwrap.dedent('''
    import json, sys, time, traceback
    root, cases, runs, limit = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    if root == "tracr":
        from tracr.compiler import compiling, lib
        from tracr.rasp import rasp
        def compile_(p, c):
            return compiling.compile_rasp_to_model(p, vocab=set(c["vocab"]), max_seq_len=c["max_seq_len"],
                                                   compiler_bos="BOS")
    else:
        sys.path.insert(0, root)
        from raspc import lib, rasp
        from raspc.model import compile_rasp_to_model
        def compile_(p, c):
            return compile_rasp_to_model(p, list(c["vocab"]), c["max_seq_len"])
    for c in cases:
        out = {"name": c["name"], "ms": []}
        try:
            program = eval(c["call"], {"lib": lib, "rasp": rasp})
            compile_(program, c)  # warm up (imports, caches)
            for _ in range(runs):
                t = time.perf_counter()
                compile_(program, c)
                out["ms"].append((time.perf_counter() - t) * 1000)
                if out["ms"][-1] > limit * 1000:
                    break
        except BaseException as e:  # noqa: BLE001 - recorded, not fatal
            out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        print(json.dumps(out), flush=True)
''')


def run_worker(root: str, cases: list[dict[str, Any]], runs: int, limit: float, timeout: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", WORKER, root, json.dumps(cases), str(runs), str(limit)],
                          capture_output=True, text=True, timeout=timeout)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["name"]] = r
    if proc.returncode != 0 and not results:
        raise RuntimeError(f"worker for {root} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="all", help="library | scale64 | all | comma-separated names")
    ap.add_argument("--baseline", help="path of a checkout of an earlier raspc to compare with")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every compiler")
    ap.add_argument("--runs", type=int, default=3, help="timed compiles per case and round")
    ap.add_argument("--no-tracr", action="store_true")
    ap.add_argument("--limit", type=float, default=60.0, help="stop timing a case after a compile this slow (s)")
    args = ap.parse_args()

    library, _ = load_cases()
    named = {c["name"]: c for c in [*library, *SCALE64]}
    if args.cases == "library":
        cases = library
    elif args.cases == "scale64":
        cases = SCALE64
    elif args.cases == "all":
        cases = [*library, *SCALE64]
    else:
        unknown = [n for n in args.cases.split(",") if n not in named]
        if unknown:
            sys.exit(f"unknown cases {unknown}; known: {', '.join(named)}")
        cases = [named[n] for n in args.cases.split(",")]

    here = str(Path(__file__).resolve().parents[1])
    compilers = {"raspc": here}
    if args.baseline:
        compilers["baseline"] = str(Path(args.baseline).resolve())
    tracr_ok, tracr_why = tracr_available()
    if tracr_ok and not args.no_tracr:
        compilers["tracr"] = "tracr"

    times: dict[str, dict[str, list[float]]] = {k: {c["name"]: [] for c in cases} for k in compilers}
    errors: dict[str, dict[str, str]] = {k: {} for k in compilers}
    started = time.time()
    for r in range(args.rounds):
        for who, root in compilers.items():
            print(f"round {r + 1}/{args.rounds}: {who} ...", file=sys.stderr, flush=True)
            res = run_worker(root, cases, args.runs, args.limit, timeout=3600)
            for name, out in res.items():
                times[who][name] += out["ms"]
                if "error" in out:
                    errors[who][name] = out["error"]

    def med(who: str, name: str) -> float | None:
        ms = times[who][name]
        return statistics.median(ms) if ms and name not in errors[who] else None

    cols = list(compilers)
    header = ["case", "vocab/msl", *[f"{w} ms" for w in cols]]
    ratio_cols = [w for w in cols if w != "raspc"]
    header += [f"{w}/raspc" for w in ratio_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ratios: dict[str, list[float]] = {w: [] for w in ratio_cols}
    for c in cases:
        row = [c["name"], f"{len(c['vocab'])}/{c['max_seq_len']}"]
        for w in cols:
            m = med(w, c["name"])
            row.append(f"{m:.0f}" if m is not None else f"— ({errors[w].get(c['name'], 'n/a')[:60]})")
        base = med("raspc", c["name"])
        for w in ratio_cols:
            m = med(w, c["name"])
            if m is not None and base:
                ratios[w].append(m / base)
                row.append(f"{m / base:.2f}")
            else:
                row.append("—")
        lines.append("| " + " | ".join(row) + " |")
    summary = [f"- geometric mean {w}/raspc over {len(rs)} cases: {math.exp(sum(map(math.log, rs)) / len(rs)):.2f}"
               for w, rs in ratios.items() if rs]
    info = machine_info()
    report = "\n".join([
        "# Compile time, side by side", "",
        f"`python benchmarks/compile_time.py --cases {args.cases} --rounds {args.rounds} --runs {args.runs}"
        + (" --baseline ..." if args.baseline else "") + "`; "
        f"{info.get('python', '')}, {info.get('cpus', '')} CPUs; {time.time() - started:.0f} s in all. "
        "Warm compile, median over rounds; a ratio above 1 means raspc is faster."
        + ("" if "tracr" in compilers else f" Tracr not measured: {tracr_why if not tracr_ok else '--no-tracr'}."),
        "", *lines, "", *summary, ""])
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compile_time.md").write_text(report)
    (RESULTS / "compile_time.json").write_text(json.dumps({"times": times, "errors": errors, "machine": info},
                                                          indent=1))


if __name__ == "__main__":
    main()
