"""product-selectors: turn a selector tree that attention cannot score additively into one select.

An and-tree of selects is scored additively by one head (see lower-rasp-to-craft). Any tree with
an `or` (or a `not` left over a composite) becomes a single `rasp.select` whose keys and queries
are tuples of the leaves' keys and queries, built with `rasp.sequence_map`, and whose table is
the tree evaluated on every tuple. Exact, at the price of one MLP layer for the tuples.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

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

from raspc.dialects import rasp as R
from raspc.dialects.rasp import table_values
from raspc.lowering.program_to_rasp import ssa_name
from raspc.values import sorted_values


def selector_leaves(value: SSAValue) -> list[R.SelectOp]:
    """The selects under a selector tree, left to right, each once."""
    op = value.owner
    if isinstance(op, R.SelectOp):
        return [op]
    if isinstance(op, (R.SelectorAndOp, R.SelectorOrOp)):
        out = selector_leaves(op.fst)
        out += [leaf for leaf in selector_leaves(op.snd) if leaf not in out]
        return out
    if isinstance(op, R.SelectorNotOp):
        return selector_leaves(op.inner)
    raise ValueError(f"not a selector tree: {op.name}")


def is_conjunction(value: SSAValue) -> bool:
    """An and-tree whose leaves are selects (scored additively by one attention head)."""
    op = value.owner
    if isinstance(op, R.SelectOp):
        return True
    return isinstance(op, R.SelectorAndOp) and is_conjunction(op.fst) and is_conjunction(op.snd)


def _evaluate_tree(value: SSAValue, leaf_truth: dict[R.SelectOp, bool]) -> bool:
    op = value.owner
    if isinstance(op, R.SelectOp):
        return leaf_truth[op]
    if isinstance(op, R.SelectorAndOp):
        return _evaluate_tree(op.fst, leaf_truth) and _evaluate_tree(op.snd, leaf_truth)
    if isinstance(op, R.SelectorOrOp):
        return _evaluate_tree(op.fst, leaf_truth) or _evaluate_tree(op.snd, leaf_truth)
    assert isinstance(op, R.SelectorNotOp)
    return not _evaluate_tree(op.inner, leaf_truth)


def _unique(values: list[SSAValue]) -> list[SSAValue]:
    out: list[SSAValue] = []
    for v in values:
        if all(v is not u for u in out):
            out.append(v)
    return out


class TupleBuilder:
    """Builds `rasp.sequence_map`s that pack several s-ops into one tuple-valued s-op."""

    def __init__(self, label: str, src: str | None):
        self.label, self.src = label, src
        self.ops: list[Operation] = []

    def pack(self, parts: list[SSAValue], role: str) -> SSAValue:
        """One s-op whose value is the flat tuple of `parts`' values (or the single part itself)."""
        acc = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            acc_vals = R.sop_type(acc).value_set or ()
            part_vals = R.sop_type(part).value_set or ()
            if i == 1:
                pairs = [(a, b) for a, b in itertools.product(acc_vals, part_vals)]
            else:
                pairs = [(*a, b) for a, b in itertools.product(acc_vals, part_vals)]
            out_vals = sorted_values(pairs)
            index = {v: j for j, v in enumerate(out_vals)}
            label = f"{self.label}.{role}{i}"
            op = R.SequenceMapOp(acc, part, R.SOpType(R.CATEGORICAL, out_vals), [index[p] for p in pairs],
                                 label, self.src)
            op.res.name_hint = ssa_name(label)
            self.ops.append(op)
            acc = op.res
        return acc


def product_select(root: SSAValue, label: str, src: str | None) -> tuple[list[Operation], R.SelectOp]:
    """Ops computing one select equal to the selector tree at `root`."""
    leaves = selector_leaves(root)
    keys = _unique([leaf.keys for leaf in leaves])
    queries = _unique([leaf.queries for leaf in leaves])
    builder = TupleBuilder(label, src)
    key = builder.pack(keys, "keys")
    query = builder.pack(queries, "queries")

    key_vals = R.sop_type(key).value_set or ()
    query_vals = R.sop_type(query).value_set or ()

    def split(value: Any, n: int) -> tuple[Any, ...]:
        return value if n > 1 else (value,)

    leaf_tables = []
    for leaf in leaves:
        kv = {v: i for i, v in enumerate(R.sop_type(leaf.keys).value_set or ())}
        qv = {v: i for i, v in enumerate(R.sop_type(leaf.queries).value_set or ())}
        nk = len(kv)
        t = table_values(leaf.table)
        k_pos = next(i for i, k in enumerate(keys) if k is leaf.keys)
        q_pos = next(i for i, q in enumerate(queries) if q is leaf.queries)
        leaf_tables.append((leaf, kv, qv, nk, t, k_pos, q_pos))

    table: list[int] = []
    for q in query_vals:
        qt = split(q, len(queries))
        for k in key_vals:
            kt = split(k, len(keys))
            truth = {
                leaf: bool(t[qv[qt[q_pos]] * nk + kv[kt[k_pos]]])
                for leaf, kv, qv, nk, t, k_pos, q_pos in leaf_tables
            }
            table.append(1 if _evaluate_tree(root, truth) else 0)
    select = R.SelectOp(key, query, table, label, src)
    return builder.ops, select


class ProductOfNonConjunctiveSelector(RewritePattern):
    """Rewrites the selector operand of an aggregate / selector_width when it is not a conjunction."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.AggregateOp | R.SelectorWidthOp, rewriter: PatternRewriter) -> None:
        root = op.selector
        if is_conjunction(root):
            return
        owner = root.owner
        assert isinstance(owner, R.RaspOp)
        ops, select = product_select(root, owner.label_str, owner.src_str)
        select.res.name_hint = root.name_hint
        rewriter.insert([*ops, select])
        op.operands[0] = select.res
        rewriter.notify_op_modified(op)


@dataclass(frozen=True)
class ProductSelectorsPass(ModulePass):
    """Turns selector trees with `or` into one select over tuple-valued keys and queries."""

    name = "product-selectors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([ProductOfNonConjunctiveSelector()]), apply_recursively=False
        ).rewrite_module(op)
