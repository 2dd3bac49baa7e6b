"""RASP values: identity, order, normalisation and a textual syntax that round-trips.

Values are None, bools, ints, floats, strings, or tuples of those. Python calls `1`, `1.0` and
`True` equal, but a program can tell them apart (`str`, `type`), and the evaluator keeps them
apart (the mean of two ints is a float), so raspc keys values by *identity*: type and value.
`identity(v)` is that key; sets and tables of values are keyed by it, never by `==`.

In IR text values read `1`, `0.5`, `"a"`, `true`, `none`, `(1, "a")`; floats always carry a
'.', so `1` and `1.0` stay distinct on the page.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

Value = Any  # None | bool | int | float | str | tuple[Value, ...]

_TAG = {type(None): "n", bool: "b", int: "i", float: "f", str: "s", tuple: "t"}


class UnsupportedValue(TypeError):
    """A value raspc cannot compile (inf, nan, a list, a Fraction, ...); the message says why."""


def normalize(v: Any) -> Value:
    """`v` as a plain RASP value: numpy scalars become bool/int/float; anything else that is not a
    finite RASP value raises UnsupportedValue."""
    if v is None or type(v) in (bool, int, str):
        return v
    if type(v) is float:
        if not math.isfinite(v):
            raise UnsupportedValue(f"{v!r} is not a finite number")
        return v
    if isinstance(v, np.generic):
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return normalize(float(v))
    if type(v) is tuple:
        return tuple(normalize(x) for x in v)
    if isinstance(v, (list, set, dict, bytearray)):
        raise UnsupportedValue(f"{v!r} is unhashable ({type(v).__name__}); use a tuple")
    raise UnsupportedValue(f"{v!r} has unsupported type {type(v).__name__} "
                           "(values are None, bool, int, float, str or tuples of those)")


def _float_identity(v: float) -> Hashable:
    return ("f", v, math.copysign(1.0, v))  # -0.0 and 0.0 print differently


def _tuple_identity(v: tuple) -> Hashable:
    return ("t", tuple(identity(x) for x in v))


_IDENTITY = {
    type(None): lambda v: ("n", None), bool: lambda v: ("b", v), int: lambda v: ("i", v), str: lambda v: ("s", v),
    float: _float_identity, tuple: _tuple_identity,
}


def identity(v: Value) -> Hashable:
    """The key under which raspc stores a value: `identity(1) != identity(1.0) != identity(True)`."""
    key = _IDENTITY.get(type(v))
    if key is None:
        raise UnsupportedValue(f"{v!r} has unsupported type {type(v).__name__}")
    return key(v)


def same_value(a: Value, b: Value) -> bool:
    return identity(a) == identity(b)


def sort_key(v: Value) -> tuple:
    """A total order: None, bools, numbers by value (ties: int before float), strings, tuples."""
    t = type(v)
    if v is None:
        return (0,)
    if t is bool:
        return (1, int(v))
    if t is int or t is float:
        return (2, v, t is float, math.copysign(1.0, v) if t is float else 1.0)
    if t is str:
        return (3, v)
    if t is tuple:
        return (4, tuple(sort_key(x) for x in v))
    raise UnsupportedValue(f"{v!r} has unsupported type {t.__name__}")


def sorted_values(values: Iterable[Value]) -> tuple[Value, ...]:
    """Distinct values (by identity), in sort_key order."""
    seen: dict[Hashable, Value] = {}
    for v in values:
        seen.setdefault(identity(v), v)
    return tuple(sorted(seen.values(), key=sort_key))


class ValueIndex:
    """Position of each value of a value list, by identity."""

    __slots__ = ("values", "_index")

    def __init__(self, values: Sequence[Value]):
        self.values = tuple(values)
        self._index = {identity(v): i for i, v in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, v: Value) -> bool:
        return identity(v) in self._index

    def get(self, v: Value, default: int = -1) -> int:
        return self._index.get(identity(v), default)

    def __getitem__(self, v: Value) -> int:
        return self._index[identity(v)]


def is_number(v: Value) -> bool:
    """int, float or bool (the evaluator averages all three)."""
    return type(v) in (int, float, bool)


def exact_fraction(x: Value) -> Fraction:
    """The exact rational a number holds (a float's binary value, not the decimal it was written as)."""
    return Fraction(x)


def evaluator_mean(xs: Sequence[Value]) -> Value:
    """The evaluator's mean of a non-empty selection: the value itself for one, else `sum / len`."""
    if len(xs) == 1:
        return xs[0]
    return sum(xs) / len(xs)


def format_value(v: Value) -> str:
    if v is None:
        return "none"
    t = type(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        if not math.isfinite(v):
            raise UnsupportedValue(f"non-finite value {v!r} cannot appear in a RASP program")
        text = repr(v)
        if "." not in text:  # 1e-05 -> 1.0e-05: the IR lexer wants a '.' in a float
            mantissa, _, exponent = text.partition("e")
            text = f"{mantissa}.0" + (f"e{exponent}" if exponent else "")
        return text
    if t is str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if t is tuple:
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    raise UnsupportedValue(f"unsupported RASP value {v!r} of type {t.__name__}")


def format_values(values: Iterable[Value]) -> str:
    return "[" + ", ".join(format_value(v) for v in values) + "]"




def same_result(expected: Value, got: Value, numerical: bool, tol: float = 1e-4) -> bool:
    """One model output against the evaluator's, with one meaning everywhere: None only equals None
    (numpy scalars count as the bool/int/float they hold);
    a numerical output is a number within `tol` (relative above 1) of the expected one (which may
    be a bool: the mean of one bool); a categorical one must be the same value and type (1, 1.0
    and True differ)."""
    if expected is None or got is None:
        return expected is None and got is None
    try:  # a Map may return numpy scalars; the model answers with their plain Python value
        expected, got = normalize(expected), normalize(got)
    except UnsupportedValue:
        return False
    if numerical:
        return is_number(got) and is_number(expected) and abs(float(got) - float(expected)) <= tol * max(
            1.0, abs(float(expected)))
    return identity(expected) == identity(got)


def same_results(expected: Sequence[Value], got: Sequence[Value], numerical: bool, tol: float = 1e-4) -> bool:
    return len(expected) == len(got) and all(same_result(e, g, numerical, tol) for e, g in zip(expected, got))


__all__ = [
    "Value", "UnsupportedValue", "normalize", "identity", "same_value", "sort_key", "sorted_values",
    "ValueIndex", "is_number", "exact_fraction", "evaluator_mean", "format_value", "format_values", "same_result",
    "same_results",
]
