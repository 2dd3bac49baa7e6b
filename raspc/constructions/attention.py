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
score and value are exactly the ones asked for. The sharpness (`scale`) is per head, sized so
that what leaks to keys scored half a unit lower stays below `leak` (and, for a numerical
aggregate, below float32 rounding of the values it averages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from raspc.constructions.mlp import Weights


def head_scale(max_seq_len: int, leak: float) -> float:
    """Inverse temperature so that keys half a unit below the best get < `leak` weight in total."""
    return 2.0 * (math.log(max_seq_len + 1) + math.log(1.0 / leak))


def value_leak(leak: float, magnitude: float) -> float:
    """The leak a numerical aggregate can afford: below float32 rounding of values up to `magnitude`
    (a default of 1e9 must not move a selected value of 1)."""
    return min(leak, 2.0**-26 / max(1.0, magnitude))


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
    w_qk: Weights
    w_ov: Weights
    scale: float
    bos_value: dict[str, float]

    @property
    def query_dirs(self) -> set[str]:
        return {q for q, _ in self.w_qk}

    @property
    def key_dirs(self) -> set[str]:
        return {k for _, k in self.w_qk}

    @property
    def value_dirs(self) -> set[str]:
        return {v for v, _ in self.w_ov}


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


def conjunction_scores(leaves: Sequence[Leaf]) -> Weights:
    """w_qk of a conjunction, in units of one true leaf predicate (a full match scores len(leaves))."""
    w_qk: Weights = {}
    for leaf in leaves:
        t = (np.asarray(leaf.table) > 0).astype(np.float64)
        if leaf.q_none or leaf.k_none:
            a, q_labels = _indicator(leaf.q_dirs, leaf.q_none)
            b, k_labels = _indicator(leaf.k_dirs, leaf.k_none)
            w = a.T @ t @ b
        else:
            w, q_labels, k_labels = t, list(leaf.q_dirs), list(leaf.k_dirs)
        for qi, ki in zip(*np.nonzero(w)):
            key = (q_labels[qi], k_labels[ki])
            w_qk[key] = w_qk.get(key, 0.0) + float(w[qi, ki])
    return {k: v for k, v in w_qk.items() if v != 0.0}


def selection_head(
    label: str,
    scores: Weights,
    n_conjuncts: int,
    bos_below_match: float,
    key_bos: Mapping[str, float],
    w_ov: Weights,
    value_bos: Mapping[str, float],
    bos_value: Mapping[str, float],
    scale: float,
) -> HeadBlock:
    """A head attending where the conjunction `scores` is fully matched, and to BOS (scored
    `bos_below_match` units below a full match) otherwise; it writes exactly `bos_value` at BOS.
    `key_bos` / `value_bos`: what the key / value directions hold at BOS."""
    w_qk = dict(scores)
    # Keys at BOS may hold an earlier head's default: cancel what they add to BOS's score.
    extra: dict[str, float] = {}
    for (qd, kd), w in w_qk.items():
        if kd in key_bos:
            extra[qd] = extra.get(qd, 0.0) + w * key_bos[kd]
    for qd, e in sorted(extra.items()):
        if e:
            w_qk[(qd, "bos")] = w_qk.get((qd, "bos"), 0.0) - e
    w_qk[("one", "bos")] = w_qk.get(("one", "bos"), 0.0) + (n_conjuncts - bos_below_match)
    # The value at BOS must be exactly `bos_value`: cancel what the value directions hold there.
    w_ov = dict(w_ov)
    out_at_bos: dict[str, float] = {}
    for (vd, od), w in w_ov.items():
        out_at_bos[od] = out_at_bos.get(od, 0.0) + w * value_bos.get(vd, 0.0)
    for od in sorted(set(out_at_bos) | set(bos_value), key=list({**out_at_bos, **bos_value}).index):
        fix = bos_value.get(od, 0.0) - out_at_bos.get(od, 0.0)
        if fix:
            w_ov[("bos", od)] = w_ov.get(("bos", od), 0.0) + fix
    return HeadBlock(label, {k: v for k, v in w_qk.items() if v != 0.0}, w_ov, scale,
                     {k: v for k, v in bos_value.items() if v})


__all__ = ["head_scale", "value_leak", "Leaf", "HeadBlock", "conjunction_scores", "selection_head"]
