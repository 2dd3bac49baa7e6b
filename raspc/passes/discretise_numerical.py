"""discretise-numerical-operands: give the ops that read through tables categorical operands.

`rasp.select` and `rasp.sequence_map` read their operands through a table (a relation, a function
table), which an attention head or a lookup MLP can only do on one-hot directions. A numerical
operand with a finite value set gets a categorical copy: an identity `rasp.map`, labelled
`<producer>_cat`, placed after its producer and shared by every such reader (one exact
discretising MLP in the model).

A numerical s-op is one number per position, so numerically equal values of different types
(`0`, `0.0` and `False`; `1`, `1.0` and `True`) are one value in the model. The copy maps each such
group to one representative (the first in value order), which is exact when every reader treats
the group alike (a comparison always does: `0 < 0.5` and `0.0 < 0.5` agree); a reader that tells
them apart (a relation or a function table that answers differently for 0 and 0.0) is refused,
naming both values and the reader. A numerical operand whose value set is not finite cannot be
tabulated and is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

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
from xdsl.rewriter import InsertPoint

from raspc.analysis.selectors import select_matrix
from raspc.analysis.value_sets import infer_op, infer_program
from raspc.dialects import rasp as R
from raspc.dialects.common import InputSpec
from raspc.errors import UnsupportedError
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.naming import FreshNames, ssa_name
from raspc.utils.values import Value, format_value, identity


def representatives(values: Sequence[Value]) -> list[Value]:
    """For each value of a numerical value set, the first value numerically equal to it."""
    first: dict[float, Value] = {}
    return [first.setdefault(float(v), v) for v in values]


def _label(value: SSAValue) -> str:
    owner = value.owner
    return owner.label_str if isinstance(owner, R.RaspOp) else "input"


@dataclass
class CategoricalCopyOfNumericalOperand(RewritePattern):
    """select / sequence_map reading a numerical s-op -> reading its categorical copy."""

    spec: InputSpec
    labels: FreshNames
    copies: dict[SSAValue, SSAValue] = field(default_factory=dict)
    checked: dict[Operation, dict[SSAValue, dict[Any, Value]]] = field(default_factory=dict)

    def check(self, op: R.SelectOp | R.SequenceMapOp) -> dict[SSAValue, dict[Any, Value]]:
        """Per numerical operand, each value's representative; refuses what cannot be discretised."""
        if op in self.checked:
            return self.checked[op]
        reps: dict[SSAValue, dict[Any, Value]] = {}
        for v in op.operands:
            if R.sop_type(v).is_categorical:
                continue
            vals = R.sop_type(v).value_set
            if vals is None:
                raise UnsupportedError(
                    f"reads numerical s-op '{_label(v)}' through a table, but its value set is not finite "
                    "(or larger than the bound), so it cannot be discretised",
                    label=op.label_str, source=op.src_str)
            reps[v] = {identity(x): r for x, r in zip(vals, representatives(vals))}
        if reps:
            self.check_alike(op, reps)
        self.checked[op] = reps
        return reps

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectOp | R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        reps = self.check(op)
        if not reps:
            return
        for v in reps:
            copy = self.copy_of(v, reps[v], rewriter)
            for i, operand in enumerate(op.operands):
                if operand == v:
                    op.operands[i] = copy
        rewriter.notify_op_modified(op)

    def check_alike(self, op: R.SelectOp | R.SequenceMapOp, reps: dict[SSAValue, dict[Any, Value]]) -> None:
        """Refuses when `op` answers differently for two numerically equal values of an operand."""

        def rep(v: SSAValue, x: Value) -> Value:
            return reps[v][identity(x)] if v in reps else x

        if isinstance(op, R.SelectOp):
            keys = R.sop_type(op.keys).value_set or ()
            queries = R.sop_type(op.queries).value_set or ()
            m = select_matrix(op, keys, queries)
            for side, vals, is_key in ((op.keys, keys, True), (op.queries, queries, False)):
                if side not in reps:
                    continue
                repped = [rep(side, x) for x in vals]
                m_rep = select_matrix(op, repped, queries) if is_key else select_matrix(op, keys, repped)
                bad = np.argwhere(m != m_rep)
                if bad.size:
                    i = int(bad[0][1] if is_key else bad[0][0])
                    self.refuse(op, side, repped[i], vals[i], "selects them differently")
            return
        a_vals = R.sop_type(op.fst).value_set or ()
        b_vals = R.sop_type(op.snd).value_set or ()
        pairs = ((x, x) for x in a_vals) if op.fst == op.snd else ((x, y) for x in a_vals for y in b_vals)
        for x, y in pairs:
            if x is None or y is None:
                continue
            rx, ry = rep(op.fst, x), rep(op.snd, y)
            if identity(rx) == identity(x) and identity(ry) == identity(y):
                continue
            found, out = op.fn.get(x, y)
            found_rep, out_rep = op.fn.get(rx, ry)
            if found != found_rep or identity(out) != identity(out_rep):
                v, val, r = (op.fst, x, rx) if identity(rx) != identity(x) else (op.snd, y, ry)
                self.refuse(op, v, r, val, "maps them differently")

    @staticmethod
    def refuse(op: R.RaspOp, v: SSAValue, a: Value, b: Value, how: str) -> None:
        raise UnsupportedError(
            f"'{_label(v)}' can be {format_value(a)} and {format_value(b)}, which one number cannot tell "
            f"apart, but '{op.label_str}' {how}", label=op.label_str, source=op.src_str)

    def copy_of(self, v: SSAValue, reps: dict[Any, Value], rewriter: PatternRewriter) -> SSAValue:
        """The categorical copy of `v` (built once, right after its producer)."""
        if v in self.copies:
            return self.copies[v]
        producer = v.owner
        assert isinstance(producer, R.SOpOp)
        vals = R.sop_type(v).value_set or ()
        table = R.TableAttr.of([((x,), reps[identity(x)]) for x in vals])
        label = self.labels(f"{producer.label_str}_cat")
        copy = R.MapOp(v, R.CATEGORICAL, table, label, producer.src_str)
        copy.res.name_hint = ssa_name(label)
        rewriter.insert(copy, InsertPoint.after(producer))
        infer_op(copy, self.spec)
        self.copies[v] = copy.res
        return copy.res


@dataclass(frozen=True)
class DiscretiseNumericalOperandsPass(ModulePass):
    """Gives select and sequence_map categorical copies of their numerical operands."""

    name = "discretise-numerical-operands"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = rasp_program(op, self.name, inferred=True)
        labels = FreshNames((o.label_str for o in program.ops if isinstance(o, R.RaspOp)), sep="_")
        pattern = CategoricalCopyOfNumericalOperand(program.spec, labels)
        # Refusals first, outside the rewrite walker (which would attach the whole module to them).
        for reader in program.ops:
            if isinstance(reader, (R.SelectOp, R.SequenceMapOp)):
                pattern.check(reader)
        walker = PatternRewriteWalker(GreedyRewritePatternApplier([pattern]), apply_recursively=False)
        if walker.rewrite_module(op):
            infer_program(program)


__all__ = ["DiscretiseNumericalOperandsPass", "representatives"]
