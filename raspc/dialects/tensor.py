"""The tensor dialect: the concrete transformer, with dense float32 weights.

A `tensor.model` holds the model's input (as at every level) and its residual layout, and its
block holds one op per transformer block. Residual values are SSA values of type
`tensor<?x?xDxf32>` (batch, seq, d_model): `embed` produces the initial residual; each
`attention_head` and `mlp` reads a residual and produces its *contribution*; `add` sums the
residual with the contributions of a layer ("project each head with its own W_O, then sum");
`readout` ends the block and marks the residual dimensions that hold the model's output.

    tensor.model<vocab = ["a", "b", "c"], bos = "BOS", pad = "PAD", max_seq_len = 6, causal = false> attributes {residual = ["one", ...]} {
      %0 = tensor.embed {token_embedding = dense<...> : tensor<5x7xf32>, position_embedding = dense<...> : tensor<7x7xf32>} : tensor<?x?x7xf32>
      %1 = tensor.attention_head %0 {label = "reverse", layer = 0 : i64, w_q = ..., w_k = ..., w_v = ..., w_o = ..., scale = 1.0e+02 : f32} : tensor<?x?x7xf32>
      %2 = tensor.add %0, %1 : tensor<?x?x7xf32>
      tensor.readout categorical %2 {dims = array<i64: 3, 4, 5>, values = #raspc.values<["a", "b", "c"]>} : tensor<?x?x7xf32>
    }

Token ids are those of the model's input: the vocabulary in order, then BOS, then PAD, so the
token embedding has `len(vocab) + 2` rows. Heads keep their own sizes (no padding to a common head
size) and their own softmax scale. The semantics (shared by the interpreter and the ONNX export):
a head adds `MASK_VALUE` to the score of every PAD key, of every later key when the model is
causal, and of every key but itself at the BOS query otherwise; a categorical readout is None
where its largest dim is below `NONE_THRESHOLD`.

This dialect replaces xDSL's upstream `tensor` dialect in raspc's own tools (raspc never uses
upstream's); only the op names share the prefix.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
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
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import HasParent, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from raspc.dialects.common import (
    Encoding,
    EncodingAttr,
    InputSpec,
    InputSpecAttr,
    ModelContainer,
    ResidualLayout,
    ValuesAttr,
    container_of,
)
from raspc.errors import IRError
from raspc.utils.naming import FreshNames

MASK_VALUE = np.float32(-1e9)
"""Added to a masked attention score. Finite, so a fully masked row gives a uniform pattern, never NaN."""

NONE_THRESHOLD = np.float32(0.5)
"""A categorical output is None (-1) where the largest readout dim is below this."""

# --------------------------------------------------------------------------- types and dense weights


@functools.lru_cache(maxsize=256)
def residual_type(d_model: int) -> TensorType[Float32Type]:
    """`tensor<?x?xDxf32>`: the residual stream (batch and seq dynamic)."""
    return TensorType(f32, [DYNAMIC_INDEX, DYNAMIC_INDEX, d_model])


def dense_from_numpy(a: np.ndarray | Sequence[Any]) -> DenseIntOrFPElementsAttr:
    """A float32 numpy array as a dense attribute (little-endian bytes; bit-exact)."""
    arr = np.ascontiguousarray(np.asarray(a, dtype=np.float32), dtype="<f4")
    return DenseIntOrFPElementsAttr(_f32_tensor_type(arr.shape), BytesAttr(arr.tobytes()))


@functools.lru_cache(maxsize=1024)
def _f32_tensor_type(shape: tuple[int, ...]) -> TensorType[Float32Type]:
    # attributes are immutable: one (verified) type per shape, shared (half of dense_from_numpy's cost)
    return TensorType(f32, shape)


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
    if len(attr.data.data) != 4 * math.prod(shape):
        raise VerifyException(f"{what} holds {len(attr.data.data)} bytes, expected {4 * math.prod(shape)}")
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

    @property
    def num_tokens(self) -> int:
        return _shape(self.token_embedding)[0]

    @property
    def num_positions(self) -> int:
        return _shape(self.position_embedding)[0]

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
class ModelOp(ModelContainer):
    """A transformer with dense weights: the model's input, `residual` (one label per residual
    dimension, in order), an optional program `name` (the ONNX graph's name), and a block of
    one `tensor.embed`, heads, MLPs and adds, ending in `tensor.readout`.

    With `dims` (reuse-residual), `residual` lists every direction the model ever holds and `dims`
    the dimension of each; `spans` gives each direction's lifetime as (first, last) sublayer slot
    (embedding -1, layer l's attention 2l, its MLP 2l + 1; written in the first, read up to and
    erased in the last; 2 x layers: never erased)."""

    name = "tensor.model"
    LEVEL: ClassVar[str] = "tensor"
    residual = prop_def(ArrayAttr[StringAttr])
    dims = opt_prop_def(DenseArrayBase)
    spans = opt_prop_def(DenseArrayBase)
    program_name = opt_prop_def(StringAttr, prop_name="name")
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(
        self,
        spec: InputSpec,
        residual_labels: Sequence[str],
        ops: Sequence[Operation],
        name: str | None = None,
    ):
        props: dict[str, Attribute] = {"input": InputSpecAttr(spec)}
        if name is not None:  # first, so that it prints before the long residual list
            props["name"] = StringAttr(name)
        props["residual"] = ArrayAttr([StringAttr(s) for s in residual_labels])
        super().__init__(properties=props, regions=[Region(Block(ops))])

    @property
    def residual_labels(self) -> tuple[str, ...]:
        return tuple(s.data for s in self.residual.data)

    @property
    def layout(self) -> "ResidualLayout | None":
        """Where directions share dimensions (reuse-residual), their dims and lifetimes."""
        if self.dims is None:
            return None
        spans = [int(x) for x in self.spans.get_values()] if self.spans is not None else []
        return ResidualLayout(self.residual_labels, tuple(int(d) for d in self.dims.get_values()),
                              tuple(zip(spans[::2], spans[1::2])))

    def verify_(self) -> None:
        ops = list(self.body.block.ops)
        if not ops or not isinstance(ops[-1], ReadoutOp):
            raise VerifyException("a tensor.model ends with tensor.readout")
        foreign = [op.name for op in ops if not isinstance(op, TENSOR_OPS)]
        if foreign:
            raise VerifyException(f"unexpected op '{foreign[0]}' in a tensor.model")
        embeds = [op for op in ops if isinstance(op, EmbedOp)]
        if len(embeds) != 1:
            raise VerifyException(f"a tensor.model needs exactly one tensor.embed, found {len(embeds)}")
        _verify_defined_before_use(ops)
        labels = self.residual_labels
        if len(set(labels)) != len(labels):
            raise VerifyException("residual labels must be unique")
        self._verify_embedding(embeds[0])

    def _verify_embedding(self, embed: EmbedOp) -> None:
        """The embedding's shape follows from the input (a row per token id and per position) and
        the residual layout (a column per label)."""
        spec = self.spec
        labels = self.residual_labels
        d = _shape(embed.token_embedding)[1]
        if (self.dims is None) != (self.spans is None):
            raise VerifyException("`dims` and `spans` come together")
        layout = self.layout
        if layout is not None:
            layout.verify(d)
        elif len(labels) != d:
            raise VerifyException(f"{len(labels)} residual labels for residual width {d}")
        if embed.num_tokens != len(spec.token_ids):
            raise VerifyException(
                f"token_embedding has {embed.num_tokens} rows but the input has "
                f"{len(spec.token_ids)} token ids ({len(spec.vocab)} tokens, BOS and PAD)"
            )
        if embed.num_positions < spec.max_seq_len + 1:
            raise VerifyException(
                f"position_embedding has {embed.num_positions} rows; max_seq_len {spec.max_seq_len} needs "
                f"{spec.max_seq_len + 1} (BOS included)"
            )


def _verify_defined_before_use(ops: Sequence[Operation]) -> None:
    # xDSL does not check dominance; the interpreter and the exporter run the block in order.
    defined: set[SSAValue] = set()
    for op in ops:
        if any(v not in defined for v in op.operands):
            raise VerifyException(f"{op.name} uses a value defined after it")
        defined.update(op.results)


@irdl_op_definition
class ReadoutOp(TensorOp):
    """Marks the model output and ends a `tensor.model`: which residual dims hold the output, and
    how to decode them.

    Categorical: `values[i]` is read from `dims[i]` (argmax; None when no dim reaches
    NONE_THRESHOLD). Numerical: the single dim `dims[0]` is the value; `values` lists the values
    it can take (possibly none).
    """

    name = "tensor.readout"
    x = operand_def(TensorType)
    encoding = prop_def(EncodingAttr)
    dims = prop_def(DenseArrayBase)
    values = prop_def(ValuesAttr)
    traits = traits_def(IsTerminator(), HasParent(ModelOp))
    assembly_format = "$encoding $x attr-dict `:` type($x)"

    def __init__(
        self,
        x: SSAValue | Operation,
        dims: Sequence[int],
        encoding: Encoding | str,
        values: Sequence[Any] = (),
    ):
        super().__init__(
            operands=[SSAValue.get(x)],
            properties={
                "encoding": EncodingAttr(Encoding(encoding)),
                "dims": DenseArrayBase.from_list(i64, [int(d) for d in dims]),
                "values": ValuesAttr(tuple(values)),
            },
        )

    @property
    def dims_list(self) -> list[int]:
        return [int(d) for d in self.dims.get_values()]

    @property
    def encoding_enum(self) -> Encoding:
        return self.encoding.data

    @property
    def is_categorical(self) -> bool:
        return self.encoding.data == Encoding.CATEGORICAL

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
        if self.is_categorical:
            self._verify_categorical(dims)
        else:
            self._verify_numerical(dims)

    def _verify_categorical(self, dims: list[int]) -> None:
        if len(dims) != len(self.values_tuple):
            raise VerifyException(
                f"categorical readout has {len(dims)} dims but {len(self.values_tuple)} values"
            )
        if not dims:
            raise VerifyException("categorical readout needs at least one dim")

    def _verify_numerical(self, dims: list[int]) -> None:
        if len(dims) != 1:
            raise VerifyException(f"numerical readout reads exactly one dim, got {len(dims)}")
        if not all(isinstance(v, (int, float)) for v in self.values_tuple):
            raise VerifyException("numerical readout values must be numbers")


TENSOR_OPS = (EmbedOp, AttentionHeadOp, MlpOp, AddOp, ReadoutOp)

# --------------------------------------------------------------------------- a typed view


@dataclass(frozen=True)
class TensorModel:
    """A verified view of a tensor-level module: its input, residual layout and ops in order."""

    spec: InputSpec
    residual_labels: tuple[str, ...]
    embed: EmbedOp = field(repr=False)
    ops: tuple[Operation, ...] = field(repr=False)  # heads, MLPs and adds, in block order
    readout: ReadoutOp = field(repr=False)
    d_model: int = 0
    name: str | None = None
    layout: ResidualLayout | None = None  # directions sharing dimensions (reuse-residual)

    @property
    def heads(self) -> tuple[AttentionHeadOp, ...]:
        return tuple(op for op in self.ops if isinstance(op, AttentionHeadOp))

    def block_prefixes(self) -> dict[Operation, str]:
        """A unique name prefix per head/MLP: `L{layer}.{label}` (`.2`, `.3`... on a clash)."""
        fresh = FreshNames()
        return {op: fresh(f"L{op.layer_int}.{op.label_str}") for op in self.ops if isinstance(op, BlockOp)}

    def attention_names(self) -> dict[AttentionHeadOp, str]:
        """The name of each head's exposed pattern: `attn.{label}` (layer added if labels clash)."""
        heads = self.heads
        counts: dict[str, int] = {}
        for h in heads:
            counts[h.label_str] = counts.get(h.label_str, 0) + 1
        fresh = FreshNames()
        names: dict[AttentionHeadOp, str] = {}
        for h in heads:
            unique = counts[h.label_str] == 1
            names[h] = fresh(f"attn.{h.label_str}" if unique else f"attn.L{h.layer_int}.{h.label_str}")
        return names


def model_op(module: ModuleOp) -> ModelOp:
    """The module's `tensor.model`; IRError when it holds another level's container or none."""
    container = container_of(module)
    if not isinstance(container, ModelOp):
        raise IRError(f"expected a tensor.model, found {container.name}")
    return container


def tensor_model(module: ModuleOp) -> TensorModel:
    """Verifies a tensor-level module and returns a typed view of it; any problem is an IRError."""
    model = model_op(module)
    try:
        module.verify()
    except VerifyException as e:
        raise IRError(f"invalid tensor module: {e}") from e
    ops = list(model.body.block.ops)
    embed = next(op for op in ops if isinstance(op, EmbedOp))
    readout = ops[-1]
    assert isinstance(readout, ReadoutOp)  # the verifier checked it
    blocks = tuple(op for op in ops if isinstance(op, (AttentionHeadOp, MlpOp, AddOp)))
    name = model.program_name.data if model.program_name is not None else None
    return TensorModel(
        spec=model.spec,
        residual_labels=model.residual_labels,
        embed=embed,
        ops=blocks,
        readout=readout,
        d_model=_shape(embed.token_embedding)[1],
        name=name,
        layout=model.layout,
    )


Tensor = Dialect("tensor", [ModelOp, *TENSOR_OPS], [])

__all__ = [
    "Tensor", "ModelOp", "EmbedOp", "AttentionHeadOp", "MlpOp", "AddOp", "ReadoutOp", "BlockOp", "TENSOR_OPS",
    "residual_type", "dense_from_numpy", "dense_to_numpy", "model_op", "tensor_model", "TensorModel", "ResidualLayout",
    "MASK_VALUE", "NONE_THRESHOLD",
]
