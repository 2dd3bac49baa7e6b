"""The rasp-level interpreter: xDSL interpreter functions, one per rasp op, on numpy arrays.

It runs the tables in the IR (no Python callables) and answers exactly like `rasp.evaluate`,
including the evaluator's types (a mean of ints is a float) and its domain: where the evaluator
raises (a comparison with None, a function outside its table, a categorical mean of strings, a
constant of another length) the row is marked *outside the domain* and gets no answer.

Representation, for a batch of B inputs of one length n:
- a categorical s-op: int64 [B, n], the index of each position's value in the type's value set
  (None is a value of that set where the s-op can be None);
- a numerical s-op: float64 [B, n];
- a selector: bool [B, query, key].
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.interpreter import (
    Interpreter,
    InterpreterFunctions,
    PythonValues,
    ReturnedValues,
    TerminatorValue,
    impl,
    impl_terminator,
    register_impls,
)
from xdsl.ir import Operation, SSAValue

from raspc.analysis.selectors import operand_matrix
from raspc.dialects import rasp as R
from raspc.dialects.common import container_of
from raspc.errors import InputError, IRError
from raspc.utils.values import Value, ValueIndex, evaluator_mean, is_number

UNDEFINED = -2  # index of a value outside the program's domain


class _Batch:
    """The input of one run, and which rows left the program's domain."""

    def __init__(self, tokens: Sequence[Sequence[Value]], strict_constants: bool):
        self.tokens = tokens
        self.size = len(tokens)
        self.length = len(tokens[0]) if tokens else 0
        self.outside = np.zeros(self.size, dtype=bool)
        self.strict_constants = strict_constants


def _batch(interpreter: Interpreter) -> _Batch:
    return interpreter.get_data(RaspFunctions, "batch", lambda: None)


def _values(v: SSAValue) -> tuple[Value, ...]:
    t = R.sop_type(v)
    if t.value_set is None:
        raise IRError(f"the rasp interpreter needs inferred value sets (run infer-value-sets); {t} is not")
    return t.value_set


def _index_lut(src: Sequence[Value], dst: Sequence[Value]) -> np.ndarray:
    """For each value of `src`, its index in `dst` (UNDEFINED when missing)."""
    index = ValueIndex(dst)
    return np.array([index.get(v, UNDEFINED) for v in src], dtype=np.int64)


def _numeric_index(arr: np.ndarray, values: Sequence[Value]) -> np.ndarray:
    """Index into `values` of each number of `arr` (closest within rounding; UNDEFINED if none)."""
    if not values:
        return np.full(arr.shape, UNDEFINED, dtype=np.int64)
    nums = np.array([float(v) for v in values])
    order = np.argsort(nums, kind="stable")
    snums = nums[order]
    pos = np.clip(np.searchsorted(snums, arr), 1, len(snums) - 1) if len(snums) > 1 else np.zeros(arr.shape, int)
    best = pos.copy()
    if len(snums) > 1:
        left = pos - 1
        best = np.where(np.abs(arr - snums[left]) <= np.abs(arr - snums[pos]), left, pos)
    close = np.abs(arr - snums[best]) <= 1e-9 * np.maximum(1.0, np.abs(arr))
    return np.where(close & ~np.isnan(arr), order[best], UNDEFINED)


def as_index(v: SSAValue, arr: np.ndarray) -> np.ndarray:
    """Value indices of an s-op's array (a numerical one looked up in its value set)."""
    t = R.sop_type(v)
    if t.is_categorical:
        return arr
    return _numeric_index(arr, _values(v))


def from_index(v: SSAValue, idx: np.ndarray) -> np.ndarray:
    """An s-op's array from value indices (numbers for a numerical s-op; NaN where undefined)."""
    t = R.sop_type(v)
    if t.is_categorical:
        return idx
    nums = np.array([float(x) for x in _values(v)] + [np.nan])
    return nums[np.where(idx >= 0, idx, -1)]


def decode(v: SSAValue, arr: np.ndarray) -> list[list[Value]]:
    """Rows of Python values (categorical: the values themselves; numerical: floats)."""
    t = R.sop_type(v)
    if t.is_categorical:
        vals = _values(v)
        return [[vals[i] if i >= 0 else None for i in row] for row in arr.tolist()]
    return [[float(x) for x in row] for row in arr.tolist()]


@register_impls
class RaspFunctions(InterpreterFunctions):
    """One implementation per rasp op."""

    def _mark_outside(self, interpreter: Interpreter, rows: np.ndarray) -> None:
        batch = _batch(interpreter)
        batch.outside |= rows

    @impl(R.TokensOp)
    def run_tokens(self, interpreter: Interpreter, op: R.TokensOp, args: PythonValues) -> PythonValues:
        batch = _batch(interpreter)
        index = ValueIndex(_values(op.res))
        out = np.empty((batch.size, batch.length), dtype=np.int64)
        for b, row in enumerate(batch.tokens):
            for i, tok in enumerate(row):
                j = index.get(tok)
                if j < 0:
                    raise InputError(f"unknown token {tok!r}; the vocabulary is {list(index.values)}")
                out[b, i] = j
        return (out,)

    @impl(R.IndicesOp)
    def run_indices(self, interpreter: Interpreter, op: R.IndicesOp, args: PythonValues) -> PythonValues:
        batch = _batch(interpreter)
        pos = np.broadcast_to(np.arange(batch.length), (batch.size, batch.length))
        if R.sop_type(op.res).is_categorical:
            return (_index_lut(list(range(batch.length)), _values(op.res))[pos],)
        return (pos.astype(np.float64),)

    def _constant(self, interpreter: Interpreter, res: SSAValue, row: list[Value]) -> np.ndarray:
        batch = _batch(interpreter)
        idx = _index_lut(row, _values(res))
        return np.broadcast_to(from_index(res, idx), (batch.size, len(row))).copy()

    @impl(R.FullOp)
    def run_full(self, interpreter: Interpreter, op: R.FullOp, args: PythonValues) -> PythonValues:
        return (self._constant(interpreter, op.res, [op.fill.data] * _batch(interpreter).length),)

    @impl(R.ConstantOp)
    def run_constant(self, interpreter: Interpreter, op: R.ConstantOp, args: PythonValues) -> PythonValues:
        batch = _batch(interpreter)
        n = batch.length
        values = list(op.value.data)
        if len(values) != n:
            if batch.strict_constants:  # Tracr's ConstantSOp rejects inputs of another length
                self._mark_outside(interpreter, np.ones(batch.size, dtype=bool))
            values = (values + [None] * n)[:n]
        known = ValueIndex(_values(op.res))
        row = [v if v in known else None for v in values]
        return (self._constant(interpreter, op.res, row),)

    def _table(self, interpreter: Interpreter, op: R.MapOp | R.SequenceMapOp, operands: Sequence[SSAValue],
               arrays: Sequence[np.ndarray]) -> np.ndarray:
        out_index = ValueIndex(_values(op.res))
        none_out = out_index.get(None, UNDEFINED)
        sets = [_values(v) for v in operands]
        idx = [as_index(v, a) for v, a in zip(operands, arrays)]
        if len(sets) == 1:
            lut = np.array([none_out if v is None else _lookup(op, out_index, v) for v in sets[0]], dtype=np.int64)
            res = np.where(idx[0] >= 0, lut[np.maximum(idx[0], 0)], UNDEFINED)
        else:
            a_vals, b_vals = sets
            lut = np.array([[none_out if (x is None or y is None) else _lookup(op, out_index, x, y) for y in b_vals]
                            for x in a_vals], dtype=np.int64).reshape(len(a_vals), len(b_vals))
            ok = (idx[0] >= 0) & (idx[1] >= 0)
            res = np.where(ok, lut[np.maximum(idx[0], 0), np.maximum(idx[1], 0)], UNDEFINED)
        self._mark_outside(interpreter, (res == UNDEFINED).any(axis=1))
        return from_index(op.res, res)

    @impl(R.MapOp)
    def run_map(self, interpreter: Interpreter, op: R.MapOp, args: PythonValues) -> PythonValues:
        return (self._table(interpreter, op, [op.inp], args),)

    @impl(R.SequenceMapOp)
    def run_sequence_map(self, interpreter: Interpreter, op: R.SequenceMapOp, args: PythonValues) -> PythonValues:
        return (self._table(interpreter, op, [op.fst, op.snd], args),)

    @impl(R.TupleOp)
    def run_tuple(self, interpreter: Interpreter, op: R.TupleOp, args: PythonValues) -> PythonValues:
        import itertools

        sets = [_values(p) for p in op.parts]
        lut = _index_lut(list(itertools.product(*sets)), _values(op.res))
        flat = np.zeros(args[0].shape, dtype=np.int64)
        for idx, vals in zip(args, sets):  # mixed radix, in itertools.product order
            flat = flat * len(vals) + idx
        return (lut[flat],)

    @impl(R.LinearSequenceMapOp)
    def run_linear_sequence_map(self, interpreter: Interpreter, op: R.LinearSequenceMapOp,
                                args: PythonValues) -> PythonValues:
        fa, fb = op.factors
        return (fa * args[0] + fb * args[1],)

    @impl(R.SelectOp)
    def run_select(self, interpreter: Interpreter, op: R.SelectOp, args: PythonValues) -> PythonValues:
        keys, queries = args
        ki, qi = as_index(op.keys, keys), as_index(op.queries, queries)
        _values(op.keys), _values(op.queries)  # inferred value sets are required
        m = operand_matrix(op)
        if m.size == 0:
            sel = np.full((ki.shape[0], qi.shape[1], ki.shape[1]), -1, np.int8)
        else:
            sel = m[np.maximum(qi, 0)[:, :, None], np.maximum(ki, 0)[:, None, :]]
            sel = np.where((qi >= 0)[:, :, None] & (ki >= 0)[:, None, :], sel, -1)
        self._mark_outside(interpreter, (sel < 0).any(axis=(1, 2)))
        return (sel > 0,)

    @impl(R.SelectorAndOp)
    def run_and(self, interpreter: Interpreter, op: R.SelectorAndOp, args: PythonValues) -> PythonValues:
        return (args[0] & args[1],)

    @impl(R.SelectorOrOp)
    def run_or(self, interpreter: Interpreter, op: R.SelectorOrOp, args: PythonValues) -> PythonValues:
        return (args[0] | args[1],)

    @impl(R.SelectorNotOp)
    def run_not(self, interpreter: Interpreter, op: R.SelectorNotOp, args: PythonValues) -> PythonValues:
        return (~args[0],)

    @impl(R.SelectorWidthOp)
    def run_selector_width(self, interpreter: Interpreter, op: R.SelectorWidthOp, args: PythonValues) -> PythonValues:
        width = args[0].sum(axis=2)
        if not R.sop_type(op.res).is_categorical:
            return (width.astype(np.float64),)
        vals = _values(op.res)
        lut = _index_lut(list(range(int(width.max(initial=0)) + 1)), vals)
        out = lut[width]
        if (out == UNDEFINED).any():
            raise IRError(f"selector width {int(width[out == UNDEFINED][0])} of '{op.label_str}' is not in its value set")
        return (out,)

    @impl(R.AggregateOp)
    def run_aggregate(self, interpreter: Interpreter, op: R.AggregateOp, args: PythonValues) -> PythonValues:
        sel, vals = args
        default = op.default.data
        width = sel.sum(axis=2)
        if not R.sop_type(op.res).is_categorical:
            picked = sel.astype(np.float64)
            total = np.einsum("bqk,bk->bq", picked, np.nan_to_num(vals))
            one = np.einsum("bqk,bk->bq", picked, vals)  # the one selected value (exact), or garbage
            mean = np.where(width == 1, one, total / np.maximum(width, 1))
            fallback = np.nan if default is None else float(default)
            return (np.where(width > 0, mean, fallback),)
        src_vals, res_vals = _values(op.sop), _values(op.res)
        res_index = ValueIndex(res_vals)
        remap = _index_lut(src_vals, res_vals)
        out = np.full(width.shape, res_index.get(default, UNDEFINED), dtype=np.int64)
        big = np.iinfo(np.int64).max
        lo = np.where(sel, vals[:, None, :], big).min(axis=2)
        hi = np.where(sel, vals[:, None, :], -1).max(axis=2)
        single = (width >= 1) & (lo == hi)
        out = np.where(single & (width == 1), remap[np.clip(lo, 0, len(remap) - 1)], out)
        outside = np.zeros(width.shape[0], dtype=bool)
        for b, q in zip(*np.nonzero(width >= 2)):
            picked = [src_vals[i] for i in vals[b][sel[b, q]]]
            if all(is_number(x) for x in picked):
                out[b, q] = res_index.get(evaluator_mean(picked), UNDEFINED)
            else:  # the evaluator averages numbers only
                out[b, q] = UNDEFINED
            if out[b, q] == UNDEFINED:
                outside[b] = True
        self._mark_outside(interpreter, outside)
        return (out,)

    @impl_terminator(R.OutputOp)
    def run_output(self, interpreter: Interpreter, op: R.OutputOp, args: PythonValues) -> tuple[TerminatorValue, PythonValues]:
        return ReturnedValues(args), ()


def _lookup(op: R.MapOp | R.SequenceMapOp, out_index: ValueIndex, *args: Value) -> int:
    found, out = op.fn.get(*args)
    return out_index.get(out, UNDEFINED) if found else UNDEFINED


class _Recorder(Interpreter.Listener):
    def __init__(self) -> None:
        self.values: dict[SSAValue, Any] = {}

    def did_interpret_op(self, op: Operation, results: PythonValues) -> None:
        for r, v in zip(op.results, results):
            self.values[r] = v


class RaspInterpreter:
    """Runs a module holding a `rasp.program` on token sequences; answers as `rasp.evaluate` does."""

    def __init__(self, module: ModuleOp, strict_constants: bool = True):
        program = container_of(module)
        if not isinstance(program, R.ProgramOp):
            raise IRError(f"the rasp interpreter runs a rasp.program, not a {program.name}")
        self.module = module
        self.program = program
        self.spec = program.spec
        self.strict_constants = strict_constants
        out = program.body.block.last_op
        assert isinstance(out, R.OutputOp)
        self.output = out.inp

    def _run(self, batch: Sequence[Sequence[Value]], record: bool = False) -> tuple[Any, _Batch, dict[SSAValue, Any]]:
        recorder = _Recorder()
        interpreter = Interpreter(self.module, listeners=(recorder,) if record else ())
        interpreter.register_implementations(RaspFunctions())
        data = _Batch(batch, self.strict_constants)
        interpreter.get_data(RaspFunctions, "batch", lambda: data)
        (out,) = interpreter.run_ssacfg_region(self.program.body, ())
        return out, data, recorder.values

    def run_batch(self, batch: Sequence[Sequence[Value]]) -> list[list[Value] | None]:
        """The output per input (None for an input outside the program's domain)."""
        results: list[list[Value] | None] = [None] * len(batch)
        by_length: dict[int, list[int]] = {}
        for i, xs in enumerate(batch):
            if len(xs) > self.spec.max_seq_len:
                raise InputError(f"sequence of length {len(xs)} is longer than max_seq_len {self.spec.max_seq_len}")
            if len(xs) == 0:
                raise InputError("empty input: a sequence has at least one token")
            by_length.setdefault(len(xs), []).append(i)
        for rows in by_length.values():
            out, data, _ = self._run([list(batch[i]) for i in rows])
            decoded = decode(self.output, out)
            for k, i in enumerate(rows):
                results[i] = None if data.outside[k] else decoded[k]
        return results

    def run(self, xs: Sequence[Value]) -> list[Value] | None:
        return self.run_batch([xs])[0]

    def evaluate_all(self, batch: Sequence[Sequence[Value]]) -> dict[SSAValue, np.ndarray]:
        """Every s-op's and selector's array on a batch of equal-length inputs."""
        _, _, values = self._run(batch, record=True)
        return values


__all__ = ["RaspFunctions", "RaspInterpreter", "as_index", "from_index", "decode", "UNDEFINED"]
