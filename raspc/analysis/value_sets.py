"""Value-set inference: a forward dataflow analysis over rasp IR, one transfer function per op.

The lattice element of an s-op is `SOpFacts`: its encoding, the finite set of values it can take
(None among them when it can be None; `values is None` for a numerical set that is not finite,
the top), and whether those values are *exact*: the very floats the evaluator computes. A mean of
non-integers is not exact: the evaluator sums in position order, so its last bit depends on the
input; functions of such values are only tabulated where a float step cannot change them.

The transfer functions follow the evaluator to the type and the bit:

- a Map/SequenceMap gives the image of its table (a SequenceMap of one s-op with itself only
  sees the diagonal); None in gives None out;
- a mean of one value is that value, of two or more `sum / n`: ints and bools become floats,
  and a categorical mean of equal values 1 and 1 is 1.0 (the evaluator's answer);
- `fst_fac * x + snd_fac * y` is computed as floats the way Python does, and when both
  operands are means over one selector, only over the pairs of sums one selection can make;
- selector widths, and whether an aggregate can be empty, come from `analysis.selectors`.

`infer_program(program)` runs the analysis over a `rasp.program` and writes every result type;
the front end, the `infer-value-sets` pass and every pass that creates ops use it, so a program
read from a file needs no value sets written in its types. Refusals (a numerical s-op that can be
None, a set past its bound) are typed errors naming the s-op.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import Rewriter

from raspc.analysis.selectors import width_bounds
from raspc.dialects import rasp as R
from raspc.dialects.common import CATEGORICAL, NUMERICAL, Encoding, InputSpec
from raspc.errors import CompileError, UnsupportedError, ValueSetError
from raspc.utils.values import Value, evaluator_mean, format_value, identity, is_number, sorted_values

# Bounds on what the analysis enumerates (past these a table is too big to tabulate). A categorical
# s-op this big can still compile when a pass replaces it before lowering (lexicographic-widths);
# the model's size budget is MAX_DIRECTIONS, checked where an s-op gets residual directions.
MAX_CATEGORICAL_VALUES = 50_000
MAX_NUMERICAL_VALUES = 50_000
MAX_DIRECTIONS = 5_000  # residual directions of one categorical s-op (one per value)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SOpFacts:
    """What the analysis knows of an s-op."""

    encoding: Encoding
    values: tuple[Value, ...] | None  # sorted, distinct by identity; None: numerical and not finite
    exact: bool = True

    @property
    def may_be_none(self) -> bool:
        return bool(self.values) and self.values[0] is None

    @property
    def non_none(self) -> tuple[Value, ...]:
        vals = self.values or ()
        return vals[1:] if vals and vals[0] is None else vals

    def to_type(self) -> R.SOpType:
        return R.SOpType(self.encoding, self.values)

    @staticmethod
    def of_type(t: R.SOpType) -> "SOpFacts":
        return SOpFacts(t.enc, t.value_set)


class _Context:
    def __init__(self, spec: InputSpec):
        self.spec = spec
        self.n = spec.max_seq_len

    def fail(self, op: Operation, message: str, cls: type[CompileError] = UnsupportedError) -> CompileError:
        label = op.label_str if isinstance(op, R.RaspOp) else op.name
        src = op.src_str if isinstance(op, R.RaspOp) else None
        return cls(message, label=label, source=src)


Facts = dict[SSAValue, SOpFacts]
_TRANSFER: dict[type[Operation], Callable[[Any, Facts, _Context], SOpFacts]] = {}


def _transfer(*op_types: type[Operation]):
    def register(fn):
        for t in op_types:
            _TRANSFER[t] = fn
        return fn

    return register


# --------------------------------------------------------------------------- building a fact


def _make(op: Operation, enc: Encoding, values: Iterable[Value] | None, ctx: _Context, exact: bool = True) -> SOpFacts:
    """A fact from raw values: deduplicated by identity, bounded, checked against the encoding."""
    if values is None:
        if enc == CATEGORICAL:
            raise ctx.fail(op, "a categorical s-op needs a finite value set", ValueSetError)
        return SOpFacts(enc, None, exact)
    vals = sorted_values(values)
    limit = MAX_CATEGORICAL_VALUES if enc == CATEGORICAL else MAX_NUMERICAL_VALUES
    if len(vals) > limit:
        if enc == CATEGORICAL:
            raise ctx.fail(op, f"value set grows to {len(vals)} values (bound {limit})", ValueSetError)
        return SOpFacts(enc, None, exact)
    if enc == NUMERICAL:
        if vals and vals[0] is None:
            raise ctx.fail(op, "a numerical s-op cannot be None (it is one number per position), but this one "
                               "can be; give it a value there (e.g. Aggregate(..., default=0))")
        bad = [v for v in vals if not is_number(v)]
        if bad:
            raise ctx.fail(op, f"a numerical s-op takes numbers, but this one can be {format_value(bad[0])}")
        big = [v for v in vals if abs(v) > FLOAT32_MAX]
        if big:
            raise ctx.fail(op, f"value {format_value(big[0])} does not fit a float32 transformer "
                               f"(largest {FLOAT32_MAX:.3e})")
    return SOpFacts(enc, vals, exact)


def _operand(facts: Facts, v: SSAValue, user: Operation, ctx: _Context, role: str) -> SOpFacts:
    f = facts[v]
    if f.values is None:
        raise ctx.fail(user, f"its {role} is numerical with a value set that is not finite (or larger than "
                             f"{MAX_NUMERICAL_VALUES}); it cannot be read through a table")
    return f


def _no_numerical_none(op: Operation, inputs: Sequence[tuple[SSAValue, SOpFacts]], ctx: _Context) -> None:
    """A numerical result of a maybe-None input would be None there, which one number cannot hold."""
    for value, f in inputs:
        if f.may_be_none:
            owner = value.owner
            name = owner.label_str if isinstance(owner, R.RaspOp) else "input"
            raise ctx.fail(op, f"input '{name}' can be None, and a numerical result cannot represent the None the "
                               "evaluator gives there; give that s-op a default (e.g. Aggregate(..., default=0))")


# --------------------------------------------------------------------------- transfer functions


def _embedded(op: Operation, n: int, ctx: _Context) -> None:
    """tokens and indices always reach the model (the embedding writes them): past the direction
    budget nothing can compile, so say so at once."""
    if n > MAX_DIRECTIONS:
        raise ctx.fail(op, f"value set grows to {n} values, one residual direction each (budget "
                           f"{MAX_DIRECTIONS} per s-op)", ValueSetError)


@_transfer(R.TokensOp)
def _tokens(op: R.TokensOp, facts: Facts, ctx: _Context) -> SOpFacts:
    _embedded(op, len(ctx.spec.vocab), ctx)
    return _make(op, CATEGORICAL, ctx.spec.vocab, ctx)


@_transfer(R.IndicesOp)
def _indices(op: R.IndicesOp, facts: Facts, ctx: _Context) -> SOpFacts:
    if op.result_type.is_categorical:
        _embedded(op, ctx.n, ctx)
    return _make(op, op.result_type.enc, range(ctx.n), ctx)


@_transfer(R.FullOp)
def _full(op: R.FullOp, facts: Facts, ctx: _Context) -> SOpFacts:
    return _make(op, op.result_type.enc, [op.fill.data], ctx)


@_transfer(R.ConstantOp)
def _constant(op: R.ConstantOp, facts: Facts, ctx: _Context) -> SOpFacts:
    return _make(op, op.result_type.enc, op.value.data[: ctx.n], ctx)


@_transfer(R.MapOp)
def _map(op: R.MapOp, facts: Facts, ctx: _Context) -> SOpFacts:
    f = _operand(facts, op.inp, op, ctx, "input")
    enc = op.result_type.enc
    if enc == NUMERICAL:
        _no_numerical_none(op, [(op.inp, f)], ctx)
    outs: list[Value] = [None] if f.may_be_none else []
    for v in f.non_none:
        found, out = op.fn.get(v)
        if found:
            outs.append(out)
    exact = f.exact or enc == CATEGORICAL
    return _make(op, enc, outs, ctx, exact)


def _pairs(op: R.SequenceMapOp | R.LinearSequenceMapOp, a: SOpFacts, b: SOpFacts) -> Iterable[tuple[Value, Value]]:
    if op.fst == op.snd:  # f(x, x): only the diagonal occurs
        return ((v, v) for v in a.non_none)
    return ((x, y) for x in a.non_none for y in b.non_none)


@_transfer(R.SequenceMapOp)
def _sequence_map(op: R.SequenceMapOp, facts: Facts, ctx: _Context) -> SOpFacts:
    a = _operand(facts, op.fst, op, ctx, "first input")
    b = _operand(facts, op.snd, op, ctx, "second input")
    enc = op.result_type.enc
    if enc == NUMERICAL:
        _no_numerical_none(op, [(op.fst, a), (op.snd, b)], ctx)
    if len(a.non_none) * len(b.non_none) > MAX_NUMERICAL_VALUES and op.fst != op.snd:
        raise ctx.fail(op, f"input value sets {len(a.non_none)} x {len(b.non_none)} are too large to tabulate",
                       ValueSetError)
    outs: list[Value] = [None] if (a.may_be_none or b.may_be_none) else []
    for x, y in _pairs(op, a, b):
        found, out = op.fn.get(x, y)
        if found:
            outs.append(out)
    exact = (a.exact and b.exact) or enc == CATEGORICAL
    return _make(op, enc, outs, ctx, exact)


@_transfer(R.LinearSequenceMapOp)
def _linear_sequence_map(op: R.LinearSequenceMapOp, facts: Facts, ctx: _Context) -> SOpFacts:
    a, b = facts[op.fst], facts[op.snd]
    _no_numerical_none(op, [(op.fst, a), (op.snd, b)], ctx)
    fa, fb = op.factors
    exact = a.exact and b.exact
    joint = _joint_means(op, facts, ctx)
    if joint is not None:
        return _make(op, NUMERICAL, joint, ctx, exact)
    if a.values is None or b.values is None:
        return SOpFacts(NUMERICAL, None, exact)
    if op.fst != op.snd and len(a.values) * len(b.values) > MAX_NUMERICAL_VALUES:
        return SOpFacts(NUMERICAL, None, exact)
    return _make(op, NUMERICAL, (fa * x + fb * y for x, y in _pairs(op, a, b)), ctx, exact)


@_transfer(R.TupleOp)
def _tuple(op: R.TupleOp, facts: Facts, ctx: _Context) -> SOpFacts:
    parts = [_operand(facts, p, op, ctx, "part") for p in op.parts]
    size = 1
    for f in parts:
        size *= len(f.values or ())
    if size > MAX_CATEGORICAL_VALUES:
        raise ctx.fail(op, f"value set grows to {size} tuples (bound {MAX_CATEGORICAL_VALUES})", ValueSetError)
    return _make(op, CATEGORICAL, itertools.product(*(f.values or () for f in parts)), ctx)


@_transfer(R.SelectorWidthOp)
def _selector_width(op: R.SelectorWidthOp, facts: Facts, ctx: _Context) -> SOpFacts:
    lo, hi = width_bounds(op.selector, ctx.n)
    return _make(op, op.result_type.enc, range(lo, hi + 1), ctx)


@_transfer(R.AggregateOp)
def _aggregate(op: R.AggregateOp, facts: Facts, ctx: _Context) -> SOpFacts:
    src = facts[op.sop]
    lo, hi = width_bounds(op.selector, ctx.n)
    default = op.default.data
    enc = op.result_type.enc
    empty = [default] if lo == 0 else []
    if enc == CATEGORICAL:
        if src.values is None:
            raise ctx.fail(op, "a categorical aggregate of a numerical s-op with no finite value set")
        # one selected value keeps its type; two or more equal ones average to sum/n (1, 1 -> 1.0)
        outs = list(src.values) if hi >= 1 else []
        if hi >= 2:
            for v in src.non_none:
                if is_number(v):
                    outs += [evaluator_mean([v] * k) for k in range(max(lo, 2), hi + 1)]
        return _make(op, enc, [*outs, *empty], ctx)
    _no_numerical_none(op, [(op.sop, src)], ctx)
    if not is_number(default) and not (default is None and lo >= 1):
        if default is None:
            raise ctx.fail(op, "the selection can be empty, where this numerical aggregate is None (its default); "
                               "give it a numeric default (e.g. default=0)")
        raise ctx.fail(op, f"numerical aggregate default must be a number, got {format_value(default)}")
    if src.values is None:
        return SOpFacts(NUMERICAL, None, False)
    means, exact = possible_means(src.values, lo, hi, MAX_NUMERICAL_VALUES)
    if means is None:
        return SOpFacts(NUMERICAL, None, exact and src.exact)
    return _make(op, NUMERICAL, [*means, *empty], ctx, exact and src.exact)


# --------------------------------------------------------------------------- means


def _scale(values: Sequence[Value]) -> tuple[int, bool] | None:
    """(D, exact): every value times D is an integer; `exact` when the evaluator's running sums of
    these values are exact floats (integers, or dyadic fractions of moderate size). None when no
    small D exists (then the means are inexact and computed from simple fractions)."""
    fracs = [Fraction(v) for v in values]
    dens = {f.denominator for f in fracs}
    d = 1
    for den in dens:
        d = d * den // math.gcd(d, den)
    if d <= 2**20:
        dyadic = d & (d - 1) == 0
        return d, dyadic
    return None


def _sumset(reach: np.ndarray, step: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Support of reach (+) step: every sum of a reachable total and one more value."""
    if offsets.size * reach.size <= 4_000_000:
        out = np.zeros(reach.size + step.size - 1, dtype=bool)
        for off in offsets:
            out[off: off + reach.size] |= reach
        return out
    n = reach.size + step.size - 1
    size = 1 << (n - 1).bit_length()
    conv = np.fft.irfft(np.fft.rfft(reach.astype(np.float64), size) * np.fft.rfft(step.astype(np.float64), size), size)
    return conv[:n] > 0.5


def possible_means(values: Sequence[Value], lo: int, hi: int, bound: int) -> tuple[list[Value] | None, bool]:
    """Every value the evaluator's mean of k in [max(lo, 1), hi] values drawn from `values` can
    take, and whether they are exact. One value is itself (its type kept); k >= 2 is `sum / k`.
    (None, exact) past `bound` values."""
    vals = list(values)
    out: list[Value] = list(vals) if lo <= 1 <= hi else []
    if hi < 2 or not vals:
        return out, True
    scaled = _scale(vals)
    if scaled is None:
        exact = False
        fracs = [Fraction(v).limit_denominator(1_000_000) for v in vals]
        d = 1
        for f in fracs:
            d = d * f.denominator // math.gcd(d, f.denominator)
    else:
        d, exact = scaled
        fracs = [Fraction(v) for v in vals]
    ints = sorted({int(f * d) for f in fracs})
    base = ints[0]
    offsets = np.array([i - base for i in ints], dtype=np.int64)
    span = int(offsets[-1])
    dense = span * hi <= 4_000_000  # a bitset over every reachable sum; else the sums as a sparse set
    step = np.zeros(span + 1 if dense else 1, dtype=bool)  # (a span of 1e9 would reserve gigabytes)
    if dense:
        step[offsets] = True
    reach = np.ones(1, dtype=bool)
    sparse = np.zeros(1, dtype=np.int64)  # the sum of 0 values (sums are shifted by k * base)
    total = 0
    floats: list[np.ndarray] = []
    for k in range(1, hi + 1):
        if dense:
            reach = _sumset(reach, step, offsets)
        else:
            sparse = np.unique((sparse[:, None] + offsets[None, :]).ravel())
            if sparse.size > bound * 4:
                return None, exact
        if k < max(lo, 2):
            continue
        sums = (np.nonzero(reach)[0].astype(np.int64) if dense else sparse) + k * base  # scaled sums
        total += sums.size
        if total > bound * 4:
            return None, exact
        if exact and np.abs(sums).max(initial=0) < 2**53:
            floats.append((sums.astype(np.float64) / d) / k)  # sum exact; one rounding, as the evaluator
        else:
            floats.append(np.array([float(Fraction(int(s), d * k)) for s in sums]))
    merged = np.unique(np.concatenate(floats)) if floats else np.array([])
    if merged.size + len(out) > bound:
        return None, exact
    return out + [float(x) for x in merged], exact


def _joint_means(op: R.LinearSequenceMapOp, facts: Facts, ctx: _Context) -> list[Value] | None:
    """Values of `a * mean_S(u) + b * mean_S(v)` when both means use the same selector: they are
    computed from the pairs of sums one selection makes (make_pair_balance at max_seq_len 30:
    ~1k values instead of every pair of means), each as the evaluator computes it in floats."""
    x, y = op.fst.owner, op.snd.owner
    if not (isinstance(x, R.AggregateOp) and isinstance(y, R.AggregateOp)) or x is y:
        return None
    if not _same_selector(x.selector, y.selector):
        return None
    u, v = facts[x.sop].non_none, facts[y.sop].non_none
    if not u or not v or not all(type(t) in (int, bool) for t in (*u, *v)):
        return None
    if not (is_number(x.default.data) and is_number(y.default.data)):
        return None
    lo, hi = width_bounds(x.selector, ctx.n)
    fa, fb = op.factors
    out: list[Value] = []
    if lo == 0:
        out.append(fa * x.default.data + fb * y.default.data)
    if lo <= 1 <= hi:
        out += [fa * p + fb * q for p in u for q in v]
    if hi < 2:
        return out
    # pairs of sums reachable with k selected positions, as a 2-D support grown one position at a time
    pu = np.array(sorted({int(p) for p in u}), dtype=np.int64)
    pv = np.array(sorted({int(q) for q in v}), dtype=np.int64)
    bu, bv = int(pu[0]), int(pv[0])
    su, sv = int(pu[-1]) - bu, int(pv[-1]) - bv
    if (su * hi + 1) * (sv * hi + 1) > 50_000_000:
        return None
    reach = np.ones((1, 1), dtype=bool)
    for k in range(1, hi + 1):
        nxt = np.zeros((reach.shape[0] + su, reach.shape[1] + sv), dtype=bool)
        for p in pu - bu:
            for q in pv - bv:
                nxt[p: p + reach.shape[0], q: q + reach.shape[1]] |= reach
        reach = nxt
        if k >= max(lo, 2):
            iu, iv = np.nonzero(reach)
            if len(out) + iu.size > MAX_NUMERICAL_VALUES * 8:
                return None
            means_u, means_v = (iu + k * bu) / k, (iv + k * bv) / k  # int / int: one rounding, as in Python
            out += np.unique(fa * means_u + fb * means_v).tolist()
    return out


def _same_selector(a: SSAValue, b: SSAValue) -> bool:
    if a == b:
        return True
    sa, sb = a.owner, b.owner
    return (isinstance(sa, R.SelectOp) and isinstance(sb, R.SelectOp) and sa.keys == sb.keys
            and sa.queries == sb.queries and sa.predicate == sb.predicate)


# --------------------------------------------------------------------------- running the analysis


def transfer(op: Operation, facts: Facts, spec: InputSpec) -> SOpFacts:
    """The fact of `op`'s result from its operands' facts."""
    fn = _TRANSFER.get(type(op))
    if fn is None:
        raise UnsupportedError(f"value-set inference does not know {op.name}")
    return fn(op, facts, _Context(spec))


def set_type(value: SSAValue, t: R.SOpType) -> SSAValue:
    """Gives `value` the type `t` (a new SSA value replacing the old one, when the type changes)."""
    if value.type == t:
        return value
    return Rewriter.replace_value_with_new_type(value, t)


def infer_op(op: R.SOpOp, spec: InputSpec) -> SOpFacts:
    """Infers and sets the result type of one op from its operands' types (for passes that build ops)."""
    facts = {v: SOpFacts.of_type(R.sop_type(v)) for v in op.operands if isinstance(v.type, R.SOpType)}
    fact = transfer(op, facts, spec)
    set_type(op.res, fact.to_type())
    return fact


def infer_program(program: R.ProgramOp, *, keep: Callable[[Operation], bool] | None = None) -> Facts:
    """Runs the analysis over a program in order, writes every s-op's result type, and returns the facts.

    An op whose type is already inferred keeps it when `keep(op)` says so (the front end keeps
    nothing; a pass keeps nothing either: types are always re-derived)."""
    spec = program.spec
    ctx = _Context(spec)
    facts: Facts = {}
    for op in program.ops:
        if isinstance(op, R.SOpOp):
            fn = _TRANSFER.get(type(op))
            if fn is None:
                raise UnsupportedError(f"value-set inference does not know {op.name}")
            for v in op.operands:
                if isinstance(v.type, R.SOpType) and v not in facts:
                    facts[v] = SOpFacts.of_type(R.sop_type(v))
            fact = fn(op, facts, ctx)
            res = op.res if keep is not None and keep(op) else set_type(op.res, fact.to_type())
            facts[res] = fact
    out = program.body.block.last_op
    if isinstance(out, R.OutputOp) and out.inp in facts:
        check_output(out.inp, facts[out.inp])
    return facts


def check_output(value: SSAValue, fact: SOpFacts) -> None:
    """Refuses a program whose output has no value at all (None everywhere)."""
    if fact.encoding == CATEGORICAL and not fact.non_none:
        owner = value.owner
        raise UnsupportedError("the output is None at every position (its value set is empty)",
                               label=owner.label_str if isinstance(owner, R.RaspOp) else None,
                               source=owner.src_str if isinstance(owner, R.RaspOp) else None)


__all__ = [
    "SOpFacts", "transfer", "infer_op", "infer_program", "check_output", "possible_means", "MAX_CATEGORICAL_VALUES",
    "MAX_DIRECTIONS",
    "MAX_NUMERICAL_VALUES",
]
