"""Every library program at vocab = max_seq_len = N: compile time, peak memory, ONNX size, exactness.

    python benchmarks/library_at_scale.py                 # N = 64 and 128, ~5 min
    python benchmarks/library_at_scale.py --sizes 64 --programs make_sort,make_hist

Each (program, N) compiles in its own process (so its peak resident memory is its own), then runs
20 random inputs (lengths 1..N) through the compiled model and compares with `rasp.evaluate`.
Programs over a fixed alphabet (the Dyck programs, pair_balance, detect_pattern) keep it and take
max_seq_len N; the others take vocab = the ints 1..N. Results: benchmarks/results/library_at_scale.md
and .json. Targets (issue 11): under 2 s, 500 MB and an ONNX file under 50 MB at N = 64; compiles at 128.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

PROGRAMS = {  # name -> (call, alphabet or None for the ints 1..N)
    "make_length": ("lib.make_length()", None),
    "make_reverse": ("lib.make_reverse(rasp.tokens)", None),
    "make_hist": ("lib.make_hist()", None),
    "make_sort_unique": ("lib.make_sort_unique(rasp.tokens, rasp.tokens)", None),
    "make_sort": ("lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len={n}, min_key=1)", None),
    "make_sort_freq": ("lib.make_sort_freq(max_seq_len={n})", None),
    "make_frac_prevs": ("lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == 1 else 0, rasp.tokens)))", None),
    "make_pair_balance": ('lib.make_pair_balance(rasp.tokens, "(", ")")', ["(", ")", "a"]),
    "make_shuffle_dyck": ('lib.make_shuffle_dyck(pairs=["()"])', ["(", ")"]),
    "make_shuffle_dyck2": ("lib.make_shuffle_dyck2()", ["(", ")", "{", "}"]),
    "make_count_less_freq": ("lib.make_count_less_freq(2)", None),
    "make_count": ("lib.make_count(rasp.tokens, 1)", None),
    "make_nary_sequencemap": ("lib.make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices)", None),
    "shift_by": ("lib.shift_by(2, rasp.tokens)", None),
    "detect_pattern": ('lib.detect_pattern(rasp.tokens, "abc")', ["a", "b", "c"]),
}

WORKER = textwrap.dedent('''
    import json, random, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from raspc import compile_rasp_to_model, lib, rasp
    call, vocab, n = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    out = {}
    try:
        program = eval(call, {"lib": lib, "rasp": rasp})
        t = time.perf_counter()
        model = compile_rasp_to_model(program, vocab, n)
        out["compile_s"] = time.perf_counter() - t
        out["d_model"] = len(model.residual_labels)
        out["compact_mb"] = len(model.compact_onnx_model.SerializeToString()) / 2**20
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # compile + compact session
        out["dense_mb"] = len(model.onnx_model.SerializeToString()) / 2**20
        import numpy as np
        from raspc.analysis.weights import ModelWeights
        w = ModelWeights.from_module(model.module)
        arrays = [w.token_embedding, w.position_embedding, *(a for h in w.heads for a in (h.w_q, h.w_k, h.w_v, h.w_o)),
                  *(a for m in w.mlps for a in (m.w_in, m.b_in, m.w_out, m.b_out))]
        out["nonzero"] = int(sum(np.count_nonzero(a) for a in arrays))
        from raspc.dialects.tensor import tensor_model
        out["reuse_d_model"] = tensor_model(compile_rasp_to_model(program, vocab, n, reuse_residual=True).module).d_model
        rng = random.Random(n)
        rows = [[rng.choice(vocab) for _ in range(rng.randint(1, n))] for _ in range(20)]
        got = model.apply_batch([["BOS", *r] for r in rows])
        def same(a, b):
            return a == b or (isinstance(a, float) and isinstance(b, (int, float)) and abs(a - b) < 1e-4)
        out["exact"] = all(len(g) == len(r) + 1 and all(same(x, y) for x, y in zip(g[1:], rasp.evaluate(program, r)))
                           for g, r in zip(got, rows))
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:240]}"
    print(json.dumps(out))
''')


def run_case(call: str, vocab: list, n: int, timeout: float) -> dict:
    try:
        p = subprocess.run([sys.executable, "-c", WORKER, str(C.REPO), call, json.dumps(vocab), str(n)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": (p.stderr.strip().splitlines() or ["crashed"])[-1][:240]}


def _growth(rows: list[dict]) -> list[str]:
    """Per program, how compile time and peak memory grow from the smallest size to the largest,
    beside the growth of the model's non-zero parameters (memory above the ~80 MB a process
    holds before compiling, the baseline of the smallest case)."""
    ok = [r for r in rows if "error" not in r]
    if len({r["n"] for r in ok}) < 2:
        return []
    base_mb = min(r["peak_mb"] for r in ok)
    out = ["| program | sizes | non-zero params x | compile time x | peak memory above baseline x |",
           "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["program"] for r in ok):
        mine = sorted((r for r in ok if r["program"] == name), key=lambda r: r["n"])
        if len(mine) < 2:
            continue
        a, b = mine[0], mine[-1]
        mem = (b["peak_mb"] - base_mb + 1) / (a["peak_mb"] - base_mb + 1)
        out.append(f"| {name} | {a['n']} -> {b['n']} | {b['nonzero'] / a['nonzero']:.1f} "
                   f"| {b['compile_s'] / a['compile_s']:.1f} | {mem:.1f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    rows = []
    start = time.perf_counter()
    for n in (int(s) for s in args.sizes.split(",")):
        for name in args.programs.split(","):
            call, alphabet = PROGRAMS[name]
            vocab = alphabet if alphabet is not None else list(range(1, n + 1))
            print(f"{name}@{n} ...", file=sys.stderr, flush=True)
            rows.append({"program": name, "n": n, **run_case(call.format(n=n), vocab, n, args.timeout)})
    total = time.perf_counter() - start
    lines = [
        "# Every library program at vocab = max_seq_len = N",
        "",
        f"`python benchmarks/library_at_scale.py --sizes {args.sizes}`; {C.machine_info()['python']}, "
        f"{C.machine_info()['cpus']} CPUs; {total:.0f} s in all. Each case in its own process: compile seconds "
        "(first compile, process start-up excluded), peak resident memory of the process (compile and the "
        "compact graph's session), ONNX sizes, and whether 20 random inputs answer like `rasp.evaluate`.",
        "",
        "| program | N | compile s | peak MB | non-zero params | residual | residual with reuse | compact ONNX MB "
        "| transformer-shaped ONNX MB | exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['program']} | {r['n']} | refused: {r['error']} | | | | | | | |")
        else:
            lines.append(f"| {r['program']} | {r['n']} | {r['compile_s']:.2f} | {r['peak_mb']:.0f} | {r['nonzero']:,} "
                         f"| {r['d_model']} | {r['reuse_d_model']} | {r['compact_mb']:.1f} | {r['dense_mb']:.1f} "
                         f"| {'yes' if r['exact'] else 'NO'} |")
    lines += ["", *_growth(rows)]
    text = "\n".join(lines) + "\n"
    C.RESULTS.mkdir(exist_ok=True)
    (C.RESULTS / "library_at_scale.md").write_text(text)
    (C.RESULTS / "library_at_scale.json").write_text(json.dumps({"machine": C.machine_info(), "rows": rows}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
