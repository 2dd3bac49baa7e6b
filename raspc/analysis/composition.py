"""Composition scores on direct paths and on paths through one MLP, scored against the circuit graph.

A Mathematical Framework for Transformer Circuits measures how much a later head reads what an
earlier one writes with the composition score `||W_A W_B||_F / (||W_A||_F ||W_B||_F)`, where W_A
is the earlier head's OV circuit and W_B the later head's QK circuit seen from the query side
(Q-composition), from the key side (K), or its OV circuit (V). In a compiled model almost every
head-to-head path goes through an MLP (a lookup table between two heads), so a direct score sees
no composition at all; here a path through one MLP M scores the product of the two steps, both
read off M's input and output directions:

    score(A -> M -> B) = c(OV_A, W_in_M) * c(W_out_M, R_B)     c(L, R) = ||L R|| / (||L|| ||R||)

with R_B = QK_B (Q), QK_B^T (K) or OV_B (V). Each entry says whether the composition is in the
ground truth: the circuit graph has the edge A -> B through that side (direct), or A -> M into
the MLP's input and M -> B through that side (mlp). `precision_recall` then scores the
"score above a threshold" view against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raspc.analysis.circuit_graph import CircuitGraph, circuit_graph, mlp_nodes
from raspc.analysis.weights import ModelWeights

DEFAULT_THRESHOLD = 0.05


def _score(left: np.ndarray, right: np.ndarray) -> float:
    """||left @ right||_F / (||left||_F ||right||_F), 0 when either side is zero."""
    denom = float(np.linalg.norm(left)) * float(np.linalg.norm(right))
    if denom == 0.0:
        return 0.0
    return float(np.linalg.norm(left.astype(np.float64) @ right.astype(np.float64))) / denom


@dataclass(frozen=True)
class Composition:
    source: str  # the earlier head
    target: str  # the later head
    kind: str  # Q | K | V
    path: str  # direct | mlp
    score: float
    ground_truth: bool
    mlp: str | None = None  # the MLP node a path goes through

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source, "to": self.target, "kind": self.kind, "path": self.path}
        if self.mlp is not None:
            out["mlp"] = self.mlp
        out["score"] = round(self.score, 6)
        out["ground_truth"] = self.ground_truth
        return out


def composition_scores(weights: ModelWeights, graph: CircuitGraph | None = None) -> list[Composition]:
    """Every (earlier head, later head, Q/K/V) pair, directly and through each MLP between them."""
    graph = graph if graph is not None else circuit_graph(weights)
    heads = [(h, 2 * h.layer + 1) for h in weights.heads]
    mlps = [(node, w_in, w_out) for node, w_in, w_out in mlp_nodes(weights) if node.units[1] > node.units[0]]
    # the reading side of each later head, per kind; the earlier head's OV feeds it from the left
    readers = {h.name: {"Q": h.qk, "K": h.qk.T, "V": h.ov} for h, _ in heads}
    ovs = {h.name: h.ov for h, _ in heads}
    into_mlp = {(a.name, node.name): _score(ovs[a.name], w_in) for a, _ in heads for node, w_in, _ in mlps}
    out: list[Composition] = []
    for a, order_a in heads:
        for b, order_b in heads:
            if order_b <= order_a:
                continue
            for kind in ("Q", "K", "V"):
                out.append(Composition(a.name, b.name, kind, "direct", _score(ovs[a.name], readers[b.name][kind]),
                                       graph.has_edge(a.name, b.name, kind)))
            for node, _, w_out in mlps:
                if not order_a < node.order < order_b:
                    continue
                first = into_mlp[(a.name, node.name)]
                for kind in ("Q", "K", "V"):
                    second = _score(w_out, readers[b.name][kind]) if first else 0.0
                    truth = graph.has_edge(a.name, node.name, "mlp_in") and graph.has_edge(node.name, b.name, kind)
                    out.append(Composition(a.name, b.name, kind, "mlp", first * second, truth, node.name))
    out += _chain_scores(heads, mlps, readers, ovs, into_mlp, graph)
    return out


def _chain_scores(heads: list, mlps: list, readers: dict, ovs: dict, into_mlp: dict,
                  graph: CircuitGraph) -> list[Composition]:
    """Paths through two or more MLPs in a row (a lookup feeding a lookup): per (A, B, kind) the
    best chain's score, the product of its steps; in the ground truth when the graph has such a
    chain of edges. The best chain's MLPs are named, joined by `>`."""
    steps = {(m.name, n.name): _score(w_out, w_in) for m, _, w_out in mlps for n, w_in, _ in mlps
             if m.order < n.order}
    out: list[Composition] = []
    for a, order_a in heads:
        # best[n] = (score, chain) of the best path from A into n's input through >= 1 MLP before it
        best: dict[str, tuple[float, tuple[str, ...]]] = {}
        truth: dict[str, bool] = {}  # graph has a chain A -> ... -> n of >= 2 MLPs ending at n
        reach: dict[str, bool] = {}  # graph has a chain A -> ... -> n of >= 1 MLPs ending at n
        for n, _, _ in sorted(mlps, key=lambda t: t[0].order):
            if n.order <= order_a:
                continue
            reach[n.name] = graph.has_edge(a.name, n.name, "mlp_in")
            top: tuple[float, tuple[str, ...]] = (0.0, ())
            chained = False
            for m, _, _ in mlps:
                if not order_a < m.order < n.order:
                    continue
                start = max(into_mlp[(a.name, m.name)], best.get(m.name, (0.0, ()))[0])
                chain = (m.name,) if into_mlp[(a.name, m.name)] >= best.get(m.name, (0.0, ()))[0] \
                    else best[m.name][1]
                s = start * steps[(m.name, n.name)]
                if s > top[0]:
                    top = (s, chain + (n.name,))
                if graph.has_edge(m.name, n.name, "mlp_in") and reach.get(m.name, False):
                    chained = True
            best[n.name] = top
            truth[n.name] = chained
            reach[n.name] = reach[n.name] or chained
        for b, order_b in heads:
            if order_b <= order_a:
                continue
            for kind in ("Q", "K", "V"):
                top = (0.0, ())
                real = False
                for n, _, w_out in mlps:
                    if not order_a < n.order < order_b or n.name not in best:
                        continue
                    s = best[n.name][0] * _score(w_out, readers[b.name][kind]) if best[n.name][0] else 0.0
                    if s > top[0]:
                        top = (s, best[n.name][1])
                    real = real or (truth[n.name] and graph.has_edge(n.name, b.name, kind))
                if top[0] > 0 or real:
                    out.append(Composition(a.name, b.name, kind, "mlp_chain", top[0], real, ">".join(top[1]) or None))
    return out


@dataclass(frozen=True)
class PrecisionRecall:
    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else None

    @property
    def recall(self) -> float | None:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else None

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "true_positives": self.true_positives,
                "false_positives": self.false_positives, "false_negatives": self.false_negatives,
                "precision": self.precision, "recall": self.recall}


def precision_recall(scores: list[Composition], threshold: float = DEFAULT_THRESHOLD,
                     path: str | None = None) -> PrecisionRecall:
    """The view "a score at or above `threshold` is a composition" against the ground truth
    (entries of one `path` only, when given)."""
    chosen = [s for s in scores if path is None or s.path == path]
    found = np.array([s.score >= threshold for s in chosen], bool)
    truth = np.array([s.ground_truth for s in chosen], bool)
    return PrecisionRecall(threshold, int((found & truth).sum()), int((found & ~truth).sum()),
                           int((~found & truth).sum()))


def analysis_json(weights: ModelWeights, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """What `raspc circuits --json` prints: the graph, every composition score, precision and recall."""
    graph = circuit_graph(weights)
    scores = composition_scores(weights, graph)
    return {
        **graph.to_json(),
        "composition": [s.to_json() for s in scores],
        "precision_recall": {
            "all": precision_recall(scores, threshold).to_json(),
            "direct": precision_recall(scores, threshold, "direct").to_json(),
            "mlp": precision_recall(scores, threshold, "mlp").to_json(),
            "mlp_chain": precision_recall(scores, threshold, "mlp_chain").to_json(),
        },
    }


__all__ = ["Composition", "composition_scores", "PrecisionRecall", "precision_recall", "analysis_json",
           "DEFAULT_THRESHOLD"]
