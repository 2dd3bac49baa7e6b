"""Residual reuse (`reuse_residual=True`, the reuse-residual pass) on Tracr's library cases, beside Tracr.

    python benchmarks/residual_reuse.py            # every case of shared/tracr-lib-vectors.json, ~1 min

For each case: Tracr's residual width (compiled in this run when Tracr is installed), raspc's
default width and its width with reuse, the extra heads and MLP units that erase, the forward time
of both raspc graphs (transformer-shaped and compact, onnxruntime, batch 64 of full-length
inputs) with and without reuse, warm compile time, and exactness (the model with reuse against
the evaluator on 200 random inputs and on the vectors file's examples).

Writes benchmarks/results/residual_reuse.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BATCH = 64


def structure(model: Any) -> dict[str, Any]:
    from raspc.dialects import tensor as T

    tm = T.tensor_model(model.module)
    heads = tm.heads
    mlps = [op for op in tm.ops if isinstance(op, T.MlpOp)]
    return {
        "width": tm.d_model,
        "heads": len(heads),
        "erasing_heads": sum(h.label_str.startswith("erase_") for h in heads),
        "mlp_hidden": sum(int(m.w_in.get_shape()[1]) for m in mlps),
        "layers": max([op.layer_int for op in tm.ops if isinstance(op, (T.AttentionHeadOp, T.MlpOp))], default=-1) + 1,
        "dense_onnx_bytes": len(model.onnx_model.SerializeToString()),
    }


def forward_ms(session_model: Any, ids: np.ndarray, runs: int) -> float:
    return C.median(C.call_ms(lambda: session_model.run_ids(ids), runs))


def measure(case: dict[str, Any], runs: int, vectors: dict[str, Any]) -> dict[str, Any]:
    import raspc
    from raspc.runtime import OnnxModel

    rlib, rrasp = C.raspc_modules()
    call, vocab, msl = case["call"], case["vocab"], case["max_seq_len"]
    row: dict[str, Any] = {"case": case["name"], "vocab": len(vocab), "max_seq_len": msl}
    batch = C.full_length_batch(vocab, msl, BATCH, C.seed_for(case["name"], "batch"))
    for tag, reuse in (("default", False), ("reuse", True)):
        compile_once = lambda: raspc.compile_rasp_to_model(C.build(call, rlib, rrasp), vocab, msl,  # noqa: E731
                                                           reuse_residual=reuse)
        model = compile_once()
        row[f"{tag}_compile_ms"] = C.median([C.timed(compile_once)[0] * 1e3 for _ in range(runs)])
        row.update({f"{tag}_{k}": v for k, v in structure(model).items()})
        ids = C.raspc_ids(model, batch)
        row[f"{tag}_compact_ms"] = forward_ms(model.runtime, ids, max(runs, 5))
        row[f"{tag}_dense_ms"] = forward_ms(OnnxModel(model.onnx_model.SerializeToString()), ids, max(runs, 5))
        if reuse:
            inputs = C.random_inputs(case["name"], call, vocab, msl, 200)
            expected = [rrasp.evaluate(model.program, x) for x in inputs]
            got = C.raspc_outputs(model, inputs)
            examples = vectors.get(case["name"], {}).get("examples", [])
            got_ex = C.raspc_outputs(model, [e["input"] for e in examples])
            row["exact"] = (all(C.sequence_matches(g, e, False) for g, e in zip(got, expected))
                            and all(C.sequence_matches(g, e["output"], False) for g, e in zip(got_ex, examples)))
            row["inputs_checked"] = len(inputs) + len(examples)
    return row


def tracr_width(case: dict[str, Any]) -> int | None:
    from tracr.compiler.compiling import compile_rasp_to_model

    tlib, trasp = C.tracr_modules()
    model = compile_rasp_to_model(C.build(case["call"], tlib, trasp), vocab=set(case["vocab"]),
                                  max_seq_len=case["max_seq_len"], compiler_bos="BOS")
    return len(model.residual_labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="timed compiles per case (forward: at least 5 calls)")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--out", default=str(C.REPO / "benchmarks" / "results" / "residual_reuse.md"))
    args = ap.parse_args()
    cases, source = C.load_cases()
    if args.cases:
        cases = [c for c in cases if c["name"] in args.cases.split(",")]
    vectors = {c["name"]: c for c in json.loads(C.VECTORS.read_text())["cases"]} if C.VECTORS.is_file() else {}
    have_tracr, tracr_version = C.tracr_available()
    t0 = time.perf_counter()
    rows = []
    for case in cases:
        row = measure(case, args.runs, vectors)
        row["tracr_width"] = tracr_width(case) if have_tracr else None
        rows.append(row)
        print(f"{case['name']}: width {row['default_width']} -> {row['reuse_width']} (Tracr {row['tracr_width']})",
              file=sys.stderr)
    total = time.perf_counter() - t0

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    lines = [
        "# Residual reuse: raspc's residual width with `reuse_residual=True`, beside its default and Tracr's",
        "",
        f"`python benchmarks/residual_reuse.py`; {C.machine_info()['python']}, {C.machine_info()['cpus']} CPUs; "
        f"cases from {source}; Tracr {tracr_version if have_tracr else 'not installed'}; {total:.0f} s in all. "
        f"Forward: median ms of onnxruntime calls on a batch of {BATCH} full-length random inputs; compile: warm "
        f"median of {args.runs}. \"exact\": the model with reuse equals the evaluator on 200 random inputs and on "
        "the vectors file's examples.",
        "",
        "| case | vocab/msl | Tracr | raspc | raspc reuse | reuse/Tracr | erasing heads | MLP hidden (reuse) "
        "| dense ms | dense ms reuse | compact ms | compact ms reuse | compile ms | compile ms reuse | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tw = r["tracr_width"]
        lines.append(
            f"| {r['case']} | {r['vocab']}/{r['max_seq_len']} | {tw if tw is not None else '-'} | {r['default_width']} "
            f"| {r['reuse_width']} | {ratio(r['reuse_width'], tw) if tw else '-'} | {r['reuse_erasing_heads']} "
            f"| {r['default_mlp_hidden']} ({r['reuse_mlp_hidden']}) | {r['default_dense_ms']:.3f} "
            f"| {r['reuse_dense_ms']:.3f} | {r['default_compact_ms']:.3f} | {r['reuse_compact_ms']:.3f} "
            f"| {r['default_compile_ms']:.1f} | {r['reuse_compile_ms']:.1f} | {'yes' if r['exact'] else 'NO'} |")
    sums = {k: sum(r[k] for r in rows) for k in ("default_width", "reuse_width")}
    tracr_sum = sum(r["tracr_width"] for r in rows) if all(r["tracr_width"] for r in rows) else None

    def geo(key_a: str, key_b: str) -> float:
        return float(np.exp(np.mean([np.log(r[key_a] / r[key_b]) for r in rows])))

    lines += [
        "",
        f"- summed residual width: Tracr {tracr_sum if tracr_sum else '-'}, raspc {sums['default_width']}, "
        f"raspc with reuse {sums['reuse_width']}"
        + (f" ({sums['reuse_width'] / tracr_sum:.3f}x Tracr's; default {sums['default_width'] / tracr_sum:.3f}x)"
           if tracr_sum else ""),
        f"- forward time with reuse / without, geometric mean: dense graph {geo('reuse_dense_ms', 'default_dense_ms'):.2f}x, "
        f"compact graph {geo('reuse_compact_ms', 'default_compact_ms'):.2f}x",
        f"- compile time with reuse / without, geometric mean: {geo('reuse_compile_ms', 'default_compile_ms'):.2f}x",
        f"- exact on every case: {'yes' if all(r['exact'] for r in rows) else 'NO'}",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"machine": C.machine_info(), "tracr": tracr_version if have_tracr else None, "rows": rows}, indent=1,
        default=str))
    print(text)


if __name__ == "__main__":
    main()
