"""combine-selectors: fold selector logic into select tables where keys and queries allow.

- `selector_not(select(k, q, T))`          -> `select(k, q, not T)`
- `selector_and/or(select(k, q, A), select(k, q, B))` -> `select(k, q, A and/or B)`
- `selector_not(selector_not(s))`          -> `s`
- `selector_not(and(a, b))` / `(or(a, b))` -> De Morgan, so the negations reach the selects

What remains afterwards are and/or trees over selects with *different* keys or queries
(see product-selectors and the additive attention of lower-rasp-to-craft).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
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


def _select(op) -> R.SelectOp | None:
    owner = op.owner if hasattr(op, "owner") else None
    return owner if isinstance(owner, R.SelectOp) else None


class FoldNotIntoSelect(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        sel = _select(op.inner)
        if sel is None:
            return
        table = [1 - e for e in table_values(sel.table)]
        new = R.SelectOp(sel.keys, sel.queries, table, op.label_str, op.src_str)
        new.res.name_hint = op.res.name_hint
        rewriter.replace(op, new)


class CancelDoubleNot(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        inner = op.inner.owner
        if isinstance(inner, R.SelectorNotOp):
            rewriter.replace(op, [], [inner.inner])


class PushNotThroughAndOr(RewritePattern):
    """De Morgan: not(a and b) = not a or not b, and dually."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        inner = op.inner.owner
        if not isinstance(inner, (R.SelectorAndOp, R.SelectorOrOp)):
            return
        not_a = R.SelectorNotOp(inner.fst, f"{op.label_str}.not_a", op.src_str)
        not_b = R.SelectorNotOp(inner.snd, f"{op.label_str}.not_b", op.src_str)
        dual = R.SelectorOrOp if isinstance(inner, R.SelectorAndOp) else R.SelectorAndOp
        new = dual(not_a.res, not_b.res, op.label_str, op.src_str)
        rewriter.replace(op, [not_a, not_b, new])


class MergeSelectsWithSharedOperands(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorAndOp | R.SelectorOrOp, rewriter: PatternRewriter) -> None:
        a, b = _select(op.fst), _select(op.snd)
        if a is None or b is None or a.keys != b.keys or a.queries != b.queries:
            return
        combine = (lambda x, y: x & y) if isinstance(op, R.SelectorAndOp) else (lambda x, y: x | y)
        table = [combine(x, y) for x, y in zip(table_values(a.table), table_values(b.table))]
        new = R.SelectOp(a.keys, a.queries, table, op.label_str, op.src_str)
        new.res.name_hint = op.res.name_hint
        rewriter.replace(op, new)


@dataclass(frozen=True)
class CombineSelectorsPass(ModulePass):
    """Folds selector not/and/or into select tables where keys and queries are shared."""

    name = "combine-selectors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier(
                [CancelDoubleNot(), FoldNotIntoSelect(), PushNotThroughAndOr(), MergeSelectsWithSharedOperands()]
            )
        ).rewrite_module(op)
