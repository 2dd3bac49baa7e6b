"""Front end: trace a Python RASP program into a `rasp.program`.

Its one job is the Python callables: it walks the program's graph, and for every Map,
SequenceMap and Select calls the user's function on every value its inputs can take (as the
value-set analysis infers them, op by op), so that the IR holds tables and no Python. Value
sets, None-ness and exactness come from `analysis.value_sets`, run on each op as it is built.

Tabulation follows the evaluator:
- a function that raises on a value is outside the program's domain there (the evaluator raises
  too): that entry is left out of the table; a function that raises on every value is an error;
- results are plain RASP values (numpy scalars become bool/int/float); anything else (inf, nan,
  a list, a Fraction) is a ValueSetError naming the s-op and the value;
- where an input is a mean of non-integers (inexact: its last bits depend on the evaluator's
  summation order), the function must answer the same a few float steps around the value,
  or no model can follow it: that is refused.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination

from raspc import rasp
from raspc.analysis.value_sets import SOpFacts, check_output, set_type, transfer
from raspc.dialects import rasp as R
from raspc.dialects.common import CATEGORICAL, NUMERICAL, InputSpec, check_input_spec
from raspc.errors import CompileError, UnsupportedError, ValueSetError, VocabError
from raspc.utils.naming import FreshNames, ssa_name
from raspc.utils.values import UnsupportedValue, Value, format_value, identity, normalize, sorted_values

_ACCURACY = 2.0**-52
MAX_TABULATED_PAIRS = 50_000  # calls of a user's two-argument function (sequence_map, select predicate)


def _labels(exprs: Sequence[rasp.RASPExpr]) -> dict[int, str]:
    """Unique, stable labels: the user's name, or `name_id` for unnamed expressions."""
    out: dict[int, str] = {}
    fresh = FreshNames({"tokens", "indices", "indices_numerical"}, sep="_")
    for e in exprs:
        if isinstance(e, (rasp.TokensType, rasp.IndicesType)):
            # every copy of tokens/indices is the same embedding; numerical indices are another space
            out[id(e)] = e.label if rasp.is_categorical(e) else f"{e.label}_numerical"
            continue
        out[id(e)] = fresh(e.label if e.name == rasp.default_name(e) else e.name)
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


def _encoding(expr: rasp.SOp) -> Any:
    return NUMERICAL if rasp.is_numerical(expr) else CATEGORICAL


class _Tracer:
    def __init__(self, spec: InputSpec, labels: dict[int, str]):
        self.spec = spec
        self.labels = labels
        self.ops: list[Operation] = []
        self.values: dict[int, SSAValue] = {}
        self.facts: dict[SSAValue, SOpFacts] = {}
        # numpy scalars a function returned, by expression and plain value: what the evaluator
        # passes the next function instead of the plain value
        self.raw: dict[int, dict[Hashable, list[Any]]] = {}
        self._spreads: dict[int, tuple[SOpFacts, float]] = {}

    # -- helpers ---------------------------------------------------------
    def fail(self, expr: rasp.RASPExpr, message: str, cls: type[CompileError] = UnsupportedError) -> CompileError:
        return cls(message, label=self.labels.get(id(expr), expr.label), source=getattr(expr, "source", None))

    def emit(self, expr: rasp.RASPExpr, op: Operation) -> SSAValue:
        """Appends `op`, infers its result's value set, and binds it to `expr`."""
        res = op.results[0]
        if isinstance(op, R.SOpOp):
            fact = transfer(op, self.facts, self.spec)
            res = set_type(res, fact.to_type())
            self.facts[res] = fact
        res.name_hint = ssa_name(self.labels[id(expr)])
        self.ops.append(op)
        self.values[id(expr)] = res
        return res

    def value(self, expr: rasp.RASPExpr) -> SSAValue:
        return self.values[id(expr)]

    def fact(self, expr: rasp.RASPExpr) -> SOpFacts:
        return self.facts[self.values[id(expr)]]

    def finite(self, expr: rasp.SOp, user: rasp.RASPExpr, role: str) -> SOpFacts:
        f = self.fact(expr)
        if f.values is None:
            raise self.fail(user, f"{role} '{self.labels[id(expr)]}' is numerical with a value set that is not "
                                  "finite (or too large); it cannot be tabulated")
        return f

    def common(self, expr: rasp.RASPExpr) -> dict[str, Any]:
        return {"label": self.labels[id(expr)], "src": getattr(expr, "source", None)}

    def tabulate(
        self, expr: rasp.RASPExpr, f: Callable[..., Any], arg_facts: Sequence[SOpFacts],
        rows: Iterable[tuple[Value, ...]], numerical_out: bool, args_from: Sequence[rasp.RASPExpr] = (),
    ) -> list[tuple[tuple[Value, ...], Any]]:
        """(args, f(args)) for every row where f answers; rows where it raises are outside the domain.

        Where an argument came from a function that returned a numpy scalar, the evaluator passes f
        that scalar, not the plain value raspc stores: f must answer the same for both."""
        raws = [self.raw.get(id(e), {}) for e in args_from]
        out_raw: dict[Hashable, list[Any]] = {}
        entries: list[tuple[tuple[Value, ...], Any]] = []
        first_error: tuple[tuple[Value, ...], Exception] | None = None
        n_rows = 0
        with warnings.catch_warnings():  # a user's function may warn on values outside its domain
            warnings.simplefilter("ignore")
            for args in rows:
                n_rows += 1
                try:
                    result = f(*args)
                except Exception as exc:  # noqa: BLE001 - the evaluator raises here too: outside the domain
                    result = exc
                passed = [self.check_raw_alike(expr, f, result, variant) for variant in self.raw_variants(args, raws)]
                if isinstance(result, Exception):
                    first_error = first_error or (args, result)
                    continue
                out = self.clean(expr, result, args)
                for r in (result, *passed):
                    if _holds_numpy(r):  # the evaluator passes the numpy scalar(s) on as they are
                        out_raw.setdefault(identity(out), []).append(r)
                self.check_stable(expr, f, args, arg_facts, out, numerical_out)
                entries.append((args, out))
        if out_raw:
            self.raw[id(expr)] = out_raw
        if n_rows and not entries:
            args, exc = first_error  # type: ignore[misc]
            shown = ", ".join(format_value(a) for a in args)
            raise self.fail(expr, f"function raised {type(exc).__name__}: {exc} on every input value, e.g. ({shown})",
                            ValueSetError) from exc
        return entries

    @staticmethod
    def raw_variants(args: tuple[Value, ...], raws: Sequence[dict[Hashable, list[Any]]]) -> list[tuple[Any, ...]]:
        """The argument tuples the evaluator may really pass: numpy scalars in place of plain values."""
        if not any(raws):
            return []
        options = [[a, *raws[i].get(identity(a), [])] if i < len(raws) else [a] for i, a in enumerate(args)]
        return [v for v in itertools.product(*options) if any(x is not a for x, a in zip(v, args))]

    def check_raw_alike(self, expr: rasp.RASPExpr, f: Callable[..., Any], result: Any, variant: tuple[Any, ...]) -> Any:
        """f on the numpy variant of its arguments; refuses unless it answers like on the plain ones."""
        try:
            other: Any = f(*variant)
        except Exception as exc:  # noqa: BLE001
            other = exc
        same = (isinstance(result, Exception) and isinstance(other, Exception)) or (
            not isinstance(result, Exception) and not isinstance(other, Exception)
            and _normalized_identity(result) == _normalized_identity(other))
        if not same:
            shown = ", ".join(repr(v) for v in variant)
            raise self.fail(
                expr,
                f"the function answers {_describe(other)} for ({shown}), which an earlier function returned as numpy "
                f"scalars, but {_describe(result)} for their plain values; raspc computes with plain Python values, "
                "so it cannot follow a function that tells them apart",
            )
        return other

    def clean(self, expr: rasp.RASPExpr, value: Any, args: Sequence[Value]) -> Value:
        try:
            return normalize(value)
        except UnsupportedValue as exc:
            shown = ", ".join(format_value(a) for a in args)
            raise self.fail(expr, f"function returned an unsupported value on input ({shown}): {exc}",
                            ValueSetError) from None

    def spread(self, fact: SOpFacts) -> float:
        """The largest magnitude among a value set's numbers (how far a sum's rounding can reach)."""
        key = id(fact)
        if key not in self._spreads:
            self._spreads[key] = (fact, max((abs(v) for v in fact.non_none if type(v) in (int, float)), default=0.0))
        return self._spreads[key][1]

    def check_stable(
        self, expr: rasp.RASPExpr, f: Callable[..., Any], args: tuple[Value, ...], arg_facts: Sequence[SOpFacts],
        out: Value, numerical_out: bool,
    ) -> None:
        """An inexact input (a mean of non-integers) may reach f a few float steps off: f must not care."""
        for i, fact in enumerate(arg_facts):
            x = args[i]
            if fact.exact or type(x) is not float:
                continue
            delta = max(math.ulp(x), self.spec.max_seq_len * _ACCURACY * self.spread(fact))
            for nb in (math.nextafter(x, -math.inf), math.nextafter(x, math.inf), x - delta, x + delta):
                try:
                    other = normalize(f(*args[:i], nb, *args[i + 1:]))
                except Exception:  # noqa: BLE001
                    other = _RAISED
                if not _agree(out, other, numerical_out):
                    raise self.fail(
                        expr,
                        f"the function answers {format_value(out)} for {x!r} but {other!r} for {nb!r}; this input is a "
                        "mean of non-integers, whose last bits depend on the evaluator's summation order, so no "
                        "model can follow the function there",
                    )

    # -- s-ops -----------------------------------------------------------
    def trace(self, expr: rasp.RASPExpr) -> None:
        c = self.common(expr)
        if isinstance(expr, rasp.TokensType):
            if rasp.is_numerical(expr):
                raise self.fail(expr, "tokens must be categorical")
            self.emit(expr, R.TokensOp(label=c["label"]))
        elif isinstance(expr, rasp.IndicesType):
            self.emit(expr, R.IndicesOp(_encoding(expr), label=c["label"]))
        elif isinstance(expr, rasp.LengthType):
            self.length(expr, c)
        elif isinstance(expr, rasp.Map):
            self.map(expr, c)
        elif isinstance(expr, rasp.SequenceMap):
            self.sequence_map(expr, c)
        elif isinstance(expr, rasp.Full):
            self.emit(expr, R.FullOp(_encoding(expr), self.clean(expr, expr.fill, ()), **c))
        elif isinstance(expr, rasp.ConstantSOp):
            if len(expr.value) > self.spec.max_seq_len:
                raise self.fail(expr, f"constant has {len(expr.value)} values, longer than max_seq_len")
            values = [self.clean(expr, v, ()) for v in expr.value]
            self.emit(expr, R.ConstantOp(_encoding(expr), values, **c))
        elif isinstance(expr, rasp.Select):
            self.select(expr, c)
        elif isinstance(expr, (rasp.SelectorAnd, rasp.SelectorOr)):
            cls = R.SelectorAndOp if isinstance(expr, rasp.SelectorAnd) else R.SelectorOrOp
            self.emit(expr, cls(self.value(expr.fst), self.value(expr.snd), **c))
        elif isinstance(expr, rasp.SelectorNot):
            self.emit(expr, R.SelectorNotOp(self.value(expr.inner), **c))
        elif isinstance(expr, rasp.Aggregate):
            self.aggregate(expr, c)
        elif isinstance(expr, rasp.SelectorWidth):
            self.emit(expr, R.SelectorWidthOp(self.value(expr.selector), _encoding(expr), **c))
        elif isinstance(expr, rasp.ConstantSelector):
            raise self.fail(expr, "ConstantSelector has no transformer implementation (a fixed attention pattern "
                                  "cannot be computed from tokens); use a Select over indices instead")
        else:
            raise self.fail(expr, f"unsupported RASP expression {type(expr).__name__}")

    def tokens(self) -> SSAValue:
        if id(rasp.tokens) not in self.values:
            self.labels[id(rasp.tokens)] = "tokens"
            self.emit(rasp.tokens, R.TokensOp())
        return self.values[id(rasp.tokens)]

    def length(self, expr: rasp.LengthType, c: dict[str, Any]) -> None:
        """`length` is SelectorWidth(Select(tokens, tokens, TRUE)): emitted as those two ops."""
        tok = self.tokens()
        sel = R.SelectOp(tok, tok, R.Comparison.TRUE, f"{c['label']}_selector", c["src"])
        sel.res.name_hint = ssa_name(f"{c['label']}_selector")
        self.ops.append(sel)
        op = R.SelectorWidthOp(sel.res, _encoding(expr), **c)
        self.emit(expr, op)

    def map(self, expr: rasp.Map, c: dict[str, Any]) -> None:
        inp = self.finite(expr.inner, expr, "input")
        entries = self.tabulate(expr, expr.f, [inp], ((v,) for v in inp.non_none), rasp.is_numerical(expr),
                                [expr.inner])
        self.emit(expr, R.MapOp(self.value(expr.inner), _encoding(expr), R.TableAttr.of(entries), **c))

    def sequence_map(self, expr: rasp.SequenceMap, c: dict[str, Any]) -> None:
        fst, snd = self.value(expr.fst), self.value(expr.snd)
        if isinstance(expr, rasp.LinearSequenceMap) and all(rasp.is_numerical(e) for e in (expr, expr.fst, expr.snd)):
            for fac in (expr.fst_fac, expr.snd_fac):
                if type(fac) not in (int, float, bool) or not math.isfinite(fac):
                    raise self.fail(expr, f"LinearSequenceMap factor {fac!r} is not a finite number", ValueSetError)
            res = self.emit(expr, R.LinearSequenceMapOp(fst, snd, expr.fst_fac, expr.snd_fac, **c))
            self.pass_raw_on(expr, [expr.fst, expr.snd], res)
            return
        a = self.finite(expr.fst, expr, "first input")
        b = self.finite(expr.snd, expr, "second input")
        if expr.fst is expr.snd:
            rows: Iterable[tuple[Value, ...]] = ((v, v) for v in a.non_none)
        else:
            if len(a.non_none) * len(b.non_none) > MAX_TABULATED_PAIRS:
                raise self.fail(expr, f"input value sets {len(a.non_none)} x {len(b.non_none)} are too large to "
                                      "tabulate", ValueSetError)
            rows = ((x, y) for x in a.non_none for y in b.non_none)
        entries = self.tabulate(expr, expr.f, [a, b], rows, rasp.is_numerical(expr), [expr.fst, expr.snd])
        self.emit(expr, R.SequenceMapOp(fst, snd, _encoding(expr), R.TableAttr.of(entries), **c))

    def select(self, expr: rasp.Select, c: dict[str, Any]) -> None:
        keys = self.finite(expr.keys, expr, "keys")
        queries = self.finite(expr.queries, expr, "queries")
        pred = expr.predicate
        predicate: R.Predicate
        inexact = not (keys.exact and queries.exact)
        if isinstance(pred, rasp.Comparison) and not inexact:
            predicate = R.ComparisonAttr(R.Comparison(pred.name))
        else:
            predicate = self.relation(expr, pred, keys, queries)
        self.emit(expr, R.SelectOp(self.value(expr.keys), self.value(expr.queries), predicate, **c))

    def relation(self, expr: rasp.Select, pred: Any, keys: SOpFacts, queries: SOpFacts) -> R.RelationAttr:
        """The predicate over every key x query value (None included where the operands can be None)."""
        kv, qv = keys.values or (), queries.values or ()
        if len(kv) * len(qv) > MAX_TABULATED_PAIRS:  # each pair is a call of the predicate
            raise self.fail(expr, f"key and query value sets {len(kv)} x {len(qv)} are too large to tabulate "
                                  "the predicate on", ValueSetError)
        m = np.full((len(qv), len(kv)), -1, np.int8)
        rows = [(k, q) for q in qv for k in kv]
        index = {(identity(k), identity(q)): (i, j) for i, q in enumerate(qv) for j, k in enumerate(kv)}
        entries = self.tabulate(expr, lambda k, q: bool(pred(k, q)), [keys, queries], rows, False,
                                [expr.keys, expr.queries])
        for (k, q), out in entries:
            i, j = index[(identity(k), identity(q))]
            m[i, j] = 1 if out else 0
        return R.RelationAttr.of(kv, qv, m)

    def aggregate(self, expr: rasp.Aggregate, c: dict[str, Any]) -> None:
        inner = expr.sop
        if rasp.is_numerical(expr) != rasp.is_numerical(inner):
            raise self.fail(expr, f"aggregate is {_encoding(expr)} but its input '{self.labels[id(inner)]}' is "
                                  f"{_encoding(inner)}; annotate both the same way")
        default = self.clean(expr, expr.default, ())
        res = self.emit(expr, R.AggregateOp(self.value(expr.selector), self.value(inner), default, **c))
        self.pass_raw_on(expr, [inner], res)

    def pass_raw_on(self, expr: rasp.RASPExpr, inputs: Sequence[rasp.RASPExpr], res: SSAValue) -> None:
        """Numpy scalars flow on through means and linear maps: one selected value is itself, a sum
        with a numpy scalar in it is one (np.float64 for a mean, np.int64 for ints)."""
        src = [self.raw.get(id(e), {}) for e in inputs]
        if not any(src):
            return
        out: dict[Hashable, list[Any]] = {}
        for v in self.facts[res].non_none:
            key = identity(v)
            passed = [r for raw in src for r in raw.get(key, [])]
            if type(v) is float:
                passed.append(np.float64(v))
            elif type(v) is int:
                passed.append(np.int64(v))
            out[key] = passed
        self.raw[id(expr)] = out


def _holds_numpy(v: Any) -> bool:
    """A numpy scalar, or a tuple with one somewhere inside."""
    if isinstance(v, np.generic):
        return True
    return type(v) is tuple and any(_holds_numpy(x) for x in v)


def _normalized_identity(v: Any) -> Any:
    try:
        return identity(normalize(v))
    except UnsupportedValue:
        return ("unsupported", repr(v))


def _describe(v: Any) -> str:
    return f"{type(v).__name__} ({v})" if isinstance(v, Exception) else repr(v)


class _Raised:
    def __repr__(self) -> str:
        return "an exception"


_RAISED = _Raised()


def _agree(a: Any, b: Any, numerical: bool) -> bool:
    """Equal by identity, or (numerical outputs) numbers within float rounding."""
    if numerical and type(a) in (int, float) and type(b) in (int, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if b is _RAISED:
        return False
    return identity(a) == identity(b)


def check_vocab(vocab: Sequence[Any], max_seq_len: Any, bos: Any, pad: Any) -> InputSpec:
    """The input spec for a vocabulary, or a VocabError naming the problem."""
    tokens = []
    for t in vocab:
        try:
            tokens.append(normalize(t))
        except UnsupportedValue as exc:
            raise VocabError(f"unsupported token: {exc}") from None
    try:
        bos, pad = normalize(bos), normalize(pad)
    except UnsupportedValue as exc:
        raise VocabError(f"unsupported BOS or PAD token: {exc}") from None
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len < 1:
        raise VocabError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
    spec = InputSpec(tuple(tokens), bos, pad, max_seq_len, False)
    problem = check_input_spec(spec)
    if problem:
        raise VocabError(problem)
    return spec


def program_to_rasp(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    causal: bool = False,
) -> ModuleOp:
    """Trace `program` into a verified module holding one `rasp.program`."""
    if not isinstance(program, rasp.SOp):
        raise CompileError(f"the program must be an SOp, got {type(program).__name__}")
    spec = check_vocab(list(vocab), max_seq_len, compiler_bos, compiler_pad)
    spec = InputSpec(spec.vocab, spec.bos, spec.pad, spec.max_seq_len, bool(causal))
    order = topological_order(program)
    labels = _labels(order)
    if not any(isinstance(e, (rasp.TokensType, rasp.LengthType)) for e in order):
        raise CompileError("the program does not read `tokens`: its output cannot depend on the input",
                           label=labels[id(program)], source=getattr(program, "source", None))
    tracer = _Tracer(spec, labels)
    for expr in order:
        tracer.trace(expr)
    check_output(tracer.value(program), tracer.fact(program))
    container = R.ProgramOp.wrap(spec, [*tracer.ops, R.OutputOp(tracer.value(program))])
    module = ModuleOp([container])
    # copies of tokens/indices (from .named/numerical) become one op each
    CommonSubexpressionElimination().apply(Context(), module)
    module.verify()
    return module


__all__ = ["program_to_rasp", "topological_order", "check_vocab"]
