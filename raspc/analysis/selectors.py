"""Facts about selectors, read from the IR: their trees, and how many keys a query can select.

- `selector_leaves(sel)`: the selects under an and/or/not tree; `is_conjunction(sel)`: an and-tree
  of selects (one attention head scores it additively).
- `select_matrix(op, key_values, query_values)`: the predicate of a `rasp.select` as an int8
  matrix [query, key] (1 selects, 0 not, -1 outside the program's domain).
- `width_bounds(sel, max_seq_len)`: the fewest and most keys a query can select. These bound
  `selector_width` value sets and tell whether an aggregate can be empty (hits its default)
  or average two or more values (where the evaluator's mean turns ints into floats).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from xdsl.ir import SSAValue

from raspc.dialects import rasp as R
from raspc.utils.values import ValueIndex, identity, is_number

_NUMPY_COMPARISONS = {
    R.Comparison.EQ: np.equal, R.Comparison.NEQ: np.not_equal, R.Comparison.LT: np.less,
    R.Comparison.LEQ: np.less_equal, R.Comparison.GT: np.greater, R.Comparison.GEQ: np.greater_equal,
}

_PY_COMPARISONS = {
    R.Comparison.EQ: lambda k, q: k == q, R.Comparison.NEQ: lambda k, q: k != q,
    R.Comparison.LT: lambda k, q: k < q, R.Comparison.LEQ: lambda k, q: k <= q,
    R.Comparison.GT: lambda k, q: k > q, R.Comparison.GEQ: lambda k, q: k >= q,
    R.Comparison.TRUE: lambda k, q: True, R.Comparison.FALSE: lambda k, q: False,
}


def comparison_matrix(cmp: R.Comparison, keys: Sequence[Any], queries: Sequence[Any]) -> np.ndarray:
    """int8 [query, key] for a Tracr comparison; a None key or query is outside the domain (Tracr's
    comparisons raise on None), and so is a pair the comparison cannot order (e.g. 1 < "a")."""
    nq, nk = len(queries), len(keys)
    if cmp is R.Comparison.TRUE or cmp is R.Comparison.FALSE:
        m = np.full((nq, nk), 1 if cmp is R.Comparison.TRUE else 0, np.int8)
    elif all(is_number(v) for v in (*keys, *queries)) and all(abs(v) < 2**52 for v in (*keys, *queries)):
        k = np.array(keys, dtype=float)
        q = np.array(queries, dtype=float)
        m = _NUMPY_COMPARISONS[cmp](k[None, :], q[:, None]).astype(np.int8)
    else:
        fn = _PY_COMPARISONS[cmp]
        m = np.empty((nq, nk), np.int8)
        for i, qv in enumerate(queries):
            for j, kv in enumerate(keys):
                if kv is None or qv is None:
                    m[i, j] = -1
                    continue
                try:
                    m[i, j] = 1 if fn(kv, qv) else 0
                except TypeError:
                    m[i, j] = -1
    if nq and nk:
        none_k = np.array([v is None for v in keys])
        none_q = np.array([v is None for v in queries])
        m[:, none_k] = -1
        m[none_q, :] = -1
    return m


def select_matrix(op: R.SelectOp, keys: Sequence[Any], queries: Sequence[Any]) -> np.ndarray:
    """The predicate of `op` over the given key and query values: int8 [query, key]."""
    pred = op.predicate
    if isinstance(pred, R.ComparisonAttr):
        return comparison_matrix(pred.data, keys, queries)
    rel_k, rel_q = ValueIndex(pred.keys), ValueIndex(pred.queries)
    ki = np.array([rel_k.get(v) for v in keys], dtype=np.int64)
    qi = np.array([rel_q.get(v) for v in queries], dtype=np.int64)
    m = np.full((len(queries), len(keys)), -1, np.int8)
    if pred.matrix.size:
        sub = pred.matrix[np.maximum(qi, 0)[:, None], np.maximum(ki, 0)[None, :]]
        ok = (qi >= 0)[:, None] & (ki >= 0)[None, :]
        m = np.where(ok, sub, m).astype(np.int8)
    return m


def operand_matrix(op: R.SelectOp) -> np.ndarray:
    """The predicate over the operands' current value sets (None included where they can be None);
    read-only, and computed once per (predicate, key type, query type)."""
    key = (op.predicate, op.keys.type, op.queries.type)
    m = _OPERAND_MATRICES.get(key)
    if m is None:
        m = select_matrix(op, R.sop_type(op.keys).value_set or (), R.sop_type(op.queries).value_set or ())
        m.flags.writeable = False
        if len(_OPERAND_MATRICES) > 64:
            _OPERAND_MATRICES.clear()
        _OPERAND_MATRICES[key] = m
    return m


_OPERAND_MATRICES: dict[tuple, np.ndarray] = {}


def selector_leaves(value: SSAValue) -> list[R.SelectOp]:
    """The selects under a selector tree, left to right, each once."""
    op = value.owner
    if isinstance(op, R.SelectOp):
        return [op]
    if isinstance(op, R.BinarySelectorOp):
        out = selector_leaves(op.fst)
        out += [leaf for leaf in selector_leaves(op.snd) if leaf not in out]
        return out
    if isinstance(op, R.SelectorNotOp):
        return selector_leaves(op.inner)
    raise ValueError(f"not a selector tree: {getattr(op, 'name', op)}")


def is_conjunction(value: SSAValue) -> bool:
    """An and-tree whose leaves are selects (scored additively by one attention head)."""
    op = value.owner
    if isinstance(op, R.SelectOp):
        return True
    return isinstance(op, R.SelectorAndOp) and is_conjunction(op.fst) and is_conjunction(op.snd)


def position_injective(value: SSAValue) -> bool:
    """True when no two positions of an input can hold the same value (indices, and injective maps of them)."""
    op = value.owner
    if isinstance(op, R.IndicesOp):
        return True
    if isinstance(op, R.MapOp) and position_injective(op.inp):
        outs = [out for _, out in op.fn.data]
        return None not in outs and len({identity(o) for o in outs}) == len(outs)
    return False


# past this many (query, key) pairs, a numeric comparison's facts are computed from sorted values
# instead of its matrix (make_sort's keys at max_seq_len 128: 16,384^2 pairs, half a gigabyte)
MATRIX_PAIRS = 1 << 22


def _select_facts(op: R.SelectOp) -> tuple[bool | None, bool, bool, int]:
    """(own, any, all, most): whether every query selects its own position (True), none does
    (False) or it depends (None); whether some / every defined pair selects; the most keys one
    query value selects. Pairs outside the domain (None, unorderable) select nothing."""
    keys, queries = R.sop_type(op.keys).value_set, R.sop_type(op.queries).value_set
    pred = op.predicate
    if (keys is not None and queries is not None and isinstance(pred, R.ComparisonAttr)
            and len(keys) * len(queries) > MATRIX_PAIRS):
        k = [v for v in keys if v is not None]
        q = [v for v in queries if v is not None]
        if all(is_number(v) and abs(v) < 2**52 for v in (*k, *q)) and k and q:
            own, some, every, most = _comparison_facts(pred.data, np.sort(np.array(k, float)), np.array(q, float),
                                                       op.keys == op.queries)
            defined = len(k) == len(keys) and len(q) == len(queries)  # a None pair selects nothing
            return own, some, every and defined, most
    m = operand_matrix(op) if keys is not None and queries is not None else None
    own = None
    if op.keys == op.queries and m is not None:
        diag = np.diagonal(m)
        diag = diag[diag >= 0]  # an undefined pair never occurs on an input in the domain
        own = True if diag.size and diag.all() else False if not diag.any() else None
    if m is None:
        return own, True, False, 0
    sel = m > 0
    return own, bool(sel.any()), bool(sel.all()), int(sel.sum(axis=1).max()) if sel.size else 0


def _comparison_facts(cmp: R.Comparison, k: np.ndarray, q: np.ndarray, same: bool) -> tuple[bool | None, bool, bool, int]:
    """`_select_facts` of a comparison of numbers: `k` sorted keys, `q` queries (no None)."""
    n = len(k)
    below = np.searchsorted(k, q, "left")  # per query: keys < q
    upto = np.searchsorted(k, q, "right")  # keys <= q
    counts = {
        R.Comparison.LT: below, R.Comparison.LEQ: upto, R.Comparison.GT: n - upto, R.Comparison.GEQ: n - below,
        R.Comparison.EQ: upto - below, R.Comparison.NEQ: n - (upto - below),
    }[cmp]
    own = {R.Comparison.LT: False, R.Comparison.GT: False, R.Comparison.NEQ: False,
           R.Comparison.LEQ: True, R.Comparison.GEQ: True, R.Comparison.EQ: True}[cmp] if same else None
    return own, bool(counts.max() > 0), bool(counts.min() == n), int(counts.max())


def width_bounds(value: SSAValue, max_seq_len: int) -> tuple[int, int]:
    """(fewest, most) keys any query of the selector can select, on inputs of at most max_seq_len."""
    lo, hi, _ = _bounds(value, max_seq_len)
    return lo, hi


def _bounds(value: SSAValue, n: int) -> tuple[int, int, bool]:
    """(lo, hi, selects_own_position_always)."""
    op = value.owner
    if isinstance(op, R.SelectOp):
        if op.comparison is R.Comparison.TRUE:
            return 1, n, True
        if op.comparison is R.Comparison.FALSE:
            return 0, 0, False
        own, some, every, most = _select_facts(op)
        lo = 1 if own else 0
        hi = n - 1 if own is False else n
        keys, queries = R.sop_type(op.keys).value_set, R.sop_type(op.queries).value_set
        if keys is not None and queries is not None:
            if not some:
                return 0, 0, False
            if position_injective(op.keys):
                hi = min(hi, most)
            if every:
                lo = max(lo, 1)  # every key selected: the whole (non-empty) input
        return lo, max(hi, lo), bool(own)
    if isinstance(op, R.SelectorAndOp):
        la, ha, sa = _bounds(op.fst, n)
        lb, hb, sb = _bounds(op.snd, n)
        both = sa and sb
        return (1 if both else 0), min(ha, hb), both
    if isinstance(op, R.SelectorOrOp):
        la, ha, sa = _bounds(op.fst, n)
        lb, hb, sb = _bounds(op.snd, n)
        return max(la, lb), min(n, ha + hb), sa or sb
    if isinstance(op, R.SelectorNotOp):
        li, hi_, si = _bounds(op.inner, n)
        return (1 if hi_ == 0 else 0), (n - 1 if si else n), False
    return 0, n, False


__all__ = [
    "comparison_matrix", "select_matrix", "operand_matrix", "selector_leaves", "is_conjunction",
    "position_injective", "width_bounds",
]
