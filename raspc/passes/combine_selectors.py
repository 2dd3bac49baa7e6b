"""combine-selectors: fold selector logic into select predicates where keys and queries allow.

An attention head scores one select directly, and an and-tree of selects additively; anything
else (an `or`, a `not` of a composite) needs `product-selectors`, which costs an MLP layer and
grows the keys and queries to tuples. This pass shrinks trees first:

- `selector_not(selector_not(s))`                        -> `s`
- `selector_not(select(k, q, P))`                        -> `select(k, q, not P)`
- `selector_and/or(select(k, q, A), select(k, q, B))`    -> `select(k, q, A and/or B)`
- `selector_not(selector_and(a, b))` / `(selector_or(a, b))` -> `or(not a, not b)` / `and(not a, not b)`
  (De Morgan), so negations reach the selects and fold into them.

The first three are the rasp dialect's canonicalization patterns (`canonicalize` runs them too);
De Morgan is here only, as it grows a tree that no select can absorb. Types are re-inferred at
the end: one select's width bounds can be tighter than the tree's.
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

from raspc.analysis.value_sets import infer_program
from raspc.dialects import rasp as R
from raspc.passes.canonicalization_patterns.rasp import SELECTOR_PATTERNS
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.naming import ssa_name


class PushNotThroughAndOr(RewritePattern):
    """De Morgan: not(a and b) -> not a or not b; not(a or b) -> not a and not b."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorNotOp, rewriter: PatternRewriter) -> None:
        inner = op.inner.owner
        if not isinstance(inner, R.BinarySelectorOp):
            return
        label, src = op.label_str, op.src_str
        not_a = R.SelectorNotOp(inner.fst, f"{label}.not_a", src)
        not_b = R.SelectorNotOp(inner.snd, f"{label}.not_b", src)
        not_a.res.name_hint = ssa_name(f"{label}.not_a")
        not_b.res.name_hint = ssa_name(f"{label}.not_b")
        dual = R.SelectorOrOp if isinstance(inner, R.SelectorAndOp) else R.SelectorAndOp
        new = dual(not_a.res, not_b.res, label, src)
        new.res.name_hint = op.res.name_hint
        rewriter.replace(op, [not_a, not_b, new])


@dataclass(frozen=True)
class CombineSelectorsPass(ModulePass):
    """Folds selector not/and/or into select predicates where keys and queries are shared."""

    name = "combine-selectors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = rasp_program(op, self.name, inferred=True)
        patterns = GreedyRewritePatternApplier([*SELECTOR_PATTERNS, PushNotThroughAndOr()])
        if PatternRewriteWalker(patterns).rewrite_module(op):
            infer_program(program)
