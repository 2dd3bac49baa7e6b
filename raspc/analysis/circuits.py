"""Circuit analysis in the labelled bases (A Mathematical Framework for Transformer Circuits).

Every head is read as two residual-to-residual bilinear maps over the *named* directions:
the QK circuit `scale * W_Q W_K^T` (which query directions attend to which key directions) and
the OV circuit `W_V W_O` (what attending to a key direction writes). Heads in later layers
compose with earlier ones through the subspaces they write and read; composition scores measure
it (Q-, K- and V-composition), and V-composition yields virtual heads.

Works on a tensor-level module (CompiledModel.module) or on an exported ONNX file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelledMatrix:
    """A matrix whose rows and columns are residual directions (only non-zero ones are kept)."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    values: np.ndarray

    @staticmethod
    def from_dense(m: np.ndarray, labels: tuple[str, ...], tol: float = 1e-6) -> "LabelledMatrix":
        keep_r = np.nonzero(np.abs(m).max(axis=1) > tol)[0]
        keep_c = np.nonzero(np.abs(m).max(axis=0) > tol)[0]
        return LabelledMatrix(
            tuple(labels[i] for i in keep_r), tuple(labels[j] for j in keep_c), m[np.ix_(keep_r, keep_c)]
        )

    def entries(self, tol: float = 1e-6) -> list[tuple[str, str, float]]:
        """Non-zero entries as (row, column, value), largest magnitude first."""
        r, c = np.nonzero(np.abs(self.values) > tol)
        out = [(self.rows[i], self.cols[j], float(self.values[i, j])) for i, j in zip(r, c)]
        return sorted(out, key=lambda e: (-abs(e[2]), e[0], e[1]))

    def to_text(self, limit: int = 40) -> str:
        lines = [f"  {r:>24s} -> {c:<24s} {v:+.4g}" for r, c, v in self.entries()[:limit]]
        more = len(self.entries()) - limit
        return "\n".join(lines + ([f"  ... {more} more"] if more > 0 else []))


@dataclass(frozen=True)
class Head:
    """One attention head's weights, as exported (`W_Q`, `W_K`, `W_V`, `W_O` and the softmax scale)."""

    layer: int
    label: str
    w_q: np.ndarray
    w_k: np.ndarray
    w_v: np.ndarray
    w_o: np.ndarray
    scale: float

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.label}"

    @property
    def qk(self) -> np.ndarray:
        """d x d: score(query x, key y) = x @ qk @ y."""
        return self.scale * self.w_q @ self.w_k.T

    @property
    def ov(self) -> np.ndarray:
        """d x d: a key residual y contributes y @ ov to the output."""
        return self.w_v @ self.w_o


@dataclass(frozen=True)
class Circuits:
    """The heads of a model and the labels of its residual directions."""

    labels: tuple[str, ...]
    heads: tuple[Head, ...]

    @staticmethod
    def from_weights(weights: Any) -> "Circuits":
        """From `raspc.analysis.weights.ModelWeights` (labelled basis, heads in block order)."""
        return Circuits(weights.labels, tuple(Head(h.layer, h.label, h.w_q, h.w_k, h.w_v, h.w_o, h.scale)
                                              for h in weights.heads))

    @staticmethod
    def from_module(module: Any) -> "Circuits":
        """From a tensor-level module: its `tensor.model`'s residual labels and heads, in block order."""
        from raspc.analysis.weights import ModelWeights

        return Circuits.from_weights(ModelWeights.from_module(module))

    @staticmethod
    def from_onnx(path_or_model: Any) -> "Circuits":
        """From an exported file alone: initializers `L{layer}.{label}.W_Q` ... and the metadata."""
        from raspc.analysis.weights import ModelWeights

        return Circuits.from_weights(ModelWeights.from_onnx(path_or_model))

    def head(self, name: str) -> Head:
        for h in self.heads:
            if name in (h.name, h.label):
                return h
        raise KeyError(f"no head '{name}'; heads: {', '.join(h.name for h in self.heads)}")

    def qk_circuit(self, name: str) -> LabelledMatrix:
        return LabelledMatrix.from_dense(self.head(name).qk, self.labels)

    def ov_circuit(self, name: str) -> LabelledMatrix:
        return LabelledMatrix.from_dense(self.head(name).ov, self.labels)

    def composition_scores(self) -> list[tuple[str, str, str, float]]:
        """(kind, earlier head, later head, score) for Q-, K- and V-composition, non-zero scores only.

        Score = ||M_later . M_earlier|| / (||M_later|| ||M_earlier||) with the Frobenius norm, where
        the earlier head's OV output feeds the later head's query (Q), key (K) or value (V) side.
        """
        from raspc import progress

        out = []
        for a in progress.iterate(self.heads, "composition scores", detail=lambda h: h.name):
            for b in self.heads:
                if b.layer <= a.layer:
                    continue
                ov_a, qk_b, ov_b = a.ov, b.qk, b.ov
                base = np.linalg.norm(ov_a)
                for kind, prod, norm_b in (
                    ("Q", ov_a @ qk_b, np.linalg.norm(qk_b)),
                    ("K", qk_b @ ov_a.T, np.linalg.norm(qk_b)),
                    ("V", ov_a @ ov_b, np.linalg.norm(ov_b)),
                ):
                    denom = base * norm_b
                    score = float(np.linalg.norm(prod) / denom) if denom else 0.0
                    if score > 1e-9:
                        out.append((kind, a.name, b.name, score))
        return out

    def virtual_head_ov(self, earlier: str, later: str) -> LabelledMatrix:
        """The OV circuit of the virtual head formed by V-composition of two heads."""
        return LabelledMatrix.from_dense(self.head(earlier).ov @ self.head(later).ov, self.labels)

    def report(self) -> str:
        parts = []
        for h in self.heads:
            parts.append(f"head {h.name} (scale {h.scale:.3g}, d_qk {h.w_q.shape[1]}, d_ov {h.w_v.shape[1]})")
            parts.append(" QK circuit (query direction -> key direction):")
            parts.append(self.qk_circuit(h.name).to_text())
            parts.append(" OV circuit (key direction -> written direction):")
            parts.append(self.ov_circuit(h.name).to_text())
        comp = self.composition_scores()
        if comp:
            parts.append("composition scores:")
            parts += [f"  {k}-composition {a} -> {b}: {s:.3f}" for k, a, b, s in comp]
        return "\n".join(parts)
