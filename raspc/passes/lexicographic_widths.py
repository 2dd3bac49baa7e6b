"""lexicographic-widths: count smaller keys without a one-hot of every key, when the keys order
pairs of values lexicographically.

Tracr's `make_sort` makes its keys unique with `key + min_key * i / max_seq_len`: a categorical
s-op with vocab x max_seq_len values, which the model would copy into that many residual
directions, and compare with a select over a vocab*max_seq_len square relation. But comparing
those keys is comparing (key, i) lexicographically, so

    selector_width(select(k, k, <))          k = sequence_map(f, a, b), f ordering (a, b) pairs lexicographically
 == selector_width(select(a, a, rank <))                               (the first part decides)
  + selector_width(select(a, a, same) and select(b, b, rank <))        (a tie, the second part decides)

The two selects on the right are disjoint, so their widths add; each is an attention head over
`a` and `b` alone (the `and` is scored additively by one head), and the sum is exact (numerical
widths, a linear sum, then the categorical width the program had). The residual then grows with
|a| + |b| instead of |a| * |b|.

The rewrite is checked, not assumed: f's table over every pair of the operands' values must be
strictly increasing in lexicographic order of some ranking of a's values and of b's (either
operand major), with numbers only; `<`, `<=`, `>` and `>=` map to the matching rank relations.
Keys that can be None, operands that can be None, tables with holes, and keys few enough that
their one-hot is about as small as the parts (WORTH_IT) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from raspc.analysis.value_sets import infer_op, infer_program
from raspc.dialects import rasp as R
from raspc.dialects.common import CATEGORICAL, NUMERICAL, InputSpec
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.naming import ssa_name
from raspc.utils.values import is_number

# The rewrite trades a one-hot of |a| x |b| keys (and its square relation) for two widths, a sum
# and a copy, which cost two more MLP layers: worth it when the keys outnumber the parts 4 to 1
# (make_sort from vocab = max_seq_len = 8 on; at Tracr's sizes, 4 x 5 keys, the model is unchanged).
WORTH_IT = 4

# rank relation of the deciding part, and whether a tie there lets the second part decide with <=
_ORDER = {
    R.Comparison.LT: (np.less, np.less),
    R.Comparison.LEQ: (np.less, np.less_equal),
    R.Comparison.GT: (np.greater, np.greater),
    R.Comparison.GEQ: (np.greater, np.greater_equal),
}


@dataclass(frozen=True)
class LexicographicKeys:
    """k = f(major, minor) orders pairs lexicographically: rank_major, rank_minor per value."""

    major: SSAValue
    minor: SSAValue
    major_rank: np.ndarray  # rank of each value of major's value set
    minor_rank: np.ndarray


def _lexicographic(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Ranks (rows, cols) under which values[row, col] strictly increases row-major, or None."""
    rows = np.argsort(values[:, 0], kind="stable")
    cols = np.argsort(values[rows[0], :], kind="stable")
    if not np.all(np.diff(values[rows][:, cols].ravel()) > 0):
        return None
    row_rank, col_rank = np.empty_like(rows), np.empty_like(cols)
    row_rank[rows] = np.arange(len(rows))
    col_rank[cols] = np.arange(len(cols))
    return row_rank, col_rank


def lexicographic_keys(keys: SSAValue, min_ratio: int = WORTH_IT) -> LexicographicKeys | None:
    """How a sequence_map's values order its operand pairs, when that order is lexicographic."""
    op = keys.owner
    if not isinstance(op, R.SequenceMapOp) or op.fst == op.snd:
        return None
    a_t, b_t, k_t = R.sop_type(op.fst), R.sop_type(op.snd), R.sop_type(keys)
    if not (a_t.is_categorical and b_t.is_categorical) or a_t.may_be_none or b_t.may_be_none or k_t.may_be_none:
        return None
    a_vals, b_vals = a_t.non_none_values, b_t.non_none_values
    if len(a_vals) < 2 or len(b_vals) < 2 or len(a_vals) * len(b_vals) < min_ratio * (len(a_vals) + len(b_vals)):
        return None  # few keys: their one-hot is as small, and costs fewer layers
    table = np.empty((len(a_vals), len(b_vals)), dtype=np.float64)
    for i, x in enumerate(a_vals):
        for j, y in enumerate(b_vals):
            found, out = op.fn.get(x, y)
            if not found or not is_number(out) or not abs(out) < 2**52:  # a hole, a non-number, nan, huge
                return None
            table[i, j] = out
    ranks = _lexicographic(table)
    if ranks is not None:
        return LexicographicKeys(op.fst, op.snd, *ranks)
    ranks = _lexicographic(table.T)
    if ranks is not None:
        return LexicographicKeys(op.snd, op.fst, *ranks)
    return None


def _rank_select(values: SSAValue, rank: np.ndarray, relation, label: str, src: str | None) -> R.SelectOp:
    """select(values, values) by a relation between the key's and the query's ranks."""
    vals = R.sop_type(values).non_none_values
    matrix = relation(rank[None, :], rank[:, None])  # [query, key]
    op = R.SelectOp(values, values, R.RelationAttr.of(vals, vals, matrix), label, src)
    op.res.name_hint = ssa_name(label)
    return op


@dataclass
class SplitLexicographicWidth(RewritePattern):
    """selector_width(select(k, k, cmp)) with lexicographic k -> the sum of two small widths."""

    spec: InputSpec
    min_ratio: int = WORTH_IT

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorWidthOp, rewriter: PatternRewriter) -> None:
        select = op.selector.owner
        if not isinstance(select, R.SelectOp) or select.keys != select.queries or select.comparison not in _ORDER:
            return
        lex = lexicographic_keys(select.keys, self.min_ratio)
        if lex is None:
            return
        first, tie = _ORDER[select.comparison]
        label, src = select.label_str, select.src_str
        new: list[Operation] = [
            decide := _rank_select(lex.major, lex.major_rank, first, f"{label}.major", src),
            same := _rank_select(lex.major, lex.major_rank, np.equal, f"{label}.tie", src),
            then := _rank_select(lex.minor, lex.minor_rank, tie, f"{label}.minor", src),
        ]
        both = R.SelectorAndOp(same.res, then.res, f"{label}.tie_minor", src)
        both.res.name_hint = ssa_name(f"{label}.tie_minor")
        w_label = op.label_str
        w_major = R.SelectorWidthOp(decide.res, NUMERICAL, f"{w_label}.major", op.src_str)
        w_tie = R.SelectorWidthOp(both.res, NUMERICAL, f"{w_label}.tie", op.src_str)
        total = R.LinearSequenceMapOp(w_major.res, w_tie.res, 1, 1, f"{w_label}.sum", op.src_str)
        new += [both, w_major, w_tie, total]
        for o in (w_major, w_tie, total):
            o.res.name_hint = ssa_name(o.label_str)
        for o in new:
            rewriter.insert(o)
            if isinstance(o, R.SOpOp):
                infer_op(o, self.spec)
        # the categorical width the program had: the sum never exceeds it (the selects are disjoint),
        # so sums past its largest value are outside the domain
        widths = R.sop_type(op.res).non_none_values
        table = R.TableAttr.of([((w,), w) for w in widths])
        width = R.MapOp(total.res, CATEGORICAL, table, w_label, op.src_str)
        width.res.name_hint = op.res.name_hint
        rewriter.insert(width)
        infer_op(width, self.spec)
        rewriter.replace(op, [], [width.res])


@dataclass(frozen=True)
class LexicographicWidthsPass(ModulePass):
    """Counts keys smaller than a lexicographic key through its parts (see the module docstring)."""

    name = "lexicographic-widths"

    min_ratio: int = WORTH_IT  # rewrite when |a| x |b| >= min_ratio (|a| + |b|)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = rasp_program(op, self.name, inferred=True)
        pattern = SplitLexicographicWidth(program.spec, self.min_ratio)
        walker = PatternRewriteWalker(GreedyRewritePatternApplier([pattern]), apply_recursively=False)
        if walker.rewrite_module(op):
            infer_program(program)


__all__ = ["LexicographicKeys", "LexicographicWidthsPass", "lexicographic_keys"]
