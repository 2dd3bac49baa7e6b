"""How raspc's compile time and model size grow with max_seq_len and with the vocabulary.

    python benchmarks/scaling.py             # both sweeps, raspc + Tracr (when installed)
    python benchmarks/scaling.py --quick     # max_seq_len up to 20, one compile per point
    python benchmarks/scaling.py --no-tracr

Programs: make_sort_unique, make_hist, make_length, make_sort_freq, make_shuffle_dyck2.

* max_seq_len sweep (5, 10, 20, 40, 80) at a fixed vocabulary (sort_unique: vocab = the ints
  0..max_seq_len-1, as in Tracr's known failure; hist/length/sort_freq: 4 letters;
  shuffle_dyck2: the 4 brackets);
* vocabulary sweep (4, 8, 16, 32, 64 tokens) at max_seq_len 10 (shuffle_dyck2: the 4 brackets
  plus filler tokens).

At every point: raspc's compile time, layers, residual width, total MLP hidden units, params
(nonzero), ONNX size, forward ms on a batch of 64, and whether the model answers 100 random
inputs exactly (it must). With Tracr: its compile time and model size, and its accuracy for
sort_unique and length. A compile is stopped after --budget seconds (Tracr: --tracr-budget), and a size
whose compile is predicted (from the growth so far) to take longer is skipped; the report says so.

Writes benchmarks/results/scaling.md and benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BATCH = 64
N_INPUTS = 100
MSL_SIZES = [5, 10, 20, 40, 80]
VOCAB_SIZES = [4, 8, 16, 32, 64]
VOCAB_SWEEP_MSL = 10
TRACR_ACCURACY_PROGRAMS = ("sort_unique", "length")

# name -> (call with Tracr's names, where {msl} is the compile's max_seq_len)
PROGRAMS: dict[str, str] = {
    "sort_unique": "lib.make_sort_unique(rasp.tokens, rasp.tokens)",
    "hist": "lib.make_hist()",
    "length": "lib.make_length()",
    "sort_freq": "lib.make_sort_freq(max_seq_len={msl})",
    "shuffle_dyck2": "lib.make_shuffle_dyck2()",
}


def msl_sweep_vocab(program: str, msl: int) -> list[Any]:
    if program == "sort_unique":
        return list(range(msl))
    if program == "shuffle_dyck2":
        return list("(){}")
    return list("abcd")


def vocab_sweep_vocab(program: str, size: int) -> list[Any]:
    if program == "shuffle_dyck2":
        return list("(){}") + [f"x{i}" for i in range(size - 4)]
    return list(range(size))


def short_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def compile_times(compile_once: Callable[[], Any], runs: int, limit: float) -> tuple[Any, float, list[float]]:
    """(model, first compile s, further runs s). Further runs only when the first took < 2 s.
    The first compile is stopped (C.TimeLimit) after `limit` seconds."""
    with C.time_limit(limit):
        first, model = C.timed(compile_once)
    more = [C.timed(compile_once)[0] for _ in range(runs - 1)] if first < 2.0 else []
    return model, first, more


def measure_point(program: str, vocab: list[Any], msl: int, runs: int, tracr: bool, tracr_acc: bool,
                  budget: float, tracr_budget: float) -> dict[str, Any]:
    import raspc

    call = PROGRAMS[program].format(msl=msl)
    name = f"{program}@v{len(vocab)}/msl{msl}"
    inputs = C.random_inputs(name, call, vocab, msl, N_INPUTS, salt="scaling")
    batch = C.full_length_batch(vocab, msl, BATCH, C.seed_for(name, "batch"))
    point: dict[str, Any] = {"program": program, "call": call, "vocab_size": len(vocab), "max_seq_len": msl}

    rlib, rrasp = C.raspc_modules()
    r: dict[str, Any] = {}
    try:
        model, first, more = compile_times(
            lambda: raspc.compile_rasp_to_model(C.build(call, rlib, rrasp), vocab, msl), runs, budget)
        r["compile_first_s"], r["compile_more_s"] = first, more
        r["compile_s"] = C.median(more) if more else first
        r.update(C.raspc_structure(model))
        r["forward_ms"] = C.median(C.raspc_forward_ms(model, C.raspc_ids(model, batch), 5 if runs > 1 else 1))
        prog = C.build(call, rlib, rrasp)
        expected = [rrasp.evaluate(prog, x) for x in inputs]
        got = C.raspc_outputs(model, inputs)
        r.update(C.score(inputs, got, expected, skip_none=False))
        del model
    except Exception as e:
        r["error"] = short_error(e)
        r["traceback"] = traceback.format_exc()
    point["raspc"] = r

    if tracr:
        from tracr.compiler.compiling import compile_rasp_to_model as tcompile

        tlib, trasp = C.tracr_modules()
        t: dict[str, Any] = {}
        try:
            model, first, more = compile_times(
                lambda: tcompile(C.build(call, tlib, trasp), vocab=set(vocab), max_seq_len=msl, compiler_bos="BOS"),
                runs, tracr_budget)
            t["compile_first_s"], t["compile_more_s"] = first, more
            t["compile_s"] = C.median(more) if more else first
            t.update(C.tracr_structure(model))
            runner = C.TracrRunner(model)
            try:
                with C.time_limit(tracr_budget):
                    t["forward_ms"] = C.median(runner.forward_ms(C.tracr_ids(model, batch), 5 if runs > 1 else 1))
            except C.TimeLimit:
                t["forward_skipped"] = f"forward timing stopped after {tracr_budget:.0f} s"
            got = None
            if tracr_acc:
                prog = C.build(call, tlib, trasp)
                expected = [trasp.evaluate(prog, x) for x in inputs]
                t0 = time.perf_counter()
                try:
                    with C.time_limit(tracr_budget):
                        got = runner.outputs(inputs)
                except C.TimeLimit:
                    got = None
                    t["accuracy_skipped"] = f"accuracy run stopped after {tracr_budget:.0f} s"
                t["accuracy_run_s"] = time.perf_counter() - t0
            if tracr_acc and got is not None:
                t.update(C.score(inputs, got, expected, skip_none=True))
            del model
        except Exception as e:
            t["error"] = short_error(e)
        point["tracr"] = t
    gc.collect()
    return point


def predicted(times: list[tuple[int, float]], size: int) -> float | None:
    """Compile time predicted for `size` from the last two measured sizes (power-law growth)."""
    if len(times) < 2:
        return None
    (s0, t0), (s1, t1) = times[-2], times[-1]
    if t0 <= 0 or t1 <= 0 or s1 == s0:
        return None
    import math

    exponent = max(0.0, math.log(t1 / t0) / math.log(s1 / s0))
    return t1 * (size / s1) ** exponent


def too_slow(history: list[tuple[int, float]], size: int, budget: float) -> float | None:
    """The predicted compile time when it exceeds `budget`, else None. Only once a compile has
    taken a tenth of the budget: small times are dominated by noise (JAX compiling new shapes)."""
    if not history or history[-1][1] < budget / 10:
        return None
    p = predicted(history, size)
    return p if p is not None and p > budget else None


def sweep(kind: str, sizes: list[int], runs: int, budget: float, tracr: bool, tracr_budget: float,
          log: Callable[[str], None]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for program in PROGRAMS:
        r_hist: list[tuple[int, float]] = []
        t_hist: list[tuple[int, float]] = []
        r_dead = t_dead = None  # why bigger sizes are skipped
        for size in sizes:
            if kind == "msl":
                vocab, msl = msl_sweep_vocab(program, size), size
            else:
                vocab, msl = vocab_sweep_vocab(program, size), VOCAB_SWEEP_MSL
            pr = too_slow(r_hist, size, budget)
            if r_dead is None and pr is not None:
                r_dead = f"skipped: compile predicted ~{pr:.0f} s (> budget {budget:.0f} s)"
            if r_dead:
                points.append({"program": program, "vocab_size": len(vocab), "max_seq_len": msl,
                               "raspc": {"skipped": r_dead}, **({"tracr": {"skipped": "raspc skipped"}} if tracr else {})})
                log(f"{kind} {program} {size}: {r_dead}")
                continue
            pt = too_slow(t_hist, size, tracr_budget)
            do_tracr = tracr and t_dead is None
            if do_tracr and pt is not None:
                t_dead = f"skipped: compile predicted ~{pt:.0f} s (> budget {tracr_budget:.0f} s)"
                do_tracr = False
            tracr_acc = program in TRACR_ACCURACY_PROGRAMS and kind == "msl"
            t0 = time.perf_counter()
            point = measure_point(program, vocab, msl, runs, do_tracr, tracr_acc, budget, tracr_budget)
            if tracr and not do_tracr:
                point["tracr"] = {"skipped": t_dead or "skipped"}
            points.append(point)
            r = point["raspc"]
            if "error" in r:
                r_dead = f"not run: a smaller size failed ({r['error'][:80]})"
            else:
                r_hist.append((size, r["compile_first_s"]))
            t = point.get("tracr") or {}
            if "error" in t:
                t_dead = "not run: a smaller size failed"
            elif "compile_first_s" in t:
                t_hist.append((size, t["compile_first_s"]))
            log(f"{kind} {program} {size}: {time.perf_counter() - t0:.1f} s"
                + (f" raspc error {r['error']}" if "error" in r else f" raspc acc {r['seq_acc']:.2f}")
                + (f" tracr acc {t['seq_acc']:.2f}" if "seq_acc" in t else ""))
    return points


def cell(m: dict[str, Any], key: str, fmt: Callable[[Any], str] = str) -> str:
    if not m:
        return "-"
    if "skipped" in m:
        return "skip"
    if "error" in m:
        return "error"
    v = m.get(key)
    return "-" if v is None else fmt(v)


def params_str(m: dict[str, Any]) -> str:
    return f"{m['params']} ({m['nonzero_params']})"


def tracr_mlp_str(m: dict[str, Any]) -> str:
    return f"{sum(m['mlp_hidden_per_layer'])} [{m['mlp_hidden_cfg']}]"


def table(points: list[dict[str, Any]], kind: str, tracr: bool) -> list[str]:
    size_col = "max_seq_len" if kind == "msl" else "vocab"
    head = (f"| program | {size_col} | compile s | layers | resid | MLP hidden (sum) | params (nonzero) | ONNX KiB "
            "| fwd ms/64 | acc |")
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    if tracr:
        head += (" Tracr compile s | Tracr resid | Tracr MLP hidden real (sum) [cfg per layer] | Tracr params (nonzero) "
                 "| Tracr fwd ms/64 (jit) | Tracr acc |")
        sep += "---|---|---|---|---|---|"
    out = [head, sep]
    notes: list[str] = []
    for p in points:
        r, t = p["raspc"], p.get("tracr") or {}
        size = p["max_seq_len"] if kind == "msl" else p["vocab_size"]
        row = (
            f"| {p['program']} | {size} "
            f"| {cell(r, 'compile_s', lambda x: f'{x:.2f}')} | {cell(r, 'layers')} | {cell(r, 'residual_width')} "
            f"| {cell(r, 'mlp_hidden_per_layer', lambda x: str(sum(x)))} "
            f"| {cell(r, 'params', lambda x: params_str(r))} "
            f"| {cell(r, 'onnx_bytes', lambda x: f'{x / 1024:.0f}')} | {cell(r, 'forward_ms', lambda x: f'{x:.2f}')} "
            f"| {cell(r, 'seq_acc', lambda x: f'{x:.2f}')} |"
        )
        if tracr:
            row += (
                f" {cell(t, 'compile_s', lambda x: f'{x:.2f}')} | {cell(t, 'residual_width')} "
                f"| {cell(t, 'mlp_hidden_per_layer', lambda x: tracr_mlp_str(t))} "
                f"| {cell(t, 'params', lambda x: params_str(t))} "
                f"| {cell(t, 'forward_ms', lambda x: f'{x:.2f}')} "
                f"| {cell(t, 'seq_acc', lambda x: f'{x:.2f}')} |"
            )
        out.append(row)
        for who, m in (("raspc", r), ("Tracr", t)):
            if "skipped" in m and m["skipped"] != "raspc skipped":
                notes.append(f"- {p['program']} {size_col} {size}, {who}: {m['skipped']}")
            if "error" in m:
                notes.append(f"- {p['program']} {size_col} {size}, {who}: `{m['error']}`")
            for k in ("accuracy_skipped", "forward_skipped"):
                if m.get(k):
                    notes.append(f"- {p['program']} {size_col} {size}, {who}: {m[k]}")
            if m.get("wrong_examples") and who == "raspc":
                w = m["wrong_examples"][0]
                notes.append(f"- {p['program']} {size_col} {size}, raspc WRONG: input {w['input']!r} "
                             f"expected {w['expected']!r} got {w['got']!r}")
    return out + ([""] + notes if notes else [])


def worse_than_tracr(points: list[dict[str, Any]], kind: str) -> list[str]:
    """Points where raspc's model is bigger, its compile or forward pass >10% slower, or it fails
    where Tracr compiles."""
    out = []
    for p in points:
        r, t = p["raspc"], p.get("tracr") or {}
        size = p["max_seq_len"] if kind == "msl" else p["vocab_size"]
        where = f"{p['program']} {'max_seq_len' if kind == 'msl' else 'vocab'} {size}"
        if "error" in r and "params" in t:
            out.append(f"- {where}: raspc fails (`{r['error'][:90]}...`), Tracr compiles "
                       f"(resid {t['residual_width']}, {t['params']} params)")
            continue
        if "params" not in r or "params" not in t:
            continue
        items = []
        for key, label in (("layers", "layers"), ("residual_width", "resid"), ("params", "params"),
                           ("nonzero_params", "nonzero params")):
            if r[key] > t[key]:
                items.append(f"{label} {r[key]} vs {t[key]}")
        if r["compile_s"] > 1.1 * t["compile_s"]:
            items.append(f"compile {r['compile_s']:.2f} s vs {t['compile_s']:.2f} s")
        if "forward_ms" in t and r["forward_ms"] > 1.1 * t["forward_ms"]:
            items.append(f"forward {r['forward_ms']:.2f} vs {t['forward_ms']:.2f} ms/64")
        if items:
            out.append(f"- {where}: " + "; ".join(items))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="max_seq_len and vocab sizes up to 20 / 16, one compile each")
    ap.add_argument("--no-tracr", action="store_true", help="measure raspc only")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="raspc compile limit per point in seconds (default 300): a size predicted to take longer "
                         "is skipped, a compile running longer is stopped")
    ap.add_argument("--tracr-budget", type=float, default=120.0,
                    help="the same for Tracr's compile (default 120)")
    ap.add_argument("--programs", help="comma-separated subset of " + ",".join(PROGRAMS))
    ap.add_argument("--sweeps", default="msl,vocab", help="msl, vocab or both (default)")
    ap.add_argument("--out", type=Path, default=C.RESULTS)
    args = ap.parse_args(argv)
    C.python_version_ok()

    if args.programs:
        keep = [p.strip() for p in args.programs.split(",")]
        bad = [p for p in keep if p not in PROGRAMS]
        if bad:
            ap.error(f"unknown program(s) {bad}")
        for p in list(PROGRAMS):
            if p not in keep:
                del PROGRAMS[p]
    runs = 1 if args.quick else 3
    msl_sizes = [s for s in MSL_SIZES if not args.quick or s <= 20]
    vocab_sizes = [s for s in VOCAB_SIZES if not args.quick or s <= 16]

    has_tracr, info = (False, "disabled by --no-tracr") if args.no_tracr else C.tracr_available()
    if not has_tracr:
        print(f"Tracr is absent ({info}): measuring raspc only.", file=sys.stderr)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    import raspc

    rlib, _ = C.raspc_modules()
    raspc.compile_rasp_to_model(rlib.make_length(), ["x"], 2)  # start-up costs out of the way
    if has_tracr:
        from tracr.compiler.compiling import compile_rasp_to_model as tcompile

        tlib, _ = C.tracr_modules()
        tcompile(tlib.make_length(), vocab={"x"}, max_seq_len=2, compiler_bos="BOS")

    sweeps = [s.strip() for s in args.sweeps.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    if "msl" in sweeps:
        results["msl"] = sweep("msl", msl_sizes, runs, args.budget, has_tracr, args.tracr_budget, log)
    if "vocab" in sweeps:
        results["vocab"] = sweep("vocab", vocab_sizes, runs, args.budget, has_tracr, args.tracr_budget, log)
    elapsed = time.perf_counter() - start

    lines = ["# raspc scaling: compile time and model size vs max_seq_len and vocabulary", ""]
    lines.append(
        f"{N_INPUTS} random inputs per point (seeds fixed; sort_unique inputs have distinct tokens); acc = fraction "
        "answered exactly (raspc: vs raspc's evaluator, None must be None; Tracr: vs Tracr's evaluator, "
        "None positions unchecked). compile s = median of "
        + (f"{runs - 1} further runs after the first" if runs > 1 else "1 run")
        + " when the first took < 2 s, else the first run (the first compile of a program in the process; "
        "for Tracr that includes JAX tracing its new shapes). fwd = onnxruntime on a batch of "
        f"{BATCH} full-length sequences (Tracr: jax.jit of its forward on the same batch)."
    )
    if has_tracr:
        lines.append(f"Tracr: tracr-pypi {info}; Tracr accuracy measured for {', '.join(TRACR_ACCURACY_PROGRAMS)} "
                     "in the max_seq_len sweep (jitted forward, one batch per input length).")
    else:
        lines.append(f"**Tracr is absent** ({info}): raspc only.")
    lines.append(f"Total run time: {elapsed:.0f} s.")
    if "msl" in results:
        lines += ["", "## vs max_seq_len",
                  "", "(vocab: sort_unique 0..max_seq_len-1; hist/length/sort_freq a-d; shuffle_dyck2 the brackets)",
                  ""] + table(results["msl"], "msl", has_tracr)
    if "vocab" in results:
        lines += ["", f"## vs vocabulary size (max_seq_len {VOCAB_SWEEP_MSL})",
                  "", "(vocab: the ints 0..V-1; shuffle_dyck2: the 4 brackets and V-4 filler tokens)",
                  ""] + table(results["vocab"], "vocab", has_tracr)
    if has_tracr:
        worse = [w for kind, pts in results.items() for w in worse_than_tracr(pts, kind)]
        lines += ["", "## Where raspc is worse than Tracr (sizes: any excess; times: more than 10% slower)", ""]
        lines += worse or ["- nowhere"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.md").write_text(text)
    (args.out / "scaling.json").write_text(json.dumps(
        {"tracr": info if has_tracr else None, "machine": C.machine_info(), "runs": runs, "elapsed_s": elapsed,
         "budget_s": args.budget, "tracr_budget_s": args.tracr_budget, **results}, indent=1, default=repr))
    print(f"wrote {args.out / 'scaling.md'} and {args.out / 'scaling.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
