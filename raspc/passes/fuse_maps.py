"""fuse-maps: compose elementwise tables so a chain of maps costs one MLP, not one layer each.

- `map(f, map(g, x))`          -> `map(f . g, x)`
- `map(f, sequence_map(g, x, y))` -> `sequence_map(f . g, x, y)`   (make_reverse: 4 layers -> 3)
- `sequence_map(f, map(g, x), y)` -> `sequence_map(f . (g x id), x, y)` when the table does not grow
  more than `max_growth` times

Only an inner op with a single use is fused (otherwise its MLP would be paid twice). None
entries (-1) compose as the evaluator does: a None input gives None without calling f.
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


def _compose(outer: tuple[int, ...], inner: tuple[int, ...]) -> list[int]:
    return [-1 if e < 0 else outer[e] for e in inner]


def _single_use(op: R.RaspOp) -> bool:
    return op.results[0].has_one_use()


class FuseMapIntoProducer(RewritePattern):
    """map(f, map(g, x)) and map(f, sequence_map(g, x, y)) become one op."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.MapOp, rewriter: PatternRewriter) -> None:
        inner = op.inp.owner
        if not isinstance(inner, (R.MapOp, R.SequenceMapOp)) or not _single_use(inner):
            return
        table = _compose(table_values(op.table), table_values(inner.table))
        t = R.sop_type(op.res)
        if isinstance(inner, R.MapOp):
            new = R.MapOp(inner.inp, t, table, op.label_str, op.src_str)
        else:
            new = R.SequenceMapOp(inner.fst, inner.snd, t, table, op.label_str, op.src_str)
        new.res.name_hint = op.res.name_hint
        rewriter.replace(op, new)
        rewriter.erase(inner)


@dataclass
class FuseMapIntoSequenceMap(RewritePattern):
    """sequence_map(f, map(g, x), y) reads x directly, if the table grows at most `max_growth` times."""

    max_growth: int

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        for side in (0, 1):
            inner = op.operands[side].owner
            if not isinstance(inner, R.MapOp) or not _single_use(inner) or op.fst == op.snd:
                continue
            src_t = R.sop_type(inner.inp)
            if not src_t.is_categorical:
                continue
            n_src = len(src_t.value_set or ())
            n_mid = len(R.sop_type(inner.res).value_set or ())
            if n_src > self.max_growth * max(n_mid, 1):
                continue
            g = table_values(inner.table)
            t = table_values(op.table)
            n_fst = len(R.sop_type(op.fst).value_set or ())
            n_snd = len(R.sop_type(op.snd).value_set or ())
            table: list[int] = []
            if side == 0:
                for a in range(n_src):
                    table += [-1] * n_snd if g[a] < 0 else list(t[g[a] * n_snd : (g[a] + 1) * n_snd])
                fst, snd = inner.inp, op.snd
            else:
                for i in range(n_fst):
                    table += [-1 if g[b] < 0 else t[i * n_snd + g[b]] for b in range(n_src)]
                fst, snd = op.fst, inner.inp
            new = R.SequenceMapOp(fst, snd, R.sop_type(op.res), table, op.label_str, op.src_str)
            new.res.name_hint = op.res.name_hint
            rewriter.replace(op, new)
            rewriter.erase(inner)
            return


@dataclass(frozen=True)
class FuseMapsPass(ModulePass):
    """Composes chains of elementwise tables so they cost one MLP, not one layer each."""

    name = "fuse-maps"
    max_growth: int = 2

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([FuseMapIntoProducer(), FuseMapIntoSequenceMap(self.max_growth)])
        ).rewrite_module(op)
