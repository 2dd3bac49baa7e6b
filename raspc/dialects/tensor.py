"""The tensor dialect: the concrete transformer, with dense float32 weights.

Residual values are SSA values of type `tensor<?x?xDxf32>` (batch, seq, d_model). One op per
block: `embed` produces the initial residual; each `attention_head` and `mlp` reads a residual
and produces its *contribution*; `add` sums the residual with the contributions of a layer
("project each head with its own W_O, then sum"); `readout` marks the residual dimensions that
hold the model's output.

    %0 = tensor.embed {token_embedding = dense<...> : tensor<5x7xf32>, position_embedding = dense<...> : tensor<7x7xf32>} : tensor<?x?x7xf32>
    %1 = tensor.attention_head %0 {label = "reverse", layer = 0 : i64, w_q = ..., w_k = ..., w_v = ..., w_o = ..., scale = 1.0e+02 : f32} : tensor<?x?x7xf32>
    %2 = tensor.add %0, %1 : tensor<?x?x7xf32>
    tensor.readout %2 {dims = array<i64: 3, 4, 5>, encoding = "categorical", values = #rasp.values<["a", "b", "c"]>} : tensor<?x?x7xf32>

Heads keep their own sizes (no padding to a common head size) and their own softmax scale.
The model-level facts the exporter needs live on the enclosing `builtin.module` as attributes
(`raspc.vocab`, `raspc.bos_id`, `raspc.pad_id`, `raspc.max_seq_len`, `raspc.causal`,
`raspc.residual_labels`), see `set_model_attributes` / `model_attributes`.

This dialect replaces xDSL's upstream `tensor` dialect in raspc's own tools (raspc never uses
upstream's); only the op names share the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    BoolAttr,
    BytesAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i1,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from raspc.errors import IRError

from raspc.dialects.rasp import CATEGORICAL, NUMERICAL, ValuesAttr

# --------------------------------------------------------------------------- types and dense weights


def residual_type(d_model: int) -> TensorType[Float32Type]:
    """`tensor<?x?xDxf32>`: the residual stream (batch and seq dynamic)."""
    return TensorType(f32, [DYNAMIC_INDEX, DYNAMIC_INDEX, d_model])


def dense_from_numpy(a: np.ndarray | Sequence[Any]) -> DenseIntOrFPElementsAttr:
    """A float32 numpy array as a dense attribute (little-endian bytes; bit-exact)."""
    arr = np.ascontiguousarray(np.asarray(a, dtype=np.float32), dtype="<f4")
    return DenseIntOrFPElementsAttr(TensorType(f32, arr.shape), BytesAttr(arr.tobytes()))


def dense_to_numpy(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The float32 array held by a dense attribute (a fresh, writable copy)."""
    if not isinstance(attr.get_element_type(), Float32Type):
        raise VerifyException(f"expected f32 weights, got {attr.get_element_type()}")
    return np.frombuffer(attr.data.data, dtype="<f4").reshape(attr.get_shape()).astype(np.float32)


def _shape(attr: DenseIntOrFPElementsAttr) -> tuple[int, ...]:
    return tuple(attr.get_shape())


def _check_f32(attr: DenseIntOrFPElementsAttr, what: str, rank: int) -> tuple[int, ...]:
    if not isinstance(attr.get_element_type(), Float32Type):
        raise VerifyException(f"{what} must have f32 elements, got {attr.get_element_type()}")
    shape = _shape(attr)
    if len(shape) != rank:
        raise VerifyException(f"{what} must have rank {rank}, got shape {list(shape)}")
    if len(attr.data.data) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise VerifyException(f"{what} holds {len(attr.data.data)} bytes, expected {4 * int(np.prod(shape))}")
    return shape


def _check_residual(t: Attribute, what: str) -> int:
    """Checks `t` is `tensor<?x?xDxf32>` and returns D."""
    if not isinstance(t, TensorType):
        raise VerifyException(f"{what} must be a tensor, got {t}")
    shape = t.get_shape()
    if (
        len(shape) != 3
        or shape[0] != DYNAMIC_INDEX
        or shape[1] != DYNAMIC_INDEX
        or shape[2] < 1
        or not isinstance(t.get_element_type(), Float32Type)
    ):
        raise VerifyException(f"{what} must be a residual tensor<?x?xDxf32>, got {t}")
    return shape[2]


def _expect(shape: tuple[int, ...], expected: tuple[int, ...], what: str) -> None:
    if shape != expected:
        raise VerifyException(
            f"{what} has shape {'x'.join(map(str, shape))}, expected {'x'.join(map(str, expected))}"
        )


# --------------------------------------------------------------------------- ops


class TensorOp(IRDLOperation):
    """Shared options: properties print inside the attr-dict."""

    irdl_options = (ParsePropInAttrDict(),)


class BlockOp(TensorOp):
    """A residual block (attention head or MLP): reads the residual, returns its contribution."""

    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    res = result_def(T)
    label = prop_def(StringAttr)
    layer = prop_def(IntegerAttr[IntegerType])
    traits = traits_def(Pure())
    assembly_format = "$x attr-dict `:` type($x)"

    @property
    def label_str(self) -> str:
        return self.label.data

    @property
    def layer_int(self) -> int:
        return self.layer.value.data

    def _verify_common(self) -> int:
        d = _check_residual(self.x.type, "operand")
        if self.layer.type != i64:
            raise VerifyException("layer must be an i64 integer")
        if self.layer_int < 0:
            raise VerifyException(f"layer must be >= 0, got {self.layer_int}")
        return d


@irdl_op_definition
class EmbedOp(TensorOp):
    """The initial residual: token embedding row (by token id) plus position embedding row."""

    name = "tensor.embed"
    res = result_def(TensorType)
    token_embedding = prop_def(DenseIntOrFPElementsAttr)
    position_embedding = prop_def(DenseIntOrFPElementsAttr)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($res)"

    def __init__(self, token_embedding: np.ndarray, position_embedding: np.ndarray):
        tok = dense_from_numpy(token_embedding)
        pos = dense_from_numpy(position_embedding)
        super().__init__(
            result_types=[residual_type(_shape(tok)[-1] if tok.get_shape() else 0)],
            properties={"token_embedding": tok, "position_embedding": pos},
        )

    def verify_(self) -> None:
        d = _check_residual(self.res.type, "result")
        v, dt = _check_f32(self.token_embedding, "token_embedding", 2)
        p, dp = _check_f32(self.position_embedding, "position_embedding", 2)
        if dt != d or dp != d:
            raise VerifyException(
                f"embedding widths disagree: token_embedding {v}x{dt}, position_embedding {p}x{dp}, "
                f"residual width {d}"
            )
        if v < 1 or p < 1:
            raise VerifyException("embeddings need at least one row")


@irdl_op_definition
class AttentionHeadOp(BlockOp):
    """One attention head: softmax((x W_q)(x W_k)^T * scale + mask) (x W_v) W_o."""

    name = "tensor.attention_head"
    w_q = prop_def(DenseIntOrFPElementsAttr)
    w_k = prop_def(DenseIntOrFPElementsAttr)
    w_v = prop_def(DenseIntOrFPElementsAttr)
    w_o = prop_def(DenseIntOrFPElementsAttr)
    scale = prop_def(FloatAttr)

    def __init__(
        self,
        x: SSAValue | Operation,
        label: str,
        layer: int,
        w_q: np.ndarray,
        w_k: np.ndarray,
        w_v: np.ndarray,
        w_o: np.ndarray,
        scale: float,
    ):
        x = SSAValue.get(x)
        super().__init__(
            operands=[x],
            result_types=[x.type],
            properties={
                "label": StringAttr(label),
                "layer": IntegerAttr(layer, i64),
                "w_q": dense_from_numpy(w_q),
                "w_k": dense_from_numpy(w_k),
                "w_v": dense_from_numpy(w_v),
                "w_o": dense_from_numpy(w_o),
                "scale": FloatAttr(float(scale), f32),
            },
        )

    @property
    def scale_float(self) -> float:
        return float(self.scale.value.data)

    def verify_(self) -> None:
        d = self._verify_common()
        dq, hq = _check_f32(self.w_q, "w_q", 2)
        _expect((dq, hq), (d, hq), "w_q")
        _expect(_check_f32(self.w_k, "w_k", 2), (d, hq), "w_k")
        dv, hv = _check_f32(self.w_v, "w_v", 2)
        _expect((dv, hv), (d, hv), "w_v")
        _expect(_check_f32(self.w_o, "w_o", 2), (hv, d), "w_o")
        if not isinstance(self.scale.type, Float32Type):
            raise VerifyException("scale must be an f32 float")
        if not np.isfinite(self.scale_float):
            raise VerifyException(f"scale must be finite, got {self.scale_float}")


@irdl_op_definition
class MlpOp(BlockOp):
    """One MLP: relu(x W_in + b_in) W_out + b_out."""

    name = "tensor.mlp"
    w_in = prop_def(DenseIntOrFPElementsAttr)
    b_in = prop_def(DenseIntOrFPElementsAttr)
    w_out = prop_def(DenseIntOrFPElementsAttr)
    b_out = prop_def(DenseIntOrFPElementsAttr)

    def __init__(
        self,
        x: SSAValue | Operation,
        label: str,
        layer: int,
        w_in: np.ndarray,
        b_in: np.ndarray,
        w_out: np.ndarray,
        b_out: np.ndarray,
    ):
        x = SSAValue.get(x)
        super().__init__(
            operands=[x],
            result_types=[x.type],
            properties={
                "label": StringAttr(label),
                "layer": IntegerAttr(layer, i64),
                "w_in": dense_from_numpy(w_in),
                "b_in": dense_from_numpy(b_in),
                "w_out": dense_from_numpy(w_out),
                "b_out": dense_from_numpy(b_out),
            },
        )

    def verify_(self) -> None:
        d = self._verify_common()
        di, h = _check_f32(self.w_in, "w_in", 2)
        _expect((di, h), (d, h), "w_in")
        _expect(_check_f32(self.b_in, "b_in", 1), (h,), "b_in")
        _expect(_check_f32(self.w_out, "w_out", 2), (h, d), "w_out")
        _expect(_check_f32(self.b_out, "b_out", 1), (d,), "b_out")


@irdl_op_definition
class AddOp(TensorOp):
    """The sum of one or more residual-shaped values (residual + the contributions of a layer)."""

    name = "tensor.add"
    T: ClassVar = VarConstraint("T", base(TensorType))
    inputs = var_operand_def(T)
    res = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$inputs attr-dict `:` type($res)"

    def __init__(self, operands: Sequence[SSAValue | Operation]):
        values = [SSAValue.get(v) for v in operands]
        if not values:
            raise VerifyException("tensor.add needs at least one operand")
        super().__init__(operands=[values], result_types=[values[0].type])

    def verify_(self) -> None:
        if len(self.inputs) < 1:
            raise VerifyException("tensor.add needs at least one operand")
        _check_residual(self.res.type, "result")


@irdl_op_definition
class ReadoutOp(TensorOp):
    """Marks the model output: which residual dims hold it, and how to decode them.

    Categorical: `values[i]` is read from `dims[i]` (argmax; None when no dim reaches 0.5).
    Numerical: the single dim `dims[0]` is the value.
    """

    name = "tensor.readout"
    x = operand_def(TensorType)
    dims = prop_def(DenseArrayBase)
    encoding = prop_def(StringAttr)
    values = prop_def(ValuesAttr)
    assembly_format = "$x attr-dict `:` type($x)"

    def __init__(
        self, x: SSAValue | Operation, dims: Sequence[int], encoding: str, values: Sequence[Any] = ()
    ):
        super().__init__(
            operands=[SSAValue.get(x)],
            properties={
                "dims": DenseArrayBase.from_list(i64, [int(d) for d in dims]),
                "encoding": StringAttr(encoding),
                "values": ValuesAttr(tuple(values)),
            },
        )

    @property
    def dims_list(self) -> list[int]:
        return [int(d) for d in self.dims.get_values()]

    @property
    def encoding_str(self) -> str:
        return self.encoding.data

    @property
    def values_tuple(self) -> tuple[Any, ...]:
        return self.values.data

    def verify_(self) -> None:
        d = _check_residual(self.x.type, "operand")
        if self.dims.elt_type != i64:
            raise VerifyException("dims must be an i64 array")
        dims = self.dims_list
        bad = [i for i in dims if not 0 <= i < d]
        if bad:
            raise VerifyException(f"readout dims {bad} out of range for residual width {d}")
        if len(set(dims)) != len(dims):
            raise VerifyException("readout dims must be distinct")
        enc = self.encoding_str
        if enc == CATEGORICAL:
            if len(dims) != len(self.values_tuple):
                raise VerifyException(
                    f"categorical readout has {len(dims)} dims but {len(self.values_tuple)} values"
                )
            if not dims:
                raise VerifyException("categorical readout needs at least one dim")
        elif enc == NUMERICAL:
            if len(dims) != 1:
                raise VerifyException(f"numerical readout reads exactly one dim, got {len(dims)}")
            if self.values_tuple and not all(isinstance(v, (int, float)) for v in self.values_tuple):
                raise VerifyException("numerical readout values must be numbers")
        else:
            raise VerifyException(f"readout encoding must be 'categorical' or 'numerical', got '{enc}'")


# --------------------------------------------------------------------------- module-level attributes

VOCAB = "raspc.vocab"
BOS_ID = "raspc.bos_id"
PAD_ID = "raspc.pad_id"
MAX_SEQ_LEN = "raspc.max_seq_len"
CAUSAL = "raspc.causal"
RESIDUAL_LABELS = "raspc.residual_labels"


@dataclass(frozen=True)
class ModelAttributes:
    """The model-level facts stored on the `builtin.module` of a tensor-level program."""

    vocab: tuple[Any, ...]
    bos_id: int
    pad_id: int
    max_seq_len: int
    causal: bool
    residual_labels: tuple[str, ...]


def set_model_attributes(
    module: ModuleOp,
    *,
    vocab: Sequence[Any],
    bos_id: int,
    pad_id: int,
    max_seq_len: int,
    causal: bool,
    residual_labels: Sequence[str],
) -> None:
    """Stores the model-level attributes on `module` (what the ONNX exporter reads)."""
    module.attributes[VOCAB] = ValuesAttr(tuple(vocab))
    module.attributes[BOS_ID] = IntegerAttr(int(bos_id), i64)
    module.attributes[PAD_ID] = IntegerAttr(int(pad_id), i64)
    module.attributes[MAX_SEQ_LEN] = IntegerAttr(int(max_seq_len), i64)
    module.attributes[CAUSAL] = BoolAttr.from_bool(bool(causal))
    module.attributes[RESIDUAL_LABELS] = ArrayAttr([StringAttr(s) for s in residual_labels])


def _int_attr(module: ModuleOp, key: str) -> int:
    attr = module.attributes.get(key)
    if not isinstance(attr, IntegerAttr):
        raise IRError(f"module attribute '{key}' must be an integer, got {attr}")
    return int(attr.value.data)


def model_attributes(module: ModuleOp) -> ModelAttributes:
    """Reads (and checks) the model-level attributes; raises IRError when one is missing or bad."""
    vocab = module.attributes.get(VOCAB)
    if not isinstance(vocab, ValuesAttr):
        raise IRError(f"module attribute '{VOCAB}' must be a #rasp.values list, got {vocab}")
    labels = module.attributes.get(RESIDUAL_LABELS)
    if not isinstance(labels, ArrayAttr) or not all(isinstance(s, StringAttr) for s in labels.data):
        raise IRError(f"module attribute '{RESIDUAL_LABELS}' must be an array of strings")
    causal = module.attributes.get(CAUSAL)
    if not isinstance(causal, IntegerAttr) or causal.type != i1:
        raise IRError(f"module attribute '{CAUSAL}' must be a boolean, got {causal}")
    attrs = ModelAttributes(
        vocab=vocab.data,
        bos_id=_int_attr(module, BOS_ID),
        pad_id=_int_attr(module, PAD_ID),
        max_seq_len=_int_attr(module, MAX_SEQ_LEN),
        causal=bool(causal.value.data),
        residual_labels=tuple(s.data for s in labels.data),  # type: ignore[union-attr]
    )
    n = len(attrs.vocab)
    for key, i in ((BOS_ID, attrs.bos_id), (PAD_ID, attrs.pad_id)):
        if not 0 <= i < n:
            raise IRError(f"module attribute '{key}' = {i} is not an id of the {n}-token vocabulary")
    if attrs.bos_id == attrs.pad_id:
        raise IRError("BOS and PAD must be different ids")
    if attrs.max_seq_len < 1:
        raise IRError(f"'{MAX_SEQ_LEN}' must be >= 1, got {attrs.max_seq_len}")
    return attrs


@dataclass(frozen=True)
class TensorModel:
    """A verified view of a tensor-level module: its ops in order and its attributes."""

    attrs: ModelAttributes
    embed: EmbedOp = field(repr=False)
    ops: tuple[Operation, ...] = field(repr=False)  # heads, MLPs and adds, in block order
    readout: ReadoutOp = field(repr=False)
    d_model: int = 0

    @property
    def heads(self) -> tuple[AttentionHeadOp, ...]:
        return tuple(op for op in self.ops if isinstance(op, AttentionHeadOp))

    def block_prefixes(self) -> dict[Operation, str]:
        """A unique name prefix per head/MLP: `L{layer}.{label}` (`.2`, `.3`... on a clash)."""
        used: set[str] = set()
        out: dict[Operation, str] = {}
        for op in self.ops:
            if isinstance(op, BlockOp):
                out[op] = _fresh(f"L{op.layer_int}.{op.label_str}", used)
        return out

    def attention_names(self) -> dict[AttentionHeadOp, str]:
        """The name of each head's exposed pattern: `attn.{label}` (layer added if labels clash)."""
        heads = self.heads
        counts: dict[str, int] = {}
        for h in heads:
            counts[h.label_str] = counts.get(h.label_str, 0) + 1
        used: set[str] = set()
        return {
            h: _fresh(f"attn.{h.label_str}" if counts[h.label_str] == 1 else f"attn.L{h.layer_int}.{h.label_str}", used)
            for h in heads
        }


def _fresh(base: str, used: set[str]) -> str:
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}.{n}"
    used.add(name)
    return name


def tensor_model(module: ModuleOp) -> TensorModel:
    """Checks the module has the shape the exporter and interpreter expect and returns a view.

    Exactly one `tensor.embed` and one `tensor.readout`, every op a tensor-dialect op, the
    module attributes present and consistent with the weights. Verifies the module first;
    any problem is an IRError.
    """
    try:
        module.verify()
    except VerifyException as e:
        raise IRError(f"invalid tensor module: {e}") from e
    attrs = model_attributes(module)
    embeds: list[EmbedOp] = []
    readouts: list[ReadoutOp] = []
    others: list[Operation] = []
    for op in module.ops:
        if isinstance(op, EmbedOp):
            embeds.append(op)
        elif isinstance(op, ReadoutOp):
            readouts.append(op)
        elif isinstance(op, (AttentionHeadOp, MlpOp, AddOp)):
            others.append(op)
        else:
            raise IRError(f"unexpected op '{op.name}' in a tensor-level module")
    if len(embeds) != 1:
        raise IRError(f"a tensor module needs exactly one tensor.embed, found {len(embeds)}")
    if len(readouts) != 1:
        raise IRError(f"a tensor module needs exactly one tensor.readout, found {len(readouts)}")
    embed, readout = embeds[0], readouts[0]
    v, d = _shape(embed.token_embedding)
    p = _shape(embed.position_embedding)[0]
    if v != len(attrs.vocab):
        raise IRError(f"token_embedding has {v} rows but the vocabulary has {len(attrs.vocab)} tokens")
    if p < attrs.max_seq_len + 1:
        raise IRError(
            f"position_embedding has {p} rows; max_seq_len {attrs.max_seq_len} needs {attrs.max_seq_len + 1} (BOS included)"
        )
    if len(attrs.residual_labels) != d:
        raise IRError(f"{len(attrs.residual_labels)} residual labels for residual width {d}")
    return TensorModel(attrs=attrs, embed=embed, ops=tuple(others), readout=readout, d_model=d)


Tensor = Dialect(
    "tensor",
    [EmbedOp, AttentionHeadOp, MlpOp, AddOp, ReadoutOp],
    [],
)

__all__ = [
    "Tensor", "EmbedOp", "AttentionHeadOp", "MlpOp", "AddOp", "ReadoutOp", "residual_type",
    "dense_from_numpy", "dense_to_numpy", "set_model_attributes", "model_attributes", "ModelAttributes",
    "tensor_model", "TensorModel", "VOCAB", "BOS_ID", "PAD_ID", "MAX_SEQ_LEN", "CAUSAL", "RESIDUAL_LABELS",
]
