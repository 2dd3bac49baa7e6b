"""check-causal: refuse a causal compile wherever causal masking would change the answer.

A causally masked model lets query position i attend to key positions 0..i only. That equals the
program's (non-causal) meaning exactly when no selector read by an aggregate or a selector width
can select a key after its query. This pass proves that per selector, or refuses naming the s-op
that reads it. It does nothing unless the program's input says `causal = true`.

The proof is an abstract interpretation over positions:

- for every s-op, which of its values each position 0..max_seq_len-1 can hold: one value at a
  position for indices, full and constant s-ops, the images of those through maps and sequence
  maps, and any value of the s-op's value set for everything that reads the tokens (tokens,
  aggregates, selector widths and what is computed from them);
- for every select, per (query position, key position), whether it *may* select (some pair of
  possible values has predicate 1) and whether it may *not* select (some pair has 0); pairs
  where the predicate raises are outside the program's domain and count as neither;
- and/or/not combine these (`and` may select where both may, `not` swaps the two).

A selector is safe when no (query i, key j > i) pair may select. Selectors combined by
`combine-selectors` first are proved as one select, so `not(select(indices, indices, GT))`
(a `LEQ`) compiles causally; a negated composite is handled by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.analysis.selectors import select_matrix
from raspc.dialects import rasp as R
from raspc.errors import UnsupportedError
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.values import ValueIndex


class PositionValues:
    """Which values each position can hold: bool [max_seq_len, |value set|] per s-op (None when
    the value set is not finite)."""

    def __init__(self, max_seq_len: int):
        self.n = max_seq_len
        self.memo: dict[SSAValue, np.ndarray | None] = {}

    def of(self, value: SSAValue) -> np.ndarray | None:
        if value not in self.memo:
            self.memo[value] = self._compute(value)
        return self.memo[value]

    def _compute(self, value: SSAValue) -> np.ndarray | None:
        vals = R.sop_type(value).value_set
        if vals is None:
            return None
        index = ValueIndex(vals)
        anything = np.ones((self.n, len(vals)), dtype=bool)
        op = value.owner
        if isinstance(op, R.IndicesOp):
            return self._rows(index, [[i] for i in range(self.n)])
        if isinstance(op, R.FullOp):
            return self._rows(index, [[op.fill.data]] * self.n)
        if isinstance(op, R.ConstantOp):
            # inputs of another length are outside the domain: those positions hold nothing
            const = list(op.value.data)
            return self._rows(index, [[const[i]] if i < len(const) else [] for i in range(self.n)])
        if isinstance(op, R.MapOp):
            inp = self.of(op.inp)
            in_vals = R.sop_type(op.inp).value_set
            if inp is None or in_vals is None:
                return anything
            lut = np.zeros((len(in_vals), len(vals)), dtype=np.float64)
            for a, v in enumerate(in_vals):
                found, out = (True, None) if v is None else op.fn.get(v)
                if found and out in index:
                    lut[a, index[out]] = 1
            return (inp.astype(np.float64) @ lut) > 0
        if isinstance(op, R.SequenceMapOp):
            return self._sequence_map(op, index, anything)
        if isinstance(op, R.LinearSequenceMapOp):
            return self._linear(op, index, anything)
        return anything  # tokens and everything read through attention

    def _rows(self, index: ValueIndex, rows: list[list[object]]) -> np.ndarray:
        out = np.zeros((self.n, len(index)), dtype=bool)
        for i, row in enumerate(rows):
            for v in row:
                j = index.get(v)
                if j < 0:  # not in the type: cannot tell, assume anything
                    out[i, :] = True
                else:
                    out[i, j] = True
        return out

    def _sequence_map(self, op: R.SequenceMapOp, index: ValueIndex, anything: np.ndarray) -> np.ndarray:
        a, b = self.of(op.fst), self.of(op.snd)
        a_vals, b_vals = R.sop_type(op.fst).value_set, R.sop_type(op.snd).value_set
        if a is None or b is None or a_vals is None or b_vals is None:
            return anything
        lut = np.full((len(a_vals), len(b_vals)), -1, dtype=np.int64)
        for i, x in enumerate(a_vals):
            for j, y in enumerate(b_vals):
                found, out = (True, None) if x is None or y is None else op.fn.get(x, y)
                if found:
                    lut[i, j] = index.get(out)
        out = np.zeros_like(anything)
        cache: dict[tuple[bytes, bytes], np.ndarray] = {}
        for p in range(self.n):
            key = (a[p].tobytes(), b[p].tobytes())
            if key not in cache:
                sub = np.diagonal(lut)[a[p]] if op.fst == op.snd else lut[np.ix_(a[p], b[p])]
                row = np.zeros(len(index), dtype=bool)
                row[sub[sub >= 0]] = True
                cache[key] = row
            out[p] = cache[key]
        return out

    def _linear(self, op: R.LinearSequenceMapOp, index: ValueIndex, anything: np.ndarray) -> np.ndarray:
        a, b = self.of(op.fst), self.of(op.snd)
        a_vals, b_vals = R.sop_type(op.fst).value_set, R.sop_type(op.snd).value_set
        if a is None or b is None or a_vals is None or b_vals is None:
            return anything
        fa, fb = op.factors
        out = anything.copy()
        for p in range(self.n):
            xs, ys = np.flatnonzero(a[p]), np.flatnonzero(b[p])
            if op.fst == op.snd:
                ys = xs
            if len(xs) == 1 and len(ys) == 1:
                j = index.get(fa * a_vals[xs[0]] + fb * b_vals[ys[0]])
                if j >= 0:
                    out[p] = False
                    out[p, j] = True
            elif len(xs) == 0 or len(ys) == 0:
                out[p] = False
        return out


class CausalChecker:
    """Per selector, per (query position, key position): may it select, may it not select."""

    def __init__(self, max_seq_len: int):
        self.n = max_seq_len
        self.positions = PositionValues(max_seq_len)
        self.memo: dict[SSAValue, tuple[np.ndarray, np.ndarray]] = {}

    def may(self, sel: SSAValue) -> tuple[np.ndarray, np.ndarray]:
        """(may select, may not select), each bool [query position, key position]."""
        if sel not in self.memo:
            self.memo[sel] = self._may(sel)
        return self.memo[sel]

    def _may(self, sel: SSAValue) -> tuple[np.ndarray, np.ndarray]:
        op = sel.owner
        full = np.ones((self.n, self.n), dtype=bool)
        if isinstance(op, R.SelectOp):
            return self._select(op, full)
        if isinstance(op, R.SelectorNotOp):
            one, zero = self.may(op.inner)
            return zero, one
        if isinstance(op, R.BinarySelectorOp):
            a1, a0 = self.may(op.fst)
            b1, b0 = self.may(op.snd)
            if isinstance(op, R.SelectorAndOp):
                return a1 & b1, a0 | b0
            return a1 | b1, a0 & b0
        return full, full

    def _select(self, op: R.SelectOp, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if op.comparison is R.Comparison.FALSE:
            return ~full, full
        keys, queries = self.positions.of(op.keys), self.positions.of(op.queries)
        k_vals, q_vals = R.sop_type(op.keys).value_set, R.sop_type(op.queries).value_set
        if keys is None or queries is None or k_vals is None or q_vals is None:
            return full, full
        m = select_matrix(op, k_vals, q_vals)  # [query value, key value]
        q, k = queries.astype(np.float64), keys.astype(np.float64)

        def reach(mask: np.ndarray) -> np.ndarray:
            return (((q @ mask.astype(np.float64)) > 0).astype(np.float64) @ k.T) > 0

        return reach(m == 1), reach(m == 0)

    def future_selection(self, sel: SSAValue) -> tuple[int, int] | None:
        """A (query position, later key position) the selector may select, or None when there is none."""
        one, _ = self.may(sel)
        bad = np.argwhere(np.triu(one, k=1))
        return (int(bad[0][0]), int(bad[0][1])) if bad.size else None


@dataclass(frozen=True)
class CheckCausalPass(ModulePass):
    """Refuses a causal compile wherever causal masking would change what the program computes."""

    name = "check-causal"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not rasp_program(op, self.name).spec.causal:
            return
        program = rasp_program(op, self.name, inferred=True)
        checker = CausalChecker(program.spec.max_seq_len)
        for user in program.ops:
            if not isinstance(user, (R.AggregateOp, R.SelectorWidthOp)):
                continue
            bad = checker.future_selection(user.selector)
            if bad is None:
                continue
            sel = user.selector.owner
            name = sel.label_str if isinstance(sel, R.RaspOp) else "selector"
            raise UnsupportedError(
                f"causal=True would change what this s-op computes: its selector '{name}' can select a key "
                f"after the query (e.g. query position {bad[0]}, key position {bad[1]}: it reads tokens or a "
                "length, or its predicate looks ahead). Compile with causal=False, or use "
                "rasp.causal_evaluate to see the causal meaning.",
                label=user.label_str, source=user.src_str,
            )


__all__ = ["CheckCausalPass", "CausalChecker", "PositionValues"]
