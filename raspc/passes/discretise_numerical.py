"""discretise-numerical-operands: give tables categorical operands.

`rasp.select` and `rasp.sequence_map` read their operands through a table, which an attention
head or a lookup MLP can only do on one-hot directions. A numerical operand with a finite value
set is first converted by an identity `rasp.map` to a categorical s-op (one exact
discretising MLP, shared by every user of that operand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from xdsl.rewriter import InsertPoint

from raspc.dialects import rasp as R
from raspc.errors import UnsupportedError
from raspc.lowering.program_to_rasp import ssa_name


@dataclass
class CategoricalCopyOfNumericalOperand(RewritePattern):
    converted: dict[SSAValue, SSAValue] = field(default_factory=dict)

    def categorical_copy(self, value: SSAValue, user: R.RaspOp, rewriter: PatternRewriter) -> SSAValue:
        if value in self.converted:
            return self.converted[value]
        t = R.sop_type(value)
        producer = value.owner
        label = f"{producer.label_str}_cat" if isinstance(producer, R.RaspOp) else "numerical_cat"
        if t.value_set is None:
            raise UnsupportedError(
                f"reads numerical s-op '{label[:-4]}' through a table, but its value set is not finite",
                label=user.label_str, source=user.src_str,
            )
        vals = t.value_set
        op = R.MapOp(value, R.SOpType(R.CATEGORICAL, vals), list(range(len(vals))), label,
                     producer.src_str if isinstance(producer, R.RaspOp) else None)
        op.res.name_hint = ssa_name(label)
        rewriter.insert(op, InsertPoint.after(producer) if isinstance(producer, R.RaspOp) else None)
        self.converted[value] = op.res
        return op.res

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectOp | R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        changed = False
        for i, operand in enumerate(op.operands):
            if not R.sop_type(operand).is_categorical:
                op.operands[i] = self.categorical_copy(operand, op, rewriter)
                changed = True
        if changed:
            rewriter.notify_op_modified(op)


@dataclass(frozen=True)
class DiscretiseNumericalOperandsPass(ModulePass):
    """Gives select and sequence_map categorical copies of their numerical operands."""

    name = "discretise-numerical-operands"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([CategoricalCopyOfNumericalOperand()]), apply_recursively=False
        ).rewrite_module(op)
