"""raspc vs Tracr on Tracr's library programs: model size, compile time, forward time, accuracy.

    pip install -e ".[tracr]"
    python benchmarks/compare_tracr.py                      # every case, a few minutes
    python benchmarks/compare_tracr.py --cases hist,sort --quick

Cases come from shared/tracr-lib-vectors.json (a built-in copy when it is absent). Each case's
'call' is written with Tracr's names and built twice: with tracr.compiler.lib / tracr.rasp.rasp
and with raspc.lib / raspc.rasp. Without Tracr installed only raspc's columns are measured.

Writes benchmarks/results/compare_tracr.md (the tables printed to stdout) and
benchmarks/results/compare_tracr.json (every raw number). See benchmarks/README.md for the
meaning of each column.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BATCH = 64


def fmt_list(xs: Any) -> str:
    return ",".join(str(x) for x in xs) if xs is not None else "-"


def ms(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def short_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


# --------------------------------------------------------------------------- one compiler on one case


def warm_times(compile_once: Any, runs: int) -> list[float]:
    """Seconds of `runs` timed compiles, after one untimed one (Tracr's second and third compiles
    of a program are still 2-3x slower than later ones: JAX finishes warming its caches)."""
    if runs > 1:
        compile_once()
    return [C.timed(compile_once)[0] for _ in range(runs)]


def timed_compiles(res: dict[str, Any], compile_once: Any, runs: int) -> Any:
    """Compiles once cold and `runs` times warm, recording the times in `res`; the model, or None
    (with the error recorded) when compilation fails."""
    try:
        cold, model = C.timed(compile_once)
        warm = warm_times(compile_once, runs)
    except Exception as e:
        res["error"] = short_error(e)
        res["traceback"] = traceback.format_exc()
        return None
    res["compile_cold_s"] = cold
    res["compile_warm_s"] = warm
    res["compile_s"] = C.median(warm)
    return model


def measure_raspc(case: dict[str, Any], runs: int, inputs: list[list[Any]], batch: list[list[Any]]) -> dict[str, Any]:
    import raspc

    rlib, rrasp = C.raspc_modules()
    call, vocab, msl = case["call"], case["vocab"], case["max_seq_len"]
    res: dict[str, Any] = {}
    model = timed_compiles(res, lambda: raspc.compile_rasp_to_model(C.build(call, rlib, rrasp), vocab, msl), runs)
    if model is None:
        return res
    res.update(C.raspc_structure(model))

    fwd = C.raspc_forward_ms(model, C.raspc_ids(model, batch), max(runs, 5) if runs > 1 else 1)
    res["forward_ms_runs"] = fwd
    res["forward_ms"] = C.median(fwd)
    res["forward_how"] = f"onnxruntime, batch {BATCH} x {msl + 1} tokens"

    program = C.build(call, rlib, rrasp)
    expected = [rrasp.evaluate(program, x) for x in inputs]
    t, got = C.timed(lambda: C.raspc_outputs(model, inputs))
    res["accuracy_run_s"] = t
    res.update(C.score(inputs, got, expected, skip_none=False))
    res["_expected"] = expected
    return res


def measure_tracr(case: dict[str, Any], runs: int, inputs: list[list[Any]], batch: list[list[Any]]) -> dict[str, Any]:
    from tracr.compiler.compiling import compile_rasp_to_model

    tlib, trasp = C.tracr_modules()
    call, vocab, msl = case["call"], case["vocab"], case["max_seq_len"]

    def compile_once() -> Any:
        return compile_rasp_to_model(C.build(call, tlib, trasp), vocab=set(vocab), max_seq_len=msl,
                                     compiler_bos="BOS")

    res: dict[str, Any] = {}
    model = timed_compiles(res, compile_once, runs)
    if model is None:
        return res
    res.update(C.tracr_structure(model))

    runner = C.TracrRunner(model)
    fwd = runner.forward_ms(C.tracr_ids(model, batch), max(runs, 5) if runs > 1 else 1)
    res["forward_ms_runs"] = fwd
    res["forward_ms"] = C.median(fwd)
    res["forward_how"] = f"jax.jit(model.forward), batch {BATCH} x {msl + 1} tokens"

    program = C.build(call, tlib, trasp)
    expected = [trasp.evaluate(program, x) for x in inputs]
    t, got = C.timed(lambda: runner.outputs(inputs))
    res["accuracy_run_s"] = t
    res["accuracy_how"] = "jitted forward, one batch per input length, decoded by Tracr's output encoder"
    res.update(C.score(inputs, got, expected, skip_none=True))
    res["_expected"] = expected
    return res


# --------------------------------------------------------------------------- report


def size_table(rows: list[dict[str, Any]], with_tracr: bool) -> list[str]:
    if with_tracr:
        head = ("| case | vocab/msl | layers r/T | heads/layer raspc | heads/layer Tracr [cfg] | resid r/T "
                "| MLP hidden/layer raspc | MLP hidden/layer Tracr real [cfg] | params raspc (nonzero) "
                "| params Tracr (nonzero) |")
        sep = "|---|---|---|---|---|---|---|---|---|---|"
    else:
        head = "| case | vocab/msl | layers | heads/layer | resid | MLP hidden/layer | params (nonzero) |"
        sep = "|---|---|---|---|---|---|---|"
    out = [head, sep]
    for row in rows:
        r, t = row["raspc"], row.get("tracr") or {}
        vm = f"{len(row['vocab'])}/{row['max_seq_len']}"
        if "error" in r:
            rl = rh = rr = rm = rp = f"error: {r['error']}"
        else:
            rl, rh, rr = str(r["layers"]), fmt_list(r["heads_per_layer"]), str(r["residual_width"])
            rm, rp = fmt_list(r["mlp_hidden_per_layer"]), f"{r['params']} ({r['nonzero_params']})"
        if not with_tracr:
            out.append(f"| {row['name']} | {vm} | {rl} | {rh} | {rr} | {rm} | {rp} |")
            continue
        if "error" in t:
            tl = th = tr = tm = tp = f"error: {t['error']}"
        else:
            tl, tr = str(t["layers"]), str(t["residual_width"])
            th = f"{fmt_list(t['heads_per_layer'])} [{t['heads_per_layer_cfg']}]"
            tm = f"{fmt_list(t['mlp_hidden_per_layer'])} [{t['mlp_hidden_cfg']}]"
            tp = f"{t['params']} ({t['nonzero_params']})"
        out.append(f"| {row['name']} | {vm} | {rl}/{tl} | {rh} | {th} | {rr}/{tr} | {rm} | {tm} | {rp} | {tp} |")
    return out


def speed_table(rows: list[dict[str, Any]], with_tracr: bool) -> list[str]:
    if with_tracr:
        head = ("| case | compile ms raspc [cold] | compile ms Tracr [cold] | forward ms/64 raspc (ORT) "
                "| forward ms/64 Tracr (jit) | seq acc raspc | seq acc Tracr | pos acc Tracr |")
        sep = "|---|---|---|---|---|---|---|---|"
    else:
        head = "| case | compile ms [cold] | forward ms/64 (ORT) | seq acc | pos acc |"
        sep = "|---|---|---|---|---|"
    out = [head, sep]
    for row in rows:
        r, t = row["raspc"], row.get("tracr") or {}

        def cols(m: dict[str, Any]) -> tuple[str, str, str, str]:
            if "error" in m:
                return ("error", "-", "-", "-")
            return (
                f"{m['compile_s'] * 1e3:.0f} [{m['compile_cold_s'] * 1e3:.0f}]",
                ms(m["forward_ms"], 2),
                f"{m['seq_acc']:.3f}",
                f"{m['pos_acc']:.3f}",
            )

        rc, rf, ra, rpa = cols(r)
        if not with_tracr:
            out.append(f"| {row['name']} | {rc} | {rf} | {ra} | {rpa} |")
            continue
        tc, tf, ta, tpa = cols(t)
        out.append(f"| {row['name']} | {rc} | {tc} | {rf} | {tf} | {ra} | {ta} | {tpa} |")
    return out


def findings(rows: list[dict[str, Any]], with_tracr: bool) -> list[str]:
    """Where raspc is bigger or slower than Tracr, and every wrong raspc answer."""
    out: list[str] = []
    wrong_lines: list[str] = []
    for row in rows:
        r = row["raspc"]
        if "error" in r:
            wrong_lines.append(f"- **{row['name']}**: raspc failed to compile: `{r['error']}`")
            continue
        if r["n_wrong"]:
            w = r["wrong_examples"][0]
            wrong_lines.append(
                f"- **{row['name']}**: {r['n_wrong']}/{r['n_inputs']} wrong. Shortest: input {w['input']!r} "
                f"expected {w['expected']!r} got {w['got']!r}. Reproduce: "
                f"`raspc.compile_rasp_to_model({row['call'].replace('lib.', 'raspc.lib.').replace('rasp.tokens', 'raspc.rasp.tokens')}, "
                f"{row['vocab']!r}, {row['max_seq_len']}).apply(['BOS', *{w['input']!r}]).decoded`"
            )
    worse: list[str] = []
    if with_tracr:
        for row in rows:
            r, t = row["raspc"], row.get("tracr") or {}
            if "error" in r or "error" in t:
                continue
            items = []
            for key, label in (("layers", "layers"), ("residual_width", "residual width"),
                               ("params", "params"), ("nonzero_params", "nonzero params")):
                if r[key] > t[key]:
                    items.append(f"{label} {r[key]} vs {t[key]}")
            rh, th = sum(r["heads_per_layer"]), sum(t["heads_per_layer"])
            if rh > th:
                items.append(f"heads {rh} vs {th}")
            rm, tm = sum(r["mlp_hidden_per_layer"]), sum(t["mlp_hidden_per_layer"])
            if rm > tm:
                items.append(f"total MLP hidden {rm} vs {tm} real")
            # Times count only when raspc is more than 10% slower (below that it is timing noise).
            if r["compile_s"] > 1.1 * t["compile_s"]:
                items.append(f"warm compile {r['compile_s'] * 1e3:.0f} ms vs {t['compile_s'] * 1e3:.0f} ms")
            if r["forward_ms"] > 1.1 * t["forward_ms"]:
                items.append(f"forward {r['forward_ms']:.2f} vs {t['forward_ms']:.2f} ms/64")
            if r["seq_acc"] < t["seq_acc"]:
                items.append(f"accuracy {r['seq_acc']:.3f} vs {t['seq_acc']:.3f}")
            if items:
                worse.append(f"- **{row['name']}**: " + "; ".join(items))
        out += ["", "### Where raspc is worse than Tracr (sizes: any excess; times: more than 10% slower)", ""]
        out += worse or ["- nowhere"]
    out += ["", "### Wrong answers from raspc (model vs raspc's RASP evaluator)", ""]
    out += wrong_lines or ["- none: every raspc model answered every input exactly"]
    if with_tracr:
        tw = [f"- {row['name']}: {row['tracr']['n_wrong']}/{row['tracr']['n_inputs']} wrong, e.g. input "
              f"{row['tracr']['wrong_examples'][0]['input']!r} expected {row['tracr']['wrong_examples'][0]['expected']!r} "
              f"got {row['tracr']['wrong_examples'][0]['got']!r}"
              for row in rows if "error" not in (row.get("tracr") or {"error": 1}) and row["tracr"]["n_wrong"]]
        out += ["", "### Wrong answers from Tracr (its model vs its evaluator; None positions not checked)", ""]
        out += tw or ["- none"]
        mism = [f"- {row['name']}: {row['evaluators_disagree']} inputs" for row in rows if row.get("evaluators_disagree")]
        if mism:
            out += ["", "### raspc's and Tracr's RASP evaluators disagree", ""] + mism
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--quick", action="store_true", help="1 timed run of each compile and forward pass")
    ap.add_argument("--inputs", type=int, default=200, help="random inputs per case for accuracy (200)")
    ap.add_argument("--no-tracr", action="store_true", help="measure raspc only, even if Tracr is installed")
    ap.add_argument("--vectors", type=Path, default=C.VECTORS, help="the cases file")
    ap.add_argument("--out", type=Path, default=C.RESULTS, help="folder for compare_tracr.md/.json")
    args = ap.parse_args(argv)

    C.python_version_ok()
    cases, source = C.load_cases(args.vectors)
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [w for w in wanted if w not in {c["name"] for c in cases}]
        if unknown:
            ap.error(f"unknown case(s) {unknown}; known: {', '.join(c['name'] for c in cases)}")
        cases = [c for c in cases if c["name"] in wanted]
    runs = 1 if args.quick else 3

    has_tracr, tracr_info = (False, "disabled by --no-tracr") if args.no_tracr else C.tracr_available()
    if not has_tracr:
        print(f"Tracr is absent ({tracr_info}): measuring raspc only.", file=sys.stderr)

    t_start = time.perf_counter()
    # Process start-up (imports, first use of xDSL/onnxruntime/JAX) is paid once here, on a tiny
    # program, so that each case's 'cold' compile is the first compile of *that* program.
    startup: dict[str, float] = {}
    import raspc

    rlib, rrasp = C.raspc_modules()
    startup["raspc_first_compile_s"] = C.timed(lambda: raspc.compile_rasp_to_model(rlib.make_length(), ["x"], 2))[0]
    if has_tracr:
        from tracr.compiler.compiling import compile_rasp_to_model as tcompile

        tlib, trasp = C.tracr_modules()
        startup["tracr_first_compile_s"] = C.timed(
            lambda: tcompile(tlib.make_length(), vocab={"x"}, max_seq_len=2, compiler_bos="BOS"))[0]

    rows: list[dict[str, Any]] = []
    for case in cases:
        name = case["name"]
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        inputs = C.random_inputs(name, case["call"], case["vocab"], case["max_seq_len"], args.inputs)
        batch = C.full_length_batch(case["vocab"], case["max_seq_len"], BATCH, C.seed_for(name, "batch"))
        row: dict[str, Any] = dict(case)
        row["raspc"] = measure_raspc(case, runs, inputs, batch)
        if has_tracr:
            row["tracr"] = measure_tracr(case, runs, inputs, batch)
            re, te = row["raspc"].pop("_expected", None), row["tracr"].pop("_expected", None)
            if re is not None and te is not None:
                row["evaluators_disagree"] = sum(
                    not C.sequence_matches(a, b, skip_none=False) for a, b in zip(re, te))
        else:
            row["raspc"].pop("_expected", None)
        rows.append(row)
        gc.collect()
    elapsed = time.perf_counter() - t_start

    lines = ["# raspc vs Tracr on Tracr's library programs", ""]
    lines.append(
        f"Cases: {source}. {args.inputs} random inputs per case, seeds fixed. "
        f"Compile: median of {runs} warm in-process run(s)" + (" after one untimed one" if runs > 1 else "")
        + ", [cold] = first compile of that program in this process "
        f"(process start-up paid before: raspc {startup['raspc_first_compile_s']:.2f} s"
        + (f", Tracr {startup['tracr_first_compile_s']:.2f} s" if has_tracr else "")
        + "). Forward: median of "
        + (f"{max(runs, 5)}" if runs > 1 else "1")
        + f" calls on a batch of {BATCH} full-length random sequences "
        "(raspc: onnxruntime session; Tracr: jax.jit of its haiku forward)."
    )
    if has_tracr:
        lines.append(f"Tracr: tracr-pypi {tracr_info}. Tracr's accuracy does not check positions where its evaluator "
                     "gives None (Tracr cannot output None); raspc's does (it must answer None there).")
    else:
        lines.append(f"**Tracr is absent** ({tracr_info}): raspc's columns only.")
    lines.append(f"Total run time: {elapsed:.0f} s.")
    lines += ["", "## Model size", ""] + size_table(rows, has_tracr)
    lines += ["", "## Compile time, forward time, accuracy", ""] + speed_table(rows, has_tracr)
    lines += findings(rows, has_tracr)
    text = "\n".join(lines) + "\n"
    print(text)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_tracr.md").write_text(text)
    raw = {
        "source": source,
        "tracr": tracr_info if has_tracr else None,
        "machine": C.machine_info(),
        "runs": runs,
        "inputs_per_case": args.inputs,
        "batch": BATCH,
        "startup": startup,
        "elapsed_s": elapsed,
        "cases": rows,
    }
    (args.out / "compare_tracr.json").write_text(json.dumps(raw, indent=1, default=repr))
    print(f"wrote {args.out / 'compare_tracr.md'} and {args.out / 'compare_tracr.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
