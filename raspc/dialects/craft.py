"""The craft dialect: Tracr's "assembly" level, as xDSL IR.

Every SSA value is a subspace of the residual stream whose basis directions carry labels:
`!craft.cat<"hist", [0, 1, 2]>` spans `hist:0`, `hist:1`, `hist:2`; `!craft.num<"frac_prevs">`
is the one direction `frac_prevs`. Blocks read spaces and write (add) into a new one:

    %sorted = craft.attention_head q(%indices) k(%target_pos, %bos) v(%tokens) {label = "sort",
        w_qk = #craft.sparse<["indices:0" -> "target_pos:0" = 1.0, ...]>, w_ov = ..., scale = 44.0}

Weights are sparse and labelled, so a dump reads like the algorithm. The blocks live in a
`craft.model` (the model's input, as at every level) whose block ends in `craft.output`;
allocate-layers adds a `layer` to every block and `layers` to the model, layout-residual the
residual order (`residual` on the model). reuse-residual may then give directions whose lifetimes
do not overlap the same dimension (`dims` on the model): `craft.erase` zeroes a space once its last
reader has run, so that a later space can be written where it was.

Position 0 holds BOS, and what each space holds there is part of the IR: `one` and `bos` are 1,
token, index and positional spaces 0, an MLP writes 0 there (its hidden units are switched off
at BOS), and an attention head writes its `bos_value` (BOS attends only to itself). Later heads
compensate for it in their keys and values; `bos_content(space)` reads it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, FloatAttr, Float64Type, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Attribute, Data, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
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
from xdsl.traits import HasParent, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from raspc.dialects.common import ModelContainer, ResidualLayout, ValuesAttr, parse_value_list
from raspc.utils.values import format_value, format_values

# --------------------------------------------------------------------------- labels


def direction_labels(name: str, values: Sequence[Any]) -> list[str]:
    """`name:value` per value; strings print bare (`tokens:a`) unless that would be ambiguous."""
    bare = [f"{name}:{v}" if isinstance(v, str) else f"{name}:{format_value(v)}" for v in values]
    if len(set(bare)) == len(bare):
        return bare
    return [f"{name}:{format_value(v)}" for v in values]


def _fmt_float(x: float) -> str:
    return format_value(float(x))


def _quote(label: str) -> str:
    """`label` as xDSL's Printer.print_string_literal writes it (so the text parses back the same)."""
    out = ['"']
    for byte in label.encode("utf-8"):
        if byte == 0x5C:
            out.append("\\\\")
        elif byte < 0x20 or byte > 0x7E or byte == 0x22:
            out.append(f"\\{byte:02X}")
        else:
            out.append(chr(byte))
    out.append('"')
    return "".join(out)


_ENTRY = np.dtype([("row", "<i4"), ("col", "<i4"), ("value", "<f8")])


# --------------------------------------------------------------------------- types


@irdl_attr_definition
class CategoricalSpaceType(ParametrizedAttribute, TypeAttribute):
    """One direction per value: `!craft.cat<"tokens", ["a", "b"]>`."""

    name = "craft.cat"
    space: StringAttr
    values: ValuesAttr

    def __init__(self, space: str, values: Sequence[Any]):
        super().__init__(StringAttr(space), ValuesAttr(tuple(values)))

    @property
    def labels(self) -> list[str]:
        return direction_labels(self.space.data, self.values.data)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string_literal(self.space.data)
            printer.print_string(", " + format_values(self.values.data))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            space = parser.parse_str_literal()
            parser.parse_punctuation(",")
            values = parse_value_list(parser)
        return [StringAttr(space), ValuesAttr(values)]


@irdl_attr_definition
class NumericalSpaceType(ParametrizedAttribute, TypeAttribute):
    """One direction holding a number: `!craft.num<"frac_prevs">`."""

    name = "craft.num"
    space: StringAttr

    def __init__(self, space: str):
        super().__init__(StringAttr(space))

    @property
    def labels(self) -> list[str]:
        return [self.space.data]

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string_literal(self.space.data)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            return [StringAttr(parser.parse_str_literal())]


SpaceType = CategoricalSpaceType | NumericalSpaceType


def space_labels(value: SSAValue) -> list[str]:
    t = value.type
    assert isinstance(t, (CategoricalSpaceType, NumericalSpaceType)), t
    return t.labels


# --------------------------------------------------------------------------- weights


@irdl_attr_definition
class SparseMatrixAttr(Data[tuple[tuple[str, ...], tuple[str, ...], bytes]]):
    """Labelled sparse weights: `#craft.sparse<["tokens:a" -> "h:a" = 1.0, ...]>` (row -> column = value).

    Held as numpy arrays (the row and column labels used, and per entry a row index, a column
    index and a value), so heads with ~10^6 entries are built, checked and densified without a
    Python object per entry."""

    name = "craft.sparse"

    @staticmethod
    def from_arrays(row_labels: Sequence[str], col_labels: Sequence[str], rows: np.ndarray, cols: np.ndarray,
                    values: np.ndarray) -> "SparseMatrixAttr":
        """Entries (row_labels[rows[i]], col_labels[cols[i]], values[i]) in order; zeros dropped."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        values = np.asarray(values, np.float64)
        keep = values != 0.0
        rows, cols, values = rows[keep], cols[keep], values[keep]
        # keep only the labels used (in the given order)
        r_used = np.bincount(rows, minlength=len(row_labels)) > 0
        c_used = np.bincount(cols, minlength=len(col_labels)) > 0
        r_new, c_new = np.cumsum(r_used) - 1, np.cumsum(c_used) - 1
        packed = np.empty(len(values), dtype=_ENTRY)
        packed["row"], packed["col"], packed["value"] = r_new[rows], c_new[cols], values
        return SparseMatrixAttr((tuple(x for x, u in zip(row_labels, r_used) if u),
                                 tuple(x for x, u in zip(col_labels, c_used) if u), packed.tobytes()))

    @staticmethod
    def from_dict(entries: dict[tuple[str, str], float]) -> "SparseMatrixAttr":
        rows: dict[str, int] = {}
        cols: dict[str, int] = {}
        r = [rows.setdefault(a, len(rows)) for a, _ in entries]
        c = [cols.setdefault(b, len(cols)) for _, b in entries]
        return SparseMatrixAttr.from_arrays(list(rows), list(cols), np.array(r, np.int64), np.array(c, np.int64),
                                            np.fromiter(entries.values(), np.float64, len(entries)))

    @property
    def row_labels(self) -> tuple[str, ...]:
        return self.data[0]

    @property
    def col_labels(self) -> tuple[str, ...]:
        return self.data[1]

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row index, column index, value) per entry; indices into row_labels / col_labels."""
        packed = np.frombuffer(self.data[2], dtype=_ENTRY)
        return packed["row"].astype(np.int64), packed["col"].astype(np.int64), packed["value"].astype(np.float64)

    def entries(self) -> Iterator[tuple[str, str, float]]:
        rows, cols, values = self.arrays
        rl, cl = self.row_labels, self.col_labels
        return ((rl[r], cl[c], v) for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()))

    def as_dict(self) -> dict[tuple[str, str], float]:
        return {(r, c): v for r, c, v in self.entries()}

    def dense(self, row_index: dict[str, int], n_rows: int, col_index: dict[str, int], n_cols: int,
              dtype: type = np.float64) -> np.ndarray:
        """[n_rows, n_cols] with the entries at their labels' positions (repeats add up)."""
        out = np.zeros((n_rows, n_cols), dtype)
        self.add_into(out, row_index, col_index)
        return out

    def add_into(self, out: np.ndarray, row_index: dict[str, int], col_index: dict[str, int]) -> None:
        """Adds the entries into the dense matrix `out` at their labels' positions."""
        rows, cols, values = self.arrays
        if not values.size:
            return
        r = np.array([row_index[x] for x in self.row_labels], np.int64)[rows]
        c = np.array([col_index[x] for x in self.col_labels], np.int64)[cols]
        flat = r * out.shape[1] + c
        ordered = np.sort(flat)  # a sort finds repeats ~15x faster than np.unique's hashing
        if not np.any(ordered[1:] == ordered[:-1]):  # the usual case: a fancy-indexed add
            out[r, c] += values
        else:  # repeated entries add up
            out += np.bincount(flat, weights=values, minlength=out.size).reshape(out.shape).astype(out.dtype)

    def __len__(self) -> int:
        return len(self.data[2]) // _ENTRY.itemsize

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[tuple[str, ...], tuple[str, ...], bytes]:
        def entry() -> tuple[str, str, float]:
            row = parser.parse_str_literal()
            parser.parse_punctuation("->")
            col = parser.parse_str_literal()
            parser.parse_punctuation("=")
            return (row, col, float(parser.parse_number()))

        with parser.in_angle_brackets():
            entries = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, entry)
        rows: dict[str, int] = {}
        cols: dict[str, int] = {}
        r = np.array([rows.setdefault(a, len(rows)) for a, _, _ in entries], np.int64)
        c = np.array([cols.setdefault(b, len(cols)) for _, b, _ in entries], np.int64)
        v = np.array([x for _, _, x in entries], np.float64)
        return SparseMatrixAttr.from_arrays(list(rows), list(cols), r, c, v).data

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string("<[" + ", ".join(
            f"{_quote(r)} -> {_quote(c)} = {_fmt_float(v)}" for r, c, v in self.entries()) + "]>")


@irdl_attr_definition
class SparseVectorAttr(Data[tuple[tuple[str, float], ...]]):
    """Labelled sparse vector (biases): `#craft.vec<["h:a" = -1.0]>`."""

    name = "craft.vec"

    @staticmethod
    def from_dict(entries: dict[str, float]) -> "SparseVectorAttr":
        return SparseVectorAttr(tuple((k, float(v)) for k, v in entries.items() if v != 0.0))

    def as_dict(self) -> dict[str, float]:
        return dict(self.data)

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[tuple[str, float], ...]:
        def entry() -> tuple[str, float]:
            key = parser.parse_str_literal()
            parser.parse_punctuation("=")
            return (key, float(parser.parse_number()))

        with parser.in_angle_brackets():
            return tuple(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, entry))

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string("[")
            for i, (k, v) in enumerate(self.data):
                if i:
                    printer.print_string(", ")
                printer.print_string_literal(k)
                printer.print_string(f" = {_fmt_float(v)}")
            printer.print_string("]")


# --------------------------------------------------------------------------- ops


def _labels_of(values: Sequence[SSAValue]) -> set[str]:
    out: set[str] = set()
    for v in values:
        out.update(space_labels(v))
    return out


def _check_labels(what: str, used: set[str], allowed: set[str]) -> None:
    unknown = sorted(used - allowed)
    if unknown:
        raise VerifyException(f"{what} uses directions not in its spaces: {unknown[:5]}")


class CraftBlock(IRDLOperation):
    """Common to residual blocks: a label and, after allocate-layers, a layer."""

    label = prop_def(StringAttr)
    layer = opt_prop_def(IntegerAttr)
    irdl_options = (ParsePropInAttrDict(),)

    @property
    def layer_index(self) -> int | None:
        return None if self.layer is None else self.layer.value.data

    def set_layer(self, layer: int) -> None:
        self.properties["layer"] = IntegerAttr(layer, i64)


EMBED_SOURCES = ("one", "bos", "tokens", "indices")


@irdl_op_definition
class EmbedOp(IRDLOperation):
    """A space written by the embedding: `one` (1 everywhere), `bos` (1 at BOS only),
    `tokens` (one-hot; zero at BOS), `indices` (position - 1; zero at BOS)."""

    name = "craft.embed"
    source = prop_def(StringAttr)
    res = result_def(CategoricalSpaceType | NumericalSpaceType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, source: str, t: Attribute):
        super().__init__(result_types=[t], properties={"source": StringAttr(source)})

    def verify_(self) -> None:
        if self.source.data not in EMBED_SOURCES:
            raise VerifyException(f"unknown embedding source '{self.source.data}'; expected one of {EMBED_SOURCES}")
        if self.source.data in ("one", "bos") and not isinstance(self.res.type, NumericalSpaceType):
            raise VerifyException(f"'{self.source.data}' is a single numerical direction")


@irdl_op_definition
class PositionalOp(IRDLOperation):
    """A space written by the position embedding: `values[i]` at token position i (BOS: zero)."""

    name = "craft.positional"
    label = prop_def(StringAttr)
    values = prop_def(ValuesAttr)
    res = result_def(CategoricalSpaceType | NumericalSpaceType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, label: str, values: Sequence[Any], t: Attribute):
        super().__init__(result_types=[t], properties={"label": StringAttr(label), "values": ValuesAttr(tuple(values))})

    def verify_(self) -> None:
        t = self.res.type
        if isinstance(t, CategoricalSpaceType):
            bad = [v for v in self.values.data if v is not None and v not in t.values.data]
            if bad:
                raise VerifyException(f"positional values {bad[:5]} are not directions of the result space")
        elif not all(isinstance(v, (int, float)) for v in self.values.data):
            raise VerifyException("a numerical positional space takes numbers")


@irdl_op_definition
class MlpOp(CraftBlock):
    """out = relu(x W_in + b_in) W_out, over labelled directions; `hidden` names the neurons."""

    name = "craft.mlp"
    inputs = var_operand_def(CategoricalSpaceType | NumericalSpaceType)
    hidden = prop_def(ArrayAttr[StringAttr])
    w_in = prop_def(SparseMatrixAttr)
    b_in = prop_def(SparseVectorAttr)
    w_out = prop_def(SparseMatrixAttr)
    res = result_def(CategoricalSpaceType | NumericalSpaceType)
    traits = traits_def(Pure())
    assembly_format = "$inputs attr-dict `:` functional-type($inputs, $res)"

    def __init__(
        self, inputs: Sequence[SSAValue], t: Attribute, label: str, hidden: Sequence[str],
        w_in: dict[tuple[str, str], float], b_in: dict[str, float], w_out: dict[tuple[str, str], float],
    ):
        super().__init__(
            operands=[list(inputs)],
            result_types=[t],
            properties={
                "label": StringAttr(label),
                "hidden": ArrayAttr([StringAttr(h) for h in hidden]),
                "w_in": SparseMatrixAttr.from_dict(w_in),
                "b_in": SparseVectorAttr.from_dict(b_in),
                "w_out": SparseMatrixAttr.from_dict(w_out),
            },
        )

    @property
    def hidden_labels(self) -> list[str]:
        return [h.data for h in self.hidden.data]

    def verify_(self) -> None:
        hidden = self.hidden_labels
        if len(set(hidden)) != len(hidden):
            raise VerifyException("hidden neuron labels must be unique")
        hid = set(hidden)
        _check_labels("w_in rows", set(self.w_in.row_labels), _labels_of(self.inputs))
        _check_labels("w_in columns", set(self.w_in.col_labels), hid)
        _check_labels("b_in", {k for k, _ in self.b_in.data}, hid)
        _check_labels("w_out rows", set(self.w_out.row_labels), hid)
        _check_labels("w_out columns", set(self.w_out.col_labels), set(space_labels(self.res)))


@irdl_op_definition
class AttentionHeadOp(CraftBlock):
    """One head. score(q, k) = scale * x_q W_qk x_k (W_qk: query directions -> key directions);
    out = softmax(score) x_k W_ov (W_ov: value directions -> output directions). At BOS, which
    attends only to itself, it writes `bos_value` (its weights are built so)."""

    name = "craft.attention_head"
    queries = var_operand_def(CategoricalSpaceType | NumericalSpaceType)
    keys = var_operand_def(CategoricalSpaceType | NumericalSpaceType)
    values = var_operand_def(CategoricalSpaceType | NumericalSpaceType)
    w_qk = prop_def(SparseMatrixAttr)
    w_ov = prop_def(SparseMatrixAttr)
    scale = prop_def(FloatAttr[Float64Type])
    bos_value = prop_def(SparseVectorAttr)
    res = result_def(CategoricalSpaceType | NumericalSpaceType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    assembly_format = (
        "`q` `(` $queries `:` type($queries) `)` `k` `(` $keys `:` type($keys) `)` "
        "`v` `(` $values `:` type($values) `)` attr-dict `:` type($res)"
    )

    def __init__(
        self, queries: Sequence[SSAValue], keys: Sequence[SSAValue], values: Sequence[SSAValue], t: Attribute,
        label: str, w_qk: "dict[tuple[str, str], float] | SparseMatrixAttr",
        w_ov: "dict[tuple[str, str], float] | SparseMatrixAttr", scale: float, bos_value: dict[str, float] | None = None,
    ):
        super().__init__(
            operands=[list(queries), list(keys), list(values)],
            result_types=[t],
            properties={
                "label": StringAttr(label),
                "w_qk": w_qk if isinstance(w_qk, SparseMatrixAttr) else SparseMatrixAttr.from_dict(w_qk),
                "w_ov": w_ov if isinstance(w_ov, SparseMatrixAttr) else SparseMatrixAttr.from_dict(w_ov),
                "scale": FloatAttr(float(scale), f64),
                "bos_value": SparseVectorAttr.from_dict(bos_value or {}),
            },
        )

    def verify_(self) -> None:
        _check_labels("w_qk rows", set(self.w_qk.row_labels), _labels_of(self.queries))
        _check_labels("w_qk columns", set(self.w_qk.col_labels), _labels_of(self.keys))
        _check_labels("w_ov rows", set(self.w_ov.row_labels), _labels_of(self.values))
        _check_labels("w_ov columns", set(self.w_ov.col_labels), set(space_labels(self.res)))
        _check_labels("bos_value", {k for k, _ in self.bos_value.data}, set(space_labels(self.res)))
        if self.scale.value.data <= 0:
            raise VerifyException("softmax scale must be positive")


@irdl_op_definition
class EraseOp(IRDLOperation):
    """Zeroes a space's directions in the residual in layer `layer`, exactly, at every position
    (BOS and PAD included). Without `positions`, in the MLP sublayer: relu(x) and relu(-x) per
    direction, written back with signs - and +. With `positions`, in the attention sublayer, so a
    space last read by a head can give its dimensions to the same layer's MLP: a head whose
    query and key are the position (one-hot `indices`, or the numbers p and p^2 with `one`: score
    2pq - q^2) attends to its own position only (every other key at least a unit lower: exactly 0
    weight at scale 208) and writes minus the space (BOS attends to itself anyway; a PAD query's
    own key is masked, and PAD rows are never read). reuse-residual puts one after a space's last
    reader when a later space takes its dimensions. It has an effect on the residual, not a
    result, so DCE keeps it."""

    name = "craft.erase"
    space = operand_def(CategoricalSpaceType | NumericalSpaceType)
    positions = var_operand_def(CategoricalSpaceType | NumericalSpaceType)
    layer = prop_def(IntegerAttr)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$space `:` type($space) (`by` $positions^ `:` type($positions))? attr-dict"

    def __init__(self, space: SSAValue, layer: int, positions: Sequence[SSAValue] = ()):
        super().__init__(operands=[space, list(positions)], properties={"layer": IntegerAttr(layer, i64)})

    @property
    def layer_index(self) -> int:
        return self.layer.value.data

    @property
    def by_attention(self) -> bool:
        return len(self.positions) > 0

    def verify_(self) -> None:
        types = [v.type for v in self.positions]
        if not types:
            return
        if len(types) == 1 and isinstance(types[0], CategoricalSpaceType):
            return
        if len(types) == 3 and all(isinstance(t, NumericalSpaceType) for t in types) \
                and types[2].space.data == "one":
            return
        raise VerifyException("an erasing head keys on one-hot positions (indices) or on the numbers p, p^2 and one")


@irdl_op_definition
class ModelOp(ModelContainer):
    """A transformer as residual blocks: the model's input and the blocks, ending in `craft.output`.
    `layers` (allocate-layers) is the number of layers; `residual` (layout-residual) the residual
    stream's directions in order; `dims` (reuse-residual), when present, the residual dimension of
    each of those directions, several directions sharing one where their lifetimes (`residual_spans`)
    do not overlap."""

    name = "craft.model"
    LEVEL: ClassVar[str] = "craft"
    layers = opt_prop_def(IntegerAttr)
    residual = opt_prop_def(ArrayAttr[StringAttr])
    dims = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(),)

    @property
    def residual_labels(self) -> list[str] | None:
        return None if self.residual is None else [s.data for s in self.residual.data]

    def set_layers(self, n: int) -> None:
        self.properties["layers"] = IntegerAttr(n, i64)

    def set_residual(self, labels: Sequence[str]) -> None:
        self.properties["residual"] = ArrayAttr([StringAttr(x) for x in labels])
        self.properties.pop("dims", None)

    @property
    def residual_dims(self) -> list[int] | None:
        """The residual dimension of each direction of `residual` (None: one dimension each, in order)."""
        return None if self.dims is None else [int(d) for d in self.dims.get_values()]

    def set_dims(self, dims: Sequence[int]) -> None:
        self.properties["dims"] = DenseArrayBase.from_list(i64, [int(d) for d in dims])

    def verify_(self) -> None:
        if not isinstance(self.body.block.last_op, OutputOp):
            raise VerifyException("a craft.model ends with craft.output")
        labels = self.residual_labels
        if labels is not None and len(set(labels)) != len(labels):
            raise VerifyException("residual directions must be unique")
        dims = self.residual_dims
        if dims is not None:
            if labels is None or len(dims) != len(labels):
                raise VerifyException("`dims` needs the residual layout and one dimension per direction")
            if sorted(set(dims)) != list(range(len(set(dims)))):
                raise VerifyException("`dims` must use every dimension from 0 up")
            _verify_shared_dims(self, labels, dims)


@irdl_op_definition
class OutputOp(IRDLOperation):
    """The space the model reads its output from; ends a `craft.model`. `values` lists a numerical
    output's possible values (a categorical output's values are its space's directions)."""

    name = "craft.output"
    inp = operand_def(CategoricalSpaceType | NumericalSpaceType)
    values = opt_prop_def(ValuesAttr)
    traits = traits_def(IsTerminator(), HasParent(ModelOp))
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inp attr-dict `:` type($inp)"

    def __init__(self, inp: SSAValue, values: Sequence[Any] | None = None):
        props = {} if values is None else {"values": ValuesAttr(tuple(values))}
        super().__init__(operands=[inp], properties=props)

    @property
    def output_values(self) -> tuple[Any, ...]:
        t = self.inp.type
        if isinstance(t, CategoricalSpaceType):
            return t.values.data
        return self.values.data if self.values is not None else ()

# --------------------------------------------------------------------------- residual lifetimes

# Sublayer slots (allocate-layers): the embedding is -1, layer l's attention 2l and its MLP 2l + 1.
EMBED_SLOT = -1


def block_slot(op: IRDLOperation) -> int:
    """The sublayer slot of a block or erase op (embeddings: EMBED_SLOT)."""
    if isinstance(op, (EmbedOp, PositionalOp)):
        return EMBED_SLOT
    layer = op.layer_index
    if layer is None:
        raise VerifyException(f"{op.name} has no layer: run allocate-layers first")
    attention = isinstance(op, AttentionHeadOp) or (isinstance(op, EraseOp) and op.by_attention)
    return 2 * layer + (0 if attention else 1)


def end_slot(model: "ModelOp") -> int:
    """The slot after the last layer: a direction never erased lives until it."""
    return 2 * (model.layers.value.data if model.layers is not None else 0)


def residual_spans(model: "ModelOp") -> dict[str, tuple[int, int]]:
    """Each written direction's lifetime (first slot, last slot): written in the first, readable in
    the slots after it up to the last, where `craft.erase` zeroes it (a direction never erased
    lives to `end_slot`)."""
    end = end_slot(model)
    spans: dict[str, tuple[int, int]] = {}
    erased = {op.space: block_slot(op) for op in model.ops if isinstance(op, EraseOp)}
    for op in model.ops:
        if isinstance(op, (EmbedOp, PositionalOp, *BLOCK_OPS)):
            start, stop = block_slot(op), erased.get(op.res, end)
            for label in space_labels(op.res):
                spans[label] = (start, stop)
    return spans


def _verify_shared_dims(model: "ModelOp", labels: Sequence[str], dims: Sequence[int]) -> None:
    """Directions sharing a dimension must not be alive together, every read must see a live
    direction, and the output must live to the end."""
    spans = residual_spans(model)
    end = end_slot(model)
    unwritten = [label for label in labels if label not in spans]
    if unwritten:
        raise VerifyException(f"residual direction '{unwritten[0]}' is written by no op")
    ResidualLayout(tuple(labels), tuple(dims), tuple(spans[label] for label in labels)).verify_lifetimes()
    for op in model.ops:
        if isinstance(op, EraseOp):
            slot, start = block_slot(op), spans[space_labels(op.space)[0]][0]
            if slot <= start:
                raise VerifyException(f"craft.erase in layer {op.layer_index} runs before its space is written")
        if isinstance(op, (EraseOp, *BLOCK_OPS)):
            slot = block_slot(op)
            name = op.label.data if isinstance(op, BLOCK_OPS) else op.name
            for value in op.operands:
                for label in space_labels(value):
                    start, stop = spans[label]
                    if not start < slot <= stop:
                        raise VerifyException(f"'{name}' (layer {op.layer_index}) reads '{label}' "
                                              f"outside its lifetime (slots {start}..{stop})")
        elif isinstance(op, OutputOp):
            erased = [x for x in space_labels(op.inp) if spans[x][1] != end]
            if erased:
                raise VerifyException(f"the output direction '{erased[0]}' is erased")


def bos_content(value: SSAValue) -> dict[str, float]:
    """What a space holds at position 0 (BOS), by direction (absent: 0)."""
    op = value.owner
    if isinstance(op, EmbedOp):
        return {op.source.data: 1.0} if op.source.data in ("one", "bos") else {}
    if isinstance(op, AttentionHeadOp):
        return op.bos_value.as_dict()
    return {}  # positional spaces, and MLPs (switched off at BOS)


BLOCK_OPS = (MlpOp, AttentionHeadOp)

Craft = Dialect(
    "craft",
    [ModelOp, EmbedOp, PositionalOp, MlpOp, AttentionHeadOp, EraseOp, OutputOp],
    [CategoricalSpaceType, NumericalSpaceType, SparseMatrixAttr, SparseVectorAttr],
)
