"""The `raspc` dialect: what every level shares.

- `#raspc.values<[1, 2.5, "a", none]>` and `#raspc.value<"a">`: RASP values, compared by identity
  (`1`, `1.0` and `true` are three values).
- `#raspc.encoding<categorical>`: an s-op's encoding, an enum.
- `#raspc.input<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 5, causal = false>`:
  what a compiled model takes as input. Every level's container op (`rasp.program`,
  `craft.model`, `tensor.model`) carries it, with the same meaning at every level: token ids
  are positions in `vocab`, then BOS (`len(vocab)`), then PAD (`len(vocab) + 1`).
- `ModelContainer`: the shared shape of those container ops (typed input, one block), and
  `container_of(module)`, which finds a module's container: the level *is* its op type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Hashable, Iterable, Sequence

from xdsl.dialects.builtin import BoolAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Attribute, Data, Dialect, Operation, ParametrizedAttribute, Region
from xdsl.irdl import IRDLOperation, irdl_attr_definition, prop_def, region_def
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum
from xdsl.dialects.utils.enum_attribute import EnumAttribute
from xdsl.ir import SpacedOpaqueSyntaxAttribute

from raspc.errors import IRError
from raspc.utils.values import (
    UnsupportedValue,
    Value,
    format_value,
    format_values,
    identity,
    sort_key,
)

# --------------------------------------------------------------------------- value syntax


def parse_value(parser: AttrParser) -> Value:
    """One RASP value: `1`, `-0.5`, `"a"`, `true`, `none`, `(1, "a")`."""
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
    raise AssertionError("raise_error returned")


def parse_value_list(parser: AttrParser) -> tuple[Value, ...]:
    return tuple(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, lambda: parse_value(parser)))


# --------------------------------------------------------------------------- attributes


@irdl_attr_definition
class ValuesAttr(Data[tuple[Any, ...]]):
    """An ordered list of RASP values: `#raspc.values<[1, 2.5, "a", (1, 2), none]>`."""

    name = "raspc.values"

    @cached_property
    def key(self) -> Hashable:
        """The identity of the value(s), computed once."""
        return identity(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValuesAttr) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[Any, ...]:
        with parser.in_angle_brackets():
            return parse_value_list(parser)

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(format_values(self.data))


@irdl_attr_definition
class ValueAttr(Data[Any]):
    """One RASP value (None included): `#raspc.value<none>`, `#raspc.value<"a">`."""

    name = "raspc.value"

    @cached_property
    def key(self) -> Hashable:
        """The identity of the value(s), computed once."""
        return identity(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValueAttr) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Any:
        with parser.in_angle_brackets():
            return parse_value(parser)

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(format_value(self.data))


class Encoding(StrEnum):
    """How an s-op lives in the residual stream: one direction per value, or one number."""

    CATEGORICAL = "categorical"
    NUMERICAL = "numerical"


@irdl_attr_definition
class EncodingAttr(EnumAttribute[Encoding], SpacedOpaqueSyntaxAttribute):
    """`#raspc<encoding categorical>`; inside raspc's own types it prints as a bare keyword."""

    name = "raspc.encoding"


CATEGORICAL = Encoding.CATEGORICAL
NUMERICAL = Encoding.NUMERICAL


@dataclass(frozen=True)
class InputSpec:
    """The typed content of `#raspc.input<...>`."""

    vocab: tuple[Value, ...]
    bos: Value
    pad: Value
    max_seq_len: int
    causal: bool

    @property
    def bos_id(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return len(self.vocab) + 1

    @property
    def token_ids(self) -> tuple[Value, ...]:
        """Every token in id order: the vocabulary, then BOS, then PAD."""
        return (*self.vocab, self.bos, self.pad)


def check_input_spec(spec: InputSpec) -> str | None:
    """What is wrong with an input spec (None when nothing is)."""
    if not spec.vocab:
        return "the vocabulary is empty"
    keys = [identity(v) for v in spec.vocab]
    if len(set(keys)) != len(keys):
        seen: set[Any] = set()
        repeated = [v for k, v in zip(keys, spec.vocab) if k in seen or seen.add(k)]
        return f"the vocabulary has duplicate tokens: {', '.join(dict.fromkeys(map(repr, repeated)))}"
    if any(v is None for v in spec.vocab):
        return "None cannot be a token"
    if identity(spec.bos) in keys:
        return f"BOS token {format_value(spec.bos)} is also in the vocabulary"
    if identity(spec.pad) in keys or identity(spec.pad) == identity(spec.bos):
        return f"PAD token {format_value(spec.pad)} collides with the vocabulary or BOS"
    if spec.bos is None or spec.pad is None:
        return "BOS and PAD must not be None"
    if spec.max_seq_len < 1:
        return f"max_seq_len must be a positive integer, got {spec.max_seq_len}"
    return None


@irdl_attr_definition
class InputSpecAttr(ParametrizedAttribute):
    """`#raspc.input<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 5, causal = false>`."""

    name = "raspc.input"
    vocab: ValuesAttr
    bos: ValueAttr
    pad: ValueAttr
    max_seq_len: IntegerAttr
    causal: IntegerAttr

    def __init__(self, spec: InputSpec):
        super().__init__(
            ValuesAttr(tuple(spec.vocab)), ValueAttr(spec.bos), ValueAttr(spec.pad),
            IntegerAttr(spec.max_seq_len, i64), BoolAttr.from_bool(spec.causal),
        )

    @property
    def spec(self) -> InputSpec:
        return InputSpec(self.vocab.data, self.bos.data, self.pad.data, self.max_seq_len.value.data,
                         bool(self.causal.value.data))

    def print_parameters(self, printer: Printer) -> None:
        s = self.spec
        printer.print_string(
            f"<vocab = {format_values(s.vocab)}, bos = {format_value(s.bos)}, pad = {format_value(s.pad)}, "
            f"max_seq_len = {s.max_seq_len}, causal = {'true' if s.causal else 'false'}>"
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        def key(word: str) -> None:
            parser.parse_keyword(word)
            parser.parse_punctuation("=")

        with parser.in_angle_brackets():
            key("vocab")
            vocab = parse_value_list(parser)
            parser.parse_punctuation(",")
            key("bos")
            bos = parse_value(parser)
            parser.parse_punctuation(",")
            key("pad")
            pad = parse_value(parser)
            parser.parse_punctuation(",")
            key("max_seq_len")
            max_seq_len = parser.parse_integer(allow_boolean=False)
            parser.parse_punctuation(",")
            key("causal")
            causal = parser.parse_boolean()
        return list(InputSpecAttr(InputSpec(vocab, bos, pad, max_seq_len, causal)).parameters)

    def verify(self) -> None:
        try:
            problem = check_input_spec(self.spec)
            sort_key(self.bos.data), sort_key(self.pad.data), [sort_key(v) for v in self.vocab.data]
        except UnsupportedValue as exc:
            problem = str(exc)
        if problem:
            raise VerifyException(f"bad model input: {problem}")


# --------------------------------------------------------------------------- container ops


class ModelContainer(IRDLOperation):
    """Common to `rasp.program`, `craft.model` and `tensor.model`: the model's input and one block.

    Prints as `<op name><vocab = ..., bos = ..., pad = ..., max_seq_len = N, causal = B>`, then the
    op's other properties as `attributes {...}`, then the body.
    """

    LEVEL: ClassVar[str]
    input = prop_def(InputSpecAttr)
    body = region_def("single_block")

    @property
    def spec(self) -> InputSpec:
        return self.input.spec

    @property
    def ops(self) -> Iterable[Operation]:
        return self.body.block.ops

    def print(self, printer: Printer) -> None:
        self.input.print_parameters(printer)
        extra = {k: v for k, v in self.properties.items() if k != "input"}
        extra.update(self.attributes)
        if extra:
            printer.print_op_attributes(extra, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body)

    @classmethod
    def parse(cls, parser: Parser) -> "ModelContainer":
        params = InputSpecAttr.parse_parameters(parser)
        spec_attr = InputSpecAttr.new(params)
        attrs = parser.parse_optional_attr_dict_with_keyword()
        props: dict[str, Attribute] = {"input": spec_attr}
        other: dict[str, Attribute] = {}
        for k, v in (attrs.data.items() if attrs is not None else ()):
            (props if k in cls.get_irdl_definition().properties else other)[k] = v
        region = parser.parse_region()
        return cls.create(properties=props, attributes=other, regions=[region])

    @classmethod
    def wrap(cls, spec: InputSpec, ops: Sequence[Operation], **props: Attribute) -> "ModelContainer":
        from xdsl.ir import Block

        return cls.create(properties={"input": InputSpecAttr(spec), **props}, regions=[Region(Block(ops))])


# --------------------------------------------------------------------------- shared residual dimensions


@dataclass(frozen=True)
class ResidualLayout:
    """Directions sharing residual dimensions over time: `dims[i]` holds `labels[i]` from the
    sublayer slot `spans[i][0]` (its writer) to `spans[i][1]` (its eraser, or 2 x layers)."""

    labels: tuple[str, ...]
    dims: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    @property
    def d_model(self) -> int:
        return len(set(self.dims))

    def verify(self, d_model: int) -> None:
        """One dim and one span per label, every dimension of `d_model` used, lifetimes apart."""
        if not (len(self.dims) == len(self.spans) == len(self.labels)):
            raise VerifyException(f"{len(self.labels)} residual labels, {len(self.dims)} dims, "
                                  f"{len(self.spans)} spans: one of each per direction")
        if sorted(set(self.dims)) != list(range(d_model)):
            raise VerifyException(f"`dims` must cover the residual width {d_model} exactly")
        self.verify_lifetimes()

    def verify_lifetimes(self) -> None:
        """Directions sharing a dimension are never alive together: each is erased before the
        next is written."""
        by_dim: dict[int, list[tuple[int, int, str]]] = {}
        for label, d, (start, stop) in zip(self.labels, self.dims, self.spans):
            by_dim.setdefault(d, []).append((start, stop, label))
        for d, shared in by_dim.items():
            shared.sort()
            for (_, stop, a), (start, _, b) in zip(shared, shared[1:]):
                if stop >= start:
                    raise VerifyException(f"'{a}' and '{b}' share a residual dimension but '{a}' is not erased "
                                          f"before '{b}' is written: overlapping lifetimes on dimension {d}")

    def readable_at(self, slot: int) -> list[int]:
        """The directions (indices into `labels`) a block in `slot` can read."""
        return [i for i, (start, stop) in enumerate(self.spans) if start < slot <= stop]

    def written_at(self, slot: int) -> list[int]:
        """The directions a block in `slot` writes (a writer) or zeroes (an eraser)."""
        return [i for i, (start, stop) in enumerate(self.spans) if slot in (start, stop)]

    def final_labels(self) -> tuple[str, ...]:
        """One label per dimension after the last layer: its last occupant."""
        last: dict[int, tuple[int, str]] = {}
        for label, d, (start, _) in zip(self.labels, self.dims, self.spans):
            if d not in last or start > last[d][0]:
                last[d] = (start, label)
        return tuple(last[d][1] for d in range(len(last)))




def container_of(module: ModuleOp) -> ModelContainer:
    """The one container op (rasp.program, craft.model or tensor.model) of a module."""
    found = [op for op in module.ops if isinstance(op, ModelContainer)]
    if len(found) != 1:
        names = ", ".join(op.name for op in module.ops) or "nothing"
        raise IRError(f"expected one rasp.program, craft.model or tensor.model in the module, found {names}")
    return found[0]


def level_of(module: ModuleOp) -> str:
    """rasp, craft or tensor: the level of the module's container op."""
    return container_of(module).LEVEL


Raspc = Dialect("raspc", [], [ValuesAttr, ValueAttr, EncodingAttr, InputSpecAttr])

__all__ = [
    "Raspc", "ValuesAttr", "ValueAttr", "Encoding", "EncodingAttr", "CATEGORICAL", "NUMERICAL", "InputSpec",
    "InputSpecAttr", "check_input_spec", "ModelContainer", "container_of", "level_of", "parse_value",
    "parse_value_list", "ResidualLayout",
]
