"""How well do composition scores recover the compiler's ground-truth circuit, over the library?

For every library program (at its example vocabulary and length, plus make_induction), compiles
the model, reads its ground-truth circuit graph and every composition score (direct, through one
MLP, through a chain of MLPs; raspc.analysis.composition), and reports, at several thresholds,
precision and recall of "a score at or above the threshold is a composition" against the graph.

    python benchmarks/circuits_precision.py          # writes benchmarks/results/circuits_precision.{md,json}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raspc import compile_rasp_to_model, lib  # noqa: E402
from raspc.analysis.circuit_graph import circuit_graph  # noqa: E402
from raspc.analysis.composition import composition_scores, precision_recall  # noqa: E402
from raspc.analysis.weights import ModelWeights  # noqa: E402

THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.3)
PATHS = ("direct", "mlp", "mlp_chain")
RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str) -> dict:
    vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
    model = compile_rasp_to_model(lib.LIBRARY[name](max_seq_len=max_seq_len), vocab, max_seq_len)
    weights = ModelWeights.from_module(model.module)
    graph = circuit_graph(weights)
    scores = composition_scores(weights, graph)
    true = [s for s in scores if s.ground_truth]
    return {
        "program": name, "vocab": len(vocab), "max_seq_len": max_seq_len,
        "heads": len(graph.nodes_of("head")), "mlps": len(graph.nodes_of("mlp")), "edges": len(graph.edges),
        "ground_truth": {p: sum(s.path == p for s in true) for p in PATHS},
        "candidates": len(scores),
        "min_true_score": min((s.score for s in true), default=None),
        "max_false_score": max((s.score for s in scores if not s.ground_truth), default=None),
        "at": {str(t): precision_recall(scores, t).to_json() for t in THRESHOLDS},
    }


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| program | heads | MLP blocks | graph edges | true compositions (direct / 1 MLP / MLP chain) "
            "| lowest true score | " + " | ".join(f"P / R at {t}" for t in THRESHOLDS) + " |")
    lines = [head, "|" + "---|" * (6 + len(THRESHOLDS))]
    for r in rows:
        gt = r["ground_truth"]
        cells = [f"{fmt(r['at'][str(t)]['precision'])} / {fmt(r['at'][str(t)]['recall'])}" for t in THRESHOLDS]
        lines.append(f"| {r['program'].removeprefix('make_')} | {r['heads']} | {r['mlps']} | {r['edges']} | "
                     f"{gt['direct']} / {gt['mlp']} / {gt['mlp_chain']} | {fmt(r['min_true_score'])} | "
                     + " | ".join(cells) + " |")
    total = {str(t): {k: sum(r["at"][str(t)][k] for r in rows) for k in
                      ("true_positives", "false_positives", "false_negatives")} for t in THRESHOLDS}
    cells = []
    for t in THRESHOLDS:
        c = total[str(t)]
        found, real = c["true_positives"] + c["false_positives"], c["true_positives"] + c["false_negatives"]
        cells.append(f"{fmt(c['true_positives'] / found if found else None)} / "
                     f"{fmt(c['true_positives'] / real if real else None)}")
    gts = [sum(r["ground_truth"][p] for r in rows) for p in PATHS]
    lines.append(f"| **all** | {sum(r['heads'] for r in rows)} | {sum(r['mlps'] for r in rows)} | "
                 f"{sum(r['edges'] for r in rows)} | {' / '.join(map(str, gts))} | "
                 f"{fmt(min((r['min_true_score'] for r in rows if r['min_true_score'] is not None), default=None))} | "
                 + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    rows = [measure(name) for name in lib.LIBRARY]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "circuits_precision.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = (
        "# Composition scores against the ground-truth circuit graph\n\n"
        "`python benchmarks/circuits_precision.py`: every library program at its example vocabulary and "
        "length. P / R: precision / recall of \"score >= threshold\" over every (earlier head, later head, "
        "Q/K/V) pair, directly, through each MLP block between them and through the best chain of MLPs, "
        "against the circuit graph (– where there is nothing to find or nothing found).\n\n"
        + table(rows) + "\n"
    )
    (RESULTS / "circuits_precision.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
