"""The RASP language under Tracr's names, and its reference evaluator.

A Tracr program ports by changing its import::

    from raspc import rasp          # instead of: from tracr.rasp import rasp

Every s-op and selector remembers the source line where it was written, so the
compiler can point at it in diagnostics and in the IR.
"""

from __future__ import annotations

import abc
import collections.abc
import copy
import enum
import itertools
import os
import sys
from typing import Any, Callable, Generic, Mapping, Optional, Protocol, Sequence, TypeVar, Union

SelectorValue = list[list[bool]]
NumericValue = Union[int, float]
Value = Any  # None, int, float, str, bool, or a tuple of those
VT = TypeVar("VT")
RASPExprT = TypeVar("RASPExprT", bound="RASPExpr")
SOpT = TypeVar("SOpT", bound="SOp")

_NAME_KEY = "name"
_ENCODING_KEY = "encoding"
_THIS_FILE = os.path.normcase(os.path.abspath(__file__))


class Annotator(Protocol):
    def __call__(self, expr: "RASPExpr") -> Any: ...


# Default annotations, computed lazily the first time a key is read (as in Tracr).
DEFAULT_ANNOTATORS: dict[str, Annotator] = {}


class _Annotations(collections.abc.Mapping):
    """An expression's annotations: immutable to the user, defaults filled lazily."""

    def __init__(self, expr: "RASPExpr", **kwargs: Any):
        self._expr = expr
        self._inner_dict: dict[str, Any] = dict(kwargs)

    def __getitem__(self, key: str) -> Any:
        if key not in self._inner_dict:
            if key not in DEFAULT_ANNOTATORS:
                raise KeyError(
                    f"No annotation exists for key '{key}'. Available keys: "
                    f"{set(self.keys()) | set(DEFAULT_ANNOTATORS)}"
                )
            self._inner_dict[key] = DEFAULT_ANNOTATORS[key](self._expr)
        return self._inner_dict[key]

    def __iter__(self):
        return iter(self._inner_dict)

    def __len__(self) -> int:
        return len(self._inner_dict)


def _caller_location() -> str:
    """file:line of the first frame outside this module (where the user wrote the s-op)."""
    frame = sys._getframe(2)
    while frame is not None and os.path.normcase(os.path.abspath(frame.f_code.co_filename)) == _THIS_FILE:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class RASPExpr(abc.ABC):
    """A RASP expression: an s-op or a selector."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._annotations: Mapping[str, Any] = _Annotations(self)
        self.source = _caller_location()

    @abc.abstractmethod
    def __call__(self, xs: Sequence[Value]) -> Any:
        """Evaluates the expression with the reference evaluator."""

    @property
    def annotations(self) -> Mapping[str, Any]:
        return self._annotations

    @annotations.setter
    def annotations(self, annotations: Mapping[str, Any]) -> None:
        self._annotations = _Annotations(self, **annotations)

    @property
    def name(self) -> str:
        return self.annotations[_NAME_KEY]

    @property
    @abc.abstractmethod
    def children(self) -> Sequence["RASPExpr"]:
        """Direct dependencies of this expression."""

    @property
    def unique_id(self) -> int:
        # Assigned on first use, so ids count expressions in the order they are looked at.
        if "_unique_id" not in self.__dict__:
            self.__dict__["_unique_id"] = next(RASPExpr._ids)
        return self.__dict__["_unique_id"]

    def copy(self: RASPExprT) -> RASPExprT:
        """A shallow copy with a new id."""
        new = copy.copy(self)
        new.__dict__.pop("_unique_id", None)
        return new

    @property
    def label(self) -> str:
        return f"{self.name}_{self.unique_id}"

    def named(self: RASPExprT, name: str) -> RASPExprT:
        return annotate(self, name=name)

    def annotated(self: RASPExprT, **annotations: Any) -> RASPExprT:
        return annotate(self, **annotations)


def annotate(expr: RASPExprT, **annotations: Any) -> RASPExprT:
    """A new expression equal to `expr` with added (overriding) annotations."""
    new = expr.copy()
    new.annotations = {**expr.annotations, **annotations}
    return new


# --------------------------------------------------------------------------- s-ops


class SOp(RASPExpr):
    """A sequence operation: a function from a token sequence to a value sequence."""

    def __call__(self, xs: Sequence[Value]) -> list[Value]:
        return evaluate(self, xs)

    # Operators build Maps / SequenceMaps, exactly as Tracr's do.
    def __lt__(self, other: Value) -> "SOp":
        return Map(lambda x: x < other, self)

    def __le__(self, other: Value) -> "SOp":
        return Map(lambda x: x <= other, self)

    def __eq__(self, other: Value) -> "SOp":  # type: ignore[override]
        return Map(lambda x: x == other, self)

    def __ne__(self, other: Value) -> "SOp":  # type: ignore[override]
        return Map(lambda x: x != other, self)

    def __gt__(self, other: Value) -> "SOp":
        return Map(lambda x: x > other, self)

    def __ge__(self, other: Value) -> "SOp":
        return Map(lambda x: x >= other, self)

    def __add__(self, other: Union["SOp", Value]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x + y, self, other)
        return Map(lambda x: x + other, self)

    def __radd__(self, other: Union["SOp", Value]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x + y, other, self)
        return Map(lambda x: other + x, self)

    def __sub__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x - y, self, other)
        return Map(lambda x: x - other, self)

    def __rsub__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x - y, other, self)
        return Map(lambda x: other - x, self)

    def __mul__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x * y, self, other)
        return Map(lambda x: x * other, self)

    def __rmul__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x * y, other, self)
        return Map(lambda x: other * x, self)

    def __truediv__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x / y, self, other)
        return Map(lambda x: x / other, self)

    def __rtruediv__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x / y, other, self)
        return Map(lambda x: other / x, self)

    def __invert__(self) -> "SOp":
        return Map(lambda x: not x, self)

    def __and__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x and y, self, other)
        return Map(lambda x: x and other, self)

    def __or__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x or y, self, other)
        return Map(lambda x: x or other, self)

    def __rand__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x and y, other, self)
        return Map(lambda x: other and x, self)

    def __ror__(self, other: Union["SOp", NumericValue]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x or y, other, self)
        return Map(lambda x: x or other, self)

    __hash__ = RASPExpr.__hash__


class TokensType(SOp):
    """The input tokens."""

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "tokens"

    def __repr__(self) -> str:
        return "tokens"


class IndicesType(SOp):
    """The position of each token."""

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "indices"

    def __repr__(self) -> str:
        return "indices"


class LengthType(SOp):
    """The length of the input, at every position."""

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "length"

    def __repr__(self) -> str:
        return "length"


tokens = TokensType()
indices = IndicesType()
length = LengthType()
for _builtin in (tokens, indices, length):
    _builtin.source = None  # built in: no line of the user's defines it (not an importlib frame)
del _builtin


class Map(SOp):
    """Applies `f` elementwise: Map(lambda x: x + 1, tokens)([1, 2]) == [2, 3]."""

    def __init__(self, f: Callable[[Value], Value], inner: SOp, simplify: bool = True):
        super().__init__()
        if not isinstance(inner, SOp):
            raise TypeError(f"Map expects an SOp, got {inner!r}")
        if not callable(f) or isinstance(f, RASPExpr):
            raise TypeError(f"Map expects a callable, got {f!r}")
        self.f = f
        self.inner = inner
        if simplify and isinstance(inner, Map):
            # Fuse Map(f, Map(g, x)) into Map(f . g, x), as Tracr does.
            inner_f = inner.f
            self.f = lambda t: f(inner_f(t))
            self.inner = inner.inner

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.inner]


class SequenceMap(SOp):
    """Applies `f` elementwise to two s-ops."""

    def __init__(self, f: Callable[[Value, Value], Value], fst: SOp, snd: SOp):
        super().__init__()
        if not isinstance(fst, SOp) or not isinstance(snd, SOp):
            raise TypeError(f"SequenceMap expects two SOps, got {fst!r}, {snd!r}")
        if not callable(f) or isinstance(f, RASPExpr):
            raise TypeError(f"SequenceMap expects a callable, got {f!r}")
        self.f = f
        self.fst = fst
        self.snd = snd

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.fst, self.snd]


class LinearSequenceMap(SequenceMap):
    """fst_fac * fst + snd_fac * snd, elementwise."""

    def __init__(self, fst: SOp, snd: SOp, fst_fac: float, snd_fac: float):
        super().__init__(lambda x, y: fst_fac * x + snd_fac * y, fst, snd)
        self.fst_fac = fst_fac
        self.snd_fac = snd_fac


class Full(SOp):
    """[fill] * len(input)."""

    def __init__(self, fill: Value):
        super().__init__()
        self.fill = fill

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


def sop_not(sop: SOp) -> SOp:
    return Map(lambda t: not t, sop)


class ConstantSOp(SOp, Generic[VT]):
    """A fixed value sequence (for testing, as in Tracr)."""

    def __init__(self, value: Sequence[VT], check_length: bool = True):
        super().__init__()
        self.value = value
        self.check_length = check_length

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


# --------------------------------------------------------------------------- selectors


class Predicate(Protocol):
    def __call__(self, key: Value, query: Value) -> bool: ...


class Comparison(enum.Enum):
    """A two-place predicate for Select, called as predicate(key, query)."""

    EQ = "=="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    NEQ = "!="
    TRUE = "True"
    FALSE = "False"

    def __call__(self, key: Value, query: Value) -> bool:
        if key is None:
            raise ValueError("key is None!")
        if query is None:
            raise ValueError("query is None!")
        return _comparison_table[self](key, query)


_comparison_table: dict[Comparison, Callable[[Value, Value], bool]] = {
    Comparison.EQ: lambda key, query: key == query,
    Comparison.LT: lambda key, query: key < query,
    Comparison.LEQ: lambda key, query: key <= query,
    Comparison.GT: lambda key, query: key > query,
    Comparison.GEQ: lambda key, query: key >= query,
    Comparison.NEQ: lambda key, query: key != query,
    Comparison.TRUE: lambda key, query: True,
    Comparison.FALSE: lambda key, query: False,
}


class Selector(RASPExpr):
    """A selector: a boolean attention pattern, [query][key]."""

    def __call__(self, xs: Sequence[Value]) -> SelectorValue:
        return evaluate(self, xs)

    def __and__(self, other: "Selector") -> "Selector":
        return selector_and(self, other)

    def __rand__(self, other: "Selector") -> "Selector":
        return selector_and(other, self)

    def __or__(self, other: "Selector") -> "Selector":
        return selector_or(self, other)

    def __ror__(self, other: "Selector") -> "Selector":
        return selector_or(other, self)

    def __invert__(self) -> "Selector":
        return selector_not(self)


class Select(Selector):
    """selector[q][k] = predicate(keys[k], queries[q])."""

    def __init__(self, keys: SOp, queries: SOp, predicate: Predicate):
        super().__init__()
        if not isinstance(keys, SOp) or not isinstance(queries, SOp):
            raise TypeError(f"Select expects SOps as keys and queries, got {keys!r}, {queries!r}")
        self.keys = keys
        self.queries = queries
        self.predicate = predicate

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.keys, self.queries]


class ConstantSelector(Selector):
    """A fixed selector matrix (for testing, as in Tracr)."""

    def __init__(self, value: SelectorValue, check_length: bool = True):
        super().__init__()
        self.value = value
        self.check_length = check_length

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


class SelectorWidth(SOp):
    """How many keys each query selects."""

    def __init__(self, selector: Selector):
        super().__init__()
        if not isinstance(selector, Selector):
            raise TypeError(f"SelectorWidth expects a Selector, got {selector!r}")
        self.selector = selector

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.selector]


class _BinarySelector(Selector):
    def __init__(self, fst: Selector, snd: Selector):
        super().__init__()
        if not isinstance(fst, Selector) or not isinstance(snd, Selector):
            raise TypeError(f"{type(self).__name__} expects two Selectors, got {fst!r}, {snd!r}")
        self.fst = fst
        self.snd = snd

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.fst, self.snd]


class SelectorAnd(_BinarySelector):
    """Elementwise `and` of two selectors."""


class SelectorOr(_BinarySelector):
    """Elementwise `or` of two selectors."""


class SelectorNot(Selector):
    """Elementwise `not` of a selector."""

    def __init__(self, inner: Selector):
        super().__init__()
        if not isinstance(inner, Selector):
            raise TypeError(f"SelectorNot expects a Selector, got {inner!r}")
        self.inner = inner

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.inner]


def selector_not(inner: Selector, simplify: bool = True) -> Selector:
    """SelectorNot, or a Select with the negated predicate when possible."""
    if simplify and isinstance(inner, Select):
        predicate = inner.predicate
        return Select(inner.keys, inner.queries, lambda k, q: not predicate(k, q))
    return SelectorNot(inner)


def selector_and(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    """SelectorAnd, or one Select when both share keys and queries."""
    if simplify and isinstance(fst, Select) and isinstance(snd, Select):
        merged = _merge_selects(fst, snd, lambda a, b: a and b)
        if merged is not None:
            return merged
    return SelectorAnd(fst, snd)


def selector_or(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    """SelectorOr, or one Select when both share keys and queries."""
    if simplify and isinstance(fst, Select) and isinstance(snd, Select):
        merged = _merge_selects(fst, snd, lambda a, b: a or b)
        if merged is not None:
            return merged
    return SelectorOr(fst, snd)


def _merge_selects(fst: Select, snd: Select, combine: Callable[[bool, bool], bool]) -> Optional[Select]:
    """One Select equal to combine(fst, snd), if keys and queries can be shared.

    A Full key (or query) matches anything: its fill value is baked into that side's predicate.
    """
    fst_pred, snd_pred = fst.predicate, snd.predicate
    keys = queries = None
    if isinstance(fst.keys, Full):
        keys, fill_k1 = snd.keys, fst.keys.fill
        fst_pred = lambda k, q, p=fst_pred, f=fill_k1: p(f, q)  # noqa: E731
    if isinstance(snd.keys, Full):
        keys, fill_k2 = fst.keys, snd.keys.fill
        snd_pred = lambda k, q, p=snd_pred, f=fill_k2: p(f, q)  # noqa: E731
    if isinstance(fst.queries, Full):
        queries, fill_q1 = snd.queries, fst.queries.fill
        fst_pred = lambda k, q, p=fst_pred, f=fill_q1: p(k, f)  # noqa: E731
    if isinstance(snd.queries, Full):
        queries, fill_q2 = fst.queries, snd.queries.fill
        snd_pred = lambda k, q, p=snd_pred, f=fill_q2: p(k, f)  # noqa: E731
    if fst.keys is snd.keys:
        keys = fst.keys
    if fst.queries is snd.queries:
        queries = fst.queries
    if keys is None or queries is None:
        return None
    return Select(keys, queries, lambda k, q: combine(fst_pred(k, q), snd_pred(k, q)))


class Aggregate(SOp, Generic[VT]):
    """Mean of the selected values; `default` where nothing is selected."""

    def __init__(self, selector: Selector, sop: SOp, default: Optional[VT] = None):
        super().__init__()
        if not isinstance(selector, Selector):
            raise TypeError(f"Aggregate expects a Selector, got {selector!r}")
        if not isinstance(sop, SOp):
            raise TypeError(f"Aggregate expects an SOp, got {sop!r}")
        if default is not None and not isinstance(default, (str, float, bool, int)):
            raise TypeError(f"Aggregate default must be None, str, float, bool or int, got {default!r}")
        self.selector = selector
        self.sop = sop
        self.default = default

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.selector, self.sop]


# --------------------------------------------------------------------------- encodings


class Encoding(enum.Enum):
    """How an s-op lives in the residual stream: one-hot, or one scalar dimension."""

    CATEGORICAL = "categorical"
    NUMERICAL = "numerical"


def numerical(sop: SOpT) -> SOpT:
    return annotate(sop, encoding=Encoding.NUMERICAL)


def categorical(sop: SOpT) -> SOpT:
    return annotate(sop, encoding=Encoding.CATEGORICAL)


def get_encoding(sop: SOp) -> Encoding:
    return sop.annotations[_ENCODING_KEY]


def is_numerical(sop: SOp) -> bool:
    return get_encoding(sop) == Encoding.NUMERICAL


def is_categorical(sop: SOp) -> bool:
    return get_encoding(sop) == Encoding.CATEGORICAL


def default_encoding(expr: RASPExpr) -> Encoding:
    if not isinstance(expr, SOp):
        raise TypeError(f"expr {expr} is not a SOp.")
    return Encoding.CATEGORICAL


DEFAULT_ANNOTATORS[_ENCODING_KEY] = default_encoding

# Most specific class first.
_default_name_by_class: list[tuple[type, str]] = [
    (TokensType, "tokens"),
    (IndicesType, "indices"),
    (LengthType, "length"),
    (LinearSequenceMap, "linear_sequence_map"),
    (SequenceMap, "sequence_map"),
    (Map, "map"),
    (Full, "full"),
    (ConstantSOp, "constant_sop"),
    (SelectorWidth, "selector_width"),
    (Aggregate, "aggregate"),
    (SOp, "sop"),
    (Select, "select"),
    (SelectorAnd, "selector_and"),
    (SelectorOr, "selector_or"),
    (SelectorNot, "selector_not"),
    (ConstantSelector, "constant_selector"),
    (Selector, "selector"),
]


def default_name(expr: RASPExpr) -> str:
    for cls, name in _default_name_by_class:
        if isinstance(expr, cls):
            return name
    raise NotImplementedError(f"{expr} was not given a default name!")


DEFAULT_ANNOTATORS[_NAME_KEY] = default_name


# --------------------------------------------------------------------------- evaluation


def _get_selected(selector_row: Sequence[bool], values: Sequence[Value]) -> list[Value]:
    return [v for s, v in zip(selector_row, values) if s]


def _mean(xs: Sequence[Value], default: Value) -> Value:
    """Tracr's aggregate: the default if empty, the one value, or the numeric mean."""
    if not xs:
        return default
    if len(xs) == 1:
        return xs[0]
    if all(isinstance(x, (int, bool, float)) for x in xs):
        return sum(xs) / len(xs)
    raise ValueError(f"Only types int, bool, and float are supported for aggregation. Received sequence: {xs}")


class RASPEvaluator(abc.ABC):
    @abc.abstractmethod
    def evaluate(self, expr: RASPExpr, xs: Sequence[Value]) -> Any:
        """Evaluates `expr` on input `xs`."""


class DefaultRASPEvaluator(RASPEvaluator):
    """Tracr's evaluation semantics; shared sub-expressions are evaluated once per call."""

    def __init__(self) -> None:
        self._eval_fn_by_type: list[tuple[type, Callable[[Any, Sequence[Value]], Any]]] = [
            (TokensType, self.eval_tokens),
            (IndicesType, self.eval_indices),
            (LengthType, self.eval_length),
            (SequenceMap, self.eval_sequence_map),
            (Map, self.eval_map),
            (Full, self.eval_full),
            (ConstantSOp, self.eval_constant_sop),
            (SelectorWidth, self.eval_selector_width),
            (Aggregate, self.eval_aggregate),
            (Select, self.eval_select),
            (SelectorAnd, self.eval_selector_and),
            (SelectorOr, self.eval_selector_or),
            (SelectorNot, self.eval_selector_not),
            (ConstantSelector, self.eval_constant_selector),
        ]
        self._memo: Optional[dict[int, Any]] = None

    def evaluate(self, expr: RASPExpr, xs: Sequence[Value]) -> Any:
        outermost = self._memo is None
        if outermost:
            self._memo = {}
        try:
            return self._evaluate(expr, list(xs))
        finally:
            if outermost:
                self._memo = None

    def _evaluate(self, expr: RASPExpr, xs: list[Value]) -> Any:
        assert self._memo is not None
        key = id(expr)
        if key in self._memo:
            return self._memo[key][1]
        for cls, fn in self._eval_fn_by_type:
            if isinstance(expr, cls):
                out = fn(expr, xs)
                self._memo[key] = (expr, out)  # keep expr alive so its id stays unique
                return out
        raise NotImplementedError(f"Evaluation of {expr} is not defined.")

    def eval_tokens(self, sop: TokensType, xs: list[Value]) -> list[Value]:
        return list(xs)

    def eval_indices(self, sop: IndicesType, xs: list[Value]) -> list[Value]:
        return list(range(len(xs)))

    def eval_length(self, sop: LengthType, xs: list[Value]) -> list[Value]:
        return [len(xs)] * len(xs)

    def eval_sequence_map(self, sop: SequenceMap, xs: list[Value]) -> list[Value]:
        fst = self._evaluate(sop.fst, xs)
        snd = self._evaluate(sop.snd, xs)
        return [sop.f(x, y) if x is not None and y is not None else None for x, y in zip(fst, snd)]

    def eval_map(self, sop: Map, xs: list[Value]) -> list[Value]:
        return [sop.f(x) if x is not None else None for x in self._evaluate(sop.inner, xs)]

    def eval_full(self, sop: Full, xs: list[Value]) -> list[Value]:
        return [sop.fill] * len(xs)

    def eval_constant_sop(self, sop: ConstantSOp, xs: list[Value]) -> list[Value]:
        if sop.check_length and len(xs) != len(sop.value):
            raise ValueError(f"Constant len {len(sop.value)} doesn't match input len {len(xs)}.")
        return list(sop.value)

    def eval_selector_width(self, sop: SelectorWidth, xs: list[Value]) -> list[Value]:
        return [sum(row) for row in self._evaluate(sop.selector, xs)]

    def eval_aggregate(self, sop: Aggregate, xs: list[Value]) -> list[Value]:
        selector = self._evaluate(sop.selector, xs)
        values = self._evaluate(sop.sop, xs)
        return [_mean(_get_selected(row, values), sop.default) for row in selector]

    def eval_select(self, sel: Select, xs: list[Value]) -> SelectorValue:
        keys = self._evaluate(sel.keys, xs)
        queries = self._evaluate(sel.queries, xs)
        return [[bool(sel.predicate(k, q)) for k in keys] for q in queries]

    def eval_constant_selector(self, sel: ConstantSelector, xs: list[Value]) -> SelectorValue:
        if sel.check_length and len(xs) != len(sel.value):
            raise ValueError(f"Constant len {len(xs)} doesn't match input len {len(sel.value)}.")
        return [list(row) for row in sel.value]

    def eval_selector_and(self, sel: SelectorAnd, xs: list[Value]) -> SelectorValue:
        a, b = self._evaluate(sel.fst, xs), self._evaluate(sel.snd, xs)
        return [[x and y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]

    def eval_selector_or(self, sel: SelectorOr, xs: list[Value]) -> SelectorValue:
        a, b = self._evaluate(sel.fst, xs), self._evaluate(sel.snd, xs)
        return [[x or y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]

    def eval_selector_not(self, sel: SelectorNot, xs: list[Value]) -> SelectorValue:
        return [[not x for x in row] for row in self._evaluate(sel.inner, xs)]


class CausalEvaluator(DefaultRASPEvaluator):
    """Evaluates with every selector masked to keys at or before the query (Tracr's causal_eval)."""

    @staticmethod
    def _mask(sel: SelectorValue) -> SelectorValue:
        return [[bool(v) and k <= q for k, v in enumerate(row)] for q, row in enumerate(sel)]

    def eval_select(self, sel: Select, xs: list[Value]) -> SelectorValue:
        return self._mask(super().eval_select(sel, xs))

    def eval_constant_selector(self, sel: ConstantSelector, xs: list[Value]) -> SelectorValue:
        return self._mask(super().eval_constant_selector(sel, xs))

    def eval_selector_and(self, sel: SelectorAnd, xs: list[Value]) -> SelectorValue:
        return self._mask(super().eval_selector_and(sel, xs))

    def eval_selector_or(self, sel: SelectorOr, xs: list[Value]) -> SelectorValue:
        return self._mask(super().eval_selector_or(sel, xs))

    def eval_selector_not(self, sel: SelectorNot, xs: list[Value]) -> SelectorValue:
        return self._mask(super().eval_selector_not(sel, xs))


def evaluate(expr: RASPExpr, xs: Sequence[Value]) -> Any:
    """Evaluates a RASP expression on the input `xs` with Tracr's semantics."""
    return DefaultRASPEvaluator().evaluate(expr, xs)


def causal_evaluate(expr: RASPExpr, xs: Sequence[Value]) -> Any:
    """Evaluates with causal masking (each query sees only keys at or before it)."""
    return CausalEvaluator().evaluate(expr, xs)
