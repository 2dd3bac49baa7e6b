"""check-causal: refuse a causal compile that would change what the program computes.

A causally masked model lets query i see keys 0..i only. That equals the program's (non-causal)
meaning exactly when no selector can select a key after its query. This pass proves it per
selector, or refuses naming the selector: a select is safe when its table is all false, or when
its keys and queries are determined by position alone (indices, full, constant and maps of those)
and the predicate is false for every key position after the query position. An `and` is safe
when one side is; an `or` when both are. Does nothing unless the module has `raspc.causal = true`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import rasp as R
from raspc.dialects.rasp import table_values
from raspc.errors import UnsupportedError
from raspc.interpreters.rasp import RaspInterpreter


def position_determined(value: SSAValue) -> bool:
    """True when the s-op's value at a position never depends on the tokens or the length."""
    op = value.owner
    if isinstance(op, (R.IndicesOp, R.FullOp, R.ConstantOp)):
        return True
    if isinstance(op, (R.MapOp, R.SequenceMapOp, R.LinearSequenceMapOp)):
        return all(position_determined(v) for v in op.operands)
    return False


class _CausalChecker:
    def __init__(self, module: ModuleOp):
        interp = RaspInterpreter(module, strict_constants=False)
        n = interp.max_seq_len
        # Position-determined values do not depend on the tokens: any input of full length will do.
        self.env = interp.evaluate_all([[interp.vocab[0]] * n])
        self.n = n

    def select_is_causal(self, op: R.SelectOp) -> bool:
        table = np.array(table_values(op.table), dtype=bool)
        if not table.any():
            return True
        if not (position_determined(op.keys) and position_determined(op.queries)):
            return False
        nk = len(R.sop_type(op.keys).value_set or ())
        k = self.env[op.keys][0]
        q = self.env[op.queries][0]
        if not (R.sop_type(op.keys).is_categorical and R.sop_type(op.queries).is_categorical):
            return False
        future = np.triu(np.ones((self.n, self.n), dtype=bool), k=1)  # [query, key] with key > query
        valid = (k >= 0)[None, :] & (q >= 0)[:, None]
        selected = table[np.maximum(q, 0)[:, None] * nk + np.maximum(k, 0)[None, :]] & valid
        return not (selected & future).any()

    def is_causal(self, value: SSAValue) -> bool:
        op = value.owner
        if isinstance(op, R.SelectOp):
            return self.select_is_causal(op)
        if isinstance(op, R.SelectorAndOp):
            return self.is_causal(op.fst) or self.is_causal(op.snd)
        if isinstance(op, R.SelectorOrOp):
            return self.is_causal(op.fst) and self.is_causal(op.snd)
        return False  # a negated composite: not provable here


@dataclass(frozen=True)
class CheckCausalPass(ModulePass):
    """Refuses a causal compile wherever causal masking would change what the program computes."""

    name = "check-causal"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        causal = op.attributes.get("raspc.causal")
        if not (isinstance(causal, IntegerAttr) and causal.value.data):
            return
        checker = _CausalChecker(op)
        for user in op.ops:
            if isinstance(user, (R.AggregateOp, R.SelectorWidthOp)) and not checker.is_causal(user.selector):
                sel = user.selector.owner
                name = sel.label_str if isinstance(sel, R.RaspOp) else "selector"
                raise UnsupportedError(
                    f"causal=True would change what this s-op computes: its selector '{name}' can select a "
                    "key after the query (it reads tokens or a length, or its predicate looks ahead). "
                    "Compile with causal=False, or use rasp.causal_evaluate to see the causal meaning.",
                    label=user.label_str, source=user.src_str,
                )
