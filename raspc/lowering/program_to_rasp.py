"""Front end: trace a Python RASP program into rasp-dialect IR.

Infers every s-op's finite value set from the vocabulary and max_seq_len (as tight as the
operation allows: it decides the model's size), tabulates every Map / SequenceMap / Select
function over those sets, and emits one rasp op per primitive. After this step no Python
callable is needed: the IR text alone defines the program.
"""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import BoolAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination

from raspc import rasp
from raspc.dialects import rasp as R
from raspc.errors import CompileError, UnsupportedError, ValueSetError, VocabError
from raspc.values import simple_fraction, sorted_values

# Bounds on inferred value sets: past these a program would compile into an absurd model.
MAX_CATEGORICAL_VALUES = 5_000
MAX_NUMERICAL_VALUES = 50_000

_SSA_NAME = re.compile(r"[^A-Za-z0-9_.$-]")


def ssa_name(label: str) -> str:
    """A valid SSA name hint for a label (`opp_idx-1` stays, `shift_by(1)` becomes `shift_by_1_`)."""
    name = _SSA_NAME.sub("_", label)
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    return name


def _labels(exprs: Sequence[rasp.RASPExpr]) -> dict[int, str]:
    """Unique, stable labels: the user's name, or `name_id` for unnamed expressions."""
    out: dict[int, str] = {}
    used: set[str] = {"tokens", "indices", "indices_numerical"}
    for e in exprs:
        if isinstance(e, (rasp.TokensType, rasp.IndicesType)):
            # every copy of tokens/indices is the same embedding; numerical indices are another space
            out[id(e)] = e.label if rasp.is_categorical(e) else f"{e.label}_numerical"
            continue
        base = e.label if e.name == rasp.default_name(e) else e.name
        label, k = base, 1
        while label in used:
            k += 1
            label = f"{base}_{k}"
        used.add(label)
        out[id(e)] = label
    return out


def topological_order(output: rasp.RASPExpr) -> list[rasp.RASPExpr]:
    """Every expression the output depends on, dependencies first (deterministic DFS post-order)."""
    order: list[rasp.RASPExpr] = []
    state: dict[int, int] = {}
    stack: list[tuple[rasp.RASPExpr, int]] = [(output, 0)]
    while stack:
        expr, i = stack.pop()
        children = list(expr.children)
        if i == 0:
            if state.get(id(expr)) == 2:
                continue
            state[id(expr)] = 1
        if i < len(children):
            stack.append((expr, i + 1))
            child = children[i]
            if state.get(id(child)) != 2:
                stack.append((child, 0))
            continue
        if state.get(id(expr)) != 2:
            state[id(expr)] = 2
            order.append(expr)
    return order


class _Tracer:
    def __init__(self, vocab: Sequence[Any], max_seq_len: int):
        self.vocab = vocab
        self.max_seq_len = max_seq_len
        self.ops: list[Operation] = []
        self.values: dict[int, SSAValue] = {}
        self.labels: dict[int, str] = {}
        # s-ops that can be None at some position (a categorical None is "no direction active")
        self.maybe_none: set[int] = set()
        # numerical s-ops whose last float bit depends on the evaluator's summation order
        # (means of non-integers, and numerical functions of those)
        self.inexact: set[int] = set()
        # linear maps of two means over one selector, whose value set was inferred jointly
        self.joint: set[int] = set()

    # -- helpers ---------------------------------------------------------
    def fail(self, expr: rasp.RASPExpr, message: str, cls: type[CompileError] = UnsupportedError) -> CompileError:
        return cls(message, label=self.labels.get(id(expr), expr.label), source=getattr(expr, "source", None))

    def emit(self, expr: rasp.RASPExpr, op: Operation) -> SSAValue:
        self.ops.append(op)
        res = op.results[0]
        res.name_hint = ssa_name(self.labels[id(expr)])
        self.values[id(expr)] = res
        return res

    def src(self, expr: rasp.RASPExpr) -> str | None:
        return getattr(expr, "source", None)

    def encoding(self, expr: rasp.SOp) -> str:
        return R.NUMERICAL if rasp.is_numerical(expr) else R.CATEGORICAL

    def value_set(self, expr: rasp.RASPExpr) -> tuple[Any, ...] | None:
        t = self.values[id(expr)].type
        assert isinstance(t, R.SOpType)
        return t.value_set

    def finite_values(self, expr: rasp.SOp, user: rasp.RASPExpr, role: str) -> tuple[Any, ...]:
        vals = self.value_set(expr)
        if vals is None:
            raise self.fail(
                user,
                f"{role} '{self.labels[id(expr)]}' is numerical with a value set that is not finite "
                f"(or larger than {MAX_NUMERICAL_VALUES}); it cannot be tabulated",
            )
        return vals

    def make_type(self, expr: rasp.SOp, values: Sequence[Any] | None) -> R.SOpType:
        enc = self.encoding(expr)
        if values is not None:
            values = sorted_values(v for v in values if v is not None)
            limit = MAX_CATEGORICAL_VALUES if enc == R.CATEGORICAL else MAX_NUMERICAL_VALUES
            if len(values) > limit:
                if enc == R.NUMERICAL:
                    values = None
                else:
                    raise self.fail(
                        expr, f"value set grows to {len(values)} values (bound {limit})", ValueSetError
                    )
        if enc == R.NUMERICAL and values is not None:
            bad = [v for v in values if not isinstance(v, (int, float))]
            if bad:
                raise self.fail(expr, f"numerical s-op takes non-numeric values {bad[:3]}")
        if enc == R.CATEGORICAL and values is None:
            raise self.fail(expr, "categorical s-op needs a finite value set", ValueSetError)
        return R.SOpType(enc, values)

    def tabulate(
        self, expr: rasp.RASPExpr, f: Callable[..., Any], *arg_sets: Sequence[Any], inexact: Sequence[bool] = ()
    ) -> list[Any]:
        """f over the product of the argument sets. Arguments flagged `inexact` (numerical values
        from means, which the evaluator rounds in summation order) must not change f's answer when
        moved by one float step: otherwise no float model, and no value set, can follow f."""
        out = []
        for args in itertools.product(*arg_sets):
            try:
                value = f(*args)
                for i, flag in enumerate(inexact):
                    x = args[i]
                    if flag and isinstance(x, float) and not _dyadic(x):
                        for nb in (math.nextafter(x, -math.inf), math.nextafter(x, math.inf)):
                            if not _close(f(*args[:i], nb, *args[i + 1 :]), value):
                                raise self.fail(
                                    expr,
                                    f"the function answers differently for {x!r} and its float neighbour {nb!r}; "
                                    "this input comes from a mean of non-integers, whose last bit depends on "
                                    "summation order, so no model can follow the function there",
                                )
            except CompileError:
                raise
            except Exception as exc:  # noqa: BLE001 - any user-function failure is reported
                shown = ", ".join(repr(a) for a in args)
                raise self.fail(
                    expr, f"function raised {type(exc).__name__}: {exc} on input ({shown})", ValueSetError
                ) from exc
            out.append(value)
        return out

    # -- s-ops -----------------------------------------------------------
    def trace(self, expr: rasp.RASPExpr) -> None:
        self._trace(expr)
        if self._is_inexact(expr):
            self.inexact.add(id(expr))
        if self._can_be_none(expr):
            if isinstance(expr, rasp.SOp) and rasp.is_numerical(expr):
                raise self.fail(expr, "a numerical s-op cannot be None (it is one number per position)")
            self.maybe_none.add(id(expr))

    def _is_inexact(self, expr: rasp.RASPExpr) -> bool:
        if not isinstance(expr, rasp.SOp) or not rasp.is_numerical(expr):
            return False
        if any(id(c) in self.inexact for c in expr.children):
            return True
        if isinstance(expr, rasp.Aggregate):
            vals = self.value_set(expr.sop)
            return vals is None or any(not float(v).is_integer() for v in vals)
        # a joint value set holds the exact rationals; the evaluator subtracts two rounded means
        return id(expr) in self.joint

    def _can_be_none(self, expr: rasp.RASPExpr) -> bool:
        if isinstance(expr, rasp.Full):
            return expr.fill is None
        if isinstance(expr, rasp.ConstantSOp):
            return any(v is None for v in expr.value)
        if isinstance(expr, (rasp.Map, rasp.SequenceMap)):
            inputs = [expr.inner] if isinstance(expr, rasp.Map) else [expr.fst, expr.snd]
            none_in = [i for i in inputs if id(i) in self.maybe_none]
            if none_in and rasp.is_numerical(expr):
                raise self.fail(
                    expr,
                    f"input '{self.labels[id(none_in[0])]}' can be None, and a numerical result cannot represent "
                    "the None the evaluator gives there; give that s-op a default (e.g. Aggregate(..., default=0))",
                )
            op = self.values[id(expr)].owner
            return bool(none_in) or (isinstance(op, (R.MapOp, R.SequenceMapOp)) and -1 in R.table_values(op.table))
        if isinstance(expr, rasp.Aggregate):
            empty = expr.default is None and not _never_empty(expr.selector)
            return empty or id(expr.sop) in self.maybe_none
        return False

    def _trace(self, expr: rasp.RASPExpr) -> None:
        label, src = self.labels[id(expr)], self.src(expr)
        if isinstance(expr, rasp.TokensType):
            if rasp.is_numerical(expr):
                raise self.fail(expr, "tokens must be categorical")
            self.emit(expr, R.TokensOp(R.SOpType(R.CATEGORICAL, sorted_values(self.vocab)), label))
        elif isinstance(expr, rasp.IndicesType):
            self.emit(expr, R.IndicesOp(self.make_type(expr, range(self.max_seq_len)), label))
        elif isinstance(expr, rasp.LengthType):
            self.emit(expr, self._length_op(expr, label, src))
        elif isinstance(expr, rasp.Map):
            self._map(expr, label, src)
        elif isinstance(expr, rasp.SequenceMap):
            self._sequence_map(expr, label, src)
        elif isinstance(expr, rasp.Full):
            self.emit(expr, R.FullOp(self.make_type(expr, [expr.fill]), expr.fill, label, src))
        elif isinstance(expr, rasp.ConstantSOp):
            if len(expr.value) > self.max_seq_len:
                raise self.fail(expr, f"constant has {len(expr.value)} values, longer than max_seq_len")
            self.emit(expr, R.ConstantOp(self.make_type(expr, expr.value), expr.value, label, src))
        elif isinstance(expr, rasp.Select):
            self._select(expr, label, src)
        elif isinstance(expr, (rasp.SelectorAnd, rasp.SelectorOr)):
            cls = R.SelectorAndOp if isinstance(expr, rasp.SelectorAnd) else R.SelectorOrOp
            self.emit(expr, cls(self.values[id(expr.fst)], self.values[id(expr.snd)], label, src))
        elif isinstance(expr, rasp.SelectorNot):
            self.emit(expr, R.SelectorNotOp(self.values[id(expr.inner)], label, src))
        elif isinstance(expr, rasp.Aggregate):
            self._aggregate(expr, label, src)
        elif isinstance(expr, rasp.SelectorWidth):
            self._selector_width(expr, label, src)
        elif isinstance(expr, rasp.ConstantSelector):
            raise self.fail(expr, "ConstantSelector has no transformer implementation (a fixed attention pattern "
                            "cannot be computed from tokens); use a Select over indices instead")
        else:
            raise self.fail(expr, f"unsupported RASP expression {type(expr).__name__}")

    def _length_op(self, expr: rasp.RASPExpr, label: str, src: str | None) -> Operation:
        """`length` is SelectorWidth(Select(tokens, tokens, TRUE)): emitted as those two ops."""
        tok_t = R.SOpType(R.CATEGORICAL, sorted_values(self.vocab))
        tok = self.values.get(id(rasp.tokens))
        if tok is None:
            tok_op = R.TokensOp(tok_t, "tokens")
            self.ops.append(tok_op)
            tok = tok_op.res
            tok.name_hint = "tokens"
            self.values[id(rasp.tokens)] = tok
        n = len(tok_t.value_set or ())
        sel = R.SelectOp(tok, tok, [1] * (n * n), f"{label}_selector", src, comparison="TRUE")
        self.ops.append(sel)
        sel.res.name_hint = ssa_name(f"{label}_selector")
        return R.SelectorWidthOp(sel.res, R.SOpType(R.CATEGORICAL, range(1, self.max_seq_len + 1)), label, src)

    def _map(self, expr: rasp.Map, label: str, src: str | None) -> None:
        in_vals = self.finite_values(expr.inner, expr, "input")
        outs = self.tabulate(expr, expr.f, in_vals, inexact=[id(expr.inner) in self.inexact])
        if rasp.is_numerical(expr) and any(o is None for o in outs):
            raise self.fail(expr, "a numerical Map returned None")
        t = self.make_type(expr, outs)
        index = {v: i for i, v in enumerate(t.value_set or ())}
        table = [-1 if o is None else index[o] for o in outs]
        self.emit(expr, R.MapOp(self.values[id(expr.inner)], t, table, label, src))

    def _sequence_map(self, expr: rasp.SequenceMap, label: str, src: str | None) -> None:
        fst, snd = self.values[id(expr.fst)], self.values[id(expr.snd)]
        if (
            isinstance(expr, rasp.LinearSequenceMap)
            and rasp.is_numerical(expr)
            and rasp.is_numerical(expr.fst)
            and rasp.is_numerical(expr.snd)
        ):
            vals = self._joint_mean_values(expr)
            if vals is not None:
                self.joint.add(id(expr))
            else:
                a, b = self.value_set(expr.fst), self.value_set(expr.snd)
                if a is not None and b is not None and len(a) * len(b) <= MAX_NUMERICAL_VALUES:
                    vals = self.tabulate(expr, expr.f, a, b)
            t = self.make_type(expr, vals)
            self.emit(expr, R.LinearSequenceMapOp(fst, snd, t, expr.fst_fac, expr.snd_fac, label, src))
            return
        a = self.finite_values(expr.fst, expr, "first input")
        b = self.finite_values(expr.snd, expr, "second input")
        if len(a) * len(b) > MAX_NUMERICAL_VALUES:
            raise self.fail(expr, f"input value sets {len(a)} x {len(b)} are too large to tabulate", ValueSetError)
        outs = self.tabulate(expr, expr.f, a, b, inexact=[id(expr.fst) in self.inexact, id(expr.snd) in self.inexact])
        if rasp.is_numerical(expr) and any(o is None for o in outs):
            raise self.fail(expr, "a numerical SequenceMap returned None")
        t = self.make_type(expr, outs)
        index = {v: i for i, v in enumerate(t.value_set or ())}
        table = [-1 if o is None else index[o] for o in outs]
        self.emit(expr, R.SequenceMapOp(fst, snd, t, table, label, src))

    def _select(self, expr: rasp.Select, label: str, src: str | None) -> None:
        keys = self.finite_values(expr.keys, expr, "keys")
        queries = self.finite_values(expr.queries, expr, "queries")
        inexact = [id(expr.queries) in self.inexact, id(expr.keys) in self.inexact]
        table = _comparison_table(expr.predicate, queries, keys) if not any(inexact) else None
        if table is None:
            raw = self.tabulate(expr, lambda q, k: expr.predicate(k, q), queries, keys, inexact=inexact)
            table = [1 if r else 0 for r in raw]
        comparison = expr.predicate.name if isinstance(expr.predicate, rasp.Comparison) else None
        self.emit(expr, R.SelectOp(self.values[id(expr.keys)], self.values[id(expr.queries)], table, label, src,
                                   comparison))

    def _joint_mean_values(self, expr: rasp.LinearSequenceMap) -> list[Any] | None:
        """Values of `a*mean_S(u) + b*mean_S(v)` when both means use the same selector: they are the
        means of `a*u + b*v` over S (one width n for both), far fewer than all pairs of means
        (make_pair_balance at max_seq_len 30: ~1k values instead of ~78k)."""
        x, y = expr.fst, expr.snd
        if not (isinstance(x, rasp.Aggregate) and isinstance(y, rasp.Aggregate)):
            return None
        sx, sy = self.values[id(x.selector)].owner, self.values[id(y.selector)].owner
        same = sx is sy or (
            isinstance(sx, R.SelectOp) and isinstance(sy, R.SelectOp) and sx.keys == sy.keys
            and sx.queries == sy.queries and sx.table == sy.table
        )
        u, v = self.value_set(x.sop), self.value_set(y.sop)
        if not same or u is None or v is None:
            return None
        a, b = expr.fst_fac, expr.snd_fac
        means = _possible_means(sorted({a * p + b * q for p in u for q in v}), self.max_seq_len, MAX_NUMERICAL_VALUES)
        if means is None:
            return None
        default = a * (x.default or 0) + b * (y.default or 0)
        return [*means, default]

    def _never_selects_self(self, sel: rasp.Selector) -> bool:
        """True when no query selects its own position (keys are queries, the table's diagonal is
        false: LT, GT, NEQ), so a width is at most max_seq_len - 1."""
        if not (isinstance(sel, rasp.Select) and sel.keys is sel.queries):
            return False
        op = self.values[id(sel)].owner
        assert isinstance(op, R.SelectOp)
        n = len(self.value_set(sel.keys) or ())
        table = R.table_values(op.table)
        return not any(table[i * n + i] for i in range(n))

    def _aggregate(self, expr: rasp.Aggregate, label: str, src: str | None) -> None:
        inner = expr.sop
        if rasp.is_numerical(expr) != rasp.is_numerical(inner):
            raise self.fail(expr, f"aggregate is {self.encoding(expr)} but its input '{self.labels[id(inner)]}' is "
                            f"{self.encoding(inner)}; annotate both the same way")
        vals = self.value_set(inner)
        if rasp.is_numerical(expr):
            default = 0 if expr.default is None else expr.default
            if not isinstance(default, (int, float)):
                raise self.fail(expr, f"numerical aggregate default must be a number, got {default!r}")
            out = None if vals is None else _possible_means(vals, self.max_seq_len, MAX_NUMERICAL_VALUES)
            if out is not None:
                out = [*out, default]
        else:
            default = expr.default
            out = [*(vals or ()), *([] if default is None else [default])]
        t = self.make_type(expr, out)
        self.emit(expr, R.AggregateOp(self.values[id(expr.selector)], self.values[id(inner)], t, default, label, src))

    def _selector_width(self, expr: rasp.SelectorWidth, label: str, src: str | None) -> None:
        low = 1 if _always_selects_self(expr.selector) else 0
        high = self.max_seq_len - 1 if self._never_selects_self(expr.selector) else self.max_seq_len
        t = self.make_type(expr, range(low, high + 1))
        self.emit(expr, R.SelectorWidthOp(self.values[id(expr.selector)], t, label, src))


_NUMPY_COMPARISONS = {
    rasp.Comparison.EQ: np.equal, rasp.Comparison.NEQ: np.not_equal, rasp.Comparison.LT: np.less,
    rasp.Comparison.LEQ: np.less_equal, rasp.Comparison.GT: np.greater, rasp.Comparison.GEQ: np.greater_equal,
}


def _comparison_table(predicate: Any, queries: Sequence[Any], keys: Sequence[Any]) -> list[int] | None:
    """A Comparison over numbers, vectorised (selects over ~10^6 value pairs); None when not applicable."""
    if predicate in (rasp.Comparison.TRUE, rasp.Comparison.FALSE):
        return [int(predicate is rasp.Comparison.TRUE)] * (len(queries) * len(keys))
    op = _NUMPY_COMPARISONS.get(predicate) if isinstance(predicate, rasp.Comparison) else None
    numbers = all(isinstance(v, (int, float)) for v in (*queries, *keys))
    if op is None or not numbers:
        return None
    q = np.array(queries, dtype=object if any(isinstance(v, int) and abs(v) > 2**52 for v in queries) else float)
    k = np.array(keys, dtype=q.dtype)
    return op(k[None, :], q[:, None]).astype(np.int8).ravel().tolist()


def _close(a: Any, b: Any) -> bool:
    """Equal, or numbers within float rounding (a continuous function may move by an ulp)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def _dyadic(x: float) -> bool:
    """True when x is exactly the simple fraction it looks like (0.5, 3.0), not a rounding of one (1/3)."""
    d = simple_fraction(x).denominator
    return d & (d - 1) == 0


def _never_empty(sel: rasp.Selector) -> bool:
    """True when every query provably selects at least one key."""
    if isinstance(sel, rasp.Select) and sel.predicate is rasp.Comparison.TRUE:
        return True
    if isinstance(sel, rasp.SelectorOr):
        return _never_empty(sel.fst) or _never_empty(sel.snd)
    return _always_selects_self(sel)


def _always_selects_self(sel: rasp.Selector) -> bool:
    """True when every query selects at least its own position (so the width is at least 1)."""
    if isinstance(sel, rasp.Select) and sel.keys is sel.queries:
        if isinstance(sel.predicate, rasp.Comparison):
            return sel.predicate in (rasp.Comparison.TRUE, rasp.Comparison.EQ, rasp.Comparison.LEQ,
                                     rasp.Comparison.GEQ)
    return False


def _possible_means(values: Sequence[Any], max_width: int, bound: int) -> list[float] | None:
    """Every mean of 1..max_width values drawn (with repetition) from `values`; None past `bound`.

    Tracr records only 1/n here and so mis-sizes every numerical step after a mean.
    """
    fracs = sorted({simple_fraction(float(v)) for v in values})
    sums = {Fraction(0)}
    means: set[Fraction] = set()
    for n in range(1, max_width + 1):
        sums = {s + v for s in sums for v in fracs}
        if len(sums) > bound:
            return None
        means.update(s / n for s in sums)
        if len(means) > bound:
            return None
    return [float(m) if m.denominator != 1 else int(m) for m in means]


def program_to_rasp(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    causal: bool = False,
) -> ModuleOp:
    """Trace `program` into a verified rasp-dialect module."""
    if not isinstance(program, rasp.SOp):
        raise CompileError(f"the program must be an SOp, got {type(program).__name__}")
    vocab = list(vocab)
    if not vocab:
        raise VocabError("the vocabulary is empty")
    if len(set(vocab)) != len(vocab):
        raise VocabError("the vocabulary has duplicate tokens")
    if any(v is None for v in vocab):
        raise VocabError("None cannot be a token")
    if compiler_bos in vocab:
        raise VocabError(f"BOS token {compiler_bos!r} is also in the vocabulary")
    if compiler_pad in vocab or compiler_pad == compiler_bos:
        raise VocabError(f"PAD token {compiler_pad!r} collides with the vocabulary or BOS")
    if not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise VocabError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
    try:
        sorted_values(vocab)
    except TypeError as exc:
        raise VocabError(f"unsupported token: {exc}") from exc

    order = topological_order(program)
    if not any(isinstance(e, rasp.TokensType) for e in order) and not any(
        isinstance(e, rasp.LengthType) for e in order
    ):
        raise CompileError(
            "the program does not read `tokens`: its output cannot depend on the input",
            label=_labels([program])[id(program)], source=getattr(program, "source", None),
        )
    tracer = _Tracer(vocab, max_seq_len)
    tracer.labels = _labels(order)
    for expr in order:
        tracer.trace(expr)
    out = tracer.values[id(program)]
    out_t = R.sop_type(out)
    if out_t.is_categorical and not out_t.value_set:
        raise tracer.fail(program, "the output is None at every position (its value set is empty)")
    tracer.ops.append(R.OutputOp(out))
    module = ModuleOp(tracer.ops)
    module.attributes.update(
        {
            "raspc.vocab": R.ValuesAttr(tuple(vocab)),
            "raspc.bos": R.ValueAttr(compiler_bos),
            "raspc.pad": R.ValueAttr(compiler_pad),
            "raspc.max_seq_len": IntegerAttr(max_seq_len, i64),
            "raspc.causal": BoolAttr.from_bool(causal),
        }
    )
    # copies of tokens/indices (from .named/numerical) become one op each
    CommonSubexpressionElimination().apply(Context(), module)
    module.verify()
    return module


__all__ = ["program_to_rasp", "topological_order", "ssa_name"]
