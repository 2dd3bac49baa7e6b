"""RASP values in the IR: a total order, and a textual syntax that round-trips.

Values are ints, floats, strings, bools, None, or tuples of those. In IR text they read
`1`, `0.5`, `"a"`, `true`, `none`, `(1, "a")`; floats always carry a '.', so `1` and
`1.0` stay distinct on the page.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Iterable

from xdsl.parser import AttrParser
from xdsl.printer import Printer

from raspc.errors import IRError

_TYPE_RANK = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, tuple: 4}


def sort_key(v: Any) -> tuple:
    """A total order over RASP values (numbers by value, then strings, then tuples)."""
    rank = _TYPE_RANK.get(type(v))
    if rank is None:
        raise TypeError(f"unsupported RASP value {v!r} of type {type(v).__name__}")
    if isinstance(v, tuple):
        return (rank, tuple(sort_key(x) for x in v))
    if v is None:
        return (rank, 0)
    return (rank, v)


def sorted_values(values: Iterable[Any]) -> tuple[Any, ...]:
    """Distinct values (by Python equality, as the evaluator compares them), in sort_key order."""
    seen: dict[Any, Any] = {}
    for v in values:
        seen.setdefault(v, v)
    return tuple(sorted(seen.values(), key=sort_key))


def simple_fraction(x: float) -> Fraction:
    """The simple fraction a float came from (1/3 for 0.333...), else the float's exact value."""
    simple = Fraction(x).limit_denominator(1_000_000)
    return simple if abs(float(simple) - x) <= 1e-12 * max(1.0, abs(x)) else Fraction(x)


def format_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"non-finite value {v!r} cannot appear in a RASP program")
        text = repr(v)
        if "." not in text:  # 1e-05 -> 1.0e-05: the IR lexer wants a '.' in a float
            mantissa, _, exponent = text.partition("e")
            text = f"{mantissa}.0" + (f"e{exponent}" if exponent else "")
        return text
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, tuple):
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    raise TypeError(f"unsupported RASP value {v!r} of type {type(v).__name__}")


def print_value(printer: Printer, v: Any) -> None:
    printer.print_string(format_value(v))


def parse_value(parser: AttrParser) -> Any:
    if parser.parse_optional_punctuation("(") is not None:
        items: list[Any] = []
        if parser.parse_optional_punctuation(")") is None:
            items.append(parse_value(parser))
            while parser.parse_optional_punctuation(",") is not None:
                items.append(parse_value(parser))
            parser.parse_punctuation(")")
        return tuple(items)
    text = parser.parse_optional_str_literal()
    if text is not None:
        return text
    number = parser.parse_optional_number()
    if number is not None:
        return number
    for word, value in (("none", None), ("true", True), ("false", False)):
        if parser.parse_optional_keyword(word) is not None:
            return value
    parser.raise_error("expected a RASP value (integer, float, string, true, false, none or a tuple)")
    raise IRError("unreachable")


def parse_value_list(parser: AttrParser) -> tuple[Any, ...]:
    return tuple(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, lambda: parse_value(parser)))


def print_value_list(printer: Printer, values: Iterable[Any]) -> None:
    printer.print_string("[" + ", ".join(format_value(v) for v in values) + "]")
