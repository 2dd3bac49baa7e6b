"""fuse-maps: compose elementwise tables so a chain of maps costs one MLP, not one layer each.

- `map(f, map(g, x))`             -> `map(f . g, x)`
- `map(f, sequence_map(g, x, y))` -> `sequence_map(f . g, x, y)`   (make_reverse: 4 layers -> 3)
- `sequence_map(f, map(g, x), y)` -> `sequence_map(f . (g x id), x, y)` (and on the second operand),
  when x is categorical and the table grows at most `max_growth` times (|x| <= max_growth |g(x)|)

Only an inner op with a single use is fused (otherwise its MLP would be paid twice). Tables are
keyed by value, and compose as the evaluator computes: where g gives None, f is not called and
the result is None; where g or f has no entry (the function raises there), the composite has
none either. Only the inner operand's possible values are tabulated. Types are re-inferred at
the end: a fused op's value set can shrink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
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
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.values import Value, identity

Entry = tuple[tuple[Value, ...], Value]


def _apply(table: R.TableAttr, *args: Value) -> tuple[bool, Value]:
    """The evaluator's call of a tabulated function: None in gives None out."""
    if any(a is None for a in args):
        return True, None
    return table.get(*args)


def _inputs(value: SSAValue, table: R.TableAttr, position: int) -> Sequence[Value]:
    """The non-None values an operand can take (its table's arguments when its set is not finite)."""
    vals = R.sop_type(value).value_set
    if vals is not None:
        return [v for v in vals if v is not None]
    seen: dict[Any, Value] = {}
    for args, _ in table.data:
        seen.setdefault(identity(args[position]), args[position])
    return list(seen.values())


def compose(f: R.TableAttr, g: R.TableAttr, rows: Iterable[tuple[Value, ...]]) -> R.TableAttr:
    """(f . g) on `rows`: f(g(*row)); None where g gives None, no entry where g or f has none."""
    entries: list[Entry] = []
    for row in rows:
        found, mid = g.get(*row)
        if not found:
            continue
        found, out = _apply(f, mid)
        if found:
            entries.append((row, out))
    return R.TableAttr.of(entries)


def _single_use(value: SSAValue) -> bool:
    return value.has_one_use()


class FuseMapIntoProducer(RewritePattern):
    """map(f, map(g, x)) and map(f, sequence_map(g, x, y)) become one op."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.MapOp, rewriter: PatternRewriter) -> None:
        inner = op.inp.owner
        if not isinstance(inner, (R.MapOp, R.SequenceMapOp)) or not _single_use(inner.res):
            return
        enc = R.sop_type(op.res).enc
        if isinstance(inner, R.MapOp):
            rows = [(x,) for x in _inputs(inner.inp, inner.fn, 0)]
            new: R.SOpOp = R.MapOp(inner.inp, enc, compose(op.fn, inner.fn, rows), op.label_str, op.src_str)
        else:
            xs, ys = _inputs(inner.fst, inner.fn, 0), _inputs(inner.snd, inner.fn, 1)
            rows = [(x, x) for x in xs] if inner.fst == inner.snd else [(x, y) for x in xs for y in ys]
            new = R.SequenceMapOp(inner.fst, inner.snd, enc, compose(op.fn, inner.fn, rows), op.label_str,
                                  op.src_str)
        new.res.name_hint = op.res.name_hint
        rewriter.replace(op, new)
        rewriter.erase(inner)


@dataclass
class FuseMapIntoSequenceMap(RewritePattern):
    """sequence_map(f, map(g, x), y) reads x directly, if the table grows at most `max_growth` times."""

    max_growth: int

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        if op.fst == op.snd:
            return
        for side in (0, 1):
            inner = op.operands[side].owner
            if not isinstance(inner, R.MapOp) or not _single_use(inner.res):
                continue
            src_t = R.sop_type(inner.inp)
            if not src_t.is_categorical or src_t.value_set is None:
                continue  # the sequence_map would read a numerical operand through its table
            n_src = len(src_t.non_none_values)
            n_mid = len(R.sop_type(inner.res).non_none_values)
            if n_src > self.max_growth * max(n_mid, 1):
                continue
            other = op.operands[1 - side]
            others = _inputs(other, op.fn, 1 - side)
            entries: list[Entry] = []
            for x in src_t.non_none_values:
                found, mid = inner.fn.get(x)
                if not found:
                    continue
                for y in others:
                    args = (mid, y) if side == 0 else (y, mid)
                    found, out = _apply(op.fn, *args)
                    if found:
                        entries.append(((x, y) if side == 0 else (y, x), out))
            fst, snd = (inner.inp, other) if side == 0 else (other, inner.inp)
            new = R.SequenceMapOp(fst, snd, R.sop_type(op.res).enc, R.TableAttr.of(entries), op.label_str,
                                  op.src_str)
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
        program = rasp_program(op, self.name, inferred=True)
        if PatternRewriteWalker(
            GreedyRewritePatternApplier([FuseMapIntoProducer(), FuseMapIntoSequenceMap(self.max_growth)])
        ).rewrite_module(op):
            infer_program(program)


__all__ = ["FuseMapsPass", "FuseMapIntoProducer", "FuseMapIntoSequenceMap", "compose"]
