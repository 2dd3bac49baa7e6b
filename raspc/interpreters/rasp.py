"""A numpy interpreter for rasp-dialect IR: runs the tables in the IR, no Python callables.

Categorical s-ops are int arrays of value indices (-1 = None), numerical s-ops float arrays,
selectors bool arrays [batch, query, key]. Inputs of one batch have one length.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from raspc.dialects import rasp as R
from raspc.dialects.rasp import table_values
from raspc.errors import InputError


def _values(v: SSAValue) -> tuple[Any, ...]:
    return R.sop_type(v).value_set or ()


def _as_number(v: Any) -> float:
    return float(v)


class RaspInterpreter:
    """Evaluates a rasp module on token sequences; answers match `rasp.evaluate`."""

    def __init__(self, module: ModuleOp, strict_constants: bool = True):
        self.module = module
        # Tracr's ConstantSOp rejects inputs of another length; probes may relax that (None-padded).
        self.strict_constants = strict_constants
        self.vocab: tuple[Any, ...] = module.attributes["raspc.vocab"].data  # type: ignore[union-attr]
        self.max_seq_len = module.attributes["raspc.max_seq_len"].value.data  # type: ignore[union-attr]
        outs = [op for op in module.ops if isinstance(op, R.OutputOp)]
        if len(outs) != 1:
            raise InputError("a rasp module needs exactly one rasp.output")
        self.output = outs[0].inp

    def run(self, xs: Sequence[Any]) -> list[Any]:
        return self.run_batch([xs])[0]

    def run_batch(self, batch: Sequence[Sequence[Any]]) -> list[list[Any]]:
        lengths = {len(x) for x in batch}
        if len(lengths) != 1:
            return [self.run_batch([x])[0] for x in batch]
        n = lengths.pop()
        if n > self.max_seq_len:
            raise InputError(f"sequence of length {n} is longer than max_seq_len {self.max_seq_len}")
        env = self.evaluate_all(batch)
        return self._decode(self.output, env[self.output])

    def evaluate_all(self, batch: Sequence[Sequence[Any]]) -> dict[SSAValue, np.ndarray]:
        """Every op's value on a batch of equal-length inputs (value indices for categorical s-ops)."""
        n = len(batch[0])
        env: dict[SSAValue, np.ndarray] = {}
        for op in self.module.ops:
            env_out = self._run_op(op, env, batch, n)
            if env_out is not None:
                env[op.results[0]] = env_out
        return env

    def _decode(self, v: SSAValue, arr: np.ndarray) -> list[list[Any]]:
        t = R.sop_type(v)
        if t.is_categorical:
            vals = t.value_set or ()
            return [[None if i < 0 else vals[i] for i in row] for row in arr.tolist()]
        return [[_clean_number(x) for x in row] for row in arr.tolist()]

    def _run_op(self, op, env, batch, n) -> np.ndarray | None:  # noqa: C901 - one case per op
        B = len(batch)
        match op:
            case R.TokensOp():
                out_vals = _values(op.res)
                idx = {v: i for i, v in enumerate(out_vals)}
                try:
                    return np.array([[idx[t] for t in x] for x in batch], dtype=np.int64).reshape(B, n)
                except KeyError as exc:
                    raise InputError(f"unknown token {exc.args[0]!r}; the vocabulary is {list(self.vocab)}") from exc
            case R.IndicesOp():
                pos = np.broadcast_to(np.arange(n), (B, n))
                if R.sop_type(op.res).is_categorical:
                    return pos.astype(np.int64)
                return pos.astype(np.float64)
            case R.FullOp():
                return self._const(op.res, [op.fill.data] * n, B)
            case R.ConstantOp():
                values = list(op.value.data)
                if len(values) != n:
                    if self.strict_constants:
                        raise InputError(f"constant '{op.label_str}' has length {len(values)}, input has {n}")
                    values = (values + [None] * n)[:n]
                return self._const(op.res, values, B)
            case R.MapOp():
                return self._apply_table(op.res, table_values(op.table), env[op.inp], op.inp, None, None)
            case R.SequenceMapOp():
                return self._apply_table(op.res, table_values(op.table), env[op.fst], op.fst, env[op.snd], op.snd)
            case R.LinearSequenceMapOp():
                return op.fst_fac.value.data * env[op.fst] + op.snd_fac.value.data * env[op.snd]
            case R.SelectOp():
                keys, queries = env[op.keys], env[op.queries]
                table = np.array(table_values(op.table), dtype=bool).reshape(
                    len(_values(op.queries)), len(_values(op.keys))
                )
                ki, qi = self._indices(op.keys, keys), self._indices(op.queries, queries)
                valid = (ki >= 0)[:, None, :] & (qi >= 0)[:, :, None]
                if table.size == 0:  # keys or queries are None everywhere: nothing is selected
                    return valid
                return table[np.maximum(qi, 0)[:, :, None], np.maximum(ki, 0)[:, None, :]] & valid
            case R.SelectorAndOp():
                return env[op.fst] & env[op.snd]
            case R.SelectorOrOp():
                return env[op.fst] | env[op.snd]
            case R.SelectorNotOp():
                return ~env[op.inner]
            case R.SelectorWidthOp():
                width = env[op.selector].sum(axis=2)
                if R.sop_type(op.res).is_categorical:
                    idx = {v: i for i, v in enumerate(_values(op.res))}
                    return np.vectorize(lambda w: idx.get(int(w), -1), otypes=[np.int64])(width)
                return width.astype(np.float64)
            case R.AggregateOp():
                return self._aggregate(op, env[op.selector], env[op.sop])
            case R.OutputOp():
                return None
        raise InputError(f"the rasp interpreter does not know {op.name}")

    def _const(self, res: SSAValue, row: list[Any], B: int) -> np.ndarray:
        t = R.sop_type(res)
        if t.is_categorical:
            idx = {v: i for i, v in enumerate(t.value_set or ())}
            arr = np.array([-1 if v is None else idx[v] for v in row], dtype=np.int64)
        else:
            arr = np.array([0.0 if v is None else float(v) for v in row], dtype=np.float64)
        return np.broadcast_to(arr, (B, len(row))).copy()

    def _indices(self, v: SSAValue, arr: np.ndarray) -> np.ndarray:
        """Value indices of an s-op's array (numerical arrays are looked up in the value set)."""
        t = R.sop_type(v)
        if t.is_categorical:
            return arr
        vals = np.array([_as_number(x) for x in (t.value_set or ())])
        hit = np.isclose(arr[..., None], vals, rtol=0, atol=1e-9)
        return np.where(hit.any(-1), hit.argmax(-1), -1)

    def _apply_table(self, res, table, a, a_v, b, b_v) -> np.ndarray:
        out_t = R.sop_type(res)
        table_arr = np.array(table, dtype=np.int64)
        ai = self._indices(a_v, a)
        if b is None:
            idx = np.where(ai >= 0, table_arr[np.maximum(ai, 0)], -1)
        else:
            bi = self._indices(b_v, b)
            nb = len(_values(b_v))
            idx = np.where((ai >= 0) & (bi >= 0), table_arr[np.maximum(ai, 0) * nb + np.maximum(bi, 0)], -1)
        if out_t.is_categorical:
            return idx
        vals = np.array([_as_number(x) for x in (out_t.value_set or ())] + [np.nan])
        return vals[idx]

    def _aggregate(self, op: R.AggregateOp, sel: np.ndarray, vals: np.ndarray) -> np.ndarray:
        res_t = R.sop_type(op.res)
        default = op.default.data
        width = sel.sum(axis=2)
        if not res_t.is_categorical:
            total = np.einsum("bqk,bk->bq", sel.astype(np.float64), vals)
            return np.where(width > 0, total / np.maximum(width, 1), float(default))
        # categorical: the one selected value, a numeric mean (Tracr's semantics), or the default
        src_vals, res_vals = _values(op.sop), _values(op.res)
        res_index = {v: i for i, v in enumerate(res_vals)}
        remap = np.array([res_index[v] for v in src_vals] + [-1], dtype=np.int64)
        out = np.full(width.shape, -1 if default is None else res_index[default], dtype=np.int64)
        for b, q in zip(*np.nonzero(width)):
            chosen = vals[b][sel[b, q]]
            if (chosen == chosen[0]).all():
                out[b, q] = remap[chosen[0]]
            else:  # Tracr's mean of different values: numbers only (the evaluator raises otherwise)
                picked = [src_vals[i] for i in chosen if i >= 0]
                numeric = picked and all(isinstance(x, (int, float)) for x in picked)
                mean = sum(Fraction(x) for x in picked) / len(picked) if numeric else None
                out[b, q] = res_index.get(mean, -1) if mean is not None else -1
        return out


def _clean_number(x: float) -> Any:
    if np.isnan(x):
        return None
    return int(x) if float(x).is_integer() else x
