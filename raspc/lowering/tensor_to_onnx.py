"""The export pass: a tensor-dialect module -> an ONNX decoder graph (built with onnx.helper).

Graph contract (see ARCHITECTURE.md, "ONNX export"):
  input   `tokens`   int64 [batch, seq]: BOS id at position 0, PAD id after the end of shorter rows
  output  `output`   categorical: int64 [batch, seq], index into `raspc.output_values`, -1 = None;
                     numerical: float32 [batch, seq]
  output  `residual` float32 [batch, seq, D], the final residual stream
  outputs `attn.<label>` float32 [batch, seq, seq] per head, with `expose_attention=True`
  outputs named like TransformerLens hooks, with `hooks=True` (`blocks.{l}.hook_resid_pre`, ...,
          `blocks.{l}.attn.hook_pattern`, `logits`; see _emit_hooks)

Every head is written out "project then sum": q = x W_Q, k = x W_K, scores = (q k^T) * scale + mask,
pattern = softmax(scores), out = (pattern (x W_V)) W_O; the layer's residual is a Sum of the
residual and its blocks' outputs. Intermediates carry readable names (`L0.reverse.scores`,
`L0.reverse.pattern`, `L1.hist_mlp.hidden`, `L1.residual`), weights are initializers named after
their block (`L0.reverse.W_Q`, ...). The model metadata (`metadata_props`, JSON values) is all a
deployer needs to encode tokens and decode outputs (see raspc/runtime.py).

One emitter per tensor op (`EMITTERS`) appends that op's nodes, in block order. The numpy
reference with the same semantics is raspc.interpreters.tensor.run_tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import tensor as T
from raspc.dialects.tensor import MASK_VALUE, NONE_THRESHOLD
from raspc.utils.naming import FreshNames

OPSET = 23
IR_VERSION = 11  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 accepts at most 13
DEFAULT_NAME = "raspc_model"  # the graph's name when the tensor.model has no `name`

INPUT = "tokens"
OUTPUT = "output"
RESIDUAL = "residual"
LOGITS = "logits"  # with hooks=True: the residual dims the readout reads, [batch, seq, K]
CIRCUIT_GRAPH = "raspc.circuit_graph"  # metadata key: the ground-truth circuit graph (JSON)


def json_value(v: Any) -> Any:
    """A RASP value as JSON-encodable data: tuples become lists, None stays None (null)."""
    if isinstance(v, tuple):
        return [json_value(x) for x in v]
    return v


def _json(v: Any) -> str:
    return json.dumps(json_value(v), ensure_ascii=False, allow_nan=False)


def _scalar(value: Any, dtype: type) -> np.ndarray:
    # 0-d, never [1]: a [1]-shaped index would make Gather keep an axis
    return np.array(value, dtype=dtype)


_RAW_TYPES = {np.dtype("<f4"): TensorProto.FLOAT, np.dtype("<i8"): TensorProto.INT64, np.dtype(bool): TensorProto.BOOL}


def _tensor_proto(array: np.ndarray, name: str) -> onnx.TensorProto:
    """numpy_helper.from_array's proto (the same bytes) for the dtypes the exports use, in half its time."""
    data_type = _RAW_TYPES.get(array.dtype)
    if data_type is None:
        return numpy_helper.from_array(array, name)
    return TensorProto(name=name, dims=array.shape, data_type=data_type, raw_data=array.tobytes())


class _GraphBuilder:
    """Collects nodes and initializers with unique, readable names, and the ONNX name of each value."""

    def __init__(self, model: T.TensorModel) -> None:
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.fresh = FreshNames(taken=(INPUT, OUTPUT, RESIDUAL, LOGITS))
        self.names: dict[SSAValue, str] = {}  # SSA value -> the ONNX tensor holding it
        self.block_layer: dict[SSAValue, int] = {}  # head/MLP result -> its layer (names the sums)
        self.prefixes = model.block_prefixes()
        self.attention_names = model.attention_names()
        self.patterns: list[tuple[str, str]] = []  # (exposed output name, pattern tensor), per head
        self.mask = ""  # the shared additive attention mask, once the embedding has built it
        # what the TransformerLens-named hooks expose (see _emit_hooks)
        self.embed_parts: tuple[str, str, str] = ("", "", "")  # token rows, position rows, their sum
        self.head_parts: list[tuple[int, str, str, str]] = []  # (layer, scores, pattern, out) per head
        self.mlp_parts: dict[int, tuple[str, str, str]] = {}  # layer -> (pre, hidden, out)
        self.sums: dict[tuple[int, str], tuple[str, str]] = {}  # (layer, "attn"|"mlp") -> (residual in, out)
        self.readout_values = ""  # the residual dims the readout reads, [B, T, K]

    def init(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        # np.array(..., copy=True) keeps 0-d scalars 0-d (np.ascontiguousarray would make them [1])
        self.initializers.append(_tensor_proto(np.array(array, order="C", copy=True), name))
        return name

    def weight(self, name: str, attr: DenseIntOrFPElementsAttr) -> str:
        return self.init(name, T.dense_to_numpy(attr))

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """Adds a node with one output named `output` (made unique); returns that name."""
        out = self.fresh(output)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def node_named(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """Adds a node whose output name is fixed (a graph output)."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


# --------------------------------------------------------------------------- one emitter per op


def _emit_embed(g: _GraphBuilder, op: T.EmbedOp) -> None:
    """Token rows + position rows (positions from the dynamic seq length), then the shared mask."""
    tok_emb = g.weight("token_embedding", op.token_embedding)
    pos_emb = g.weight("position_embedding", op.position_embedding)
    c_zero = g.init("const.zero_i64", _scalar(0, np.int64))
    c_one = g.init("const.one_i64", _scalar(1, np.int64))
    c_axes0 = g.init("const.axes_0", np.array([0], dtype=np.int64))
    seq_len_1d = g.node("Shape", [INPUT], "seq_len_1d", start=1, end=2)  # [1]
    seq_len = g.node("Squeeze", [seq_len_1d, c_axes0], "seq_len")  # scalar
    positions = g.node("Range", [c_zero, seq_len, c_one], "positions")  # [T]: 0..seq-1
    tok_part = g.node("Gather", [tok_emb, INPUT], "embed.tokens", axis=0)  # [B, T, D]
    pos_part = g.node("Gather", [pos_emb, positions], "embed.positions", axis=0)  # [T, D]
    g.names[op.res] = g.node("Add", [tok_part, pos_part], "embed")
    g.embed_parts = (tok_part, pos_part, g.names[op.res])
    if g.model.heads:  # built once, here, so every head reads the same mask
        g.mask = emit_mask(g, seq_len_1d, op.num_positions)


def emit_mask(g: _GraphBuilder, seq_len_1d: str, n_positions: int) -> str:
    """The additive attention mask [B, T, T]: MASK_VALUE where a query must not see a key. Its
    position part (future keys when causal; else every key but BOS for the BOS query, so position
    0 computes the same constants for every input, which the compiler relies on) is a constant cut
    to [T, T]; PAD keys are added from the input."""
    spec = g.model.spec
    q, k = np.arange(n_positions)[:, None], np.arange(n_positions)[None, :]
    hidden = (k > q) if spec.causal else ((q == 0) & (k > 0))
    static = g.init("mask.positions", np.where(hidden, MASK_VALUE, 0.0).astype(np.float32))
    ends = g.node("Concat", [seq_len_1d, seq_len_1d], "mask.ends", axis=0)
    zeros = g.init("mask.starts", np.array([0, 0], dtype=np.int64))
    square = g.node("Slice", [static, zeros, ends], "mask.square")  # [T, T]
    is_pad = g.node("Equal", [INPUT, g.init("const.pad_id", _scalar(spec.pad_id, np.int64))], "mask.key_is_pad")
    pad_keys = g.node("Unsqueeze", [is_pad, g.init("const.axes_1", np.array([1], dtype=np.int64))],
                      "mask.key_is_pad_b1t")  # [B, 1, T]
    c_mask = g.init("const.mask_value", _scalar(MASK_VALUE, np.float32))
    return g.node("Where", [pad_keys, c_mask, square], "mask")


def _emit_attention_head(g: _GraphBuilder, op: T.AttentionHeadOp) -> None:
    p = g.prefixes[op]
    x = g.names[op.x]
    w_q = g.weight(f"{p}.W_Q", op.w_q)
    w_k = g.weight(f"{p}.W_K", op.w_k)
    w_v = g.weight(f"{p}.W_V", op.w_v)
    w_o = g.weight(f"{p}.W_O", op.w_o)
    scale = g.init(f"{p}.scale", _scalar(op.scale_float, np.float32))
    q = g.node("MatMul", [x, w_q], f"{p}.q")
    k = g.node("MatMul", [x, w_k], f"{p}.k")
    k_t = g.node("Transpose", [k], f"{p}.k_T", perm=[0, 2, 1])
    qk = g.node("MatMul", [q, k_t], f"{p}.qk")
    scaled = g.node("Mul", [qk, scale], f"{p}.scaled")
    scores = g.node("Add", [scaled, g.mask], f"{p}.scores")
    pattern = g.node("Softmax", [scores], f"{p}.pattern", axis=-1)
    v = g.node("MatMul", [x, w_v], f"{p}.v")
    z = g.node("MatMul", [pattern, v], f"{p}.z")
    g.names[op.res] = g.node("MatMul", [z, w_o], f"{p}.out")
    g.block_layer[op.res] = op.layer_int
    g.patterns.append((g.attention_names[op], pattern))
    g.head_parts.append((op.layer_int, scores, pattern, g.names[op.res]))


def _emit_mlp(g: _GraphBuilder, op: T.MlpOp) -> None:
    p = g.prefixes[op]
    x = g.names[op.x]
    w_in = g.weight(f"{p}.W_in", op.w_in)
    b_in = g.weight(f"{p}.b_in", op.b_in)
    w_out = g.weight(f"{p}.W_out", op.w_out)
    b_out = g.weight(f"{p}.b_out", op.b_out)
    pre = g.node("Add", [g.node("MatMul", [x, w_in], f"{p}.x_W_in"), b_in], f"{p}.pre")
    hidden = g.node("Relu", [pre], f"{p}.hidden")
    out = g.node("MatMul", [hidden, w_out], f"{p}.hidden_W_out")
    g.names[op.res] = g.node("Add", [out, b_out], f"{p}.out")
    g.block_layer[op.res] = op.layer_int
    g.mlp_parts[op.layer_int] = (pre, hidden, g.names[op.res])


def _emit_add(g: _GraphBuilder, op: T.AddOp) -> None:
    """A layer's residual, named after the latest layer among the blocks it sums."""
    layers = [g.block_layer[v] for v in op.inputs if v in g.block_layer]
    base = f"L{max(layers)}.residual" if layers else "residual_sum"
    ins = [g.names[v] for v in op.inputs]
    g.names[op.res] = g.node("Sum" if len(ins) > 1 else "Identity", ins, base)
    if layers:
        kind = "mlp" if any(isinstance(v.owner, T.MlpOp) for v in op.inputs) else "attn"
        g.sums[(max(layers), kind)] = (g.names[op.inputs[0]], g.names[op.res])


def _emit_readout(g: _GraphBuilder, op: T.ReadoutOp) -> None:
    """The graph outputs `residual` and `output` (decoded as the interpreter's decode_readout)."""
    final = g.names[op.x]
    g.node_named("Identity", [final], RESIDUAL)
    dims = op.dims_list
    if op.is_categorical:
        c_dims = g.init("readout.dims", np.array(dims, dtype=np.int64))
        c_thr = g.init("const.none_threshold", _scalar(NONE_THRESHOLD, np.float32))
        c_none = g.init("const.minus_one_i64", _scalar(-1, np.int64))
        r = g.node("Gather", [final, c_dims], "readout.values", axis=2)  # [B, T, K]
        g.readout_values = r
        idx = g.node("ArgMax", [r], "readout.argmax", axis=-1, keepdims=0)
        c_last = g.init("const.axes_m1", np.array([-1], dtype=np.int64))
        mx = g.node("ReduceMax", [r, c_last], "readout.max", keepdims=0)  # [B, T]
        is_none = g.node("Less", [mx, c_thr], "readout.is_none")
        g.node_named("Where", [is_none, c_none, idx], OUTPUT)
    else:
        c_dim = g.init("readout.dim", _scalar(dims[0], np.int64))
        g.node_named("Gather", [final, c_dim], OUTPUT, axis=2)


EMITTERS: dict[type[Operation], Callable[[_GraphBuilder, Any], None]] = {
    T.EmbedOp: _emit_embed,
    T.AttentionHeadOp: _emit_attention_head,
    T.MlpOp: _emit_mlp,
    T.AddOp: _emit_add,
    T.ReadoutOp: _emit_readout,
}


# --------------------------------------------------------------------------- the model


def _graph_outputs(g: _GraphBuilder, expose_attention: bool) -> list[onnx.ValueInfoProto]:
    output_type = TensorProto.INT64 if g.model.readout.is_categorical else TensorProto.FLOAT
    outputs = [
        helper.make_tensor_value_info(OUTPUT, output_type, ["batch", "seq"]),
        helper.make_tensor_value_info(RESIDUAL, TensorProto.FLOAT, ["batch", "seq", g.model.d_model]),
    ]
    if expose_attention:
        for out_name, pattern in g.patterns:
            g.node_named("Identity", [pattern], out_name)
            pattern_type = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", "seq", "seq"])
            outputs.append(pattern_type)
    return outputs


# --------------------------------------------------------------------------- TransformerLens-named hooks


def _hook(g: _GraphBuilder, source: str, name: str, shape: list[Any]) -> onnx.ValueInfoProto:
    """An extra graph output `name`: an Identity of `source` (the computation itself is unchanged)."""
    g.node_named("Identity", [source], name)
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _stack(g: _GraphBuilder, parts: list[str], axis: int, name: str) -> str:
    """Per-head tensors stacked along a new axis (a head axis, as TransformerLens has it)."""
    c_axis = g.init("const.hook_axes", np.array([axis], dtype=np.int64))
    wide = [g.node("Unsqueeze", [p, c_axis], f"{name}.part") for p in parts]
    return g.node("Concat", wide, name, axis=axis) if len(wide) > 1 else wide[0]


def _emit_hooks(g: _GraphBuilder) -> list[onnx.ValueInfoProto]:
    """Graph outputs named like TransformerLens's hooks, per layer l (heads in block order):
    `blocks.l.hook_resid_pre`, `blocks.l.attn.hook_attn_scores` / `hook_pattern` [B, head, q, k],
    `blocks.l.attn.hook_result` [B, T, head, d_model], `blocks.l.hook_attn_out`,
    `blocks.l.hook_resid_mid`, `blocks.l.mlp.hook_pre` / `hook_post` [B, T, d_mlp],
    `blocks.l.hook_mlp_out`, `blocks.l.hook_resid_post`; also `hook_embed`, `hook_pos_embed` and
    `logits` (the residual dims the readout reads). They are side outputs of the plain graph's
    tensors, so the hooked model computes exactly what the plain one does. A layer without heads
    (or without an MLP) has a zero `hook_attn_out` (`hook_mlp_out`) and no per-head hooks."""
    d = g.model.d_model
    tok, pos, resid = g.embed_parts
    full_pos = g.node("Expand", [pos, g.node("Shape", [tok], "hooks.embed_shape")], "hooks.pos_embed")
    outs = [_hook(g, tok, "hook_embed", ["batch", "seq", d]),
            _hook(g, full_pos, "hook_pos_embed", ["batch", "seq", d])]
    layers = [op.layer_int for op in g.model.ops if isinstance(op, T.BlockOp)]
    for layer in range(max(layers, default=-1) + 1):
        pre = resid
        heads = [(scores, pattern, out) for lyr, scores, pattern, out in g.head_parts if lyr == layer]
        b = f"blocks.{layer}"
        outs.append(_hook(g, pre, f"{b}.hook_resid_pre", ["batch", "seq", d]))
        if heads:
            n = len(heads)
            mid = g.sums[(layer, "attn")][1]
            attn_out = g.node("Sum", [o for _, _, o in heads], f"hooks.L{layer}.attn_out") if n > 1 else heads[0][2]
            outs.append(_hook(g, _stack(g, [s for s, _, _ in heads], 1, f"hooks.L{layer}.scores"),
                              f"{b}.attn.hook_attn_scores", ["batch", n, "seq", "seq"]))
            outs.append(_hook(g, _stack(g, [p for _, p, _ in heads], 1, f"hooks.L{layer}.pattern"),
                              f"{b}.attn.hook_pattern", ["batch", n, "seq", "seq"]))
            outs.append(_hook(g, _stack(g, [o for _, _, o in heads], 2, f"hooks.L{layer}.result"),
                              f"{b}.attn.hook_result", ["batch", "seq", n, d]))
        else:
            mid = pre
            attn_out = g.node("Sub", [pre, pre], f"hooks.L{layer}.no_attn")
        outs.append(_hook(g, attn_out, f"{b}.hook_attn_out", ["batch", "seq", d]))
        outs.append(_hook(g, mid, f"{b}.hook_resid_mid", ["batch", "seq", d]))
        if layer in g.mlp_parts:
            hidden_pre, hidden, mlp_out = g.mlp_parts[layer]
            post = g.sums[(layer, "mlp")][1]
            width = next(op for op in g.model.ops if isinstance(op, T.MlpOp) and op.layer_int == layer).w_in.get_shape()[1]
            outs.append(_hook(g, hidden_pre, f"{b}.mlp.hook_pre", ["batch", "seq", width]))
            outs.append(_hook(g, hidden, f"{b}.mlp.hook_post", ["batch", "seq", width]))
        else:
            post = mid
            mlp_out = g.node("Sub", [mid, mid], f"hooks.L{layer}.no_mlp")
        outs.append(_hook(g, mlp_out, f"{b}.hook_mlp_out", ["batch", "seq", d]))
        outs.append(_hook(g, post, f"{b}.hook_resid_post", ["batch", "seq", d]))
        resid = post
    logits = g.readout_values
    if not logits:  # numerical: the one readout dim, kept as an axis
        dims = g.init("readout.logit_dims", np.array(g.model.readout.dims_list, dtype=np.int64))
        logits = g.node("Gather", [RESIDUAL, dims], "hooks.logits", axis=2)
    outs.append(_hook(g, logits, LOGITS, ["batch", "seq", len(g.model.readout.dims_list)]))
    return outs


def _model_doc(model: T.TensorModel, name: str) -> str:
    n_layers = len({op.layer_int for op in model.ops if isinstance(op, T.BlockOp)})
    n_mlps = sum(isinstance(op, T.MlpOp) for op in model.ops)
    return (
        f"RASP program '{name}' compiled to a transformer by raspc: d_model {model.d_model}, "
        f"{n_layers} layers, {len(model.heads)} attention heads, {n_mlps} MLPs; "
        f"input `tokens` int64 [batch, seq] (BOS id {model.spec.bos_id} first, PAD id {model.spec.pad_id} after the end); outputs `output` and "
        f"`residual`; see metadata_props raspc.* for the vocabulary and output decoding."
    )


def _metadata(model: T.TensorModel) -> dict[str, str]:
    """What a deployer needs (raspc/runtime.py): token ids, output decoding, residual layout; and
    the ground-truth circuit graph (raspc.analysis.circuit_graph), so a file alone carries it."""
    from raspc.analysis.circuit_graph import graph_json
    from raspc.analysis.weights import RESIDUAL_LAYOUT, ModelWeights

    spec, readout = model.spec, model.readout
    layout = model.layout
    shared = {} if layout is None else {
        RESIDUAL_LAYOUT: _json({"labels": layout.labels, "dims": layout.dims, "spans": layout.spans})}
    return {
        "raspc.vocab": _json(spec.token_ids),
        "raspc.bos": _json(spec.bos_id),
        "raspc.pad": _json(spec.pad_id),
        "raspc.output_values": _json(tuple(readout.values_tuple)),
        "raspc.output_encoding": _json(readout.encoding_enum.value),
        # one label per dimension of the `residual` output: with shared dimensions, who holds it at the end
        "raspc.residual_labels": _json(model.residual_labels if layout is None else layout.final_labels()),
        "raspc.max_seq_len": _json(spec.max_seq_len),
        "raspc.causal": _json(spec.causal),
        CIRCUIT_GRAPH: graph_json(ModelWeights.from_tensor_model(model)),
        **shared,
    }


def tensor_to_onnx(
    module: ModuleOp, *, expose_attention: bool = False, hooks: bool = False, name: str | None = None
) -> onnx.ModelProto:
    """Exports a tensor-level module as an ONNX model (opset 23, IR version 11).

    `name` names the graph; default: the tensor.model's `name`, else "raspc_model".
    With `expose_attention`, every head's softmax pattern is an extra output `attn.<label>`; with
    `hooks`, the intermediates are extra outputs named like TransformerLens's hooks (_emit_hooks).
    Raises IRError when the module is not a well-formed tensor-level model.
    """
    model = T.tensor_model(module)
    g = _GraphBuilder(model)
    for op in T.model_op(module).body.block.ops:
        EMITTERS[type(op)](g, op)
    outputs = _graph_outputs(g, expose_attention)
    if hooks:
        outputs += _emit_hooks(g)
    return assemble_model(g, outputs, name)


def assemble_model(g: _GraphBuilder, outputs: list[onnx.ValueInfoProto], name: str | None,
                   kind: str = "", metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """The ONNX model of a built graph: input `tokens`, the given outputs, opset and IR version,
    docs, and the metadata a deployer needs (plus `metadata`). `kind` qualifies the graph's doc."""
    model = g.model
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["batch", "seq"])]
    if name is None:
        name = model.name if model.name is not None else DEFAULT_NAME
    graph = helper.make_graph(
        g.nodes, name, inputs, outputs, g.initializers,
        doc_string=f"RASP program '{name}' compiled by raspc" + (f" ({kind})" if kind else ""),
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="raspc",
        doc_string=_model_doc(model, name),
    )
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(onnx_model, {**_metadata(model), **(metadata or {})})
    return onnx_model


@dataclass(frozen=True)
class ExportOnnxPass(ModulePass):
    """Writes the module's ONNX model to `output` (the IR itself is left unchanged)."""

    name = "export-onnx"

    output: str = "model.onnx"
    expose_attention: bool = False
    hooks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = tensor_to_onnx(op, expose_attention=self.expose_attention, hooks=self.hooks)
        with open(self.output, "wb") as f:
            f.write(model.SerializeToString())


__all__ = [
    "tensor_to_onnx", "ExportOnnxPass", "EMITTERS", "json_value", "OPSET", "IR_VERSION", "DEFAULT_NAME", "LOGITS",
    "CIRCUIT_GRAPH", "assemble_model",
]
