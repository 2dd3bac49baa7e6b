"""Attention constructions: pure functions from selector tables and labelled spaces to a `HeadBlock`.

A head scores `scale * (number of true leaf predicates)`: each leaf of a conjunction adds its
table as query direction -> key direction weights. A key or query that can be None takes part
through an affine indicator, `one - sum of its directions` (1 exactly where it is None), so the
table's None row and column need no extra direction. BOS (position 0) is scored with the `one`
query direction against the `bos` key direction:

- select + aggregate: BOS half a unit below a full match, so an empty selection attends to BOS,
  whose value carries the default (`bos_value`);
- selector width: BOS level with a match, so BOS receives 1/(w+1) of the attention.

What key and value spaces hold at BOS (earlier heads' `bos_value`s) is compensated, so BOS's
score and value are exactly the ones asked for. The sharpness (`scale`) puts keys scored half a
unit lower 104 nats down, where float32's exp is exactly 0: no weight leaks to them at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from raspc.constructions.sparse import Sparse


# float32's exp underflows to exactly 0 below -103.97: a key scored this far below the best gets
# no weight at all, in numpy and in onnxruntime alike.
FLOAT32_EXP_UNDERFLOW = 104.0


def head_scale(max_seq_len: int, leak: float) -> float:
    """Inverse temperature: keys half a unit below the best get exactly 0 weight in float32 (so a
    default of 1e9 never leaks into a selected 1, and a one-hot stays one-hot), and in any case
    less than `leak` in total."""
    return max(2.0 * FLOAT32_EXP_UNDERFLOW, 2.0 * (math.log(max_seq_len + 1) + math.log(1.0 / leak)))


@dataclass(frozen=True)
class Leaf:
    """One select of a conjunction: its table over query rows x key columns (1 selects; 0 and -1,
    outside the domain, do not) and the directions of its query and key spaces. `q_none` / `k_none`:
    the first row / column is None (no direction of its own)."""

    q_dirs: Sequence[str]
    k_dirs: Sequence[str]
    table: np.ndarray
    q_none: bool = False
    k_none: bool = False


@dataclass
class HeadBlock:
    """One head over labelled directions: score = scale * x_q w_qk x_k, out = softmax . x_v w_ov;
    it writes `bos_value` at BOS."""

    label: str
    w_qk: Sparse
    w_ov: Sparse
    scale: float
    bos_value: dict[str, float]

    @property
    def query_dirs(self) -> set[str]:
        return self.w_qk.used_rows()

    @property
    def key_dirs(self) -> set[str]:
        return self.w_qk.used_cols()

    @property
    def value_dirs(self) -> set[str]:
        return self.w_ov.used_rows()


def _indicator(dirs: Sequence[str], has_none: bool) -> tuple[np.ndarray, list[str]]:
    """Rows: the table's values (None first when present) as affine functions of the directions
    (+ `one` when None is present): value i -> x_i, None -> one - sum x."""
    n = len(dirs)
    if not has_none:
        return np.eye(n), list(dirs)
    a = np.zeros((n + 1, n + 1))
    a[0, :n] = -1.0
    a[0, n] = 1.0
    a[1:, :n] = np.eye(n)
    return a, [*dirs, "one"]


def conjunction_scores(leaves: Sequence[Leaf]) -> Sparse:
    """w_qk of a conjunction, in units of one true leaf predicate (a full match scores len(leaves))."""
    parts = []
    for leaf in leaves:
        t = np.asarray(leaf.table) > 0
        if leaf.q_none or leaf.k_none:
            a, q_labels = _indicator(leaf.q_dirs, leaf.q_none)
            b, k_labels = _indicator(leaf.k_dirs, leaf.k_none)
            w = a.T @ t.astype(np.float64) @ b
            qi, ki = np.nonzero(w)
            part = Sparse.of(q_labels, k_labels, qi, ki, w[qi, ki])
        else:
            qi, ki = np.nonzero(t)
            part = Sparse.of(leaf.q_dirs, leaf.k_dirs, qi, ki, np.ones(qi.size))
        parts.append(part)
    if len(parts) == 1:
        return parts[0]  # one leaf: its entries are distinct already
    total = parts[0]
    for part in parts[1:]:
        total = total.plus(part)
    return total.coalesce()


def selection_head(
    label: str,
    scores: Sparse,
    n_conjuncts: int,
    bos_below_match: float,
    key_bos: Mapping[str, float],
    w_ov: Sparse | Mapping[tuple[str, str], float],
    value_bos: Mapping[str, float],
    bos_value: Mapping[str, float],
    scale: float,
) -> HeadBlock:
    """A head attending where the conjunction `scores` is fully matched, and to BOS (scored
    `bos_below_match` units below a full match) otherwise; it writes exactly `bos_value` at BOS.
    `key_bos` / `value_bos`: what the key / value directions hold at BOS."""
    # Keys at BOS may hold an earlier head's default: cancel what they add to BOS's score.
    extra = scores.row_sums(key_bos)
    fixes = [(qd, "bos", -e) for qd, e in sorted(extra.items()) if e]
    fixes.append(("one", "bos", n_conjuncts - bos_below_match))
    w_qk = scores.add(fixes)
    # The value at BOS must be exactly `bos_value`: cancel what the value directions hold there.
    ov = w_ov if isinstance(w_ov, Sparse) else Sparse.from_dict(w_ov)
    out_at_bos = ov.col_sums(value_bos)
    fixes_ov = []
    for od in [*out_at_bos, *[d for d in bos_value if d not in out_at_bos]]:
        fix = bos_value.get(od, 0.0) - out_at_bos.get(od, 0.0)
        if fix:
            fixes_ov.append(("bos", od, fix))
    ov = ov.add(fixes_ov)
    return HeadBlock(label, w_qk, ov, scale, {k: v for k, v in bos_value.items() if v})


__all__ = ["head_scale", "FLOAT32_EXP_UNDERFLOW", "Leaf", "HeadBlock", "conjunction_scores", "selection_head"]


def erasing_head_weights(erased: Sequence[str], positions: Sequence[Sequence[str]]
                         ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float], float]:
    """(w_qk, w_ov, scale) of a head that attends to its own position only and writes minus the
    `erased` directions there. `positions`: the labels of one-hot `indices` (score 1 at the own
    position, 0 elsewhere), or of the numbers (p, p^2, one) (score 2pq - q^2 = p^2 - (p - q)^2,
    at least one unit below the own position's). The scale puts every other key at exactly 0
    weight in float32; BOS, whose position is 0, scores 0 against a query at p >= 1."""
    if len(positions) == 1:
        w_qk = {(label, label): 1.0 for label in positions[0]}
    else:
        (p,), (p_sq,), (one,) = positions
        w_qk = {(p, p): 2.0, (one, p_sq): -1.0}
    w_ov = {(label, label): -1.0 for label in erased}
    return w_qk, w_ov, 2.0 * FLOAT32_EXP_UNDERFLOW
