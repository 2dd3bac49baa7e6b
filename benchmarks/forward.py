"""Forward-pass speed at scale, side by side in one run: raspc's compact graph, its transformer-shaped
(dense) graph, a numpy replay of the non-zero work, and Tracr (jitted forward and `model.apply`).

    python benchmarks/forward.py                                  # default sweep, ~10 min
    python benchmarks/forward.py --programs hist,sort_unique --sizes 8,16 --runs 5

Cases: library programs at vocab = max_seq_len = N (vocab = the ints 0..N-1) for N in --sizes,
plus Tracr's own sizes (--tracr-sizes). For each case, every contender runs on the same batch of
full-length random sequences: batch 64 and batch 1, median of --runs calls after a warm-up.

- raspc compact: the graph `CompiledModel` runs (onnxruntime, raspc's session options: a thread
  per physical core, as JAX uses for Tracr), asked for `output` only.
- raspc dense: the transformer-shaped graph (`model.onnx_model`), same session options.
- limit: numpy replaying the non-zero work of the same model (each block multiplies only the rows
  it reads and the columns it writes, as dense float32 sub-blocks; no per-op overhead beyond numpy's).
- Tracr: jax.jit of its haiku forward (what its fast users run) and `model.apply` (what its README
  shows), skipped where its compile takes over --tracr-limit seconds (predicted from the case
  before at the same program when it grew past it).

Also: raspc compile seconds (warm, in process), the Python/numpy peak memory of the compile
(tracemalloc), the compact ONNX size, the residual width and non-zero parameters.
Results: benchmarks/results/forward.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

PROGRAMS = {
    "length": "lib.make_length()",
    "hist": "lib.make_hist()",
    "reverse": "lib.make_reverse(rasp.tokens)",
    "sort_unique": "lib.make_sort_unique(rasp.tokens, rasp.tokens)",
    "sort": "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len={n}, min_key=1)",
    "sort_freq": "lib.make_sort_freq(max_seq_len={n})",
    "count_less_freq": "lib.make_count_less_freq(2)",
}


# --------------------------------------------------------------------------- the "limit": numpy replay


class NumpyReplay:
    """The model's non-zero work in numpy: per block, x[..., reads] @ W[reads][:, writes]."""

    def __init__(self, module: Any):
        from raspc.dialects import tensor as T
        from raspc.lowering.compact_onnx import _block

        model = T.tensor_model(module)
        self.d = model.d_model
        self.tok = T.dense_to_numpy(model.embed.token_embedding)
        self.pos = T.dense_to_numpy(model.embed.position_embedding)
        self.layers: list[list[tuple[str, Any]]] = []
        self.steps: list[tuple[str, Any]] = []
        for op in model.ops:
            if isinstance(op, T.AddOp):
                continue
            blk = _block(op)
            w, r, out = blk.weights, blk.reads, blk.writes
            if isinstance(op, T.AttentionHeadOp):
                self.steps.append(("head", (op.layer_int, r["q"], w["q"][r["q"]], r["k"], w["k"][r["k"]], r["v"],
                                            w["v"][r["v"]], w["o"][:, out], out, np.float32(op.scale_float))))
            else:
                self.steps.append(("mlp", (op.layer_int, r["in"], w["w_in"][r["in"]], w["b_in"], w["w_out"][:, out],
                                           w["b_out"][out], out)))
        self.readout = np.array(model.readout.dims_list)
        self.pad_id, self.causal = model.spec.pad_id, model.spec.causal

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        from raspc.interpreters.tensor import attention_mask, softmax

        t = ids.shape[1]
        x = self.tok[ids] + self.pos[:t][None]
        mask = attention_mask(ids, self.pad_id, self.causal)
        layer, pending = -1, []
        for kind, p in self.steps:
            if p[0] != layer or kind == "mlp":  # heads of a layer read the same residual
                for cols, y in pending:
                    x[..., cols] += y
                pending, layer = [], p[0]
            if kind == "head":
                _, rq, wq, rk, wk, rv, wv, wo, out, scale = p
                q, k = x[..., rq] @ wq, x[..., rk] @ wk
                pattern = softmax((q @ k.transpose(0, 2, 1)) * scale + mask)
                pending.append((out, (pattern @ (x[..., rv] @ wv)) @ wo))
            else:
                _, ri, wi, bi, wo, bo, out = p
                h = np.maximum(x[..., ri] @ wi + bi, 0)
                x[..., out] += h @ wo + bo
        for cols, y in pending:
            x[..., cols] += y
        return x[..., self.readout]


# --------------------------------------------------------------------------- one case


def ms_median(fn: Any, runs: int, budget_s: float = 0.25) -> float:
    """Median ms per call over at least `runs` calls and `budget_s` seconds (after one warm-up call):
    a sub-millisecond call is timed hundreds of times, so one descheduling on a shared machine does
    not move its median."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or (time.perf_counter() - start < budget_s and len(times) < 5000):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return C.median(times)


def measure_raspc(call: str, n: int, runs: int) -> dict[str, Any]:
    import onnxruntime as ort

    import raspc
    from raspc.runtime import _session_options

    rlib, rrasp = C.raspc_modules()
    vocab = list(range(n))
    res: dict[str, Any] = {}
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        model = raspc.compile_rasp_to_model(C.build(call, rlib, rrasp), vocab, n)
    except Exception as e:  # a refusal is a result
        tracemalloc.stop()
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    res["compile_first_s"] = time.perf_counter() - t0
    res["compile_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if res["compile_first_s"] < 5:
        prog = C.build(call, rlib, rrasp)
        res["compile_s"] = ms_median(lambda: raspc.compile_rasp_to_model(prog, vocab, n), 2, budget_s=0) / 1e3
    else:
        res["compile_s"] = res["compile_first_s"]
    res["d_model"] = len(model.residual_labels)
    res["onnx_kib"] = len(model.compact_onnx_model.SerializeToString()) / 1024
    inits = [np.frombuffer(t.raw_data, dtype=np.float32) for t in model.onnx_model.graph.initializer
             if t.data_type == 1 and t.raw_data]
    res["params"] = int(sum(a.size for a in inits))
    res["params_nonzero"] = int(sum(np.count_nonzero(a) for a in inits))
    rng = np.random.default_rng(n)
    batch = [[int(v) for v in rng.permutation(n)] for _ in range(64)]  # distinct tokens: valid for every program
    rt = model.runtime
    ids = np.array([rt.encode([rt.bos, *row]) for row in batch], dtype=np.int64)
    dense = ort.InferenceSession(model.onnx_model.SerializeToString(), _session_options(),
                                 providers=["CPUExecutionProvider"])
    replay = NumpyReplay(model.module)
    compact = rt.session
    for label, ids_b in (("64", ids), ("1", ids[:1])):
        feed = {"tokens": ids_b}
        res[f"compact_ms_{label}"] = ms_median(lambda feed=feed: compact.run(["output"], feed), runs)
        res[f"dense_ms_{label}"] = ms_median(lambda feed=feed: dense.run(["output"], feed), runs)
        res[f"limit_ms_{label}"] = ms_median(lambda x=ids_b: replay(x), runs)
    # the deployed and the transformer-shaped graphs must answer alike
    a = compact.run(["output"], {"tokens": ids})[0]
    b = dense.run(["output"], {"tokens": ids})[0]
    res["compact_equals_dense"] = bool(np.array_equal(a, b))
    res["batch"] = batch  # Tracr gets the same sequences
    return res


def measure_tracr(call: str, n: int, runs: int, batch: list[list[int]], limit_s: float) -> dict[str, Any]:
    from tracr.compiler.compiling import compile_rasp_to_model

    tlib, trasp = C.tracr_modules()
    res: dict[str, Any] = {}
    try:
        with C.time_limit(limit_s):
            t0 = time.perf_counter()
            model = compile_rasp_to_model(C.build(call, tlib, trasp), vocab=set(range(n)), max_seq_len=n,
                                          compiler_bos="BOS")
            res["compile_s"] = time.perf_counter() - t0
    except C.TimeLimit:
        return {"skipped": f"compile over {limit_s:.0f} s"}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    runner = C.TracrRunner(model)
    ids = C.tracr_ids(model, batch)
    res["jit_ms_64"] = ms_median(lambda: runner.forward(ids), runs)
    res["jit_ms_1"] = ms_median(lambda: runner.forward(ids[:1]), runs)
    row = ["BOS", *batch[0]]
    res["apply_ms_1"] = ms_median(lambda: model.apply(row), max(1, min(runs, 3)), budget_s=0)
    return res


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def fmt(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace, total_s: float) -> str:
    lines = [
        "# Forward pass at scale: raspc compact vs dense vs the non-zero work vs Tracr",
        "",
        f"`python benchmarks/forward.py --sizes {args.sizes} --programs {args.programs}`; {C.machine_info()['python']}, "
        f"{C.machine_info()['cpus']} CPUs; {total_s:.0f} s in all. Times are medians (ms) of at least {args.runs} calls and 0.25 s of calls; "
        "batch 64 and batch 1 of full-length random sequences; onnxruntime with raspc's session options "
        "(a thread per physical core, as XLA uses for Tracr). "
        "A ratio above 1 means raspc's compact graph is faster.",
        "",
        "| case | resid | params (nonzero) | ONNX KiB | compile s | peak MB | compact@64 | dense@64 | limit@64 "
        "| Tracr jit@64 | Tracr/compact @64 | dense/compact @64 | compact/limit @64 | compact@1 | Tracr jit@1 "
        "| Tracr apply@1 | apply/compact @1 | jit/compact @1 |",
        "|" + "---|" * 18,
    ]
    for row in rows:
        r, t = row["raspc"], row.get("tracr") or {}
        if "error" in r:
            lines.append(f"| {row['case']} | refused: {r['error']} |" + " |" * 16)
            continue
        lines.append(
            f"| {row['case']} | {r['d_model']} | {r['params']} ({r['params_nonzero']}) | {r['onnx_kib']:.0f} "
            f"| {r['compile_s']:.3f} | {r['compile_peak_mb']:.0f} | {fmt(r['compact_ms_64'])} | {fmt(r['dense_ms_64'])} "
            f"| {fmt(r['limit_ms_64'])} | {fmt(t.get('jit_ms_64')) if t else '-'} "
            f"| {ratio(t.get('jit_ms_64'), r['compact_ms_64'])} | {ratio(r['dense_ms_64'], r['compact_ms_64'])} "
            f"| {ratio(r['compact_ms_64'], r['limit_ms_64'])} | {fmt(r['compact_ms_1'], 3)} "
            f"| {fmt(t.get('jit_ms_1'), 3)} | {fmt(t.get('apply_ms_1'), 1)} "
            f"| {ratio(t.get('apply_ms_1'), r['compact_ms_1'])} | {ratio(t.get('jit_ms_1'), r['compact_ms_1'])} |"
        )
    notes = [f"- {row['case']}, Tracr: {row['tracr'].get('skipped') or row['tracr'].get('error')}"
             for row in rows if row.get("tracr") and ("skipped" in row["tracr"] or "error" in row["tracr"])]
    wrong = [row["case"] for row in rows if "error" not in row["raspc"] and not row["raspc"]["compact_equals_dense"]]
    notes.append(f"- compact and dense graphs gave the same output on every case: {'yes' if not wrong else wrong}")

    def geo(key_a: str, key_b: str, src_a: str, src_b: str) -> str:
        xs = [row[src_a][key_a] / row[src_b][key_b] for row in rows
              if key_a in (row.get(src_a) or {}) and key_b in (row.get(src_b) or {})]
        return f"{math.exp(sum(math.log(x) for x in xs) / len(xs)):.2f}x over {len(xs)} cases" if xs else "-"

    notes += [
        f"- geometric mean Tracr jit / raspc compact, batch 64: {geo('jit_ms_64', 'compact_ms_64', 'tracr', 'raspc')}",
        f"- geometric mean raspc dense / compact, batch 64: {geo('dense_ms_64', 'compact_ms_64', 'raspc', 'raspc')}",
        f"- geometric mean Tracr apply / raspc compact, batch 1: {geo('apply_ms_1', 'compact_ms_1', 'tracr', 'raspc')}",
        f"- geometric mean Tracr jit / raspc compact, batch 1: {geo('jit_ms_1', 'compact_ms_1', 'tracr', 'raspc')}",
        f"- geometric mean raspc compact / numpy limit, batch 64: {geo('compact_ms_64', 'limit_ms_64', 'raspc', 'raspc')}",
    ]
    return "\n".join(lines + [""] + notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tracr-limit", type=float, default=60.0, help="seconds a Tracr compile may take")
    ap.add_argument("--no-tracr", action="store_true")
    args = ap.parse_args()
    with_tracr = not args.no_tracr and C.tracr_available()[0]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    tracr_too_slow: set[str] = set()
    for name in args.programs.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            call = PROGRAMS[name].format(n=n)
            case = f"{name}@{n}"
            print(f"{case}: raspc ...", file=sys.stderr, flush=True)
            row: dict[str, Any] = {"case": case, "call": call, "n": n, "raspc": measure_raspc(call, n, args.runs)}
            if with_tracr and "error" not in row["raspc"]:
                if name in tracr_too_slow:
                    row["tracr"] = {"skipped": f"compile over {args.tracr_limit:.0f} s at a smaller size"}
                else:
                    print(f"{case}: tracr ...", file=sys.stderr, flush=True)
                    row["tracr"] = measure_tracr(call, n, args.runs, row["raspc"]["batch"], args.tracr_limit)
                    if "skipped" in row["tracr"]:
                        tracr_too_slow.add(name)
            row["raspc"].pop("batch", None)
            rows.append(row)
    total = time.perf_counter() - start
    C.RESULTS.mkdir(exist_ok=True)
    text = report(rows, args, total)
    (C.RESULTS / "forward.md").write_text(text)
    (C.RESULTS / "forward.json").write_text(json.dumps({"machine": C.machine_info(), "rows": rows}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
