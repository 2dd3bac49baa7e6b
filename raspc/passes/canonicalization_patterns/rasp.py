"""Canonicalization patterns of the rasp dialect's selector ops.

`rasp.selector_not` and `rasp.selector_and/or` carry a canonicalization trait returning
`SELECTOR_PATTERNS`, so xDSL's `canonicalize` pass (and `combine-selectors`) run:

- `CancelDoubleNot`: `not(not s)` -> `s`.
- `FoldNotIntoSelect`: `not(select(k, q, P))` -> `select(k, q, not P)`: a comparison becomes its
  negation (`LT` -> `GEQ`), a relation swaps 1 and 0 and keeps `?` (where the predicate raises,
  its negation raises too).
- `MergeSelectsWithSharedOperands`: `and/or(select(k, q, A), select(k, q, B))` -> one select.
  Two comparisons whose combination is a comparison stay one (`LT or EQ` is `LEQ`); otherwise the
  result is a relation over the operands' value sets, `?` wherever either side is `?` (the
  evaluator computes both selectors, so either one raising makes the input outside the domain).

Each pattern replaces a selector tree by one select that an attention head reads directly. The
new select takes the replaced op's label, source and result name.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from raspc.analysis.selectors import comparison_matrix, select_matrix
from raspc.dialects import rasp as R

Cmp = R.Comparison

# Each comparison's answer on the five kinds of (key, query) pair a RASP value pair can be:
# key < query, key == query, key > query, not comparable (1 < "a" raises, 1 == "a" is false),
# and None on either side (Tracr's comparisons raise on None). 1: selects, 0: not, -1: raises.
COMPARISON_KINDS: dict[R.Comparison, tuple[int, ...]] = {
    Cmp.EQ: (0, 1, 0, 0, -1),
    Cmp.NEQ: (1, 0, 1, 1, -1),
    Cmp.LT: (1, 0, 0, -1, -1),
    Cmp.LEQ: (1, 1, 0, -1, -1),
    Cmp.GT: (0, 0, 1, -1, -1),
    Cmp.GEQ: (0, 1, 1, -1, -1),
    Cmp.TRUE: (1, 1, 1, 1, -1),
    Cmp.FALSE: (0, 0, 0, 0, -1),
}
_BY_KINDS = {kinds: cmp for cmp, kinds in COMPARISON_KINDS.items()}


def combine_matrices(a: np.ndarray, b: np.ndarray, is_and: bool) -> np.ndarray:
    """and/or of two int8 predicate matrices; -1 (raises) wherever either side raises."""
    both = (a > 0) & (b > 0) if is_and else (a > 0) | (b > 0)
    return np.where((a < 0) | (b < 0), -1, both.astype(np.int8)).astype(np.int8)


def negate_matrix(m: np.ndarray) -> np.ndarray:
    """not of an int8 predicate matrix: 1 and 0 swap, -1 stays."""
    return np.where(m < 0, -1, 1 - m).astype(np.int8)


def combine_comparisons(a: R.Comparison, b: R.Comparison, is_and: bool) -> R.Comparison | None:
    """The comparison equal to `a and/or b` on every pair of values, if there is one."""
    ka, kb = (np.array(COMPARISON_KINDS[c], np.int8) for c in (a, b))
    kinds = combine_matrices(ka, kb, is_and)
    return _BY_KINDS.get(tuple(int(x) for x in kinds))


def select_of(value: SSAValue) -> R.SelectOp | None:
    owner = value.owner
    return owner if isinstance(owner, R.SelectOp) else None


def replace_with_select(
    op: R.SelectorOp, keys: SSAValue, queries: SSAValue, predicate: R.Predicate, rewriter: PatternRewriter
) -> None:
    """Replaces `op` by a select over `keys` and `queries` that keeps op's label, source and name."""
    new = R.SelectOp(keys, queries, predicate, op.label_str, op.src_str)
    new.res.name_hint = op.res.name_hint
    rewriter.replace(op, new)


class CancelDoubleNot(RewritePattern):
    """not(not s) -> s."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        inner = op.inner.owner
        if isinstance(inner, R.SelectorNotOp):
            rewriter.replace(op, [], [inner.inner])


class FoldNotIntoSelect(RewritePattern):
    """not(select(k, q, P)) -> select(k, q, not P)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        sel = select_of(op.inner)
        if sel is None:
            return
        pred = sel.predicate
        negated: R.Predicate
        if isinstance(pred, R.ComparisonAttr):
            negated = R.ComparisonAttr(R.COMPARISON_NEGATION[pred.data])
        else:
            negated = R.RelationAttr.of(pred.keys, pred.queries, negate_matrix(pred.matrix))
        replace_with_select(op, sel.keys, sel.queries, negated, rewriter)


class MergeSelectsWithSharedOperands(RewritePattern):
    """and/or(select(k, q, A), select(k, q, B)) -> select(k, q, A and/or B)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.BinarySelectorOp, rewriter: PatternRewriter) -> None:
        a, b = select_of(op.fst), select_of(op.snd)
        if a is None or b is None or a.keys != b.keys or a.queries != b.queries:
            return
        is_and = isinstance(op, R.SelectorAndOp)
        if a.comparison is not None and b.comparison is not None:
            exact = combine_comparisons(a.comparison, b.comparison, is_and)
            if exact is not None:
                replace_with_select(op, a.keys, a.queries, R.ComparisonAttr(exact), rewriter)
                return
        keys, queries = R.sop_type(a.keys).value_set, R.sop_type(a.queries).value_set
        if keys is None or queries is None:
            return  # value sets not known (or not finite): no relation can list them
        m = combine_matrices(select_matrix(a, keys, queries), select_matrix(b, keys, queries), is_and)
        predicate: R.Predicate = R.RelationAttr.of(keys, queries, m)
        # On these value sets a comparison may still say it (LEQ and GEQ on numbers is EQ).
        for cmp in COMPARISON_KINDS:
            if np.array_equal(comparison_matrix(cmp, keys, queries), m):
                predicate = R.ComparisonAttr(cmp)
                break
        replace_with_select(op, a.keys, a.queries, predicate, rewriter)


SELECTOR_PATTERNS: tuple[RewritePattern, ...] = (
    CancelDoubleNot(), FoldNotIntoSelect(), MergeSelectsWithSharedOperands(),
)

__all__ = [
    "SELECTOR_PATTERNS", "CancelDoubleNot", "FoldNotIntoSelect", "MergeSelectsWithSharedOperands",
    "COMPARISON_KINDS", "combine_comparisons", "combine_matrices", "negate_matrix", "select_of",
    "replace_with_select",
]
