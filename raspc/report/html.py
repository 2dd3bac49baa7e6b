"""The HTML report: one self-contained file (inline CSS, JS, SVG and data; no network needed).

`build_report(view, tokens)` returns the page as a string; `write_report` writes it. The data
(the program graph, the layer table, the residual stream at every layer boundary, every head's
pattern and QK/OV circuits, the circuit graph and composition scores) is embedded as JSON and
drawn by report.js in the browser. Large models stay usable: residual rows are grouped by s-op
and collapsed (a collapsed row shows the strongest direction per position), all-zero groups are
hidden, circuits above a size are listed instead of drawn, and head panels draw when opened.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Sequence

import numpy as np

from raspc.report.model_view import Activations, Block, ModelView

MAX_CIRCUIT_ENTRIES = 20_000  # entries kept per QK/OV circuit (largest first)
TOL = 1e-6


def _asset(name: str) -> str:
    return resources.files("raspc.report").joinpath(name).read_text(encoding="utf-8")


def _token_text(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, float):
        return repr(float(np.float32(v)))
    return str(v)


Coo = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows, cols, values) of a sparse matrix
MAX_PAIRS = 20_000_000  # products joined entry by entry; past this, a dense product


def _coo(m: np.ndarray) -> Coo:
    r, c = np.nonzero(m)
    return r.astype(np.int64), c.astype(np.int64), m[r, c].astype(np.float64)


def _coo_matmul(a: Coo, b: Coo, shape: tuple[int, int]) -> Coo:
    """a @ b for sparse matrices: every entry (i, k) of a meets every entry (k, j) of b; equal
    (i, j) are summed. Compiled weights are nearly one-hot, so this is cheap where the dense
    product of two 4,000 x 4,000 matrices is not."""
    ar, ak, av = a
    bk, bc, bv = b
    if not len(av) or not len(bv):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    n_inner = int(max(ak.max(), bk.max())) + 1
    order = np.argsort(bk, kind="stable")
    bk, bc, bv = bk[order], bc[order], bv[order]
    counts = np.bincount(bk, minlength=n_inner)
    starts = np.cumsum(counts) - counts
    reps = counts[ak]
    total = int(reps.sum())
    if total > MAX_PAIRS:
        dense_a = np.zeros((shape[0], n_inner))
        np.add.at(dense_a, (ar, ak), av)
        dense_b = np.zeros((n_inner, shape[1]))
        np.add.at(dense_b, (bk, bc), bv)
        return _coo(dense_a @ dense_b)
    left = np.repeat(np.arange(len(av)), reps)
    offset = np.arange(total) - np.repeat(np.cumsum(reps) - reps, reps)
    right = starts[ak[left]] + offset
    keys = ar[left] * shape[1] + bc[right]
    unique, inverse = np.unique(keys, return_inverse=True)
    values = np.bincount(inverse, weights=av[left] * bv[right])
    keep = np.abs(values) > 1e-12
    return unique[keep] // shape[1], unique[keep] % shape[1], values[keep]


def _transpose(m: Coo) -> Coo:
    return m[1], m[0], m[2]


def _norm(m: Coo) -> float:
    return float(np.sqrt(np.sum(m[2] ** 2)))


class _HeadCircuits:
    """A head's QK (scale W_Q W_K^T) and OV (W_V W_O) circuits as sparse d x d matrices."""

    def __init__(self, view: ModelView, block: Block):
        from onnx import numpy_helper

        inits = {i.name: i for i in view.model.graph.initializer if i.name.startswith(block.name + ".")}

        def get(w: str) -> np.ndarray:
            return numpy_helper.to_array(inits[f"{block.name}.{w}"]).astype(np.float64)

        scale = inits.get(f"{block.name}.scale")
        self.scale = float(numpy_helper.to_array(scale)) if scale is not None else 1.0
        d = len(view.labels)
        q, k, v, o = get("W_Q"), get("W_K"), get("W_V"), get("W_O")
        qk = _coo_matmul(_coo(q), _transpose(_coo(k)), (d, d))
        self.qk: Coo = (qk[0], qk[1], qk[2] * self.scale)
        self.ov: Coo = _coo_matmul(_coo(v), _coo(o), (d, d))
        self.d = d


def composition_scores(view: ModelView, heads: dict[str, _HeadCircuits]) -> list[list[Any]]:
    """Q-, K- and V-composition scores between heads of different layers (the Framework's
    ||M_later M_earlier||_F / (||M_later||_F ||M_earlier||_F), as raspc.analysis.circuits computes
    them), from sparse products, so a 4,000-dim residual costs no dense d x d product."""
    blocks = {b.name: b for b in view.blocks if b.kind == "head"}
    out = []
    for a_name, a in heads.items():
        shape = (a.d, a.d)
        for b_name, b in heads.items():
            if blocks[b_name].layer <= blocks[a_name].layer:
                continue
            for kind, product, norm_b in (
                ("Q", _coo_matmul(a.ov, b.qk, shape), _norm(b.qk)),
                ("K", _coo_matmul(b.qk, _transpose(a.ov), shape), _norm(b.qk)),
                ("V", _coo_matmul(a.ov, b.ov, shape), _norm(b.ov)),
            ):
                denom = _norm(a.ov) * norm_b
                score = _norm(product) / denom if denom else 0.0
                if score > 1e-9:
                    out.append([kind, a_name, b_name, round(score, 6)])
    return out


def _circuit(m: Coo) -> dict[str, Any]:
    """A circuit as sparse entries in residual-dim indices, largest first (at most MAX_CIRCUIT_ENTRIES)."""
    r, c, v = m
    keep = np.abs(v) > TOL
    r, c, v = r[keep], c[keep], v[keep]
    order = np.lexsort((c, r, -np.abs(v)))[:MAX_CIRCUIT_ENTRIES]
    entries = [[int(r[i]), int(c[i]), round(float(v[i]), 5)] for i in order]
    return {"rows": sorted({int(x) for x in r}), "cols": sorted({int(x) for x in c}),
            "entries": entries, "total": int(len(v)), "truncated": len(v) > MAX_CIRCUIT_ENTRIES}


def _sparse_residual(residual: np.ndarray) -> list[list[Any]]:
    d, p = np.nonzero(np.abs(residual.T) > TOL)  # residual is [seq, d_model]
    return [[int(di), int(pi), round(float(residual[pi, di]), 4)] for di, pi in zip(d, p)]


def report_data(view: ModelView, act: Activations) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data (deterministic for a given file and input)."""
    from raspc import progress

    rt = view.runtime
    heads = [b for b in view.blocks if b.kind == "head"]
    mlps = [b for b in view.blocks if b.kind == "mlp"]
    program = None
    if view.program is not None:
        dims_of = {name: dims for name, dims in view.groups}
        nodes = []
        for n in view.program["nodes"]:
            blocks = [{"name": b.name, "layer": b.layer, "kind": b.kind} for b in view.blocks if n["label"] in b.sops]
            dims = dims_of.get(n["label"], []) if n.get("kind") == "sop" else []
            embedded = n["op"] in ("tokens", "indices", "full", "constant") or (bool(dims) and not blocks)
            nodes.append({**n, "blocks": blocks, "dims": dims, "embedded": embedded})
        program = {"nodes": nodes, "output": view.program.get("output")}

    head_data = []
    circuits: dict[str, _HeadCircuits] = {}
    for b in progress.iterate(heads, "head circuits", detail=lambda b: b.name):
        w = circuits[b.name] = _HeadCircuits(view, b)
        pattern = act.patterns.get(b.name)
        head_data.append({
            "name": b.name, "layer": b.layer, "label": b.label, "sop": b.sop, "width": b.width, "scale": w.scale,
            "pattern": None if pattern is None else np.round(pattern.astype(np.float64), 4).tolist(),
            "qk": _circuit(w.qk), "ov": _circuit(w.ov),
        })
    circuit = view.circuit_graph()
    circuit["composition"] = composition_scores(view, circuits)

    boundaries = [{"name": b.name, "nz": _sparse_residual(act.residuals[b.name])} for b in view.boundaries]
    if not boundaries:
        boundaries = [{"name": "final", "nz": _sparse_residual(act.residuals["final"])}]

    summary = [
        ["vocab", ", ".join(map(_token_text, rt.input_vocab[:24])) + (" …" if len(rt.input_vocab) > 24 else "")],
        ["max_seq_len", str(rt.max_seq_len)], ["causal", str(rt.causal).lower()],
        ["output", f"{rt.output_encoding} ({len(rt.output_values)} values)" if rt.output_encoding == "categorical"
         else "numerical"],
        ["layers", str(len(view.layers))], ["heads", str(len(heads))], ["MLPs", str(len(mlps))],
        ["d_model", f"{len(view.labels):,}"], ["params", f"{view.params:,}"],
    ]
    return {
        "title": view.title,
        "summary": summary,
        "notes": list(view.notes),
        "labels": list(view.labels),
        "groups": [{"name": name, "dims": dims} for name, dims in view.groups],
        "program": program,
        "blocks": [{"name": b.name, "layer": b.layer, "kind": b.kind, "label": b.label, "sop": b.sop,
                    "width": b.width, "params": b.params, "reads": {k: list(v) for k, v in b.reads.items()},
                    "writes": list(b.writes)} for b in view.blocks],
        "d_model": len(view.labels),
        "params": view.params,
        "input": {"tokens": [_token_text(t) for t in act.tokens], "decoded": [_token_text(v) for v in act.decoded]},
        "boundaries": boundaries,
        "heads": head_data,
        "circuit": circuit,
    }


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — raspc report</title>
<style>
{css}
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <div class="chips" id="chips"></div>
  <div id="notes"></div>
</header>
<nav><a href="#sec-io">input</a><a href="#sec-program">program</a><a href="#sec-layers">layers</a><a href="#sec-residual">residual stream</a><a href="#sec-heads">heads</a><a href="#sec-circuit">circuit graph</a></nav>
<main>
<section id="sec-io"><h2>Input and output</h2><p class="hint">The input the model ran on (BOS first) and what it answered at each position.</p><div id="io"></div></section>
<section id="sec-program"><h2>Program</h2>
<p class="hint">Every s-op and selector of the RASP program, top to bottom by dependency depth. Fill: the layer whose block computes it; border: attention head or MLP. Click a node for its op, value set, source line and place in the residual stream.</p>
<div class="legend" id="program-legend"></div>
<div class="graph-wrap"><div class="graph-box" id="program-graph"></div><div class="details" id="node-details"><p class="hint">Click a node of the graph.</p></div></div>
</section>
<section id="sec-layers"><h2>Layers</h2><p class="hint">Each block, the s-op it computes, the s-ops it reads (through Q, K, V or the MLP input) and writes.</p><table class="layers" id="layers-table"></table></section>
<section id="sec-residual"><h2>Residual stream</h2>
<p class="hint">Rows: named directions grouped by s-op (click a group to open it; a closed group shows the s-op's value at each position: its active direction). Columns: positions and their tokens. One tab per layer boundary. Groups that are zero everywhere on this input are hidden in large models.</p>
<div class="tabs" id="boundary-tabs"></div><label class="hint"><input type="checkbox" id="hide-zero"> hide directions that are zero on this input</label><div class="scroll" id="residual-heatmap" style="max-height:640px"></div></section>
<section id="sec-heads"><h2>Attention heads</h2><p class="hint">Each head's attention pattern on this input, and its QK circuit (scale · W_Q W_Kᵀ) and OV circuit (W_V W_O) over the named directions it reads and writes.</p><div class="head-panels" id="head-panels"></div></section>
<section id="sec-circuit"><h2>Circuit graph</h2><p class="hint">The ground-truth circuit graph: blocks in layer order; an edge runs from every block (or embedded s-op) that writes a direction to each later block that reads it, coloured by where it is read. Below: composition scores between heads (A Mathematical Framework for Transformer Circuits).</p>
<div class="legend" id="circuit-legend"></div><div class="graph-box" id="circuit-graph"></div><table class="layers" id="composition-table" style="margin-top:10px"></table></section>
</main>
<script type="application/json" id="raspc-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""


def build_report(view: ModelView, tokens: Sequence[Any] | None = None) -> str:
    """The report page for `view` run on `tokens` (BOS first; default: `view.example_input()`)."""
    seq = list(tokens) if tokens is not None else view.example_input()
    act = view.run(seq)
    data = json.dumps(report_data(view, act), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = data.replace("</", "<\\/")  # a token like "</script>" must not end the data block
    return _PAGE.format(title=html.escape(view.title), css=_asset("report.css"), js=_asset("report.js"), data=data)


def write_report(view: ModelView, path: str, tokens: Sequence[Any] | None = None) -> str:
    """Writes the report to `path`; returns the path."""
    page = build_report(view, tokens)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


__all__ = ["build_report", "write_report", "report_data", "composition_scores"]
