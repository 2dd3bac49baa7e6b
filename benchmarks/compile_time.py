"""Compile time and cold start, side by side in one run: this raspc, an earlier raspc (a checkout), and Tracr.

    python benchmarks/compile_time.py                              # this raspc and Tracr
    python benchmarks/compile_time.py --baseline /tmp/raspc-old    # + a checkout of an earlier commit
    python benchmarks/compile_time.py --cases scale64 --rounds 3

Warm compile: each compiler runs in its own long-lived worker process (two raspc versions cannot
share one) and the workers take turns case by case (case 1: A B C, case 2: B C A, ...), so a burst
of load from elsewhere on the machine hits all of them alike; a case's time is the median of its
warm compiles (`compile_rasp_to_model` end to end: front end, every pass, the compact ONNX graph
and its onnxruntime session for raspc, i.e. a model ready to answer; Tracr's
`compile_rasp_to_model` for Tracr). The target is a ratio of at least 2 on every case.

Cold start (`--cold-runs`, default 5): a new `python -c` process that imports the compiler, compiles
`make_length` (vocab a-d, max_seq_len 5) and prints the first answer, timed from launch to exit,
the compilers alternating. Python's bytecode cache is on (a user's second start onwards; this
machine sets PYTHONDONTWRITEBYTECODE=1, so the cache goes to a temporary PYTHONPYCACHEPREFIX and
each compiler starts once before timing); raspc without a bytecode cache is reported too. The
target is at most 1/10 of Tracr's time.

The machine is noisy: compare ratios, not milliseconds. Case sets: `library` (Tracr's sizes and the
vocab-20 cases), `scale64` (vocab = max_seq_len = 64: a numerical prefix mean, the width and an
aggregate of an `or` selector, make_sort, make_hist, make_sort_unique), `all`. Results:
benchmarks/results/compile_time.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

WARM_TARGET = 2.0  # issue 11: a warm compile at most half of Tracr's, on every case
COLD_TARGET = 10.0  # and a cold start at most a tenth of Tracr's

# One long-lived worker per compiler (`root`, or "tracr" for Tracr): reads one JSON request per line,
# {"case": {...}, "runs": n, "limit": s}, compiles that case once to warm up (the first time it sees
# it) then `runs` timed times, and answers one JSON line: {"name": ..., "ms": [...]} or {..., "error": ...}.
# It says {"ready": true} once its imports are done.
WORKER = textwrap.dedent('''
    import json, sys, time
    root = sys.argv[1]
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
    programs = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        c = req["case"]
        out = {"name": c["name"], "ms": []}
        try:
            if c["name"] not in programs:
                programs[c["name"]] = eval(c["call"], {"lib": lib, "rasp": rasp})
                compile_(programs[c["name"]], c)  # warm up (imports, caches)
            for _ in range(req["runs"]):
                t = time.perf_counter()
                compile_(programs[c["name"]], c)
                out["ms"].append((time.perf_counter() - t) * 1000)
                if out["ms"][-1] > req["limit"] * 1000:
                    break
        except BaseException as e:  # noqa: BLE001 - recorded, not fatal
            out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        print(json.dumps(out), flush=True)
''')


class Worker:
    """A compiler's worker process, asked for one case at a time."""

    def __init__(self, root: str):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, root], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        # wait for its imports (Tracr's take seconds of both cores): none may overlap a timed compile
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError(f"a compile_time worker for {root} failed to start (exit code {self.proc.wait()})")

    def time(self, case: dict[str, Any], runs: int, limit: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"case": case, "runs": runs, "limit": limit}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a compile_time worker died (exit code {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# Cold start: a new process, imports, one compile, the first answer.
COLD_RASPC = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from raspc import compile_rasp_to_model, lib
    model = compile_rasp_to_model(lib.make_length(), vocab={"a", "b", "c", "d"}, max_seq_len=5)
    print(model.apply(["BOS", "a", "b", "c"]).decoded)
''')
COLD_TRACR = textwrap.dedent('''
    from tracr.compiler import compiling, lib
    model = compiling.compile_rasp_to_model(lib.make_length(), vocab={"a", "b", "c", "d"}, max_seq_len=5,
                                            compiler_bos="BOS")
    print(model.apply(["BOS", "a", "b", "c"]).decoded)
''')


def cold_start(compilers: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Seconds from launch to exit of a new process answering one input, per compiler, alternating;
    with a bytecode cache (prepared by one untimed start each), and raspc once more without one."""
    import tempfile

    def start(root: str, env: dict[str, str]) -> float:
        script = COLD_TRACR if root == "tracr" else COLD_RASPC
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script, root], capture_output=True, text=True, env=env,
                             timeout=600, check=False)
        elapsed = time.perf_counter() - t
        if "'BOS', 3, 3, 3" not in out.stdout:
            raise RuntimeError(f"cold start of {root} answered {out.stdout.strip()!r}: {out.stderr.strip()[-300:]}")
        return elapsed

    times: dict[str, list[float]] = {who: [] for who in compilers}
    times["raspc, PYTHONDONTWRITEBYTECODE=1"] = []
    with tempfile.TemporaryDirectory() as cache:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = cache
        # raspc's own sources recompiled at every start (an editable install under PYTHONDONTWRITEBYTECODE=1);
        # the installed dependencies keep the bytecode pip wrote next to them
        uncached = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
        uncached["PYTHONDONTWRITEBYTECODE"] = "1"
        for root in compilers.values():
            start(root, cached)  # writes the bytecode cache
        for _ in range(runs):
            for who, root in compilers.items():
                times[who].append(start(root, cached))
            times["raspc, PYTHONDONTWRITEBYTECODE=1"].append(start(compilers["raspc"], uncached))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="all", help="library | scale64 | all | comma-separated names")
    ap.add_argument("--baseline", help="path of a checkout of an earlier raspc to compare with")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every compiler")
    ap.add_argument("--runs", type=int, default=3, help="timed compiles per case and round")
    ap.add_argument("--no-tracr", action="store_true")
    ap.add_argument("--limit", type=float, default=60.0, help="stop timing a case after a compile this slow (s)")
    ap.add_argument("--cold-runs", type=int, default=5, help="new processes per compiler for the cold start (0: skip)")
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
    started, load = time.time(), os.getloadavg()
    workers = {who: Worker(root) for who, root in compilers.items()}
    order = list(compilers)
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ...", file=sys.stderr, flush=True)
            for i, c in enumerate(cases):
                turn = order[(i + r) % len(order):] + order[:(i + r) % len(order)]  # who goes first rotates
                for who in turn:
                    if c["name"] in errors[who]:
                        continue
                    out = workers[who].time(c, args.runs, args.limit)
                    times[who][c["name"]] += out["ms"]
                    if "error" in out:
                        errors[who][c["name"]] = out["error"]
    finally:
        for w in workers.values():
            w.close()
    cold = cold_start(compilers, args.cold_runs) if args.cold_runs else {}

    def med(who: str, name: str) -> float | None:
        ms = times[who][name]
        return statistics.median(ms) if ms and name not in errors[who] else None

    def best(who: str, name: str) -> float | None:
        ms = times[who][name]
        return min(ms) if ms and name not in errors[who] else None

    cols = list(compilers)
    header = ["case", "vocab/msl", *[f"{w} ms" for w in cols]]
    ratio_cols = [w for w in cols if w != "raspc"]
    header += [f"{w}/raspc" for w in ratio_cols]
    if "tracr" in compilers:  # the fastest compiles: what load on the machine adds least to
        header.append("tracr/raspc, fastest")
    best_ratios: list[float] = []
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
        if "tracr" in compilers:
            b_raspc, b_tracr = best("raspc", c["name"]), best("tracr", c["name"])
            if b_raspc and b_tracr:
                best_ratios.append(b_tracr / b_raspc)
            row.append(f"{b_tracr / b_raspc:.2f}" if b_raspc and b_tracr else "—")
        lines.append("| " + " | ".join(row) + " |")
    summary = [f"- geometric mean {w}/raspc over {len(rs)} cases: {math.exp(sum(map(math.log, rs)) / len(rs)):.2f}"
               for w, rs in ratios.items() if rs]
    if ratios.get("tracr"):
        met = [c["name"] for c, r in zip([c for c in cases if med("raspc", c["name"]) and med("tracr", c["name"])],
                                         ratios["tracr"]) if r >= WARM_TARGET]
        missed = [c["name"] for c in cases if c["name"] not in met and med("tracr", c["name"])]
        summary.append(f"- target (raspc at most 1/{WARM_TARGET:g} of Tracr's time): met on {len(met)} of "
                       f"{len(met) + len(missed)} cases" + (f"; not on {', '.join(missed)}" if missed else ""))
        if best_ratios:
            summary.append(f"- fastest compiles: geometric mean tracr/raspc {math.exp(sum(map(math.log, best_ratios)) / len(best_ratios)):.2f}, "
                           f"target met on {sum(r >= WARM_TARGET for r in best_ratios)} of {len(best_ratios)} cases")
    cold_lines: list[str] = []
    if cold:
        tracr_cold = statistics.median(cold["tracr"]) if cold.get("tracr") else None
        cold_lines = ["", "## Cold start: a new process to its first answer", "",
                      (f"`make_length` (vocab a-d, max_seq_len 5), {args.cold_runs} starts each, alternating; median "
                       "(min) seconds from launch to exit, bytecode cached unless said."), "",
                      "| compiler | s | Tracr / it |", "|---|---|---|"]
        for who, ts in cold.items():
            ratio = f"{tracr_cold / statistics.median(ts):.1f}" if tracr_cold and who != "tracr" else "—"
            cold_lines.append(f"| {who} | {statistics.median(ts):.3f} ({min(ts):.3f}) | {ratio} |")
        if tracr_cold:
            mine = statistics.median(cold["raspc"])
            cold_lines += ["", f"- target (at most 1/{COLD_TARGET:g} of Tracr's): "
                               + ("met" if tracr_cold / mine >= COLD_TARGET else "not met")
                               + f" ({tracr_cold / mine:.1f}x)"]
    info = machine_info()
    report = "\n".join([
        "# Compile time, side by side", "",
        f"`python benchmarks/compile_time.py --cases {args.cases} --rounds {args.rounds} --runs {args.runs}"
        + (f" --baseline {args.baseline}" if args.baseline else "") + "`; "
        f"{info.get('python', '')}, {info.get('cpus', '')} CPUs; {time.time() - started:.0f} s in all. "
        "Warm compile (to a model ready to answer), median over rounds and runs, the compilers taking turns "
        f"case by case; a ratio above 1 means raspc is faster. Load average {load[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (2 cores: other work on the machine slows every compiler)."
        + ("" if "tracr" in compilers else f" Tracr not measured: {tracr_why if not tracr_ok else '--no-tracr'}."),
        "", *lines, "", *summary, *cold_lines, ""])
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compile_time.md").write_text(report)
    (RESULTS / "compile_time.json").write_text(json.dumps({"times": times, "errors": errors, "cold_start_s": cold,
                                                           "machine": info}, indent=1))


if __name__ == "__main__":
    main()
