"""The rasp dialect: one op per RASP primitive, self-contained (no Python callables).

A program is a `rasp.program` whose block ends in `rasp.output`. Types carry each s-op's
encoding and value set (`none` among the values: the s-op can be None); a map carries its
function as a table from input values to output values, a select its predicate as a Tracr
comparison or as a relation over key and query values. Tables are keyed by *value*, not by
position in a type, so an analysis may narrow or widen a value set without touching them, and a
hand-written program may leave every value set out (`!rasp.sop<categorical>`) for
`infer-value-sets` to fill in.

    rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 4, causal = false> {
      %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
      %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : ...
      %hist = rasp.selector_width %same {label = "hist", src = "lib.py:12"} : !rasp.sop<categorical, [1, 2, 3, 4]>
      rasp.output %hist : !rasp.sop<categorical, [1, 2, 3, 4]>
    }
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Sequence

import numpy as np
from xdsl.dialects.builtin import I64, FloatAttr, Float64Type, IntegerAttr, StringAttr, f64, i64
from xdsl.dialects.utils.enum_attribute import EnumAttribute
from xdsl.ir import Attribute, Data, Dialect, ParametrizedAttribute, SpacedOpaqueSyntaxAttribute, SSAValue, TypeAttribute
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
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import HasCanonicalizationPatternsTrait, HasParent, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from raspc.dialects.common import (
    CATEGORICAL,
    NUMERICAL,
    Encoding,
    ModelContainer,
    ValueAttr,
    ValuesAttr,
    parse_value,
    parse_value_list,
)
from raspc.utils.values import Value, ValueIndex, format_value, format_values, identity, is_number, sort_key

# --------------------------------------------------------------------------- types


@irdl_attr_definition
class UnboundedAttr(ParametrizedAttribute):
    """A numerical value set that is not known to be finite (`*` in a type)."""

    name = "rasp.unbounded"


@irdl_attr_definition
class UninferredAttr(ParametrizedAttribute):
    """A value set not inferred yet (a hand-written type without values); `infer-value-sets` fills it."""

    name = "rasp.uninferred"


@irdl_attr_definition
class SOpType(ParametrizedAttribute, TypeAttribute):
    """`!rasp.sop<categorical, [values]>`, `!rasp.sop<numerical, [values]>`, `!rasp.sop<numerical, *>`,
    or `!rasp.sop<categorical>` before value-set inference.

    A categorical s-op is one-hot over its values; a numerical one is one number. `none` among
    the values means the s-op can be None (at some position, on some input); for a categorical
    s-op, None is "no direction active".
    """

    name = "rasp.sop"
    encoding: StringAttr
    values: ValuesAttr | UnboundedAttr | UninferredAttr

    def __init__(self, encoding: Encoding | str, values: Sequence[Any] | None | UninferredAttr = None):
        if isinstance(values, UninferredAttr):
            vals: Attribute = values
        elif values is None:
            vals = UnboundedAttr()
        else:
            vals = ValuesAttr(tuple(values))
        super().__init__(StringAttr(Encoding(encoding).value), vals)

    @staticmethod
    def uninferred(encoding: Encoding | str) -> "SOpType":
        return SOpType(encoding, UninferredAttr())

    @property
    def enc(self) -> Encoding:
        return Encoding(self.encoding.data)

    @property
    def is_categorical(self) -> bool:
        return self.encoding.data == CATEGORICAL

    @property
    def is_inferred(self) -> bool:
        return not isinstance(self.values, UninferredAttr)

    @property
    def value_set(self) -> tuple[Any, ...] | None:
        """Every value, None included when the s-op can be None; None when not finite or not inferred."""
        return self.values.data if isinstance(self.values, ValuesAttr) else None

    @property
    def may_be_none(self) -> bool:
        vals = self.value_set
        return bool(vals) and vals[0] is None

    @property
    def non_none_values(self) -> tuple[Any, ...]:
        vals = self.value_set or ()
        return vals[1:] if vals and vals[0] is None else vals

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(self.encoding.data)
            if isinstance(self.values, ValuesAttr):
                printer.print_string(", " + format_values(self.values.data))
            elif isinstance(self.values, UnboundedAttr):
                printer.print_string(", *")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            encoding = parser.parse_str_enum(Encoding)
            values: Attribute = UninferredAttr()
            if parser.parse_optional_punctuation(",") is not None:
                if parser.parse_optional_punctuation("*") is not None:
                    values = UnboundedAttr()
                else:
                    values = ValuesAttr(parse_value_list(parser))
        return [StringAttr(encoding.value), values]

    def verify(self) -> None:
        Encoding(self.encoding.data)
        if isinstance(self.values, UnboundedAttr) and self.is_categorical:
            raise VerifyException("a categorical s-op needs a finite value set")
        vals = self.value_set
        if vals is None:
            return
        keys = [sort_key(v) for v in vals]
        if keys != sorted(keys) or len({identity(v) for v in vals}) != len(vals):
            raise VerifyException("value set must be sorted and without duplicates")
        if not self.is_categorical:
            if any(v is None for v in vals):
                raise VerifyException("a numerical s-op cannot be None")
            if not all(is_number(v) for v in vals):
                raise VerifyException("a numerical s-op takes only int, float or bool values")


@irdl_attr_definition
class SelectorType(ParametrizedAttribute, TypeAttribute):
    """`!rasp.selector`: a boolean attention pattern [query, key]."""

    name = "rasp.selector"


def sop_type(value: SSAValue) -> SOpType:
    assert isinstance(value.type, SOpType), value.type
    return value.type


# --------------------------------------------------------------------------- tables and predicates


@irdl_attr_definition
class TableAttr(Data[tuple[tuple[tuple[Any, ...], Any], ...]]):
    """An elementwise function as a table keyed by value: `#rasp.table<{"a" -> 1, "b" -> none}>`,
    or of two arguments `#rasp.table<{1, 2 -> 3, ...}>`. An input that is missing is outside the
    program's domain (the function raises there, and so does the evaluator)."""

    name = "rasp.table"

    @staticmethod
    def of(entries: Sequence[tuple[tuple[Any, ...], Any]]) -> "TableAttr":
        """A table from (arguments, output) entries, in value order."""
        ordered = sorted(entries, key=lambda e: tuple(sort_key(a) for a in e[0]))
        return TableAttr(tuple((tuple(args), out) for args, out in ordered))

    @cached_property
    def key(self) -> Any:
        """The identity of every entry, computed once (attributes are compared and hashed by CSE)."""
        return identity(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TableAttr) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def arity(self) -> int:
        return len(self.data[0][0]) if self.data else 0

    @cached_property
    def _lookup(self) -> dict[Any, Any]:
        if self.arity == 1:  # keyed by the one argument's identity (the common case, and the hot one)
            return {identity(args[0]): out for args, out in self.data}
        return {identity(args): out for args, out in self.data}

    def get(self, *args: Any) -> tuple[bool, Any]:
        """(True, f(args)) when the table has the entry, else (False, None)."""
        key = identity(args[0]) if len(args) == 1 else identity(args)
        lookup = self._lookup
        if key in lookup:
            return True, lookup[key]
        return False, None

    def outputs(self) -> list[Any]:
        return [out for _, out in self.data]

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(
            "<{" + ", ".join(", ".join(format_value(a) for a in args) + " -> " + format_value(out)
                             for args, out in self.data) + "}>"
        )

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[tuple[tuple[Any, ...], Any], ...]:
        def entry() -> tuple[tuple[Any, ...], Any]:
            args = [parse_value(parser)]
            while parser.parse_optional_punctuation(",") is not None:
                args.append(parse_value(parser))
            parser.parse_punctuation("->")
            return tuple(args), parse_value(parser)

        with parser.in_angle_brackets():
            entries = parser.parse_comma_separated_list(parser.Delimiter.BRACES, entry)
        if len({len(a) for a, _ in entries}) > 1:
            parser.raise_error("every entry of a table takes the same number of arguments")
        return TableAttr.of(entries).data


class Comparison(StrEnum):
    """Tracr's comparisons, called as predicate(key, query)."""

    EQ = "EQ"
    LT = "LT"
    LEQ = "LEQ"
    GT = "GT"
    GEQ = "GEQ"
    NEQ = "NEQ"
    TRUE = "TRUE"
    FALSE = "FALSE"


COMPARISON_NEGATION = {
    Comparison.EQ: Comparison.NEQ, Comparison.NEQ: Comparison.EQ, Comparison.LT: Comparison.GEQ,
    Comparison.GEQ: Comparison.LT, Comparison.GT: Comparison.LEQ, Comparison.LEQ: Comparison.GT,
    Comparison.TRUE: Comparison.FALSE, Comparison.FALSE: Comparison.TRUE,
}


@irdl_attr_definition
class ComparisonAttr(EnumAttribute[Comparison], SpacedOpaqueSyntaxAttribute):
    """`#rasp<comparison LT>`: a select predicate that compares key and query values."""

    name = "rasp.comparison"


@irdl_attr_definition
class RelationAttr(Data[tuple[tuple[Any, ...], tuple[Any, ...], bytes]]):
    """A select predicate as a relation over explicit key and query values:
    `#rasp.relation<keys = [0, 1], queries = [0, 1], rows = ["01", "?1"]>`: row q, column k is `1`
    when query value q selects key value k, `0` when not, `?` when the predicate raises there
    (outside the program's domain). Values not listed are outside the domain too."""

    name = "rasp.relation"

    @staticmethod
    def of(keys: Sequence[Any], queries: Sequence[Any], matrix: Any) -> "RelationAttr":
        m = np.asarray(matrix, dtype=np.int8).reshape(len(queries), len(keys))
        return RelationAttr((tuple(keys), tuple(queries), m.tobytes()))

    @cached_property
    def key(self) -> Any:
        return (identity(self.data[:2]), self.data[2])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelationAttr) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def keys(self) -> tuple[Any, ...]:
        return self.data[0]

    @property
    def queries(self) -> tuple[Any, ...]:
        return self.data[1]

    @cached_property
    def matrix(self) -> np.ndarray:
        """int8 [queries, keys]: 1 selects, 0 does not, -1 undefined."""
        m = np.frombuffer(self.data[2], dtype=np.int8).reshape(len(self.queries), len(self.keys))
        m.flags.writeable = False
        return m

    def print_parameter(self, printer: Printer) -> None:
        chars = {1: "1", 0: "0", -1: "?"}
        rows = ", ".join('"' + "".join(chars[int(x)] for x in row) + '"' for row in self.matrix)
        printer.print_string(f"<keys = {format_values(self.keys)}, queries = {format_values(self.queries)}, "
                             f"rows = [{rows}]>")

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[tuple[Any, ...], tuple[Any, ...], bytes]:
        with parser.in_angle_brackets():
            parser.parse_keyword("keys")
            parser.parse_punctuation("=")
            keys = parse_value_list(parser)
            parser.parse_punctuation(",")
            parser.parse_keyword("queries")
            parser.parse_punctuation("=")
            queries = parse_value_list(parser)
            parser.parse_punctuation(",")
            parser.parse_keyword("rows")
            parser.parse_punctuation("=")
            rows = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_str_literal)
        if len(rows) != len(queries) or any(len(r) != len(keys) for r in rows):
            parser.raise_error(f"a relation over {len(keys)} keys and {len(queries)} queries needs "
                               f"{len(queries)} rows of {len(keys)} characters")
        codes = {"1": 1, "0": 0, "?": -1}
        if any(c not in codes for r in rows for c in r):
            parser.raise_error("relation rows hold only '1', '0' and '?'")
        m = np.array([[codes[c] for c in r] for r in rows], dtype=np.int8).reshape(len(queries), len(keys))
        return RelationAttr.of(keys, queries, m).data


Predicate = ComparisonAttr | RelationAttr


# --------------------------------------------------------------------------- ops


class RaspOp(IRDLOperation):
    """Shared by every s-op/selector op: a label and the file:line where the s-op was written."""

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


def _uninferred(t: SOpType | Encoding | str) -> SOpType:
    return t if isinstance(t, SOpType) else SOpType.uninferred(t)


class SOpOp(RaspOp):
    """An op producing an s-op."""

    res = result_def(SOpType)

    @property
    def result_type(self) -> SOpType:
        return sop_type(self.res)


@irdl_op_definition
class TokensOp(SOpOp):
    """The input tokens (BOS excluded)."""

    name = "rasp.tokens"
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType | None = None, label: str = "tokens", src: str | None = None):
        super().__init__(result_types=[t or SOpType.uninferred(CATEGORICAL)], properties=_props(label, src))

    def verify_(self) -> None:
        if not self.result_type.is_categorical:
            raise VerifyException("tokens are categorical")


@irdl_op_definition
class IndicesOp(SOpOp):
    """The position of each token, 0-based (BOS excluded)."""

    name = "rasp.indices"
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType | Encoding | str = CATEGORICAL, label: str = "indices", src: str | None = None):
        super().__init__(result_types=[_uninferred(t)], properties=_props(label, src))


@irdl_op_definition
class FullOp(SOpOp):
    """The same value at every position."""

    name = "rasp.full"
    fill = prop_def(ValueAttr)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType | Encoding | str, fill: Any, label: str, src: str | None = None):
        super().__init__(result_types=[_uninferred(t)], properties=_props(label, src, fill=ValueAttr(fill)))


@irdl_op_definition
class ConstantOp(SOpOp):
    """A fixed value per position (Tracr's ConstantSOp); inputs must have exactly this length."""

    name = "rasp.constant"
    value = prop_def(ValuesAttr)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, t: SOpType | Encoding | str, value: Sequence[Any], label: str, src: str | None = None):
        super().__init__(result_types=[_uninferred(t)], properties=_props(label, src, value=ValuesAttr(tuple(value))))


@irdl_op_definition
class MapOp(SOpOp):
    """An elementwise function, as a table from input values to output values (None gives None)."""

    name = "rasp.map"
    inp = operand_def(SOpType)
    fn = prop_def(TableAttr)
    traits = traits_def(Pure())
    assembly_format = "$inp attr-dict `:` type($inp) `->` type($res)"

    def __init__(self, inp: SSAValue, t: SOpType | Encoding | str, fn: TableAttr, label: str, src: str | None = None):
        super().__init__(operands=[inp], result_types=[_uninferred(t)], properties=_props(label, src, fn=fn))

    def verify_(self) -> None:
        if self.fn.data and self.fn.arity != 1:
            raise VerifyException("rasp.map takes a table of one argument")


@irdl_op_definition
class SequenceMapOp(SOpOp):
    """An elementwise function of two s-ops, as a table from value pairs (None in gives None)."""

    name = "rasp.sequence_map"
    fst = operand_def(SOpType)
    snd = operand_def(SOpType)
    fn = prop_def(TableAttr)
    traits = traits_def(Pure())
    assembly_format = "$fst `,` $snd attr-dict `:` type($fst) `,` type($snd) `->` type($res)"

    def __init__(
        self, fst: SSAValue, snd: SSAValue, t: SOpType | Encoding | str, fn: TableAttr, label: str,
        src: str | None = None,
    ):
        super().__init__(operands=[fst, snd], result_types=[_uninferred(t)], properties=_props(label, src, fn=fn))

    def verify_(self) -> None:
        if self.fn.data and self.fn.arity != 2:
            raise VerifyException("rasp.sequence_map takes a table of two arguments")


@irdl_op_definition
class TupleOp(SOpOp):
    """The tuple of several s-ops' values at each position, None parts kept: (None, "a") is a value.

    Not a RASP primitive: product-selectors packs the keys (queries) of a selector tree with it,
    so one select over the tuples can stand for the tree (a sequence_map would turn the whole
    tuple into None where one part is None)."""

    name = "rasp.tuple"
    parts = var_operand_def(SOpType)
    traits = traits_def(Pure())
    assembly_format = "$parts attr-dict `:` type($parts) `->` type($res)"

    def __init__(self, parts: Sequence[SSAValue], label: str, src: str | None = None):
        super().__init__(operands=[list(parts)], result_types=[SOpType.uninferred(CATEGORICAL)],
                         properties=_props(label, src))

    def verify_(self) -> None:
        if len(self.parts) < 2:
            raise VerifyException("rasp.tuple packs at least two s-ops")
        if not self.result_type.is_categorical or not all(sop_type(p).is_categorical for p in self.parts):
            raise VerifyException("rasp.tuple packs categorical s-ops into a categorical one")


def _factor(x: float) -> Attribute:
    if type(x) in (int, bool):
        return IntegerAttr(int(x), i64)
    return FloatAttr(float(x), f64)


@irdl_op_definition
class LinearSequenceMapOp(SOpOp):
    """fst_fac * fst + snd_fac * snd on numerical s-ops (computed in that order, as the evaluator does)."""

    name = "rasp.linear_sequence_map"
    fst = operand_def(SOpType)
    snd = operand_def(SOpType)
    fst_fac = prop_def(IntegerAttr[I64] | FloatAttr[Float64Type])
    snd_fac = prop_def(IntegerAttr[I64] | FloatAttr[Float64Type])
    traits = traits_def(Pure())
    assembly_format = "$fst `,` $snd attr-dict `:` type($fst) `,` type($snd) `->` type($res)"

    def __init__(
        self, fst: SSAValue, snd: SSAValue, fst_fac: float, snd_fac: float, label: str, src: str | None = None,
        t: SOpType | None = None,
    ):
        props = _props(label, src, fst_fac=_factor(fst_fac), snd_fac=_factor(snd_fac))
        super().__init__(operands=[fst, snd], result_types=[t or SOpType.uninferred(NUMERICAL)], properties=props)

    @property
    def factors(self) -> tuple[int | float, int | float]:
        """The factors with their Python type (an int factor keeps int results int, as in the evaluator)."""
        return self.fst_fac.value.data, self.snd_fac.value.data

    def verify_(self) -> None:
        for v in (self.fst, self.snd, self.res):
            if sop_type(v).is_categorical:
                raise VerifyException("rasp.linear_sequence_map works on numerical s-ops")


class _SelectorCanonicalization(HasCanonicalizationPatternsTrait):
    @classmethod
    def get_canonicalization_patterns(cls):
        from raspc.passes.canonicalization_patterns import rasp as patterns

        return patterns.SELECTOR_PATTERNS


class SelectorOp(RaspOp):
    """An op producing a selector."""

    res = result_def(SelectorType)


@irdl_op_definition
class SelectOp(SelectorOp):
    """selector[q][k] = predicate(keys[k], queries[q])."""

    name = "rasp.select"
    keys = operand_def(SOpType)
    queries = operand_def(SOpType)
    predicate = prop_def(ComparisonAttr | RelationAttr)
    traits = traits_def(Pure())
    assembly_format = "$keys `,` $queries attr-dict `:` type($keys) `,` type($queries)"

    def __init__(self, keys: SSAValue, queries: SSAValue, predicate: Predicate | Comparison, label: str,
                 src: str | None = None):
        if isinstance(predicate, Comparison):
            predicate = ComparisonAttr(predicate)
        super().__init__(operands=[keys, queries], result_types=[SelectorType()],
                         properties=_props(label, src, predicate=predicate))

    @property
    def comparison(self) -> Comparison | None:
        return self.predicate.data if isinstance(self.predicate, ComparisonAttr) else None


class BinarySelectorOp(SelectorOp):
    fst = operand_def(SelectorType)
    snd = operand_def(SelectorType)
    traits = traits_def(Pure(), _SelectorCanonicalization())
    assembly_format = "$fst `,` $snd attr-dict"

    def __init__(self, fst: SSAValue, snd: SSAValue, label: str, src: str | None = None):
        super().__init__(operands=[fst, snd], result_types=[SelectorType()], properties=_props(label, src))


@irdl_op_definition
class SelectorAndOp(BinarySelectorOp):
    name = "rasp.selector_and"


@irdl_op_definition
class SelectorOrOp(BinarySelectorOp):
    name = "rasp.selector_or"


@irdl_op_definition
class SelectorNotOp(SelectorOp):
    name = "rasp.selector_not"
    inner = operand_def(SelectorType)
    traits = traits_def(Pure(), _SelectorCanonicalization())
    assembly_format = "$inner attr-dict"

    def __init__(self, inner: SSAValue, label: str, src: str | None = None):
        super().__init__(operands=[inner], result_types=[SelectorType()], properties=_props(label, src))


@irdl_op_definition
class AggregateOp(SOpOp):
    """Mean of the selected values of `sop`; `default` where nothing is selected."""

    name = "rasp.aggregate"
    selector = operand_def(SelectorType)
    sop = operand_def(SOpType)
    default = prop_def(ValueAttr)
    traits = traits_def(Pure())
    assembly_format = "$selector `,` $sop attr-dict `:` type($sop) `->` type($res)"

    def __init__(
        self, selector: SSAValue, sop: SSAValue, default: Any, label: str, src: str | None = None,
        t: SOpType | None = None,
    ):
        super().__init__(operands=[selector, sop], result_types=[t or SOpType.uninferred(sop_type(sop).enc)],
                         properties=_props(label, src, default=ValueAttr(default)))

    def verify_(self) -> None:
        if sop_type(self.sop).is_categorical != self.result_type.is_categorical:
            raise VerifyException("aggregate keeps its operand's encoding")
        if not self.result_type.is_categorical and not (self.default.data is None or is_number(self.default.data)):
            raise VerifyException("a numerical aggregate needs a numeric default")


@irdl_op_definition
class SelectorWidthOp(SOpOp):
    """How many keys each query selects."""

    name = "rasp.selector_width"
    selector = operand_def(SelectorType)
    traits = traits_def(Pure())
    assembly_format = "$selector attr-dict `:` type($res)"

    def __init__(self, selector: SSAValue, t: SOpType | Encoding | str, label: str, src: str | None = None):
        super().__init__(operands=[selector], result_types=[_uninferred(t)], properties=_props(label, src))

    def verify_(self) -> None:
        vals = self.result_type.value_set
        if vals is not None and not all(type(v) is int and v >= 0 for v in vals):
            raise VerifyException("selector widths are non-negative integers")


@irdl_op_definition
class ProgramOp(ModelContainer):
    """A RASP program: its input (vocabulary, BOS, PAD, max_seq_len, causal) and its ops."""

    name = "rasp.program"
    LEVEL: ClassVar[str] = "rasp"

    def verify_(self) -> None:
        last = self.body.block.last_op
        if not isinstance(last, OutputOp):
            raise VerifyException("a rasp.program ends with rasp.output")


@irdl_op_definition
class OutputOp(IRDLOperation):
    """The program's result (the model's output); ends a `rasp.program`."""

    name = "rasp.output"
    inp = operand_def(SOpType)
    traits = traits_def(IsTerminator(), HasParent(ProgramOp))
    assembly_format = "$inp attr-dict `:` type($inp)"

    def __init__(self, inp: SSAValue):
        super().__init__(operands=[inp])


SOP_OPS = (TokensOp, IndicesOp, FullOp, ConstantOp, MapOp, SequenceMapOp, LinearSequenceMapOp, TupleOp, AggregateOp,
           SelectorWidthOp)
SELECTOR_OPS = (SelectOp, SelectorAndOp, SelectorOrOp, SelectorNotOp)

Rasp = Dialect(
    "rasp",
    [ProgramOp, *SOP_OPS, *SELECTOR_OPS, OutputOp],
    [SOpType, SelectorType, UnboundedAttr, UninferredAttr, TableAttr, ComparisonAttr, RelationAttr],
)

__all__ = [
    "Rasp", "SOpType", "SelectorType", "UnboundedAttr", "UninferredAttr", "TableAttr", "Comparison",
    "ComparisonAttr", "RelationAttr", "COMPARISON_NEGATION", "Predicate", "RaspOp", "SOpOp", "SelectorOp",
    "ProgramOp", "TokensOp", "IndicesOp", "FullOp", "ConstantOp", "MapOp", "SequenceMapOp", "LinearSequenceMapOp", "TupleOp",
    "SelectOp", "BinarySelectorOp", "SelectorAndOp", "SelectorOrOp", "SelectorNotOp", "AggregateOp",
    "SelectorWidthOp", "OutputOp", "SOP_OPS", "SELECTOR_OPS", "sop_type", "ValueIndex",
]
