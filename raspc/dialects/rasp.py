"""The rasp dialect: one op per RASP primitive, self-contained (no Python callables).

Types carry each s-op's encoding and finite value set; `map`/`sequence_map` carry their
function as a table over the input value sets; `select` carries its predicate as a boolean
table over query x key values. Every op keeps the s-op's label and the file:line where the
s-op was written.

    %hist = rasp.selector_width %same_tok {label = "hist", src = "lib.py:12"} : !rasp.sop<categorical, [0, 1, 2, 3, 4, 5]>
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseArrayBase,
    FloatAttr,
    Float64Type,
    StringAttr,
    i8,
    i64,
    f64,
)
from xdsl.ir import Attribute, Data, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from raspc.values import format_value, parse_value, parse_value_list, print_value_list, sort_key

CATEGORICAL = "categorical"
NUMERICAL = "numerical"


# --------------------------------------------------------------------------- attributes and types


def _parse_keyword_in(parser: AttrParser, options: Sequence[str]) -> str:
    for option in options:
        if parser.parse_optional_keyword(option) is not None:
            return option
    parser.raise_error(f"expected one of: {', '.join(options)}")
    raise AssertionError("raise_error returned")


@irdl_attr_definition
class ValuesAttr(Data[tuple[Any, ...]]):
    """An ordered list of RASP values: `#rasp.values<[1, 2.5, "a", (1, 2)]>`."""

    name = "rasp.values"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[Any, ...]:
        with parser.in_angle_brackets():
            return parse_value_list(parser)

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            print_value_list(printer, self.data)


@irdl_attr_definition
class ValueAttr(Data[Any]):
    """One RASP value (None included): `#rasp.value<none>`, `#rasp.value<"a">`."""

    name = "rasp.value"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Any:
        with parser.in_angle_brackets():
            return parse_value(parser)

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(format_value(self.data))


@irdl_attr_definition
class UnboundedAttr(ParametrizedAttribute):
    """Marks a numerical value set that is not known to be finite."""

    name = "rasp.unbounded"


@irdl_attr_definition
class SOpType(ParametrizedAttribute, TypeAttribute):
    """`!rasp.sop<categorical, [values]>`, `!rasp.sop<numerical, [values]>` or `!rasp.sop<numerical, *>`.

    A categorical s-op is one-hot over its values (None: no direction active). A numerical
    s-op is one scalar; `*` means its value set is not known to be finite.
    """

    name = "rasp.sop"
    encoding: StringAttr
    values: ValuesAttr | UnboundedAttr

    def __init__(self, encoding: str, values: Sequence[Any] | None):
        vals: Attribute = UnboundedAttr() if values is None else ValuesAttr(tuple(values))
        super().__init__(StringAttr(encoding), vals)

    @property
    def is_categorical(self) -> bool:
        return self.encoding.data == CATEGORICAL

    @property
    def value_set(self) -> tuple[Any, ...] | None:
        return self.values.data if isinstance(self.values, ValuesAttr) else None

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(self.encoding.data + ", ")
            if isinstance(self.values, ValuesAttr):
                print_value_list(printer, self.values.data)
            else:
                printer.print_string("*")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            encoding = _parse_keyword_in(parser, (CATEGORICAL, NUMERICAL))
            parser.parse_punctuation(",")
            if parser.parse_optional_punctuation("*") is not None:
                values: Attribute = UnboundedAttr()
            else:
                values = ValuesAttr(parse_value_list(parser))
        return [StringAttr(encoding), values]

    def verify(self) -> None:
        if self.encoding.data not in (CATEGORICAL, NUMERICAL):
            raise VerifyException(f"unknown encoding '{self.encoding.data}'")
        vals = self.value_set
        if vals is None:
            if self.is_categorical:
                raise VerifyException("a categorical s-op needs a finite value set")
            return
        if None in vals:
            raise VerifyException("None is not a value: a categorical None is 'no direction active'")
        keys = [sort_key(v) for v in vals]
        if keys != sorted(keys) or len(set(vals)) != len(vals):
            raise VerifyException("value set must be sorted and without duplicates")
        if not self.is_categorical and not all(isinstance(v, (int, float)) for v in vals):
            raise VerifyException("a numerical s-op takes only int, float or bool values")


@irdl_attr_definition
class SelectorType(ParametrizedAttribute, TypeAttribute):
    """`!rasp.selector`: a boolean attention pattern."""

    name = "rasp.selector"


def sop_type(value: SSAValue) -> SOpType:
    assert isinstance(value.type, SOpType)
    return value.type


# --------------------------------------------------------------------------- ops


class RaspOp(IRDLOperation):
    """Shared by every s-op/selector op: a label and a source location."""

    label = prop_def(StringAttr)
    src = opt_prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)

    @property
    def label_str(self) -> str:
        return self.label.data

    @property
    def src_str(self) -> str | None:
        return self.src.data if self.src is not None else None


def _props(label: str, src: str | None, **extra: Attribute) -> dict[str, Attribute]:
    props: dict[str, Attribute] = {"label": StringAttr(label), **extra}
    if src:
        props["src"] = StringAttr(src)
    return props


_TABLE_DTYPES = {8: "<i1", 64: "<i8"}


def table_attr(entries: Sequence[int], dtype=i64) -> DenseArrayBase:
    """A dense i64 (or i8) array attribute, built from bytes (tables can have ~10^6 entries)."""
    raw = np.asarray(entries, dtype=_TABLE_DTYPES[dtype.width.data]).tobytes()
    return DenseArrayBase(dtype, BytesAttr(raw))


def table_values(attr: DenseArrayBase) -> tuple[int, ...]:
    width = attr.elt_type.width.data  # type: ignore[union-attr]
    return tuple(np.frombuffer(attr.data.data, dtype=_TABLE_DTYPES[width]).tolist())


def _require_categorical_values(value: SSAValue, what: str) -> tuple[Any, ...]:
    t = sop_type(value)
    vals = t.value_set
    if vals is None:
        raise VerifyException(f"{what} needs a finite value set")
    return vals


@irdl_op_definition
class TokensOp(RaspOp):
    """The input tokens (BOS excluded)."""

    name = "rasp.tokens"
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType, label: str = "tokens", src: str | None = None):
        super().__init__(result_types=[t], properties=_props(label, src))

    def verify_(self) -> None:
        if not sop_type(self.res).is_categorical:
            raise VerifyException("tokens are categorical")


@irdl_op_definition
class IndicesOp(RaspOp):
    """The position of each token, 0-based (BOS excluded)."""

    name = "rasp.indices"
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType, label: str = "indices", src: str | None = None):
        super().__init__(result_types=[t], properties=_props(label, src))


@irdl_op_definition
class FullOp(RaspOp):
    """The same value at every position."""

    name = "rasp.full"
    fill = prop_def(ValueAttr)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType, fill: Any, label: str, src: str | None = None):
        super().__init__(result_types=[t], properties=_props(label, src, fill=ValueAttr(fill)))

    def verify_(self) -> None:
        vals = sop_type(self.res).value_set
        if vals is not None and self.fill.data is not None and self.fill.data not in vals:
            raise VerifyException(f"fill {format_value(self.fill.data)} is not in the result's value set")


@irdl_op_definition
class ConstantOp(RaspOp):
    """A fixed value per position (Tracr's ConstantSOp); inputs must have exactly this length."""

    name = "rasp.constant"
    value = prop_def(ValuesAttr)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType, value: Sequence[Any], label: str, src: str | None = None):
        super().__init__(result_types=[t], properties=_props(label, src, value=ValuesAttr(tuple(value))))

    def verify_(self) -> None:
        vals = sop_type(self.res).value_set
        if vals is not None:
            missing = [v for v in self.value.data if v is not None and v not in vals]
            if missing:
                raise VerifyException(f"constant values {missing} are not in the result's value set")


@irdl_op_definition
class MapOp(RaspOp):
    """Elementwise function, as a table: table[i] is the index of f(in[i]) in the result values (-1: None)."""

    name = "rasp.map"
    inp = operand_def(SOpType)
    table = prop_def(DenseArrayBase)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$inp attr-dict `:` type($inp) `->` type($res)"

    def __init__(self, inp: SSAValue, t: SOpType, table: Sequence[int], label: str, src: str | None = None):
        super().__init__(
            operands=[inp], result_types=[t], properties=_props(label, src, table=table_attr(table))
        )

    def verify_(self) -> None:
        in_vals = _require_categorical_values(self.inp, "rasp.map input")
        out_vals = _require_categorical_values(self.res, "rasp.map result")
        _verify_table(table_values(self.table), len(in_vals), len(out_vals))


def _verify_table(table: Sequence[int], expected_len: int, n_out: int) -> None:
    if len(table) != expected_len:
        raise VerifyException(f"table has {len(table)} entries, expected {expected_len}")
    if table and (min(table) < -1 or max(table) >= n_out):
        bad = [e for e in table if not -1 <= e < n_out]
        raise VerifyException(f"table entries {bad[:5]} are not indices into the {n_out} result values")


@irdl_op_definition
class SequenceMapOp(RaspOp):
    """Elementwise function of two s-ops: table[i * |snd| + j] indexes f(fst[i], snd[j]) (-1: None)."""

    name = "rasp.sequence_map"
    fst = operand_def(SOpType)
    snd = operand_def(SOpType)
    table = prop_def(DenseArrayBase)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$fst `,` $snd attr-dict `:` type($fst) `,` type($snd) `->` type($res)"

    def __init__(
        self, fst: SSAValue, snd: SSAValue, t: SOpType, table: Sequence[int], label: str, src: str | None = None
    ):
        super().__init__(
            operands=[fst, snd], result_types=[t], properties=_props(label, src, table=table_attr(table))
        )

    def verify_(self) -> None:
        a = _require_categorical_values(self.fst, "rasp.sequence_map operand")
        b = _require_categorical_values(self.snd, "rasp.sequence_map operand")
        out = _require_categorical_values(self.res, "rasp.sequence_map result")
        _verify_table(table_values(self.table), len(a) * len(b), len(out))


@irdl_op_definition
class LinearSequenceMapOp(RaspOp):
    """fst_fac * fst + snd_fac * snd on numerical s-ops."""

    name = "rasp.linear_sequence_map"
    fst = operand_def(SOpType)
    snd = operand_def(SOpType)
    fst_fac = prop_def(FloatAttr[Float64Type])
    snd_fac = prop_def(FloatAttr[Float64Type])
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$fst `,` $snd attr-dict `:` type($fst) `,` type($snd) `->` type($res)"

    def __init__(
        self, fst: SSAValue, snd: SSAValue, t: SOpType, fst_fac: float, snd_fac: float, label: str,
        src: str | None = None,
    ):
        props = _props(label, src, fst_fac=FloatAttr(float(fst_fac), f64), snd_fac=FloatAttr(float(snd_fac), f64))
        super().__init__(operands=[fst, snd], result_types=[t], properties=props)

    def verify_(self) -> None:
        for v in (self.fst, self.snd, self.res):
            if sop_type(v).is_categorical:
                raise VerifyException("rasp.linear_sequence_map works on numerical s-ops")


@irdl_op_definition
class SelectOp(RaspOp):
    """selector[q][k] = table[qi * |keys| + ki] for query value qi, key value ki.

    `comparison` names the predicate when it is one of Tracr's Comparisons (for readers only).
    """

    name = "rasp.select"
    keys = operand_def(SOpType)
    queries = operand_def(SOpType)
    table = prop_def(DenseArrayBase)
    comparison = opt_prop_def(StringAttr)
    res = result_def(SelectorType)
    traits = traits_def(Pure())
    assembly_format = "$keys `,` $queries attr-dict `:` type($keys) `,` type($queries)"

    def __init__(
        self, keys: SSAValue, queries: SSAValue, table: Sequence[int], label: str, src: str | None = None,
        comparison: str | None = None,
    ):
        extra: dict[str, Attribute] = {"table": table_attr(table, i8)}
        if comparison is not None:
            extra["comparison"] = StringAttr(comparison)
        super().__init__(operands=[keys, queries], result_types=[SelectorType()], properties=_props(label, src, **extra))

    def verify_(self) -> None:
        k = _require_categorical_values(self.keys, "rasp.select keys")
        q = _require_categorical_values(self.queries, "rasp.select queries")
        table = table_values(self.table)
        if len(table) != len(k) * len(q):
            raise VerifyException(f"table has {len(table)} entries, expected |queries| x |keys| = {len(q)} x {len(k)}")
        if not set(table) <= {0, 1}:
            raise VerifyException("select table entries must be 0 or 1")


class _BinarySelectorOp(RaspOp):
    fst = operand_def(SelectorType)
    snd = operand_def(SelectorType)
    res = result_def(SelectorType)
    traits = traits_def(Pure())
    assembly_format = "$fst `,` $snd attr-dict"

    def __init__(self, fst: SSAValue, snd: SSAValue, label: str, src: str | None = None):
        super().__init__(operands=[fst, snd], result_types=[SelectorType()], properties=_props(label, src))


@irdl_op_definition
class SelectorAndOp(_BinarySelectorOp):
    name = "rasp.selector_and"


@irdl_op_definition
class SelectorOrOp(_BinarySelectorOp):
    name = "rasp.selector_or"


@irdl_op_definition
class SelectorNotOp(RaspOp):
    name = "rasp.selector_not"
    inner = operand_def(SelectorType)
    res = result_def(SelectorType)
    traits = traits_def(Pure())
    assembly_format = "$inner attr-dict"

    def __init__(self, inner: SSAValue, label: str, src: str | None = None):
        super().__init__(operands=[inner], result_types=[SelectorType()], properties=_props(label, src))


@irdl_op_definition
class AggregateOp(RaspOp):
    """Mean of the selected values of `sop`; `default` where nothing is selected."""

    name = "rasp.aggregate"
    selector = operand_def(SelectorType)
    sop = operand_def(SOpType)
    default = prop_def(ValueAttr)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$selector `,` $sop attr-dict `:` type($sop) `->` type($res)"

    def __init__(
        self, selector: SSAValue, sop: SSAValue, t: SOpType, default: Any, label: str, src: str | None = None
    ):
        super().__init__(
            operands=[selector, sop], result_types=[t], properties=_props(label, src, default=ValueAttr(default))
        )

    def verify_(self) -> None:
        src_t, res_t = sop_type(self.sop), sop_type(self.res)
        if src_t.is_categorical != res_t.is_categorical:
            raise VerifyException("aggregate keeps its operand's encoding")
        if res_t.is_categorical:
            vals = res_t.value_set or ()
            missing = [v for v in (src_t.value_set or ()) if v not in vals]
            if missing:
                raise VerifyException(f"operand values {missing[:5]} missing from the result's value set")
            if self.default.data is not None and self.default.data not in vals:
                raise VerifyException("default is not in the result's value set")
        elif not isinstance(self.default.data, (int, float)):
            raise VerifyException("a numerical aggregate needs a numeric default")


@irdl_op_definition
class SelectorWidthOp(RaspOp):
    """How many keys each query selects."""

    name = "rasp.selector_width"
    selector = operand_def(SelectorType)
    res = result_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$selector attr-dict `:` type($res)"

    def __init__(self, selector: SSAValue, t: SOpType, label: str, src: str | None = None):
        super().__init__(operands=[selector], result_types=[t], properties=_props(label, src))

    def verify_(self) -> None:
        vals = sop_type(self.res).value_set
        if vals is not None and not all(isinstance(v, int) and v >= 0 for v in vals):
            raise VerifyException("selector widths are non-negative integers")


@irdl_op_definition
class OutputOp(IRDLOperation):
    """Marks the program's result (the model's output)."""

    name = "rasp.output"
    inp = operand_def(SOpType)
    assembly_format = "$inp attr-dict `:` type($inp)"

    def __init__(self, inp: SSAValue):
        super().__init__(operands=[inp])


SOP_OPS = (TokensOp, IndicesOp, FullOp, ConstantOp, MapOp, SequenceMapOp, LinearSequenceMapOp, AggregateOp, SelectorWidthOp)
SELECTOR_OPS = (SelectOp, SelectorAndOp, SelectorOrOp, SelectorNotOp)

Rasp = Dialect(
    "rasp",
    [*SOP_OPS, *SELECTOR_OPS, OutputOp],
    [ValuesAttr, ValueAttr, SOpType, UnboundedAttr, SelectorType],
)

__all__ = [
    "Rasp", "SOpType", "SelectorType", "ValuesAttr", "ValueAttr", "UnboundedAttr", "CATEGORICAL", "NUMERICAL",
    "TokensOp", "IndicesOp", "FullOp", "ConstantOp", "MapOp", "SequenceMapOp", "LinearSequenceMapOp", "SelectOp",
    "SelectorAndOp", "SelectorOrOp", "SelectorNotOp", "AggregateOp", "SelectorWidthOp", "OutputOp",
]
