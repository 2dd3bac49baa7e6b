"""The export pass: a tensor-dialect module -> an ONNX decoder graph (built with onnx.helper).

Graph contract (see ARCHITECTURE.md, "ONNX export"):
  input   `tokens`   int64 [batch, seq]: BOS id at position 0, PAD id after the end of shorter rows
  output  `output`   categorical: int64 [batch, seq], index into `raspc.output_values`, -1 = None;
                     numerical: float32 [batch, seq]
  output  `residual` float32 [batch, seq, D], the final residual stream
  outputs `attn.<label>` float32 [batch, seq, seq] per head, with `expose_attention=True`

Every head is written out "project then sum": q = x W_Q, k = x W_K, scores = (q k^T) * scale + mask,
pattern = softmax(scores), out = (pattern (x W_V)) W_O; the layer's residual is a Sum of the
residual and its blocks' outputs. Intermediates carry readable names (`L0.reverse.scores`,
`L0.reverse.pattern`, `L1.hist_mlp.hidden`, `L1.residual`), weights are initializers named after
their block (`L0.reverse.W_Q`, ...). The model metadata (`metadata_props`, JSON values) is all a
deployer needs to encode tokens and decode outputs (see raspc/runtime.py).

The numpy reference with the same semantics is raspc.interpreters.tensor.run_tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import tensor as T
from raspc.interpreters.tensor import MASK_VALUE, NONE_THRESHOLD

OPSET = 23
IR_VERSION = 11  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 accepts at most 13
PROGRAM_NAME_ATTR = "raspc.program"  # optional module StringAttr naming the program (graph name)

INPUT = "tokens"
OUTPUT = "output"
RESIDUAL = "residual"


def json_value(v: Any) -> Any:
    """A RASP value as JSON-encodable data: tuples become lists, None stays None (null)."""
    if isinstance(v, tuple):
        return [json_value(x) for x in v]
    return v


def _json(v: Any) -> str:
    return json.dumps(json_value(v), ensure_ascii=False, allow_nan=False)


class _GraphBuilder:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.used: set[str] = {INPUT, OUTPUT, RESIDUAL}

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}.{n}"
        self.used.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        # np.array(..., copy=True) keeps 0-d scalars 0-d (np.ascontiguousarray would make them [1])
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C", copy=True), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """Adds a node with one output named `output` (made unique); returns that name."""
        out = self.fresh(output)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def node_named(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """Adds a node whose output name is fixed (a graph output)."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def tensor_to_onnx(module: ModuleOp, *, expose_attention: bool = False, name: str | None = None) -> onnx.ModelProto:
    """Exports a tensor-level module as an ONNX model (opset 23, IR version 11).

    `name` names the graph; default: the module's `raspc.program` string attribute, else "raspc_model".
    With `expose_attention`, every head's softmax pattern is an extra output `attn.<label>`.
    Raises IRError when the module is not a well-formed tensor-level model.
    """
    model = T.tensor_model(module)
    attrs = model.attrs
    readout = model.readout
    d = model.d_model
    g = _GraphBuilder()

    # ---- embeddings: token rows + position rows (positions from the dynamic seq length)
    tok_emb = g.init("token_embedding", T.dense_to_numpy(model.embed.token_embedding))
    pos_emb = g.init("position_embedding", T.dense_to_numpy(model.embed.position_embedding))
    c_zero = g.init("const.zero_i64", np.array(0, dtype=np.int64))
    c_one = g.init("const.one_i64", np.array(1, dtype=np.int64))
    c_axes0 = g.init("const.axes_0", np.array([0], dtype=np.int64))
    seq_len_1d = g.node("Shape", [INPUT], "seq_len_1d", start=1, end=2)  # [1]
    seq_len = g.node("Squeeze", [seq_len_1d, c_axes0], "seq_len")  # scalar
    positions = g.node("Range", [c_zero, seq_len, c_one], "positions")  # [T]: 0..seq-1
    tok_part = g.node("Gather", [tok_emb, INPUT], "embed.tokens", axis=0)  # [B, T, D]
    pos_part = g.node("Gather", [pos_emb, positions], "embed.positions", axis=0)  # [T, D]
    names: dict[SSAValue, str] = {model.embed.res: g.node("Add", [tok_part, pos_part], "embed")}

    # ---- the additive attention mask, shared by every head
    heads = model.heads
    mask = ""
    if heads:
        c_pad = g.init("const.pad_id", np.array(attrs.pad_id, dtype=np.int64))
        c_neg = g.init("const.mask_value", np.array(MASK_VALUE, dtype=np.float32))
        c_fzero = g.init("const.zero_f32", np.array(0.0, dtype=np.float32))
        c_axis1 = g.init("const.axes_1", np.array([1], dtype=np.int64))
        is_pad = g.node("Equal", [INPUT, c_pad], "mask.key_is_pad")  # [B, T]
        masked = g.node("Unsqueeze", [is_pad, c_axis1], "mask.key_is_pad_b1t")  # [B, 1, T]
        q_pos = g.node("Unsqueeze", [positions, c_axis1], "mask.query_pos")  # [T, 1]
        k_pos = g.node("Unsqueeze", [positions, c_axes0], "mask.key_pos")  # [1, T]
        if attrs.causal:
            future = g.node("Greater", [k_pos, q_pos], "mask.future")  # [T, T]
            masked = g.node("Or", [masked, future], "mask.masked")  # [B, T, T]
        else:
            # BOS (query 0) attends only to itself, so position 0 computes the same constants
            # for every input (the compiler relies on it); causal masking implies it.
            q_is_bos = g.node("Equal", [q_pos, c_zero], "mask.query_is_bos")  # [T, 1]
            k_not_bos = g.node("Greater", [k_pos, c_zero], "mask.key_not_bos")  # [1, T]
            bos_row = g.node("And", [q_is_bos, k_not_bos], "mask.bos_row")  # [T, T]
            masked = g.node("Or", [masked, bos_row], "mask.masked")  # [B, T, T]
        mask = g.node("Where", [masked, c_neg, c_fzero], "mask")

    # ---- blocks
    prefixes = model.block_prefixes()
    attn_names = model.attention_names()
    patterns: list[tuple[str, str]] = []
    block_layer: dict[SSAValue, int] = {}
    for op in model.ops:
        if isinstance(op, T.AttentionHeadOp):
            p = prefixes[op]
            x = names[op.x]
            w_q = g.init(f"{p}.W_Q", T.dense_to_numpy(op.w_q))
            w_k = g.init(f"{p}.W_K", T.dense_to_numpy(op.w_k))
            w_v = g.init(f"{p}.W_V", T.dense_to_numpy(op.w_v))
            w_o = g.init(f"{p}.W_O", T.dense_to_numpy(op.w_o))
            scale = g.init(f"{p}.scale", np.array(op.scale_float, dtype=np.float32))
            q = g.node("MatMul", [x, w_q], f"{p}.q")
            k = g.node("MatMul", [x, w_k], f"{p}.k")
            k_t = g.node("Transpose", [k], f"{p}.k_T", perm=[0, 2, 1])
            qk = g.node("MatMul", [q, k_t], f"{p}.qk")
            scaled = g.node("Mul", [qk, scale], f"{p}.scaled")
            scores = g.node("Add", [scaled, mask], f"{p}.scores")
            pattern = g.node("Softmax", [scores], f"{p}.pattern", axis=-1)
            v = g.node("MatMul", [x, w_v], f"{p}.v")
            z = g.node("MatMul", [pattern, v], f"{p}.z")
            names[op.res] = g.node("MatMul", [z, w_o], f"{p}.out")
            block_layer[op.res] = op.layer_int
            patterns.append((attn_names[op], pattern))
        elif isinstance(op, T.MlpOp):
            p = prefixes[op]
            x = names[op.x]
            w_in = g.init(f"{p}.W_in", T.dense_to_numpy(op.w_in))
            b_in = g.init(f"{p}.b_in", T.dense_to_numpy(op.b_in))
            w_out = g.init(f"{p}.W_out", T.dense_to_numpy(op.w_out))
            b_out = g.init(f"{p}.b_out", T.dense_to_numpy(op.b_out))
            pre = g.node("Add", [g.node("MatMul", [x, w_in], f"{p}.x_W_in"), b_in], f"{p}.pre")
            hidden = g.node("Relu", [pre], f"{p}.hidden")
            out = g.node("MatMul", [hidden, w_out], f"{p}.hidden_W_out")
            names[op.res] = g.node("Add", [out, b_out], f"{p}.out")
            block_layer[op.res] = op.layer_int
        elif isinstance(op, T.AddOp):
            layers = [block_layer[v] for v in op.inputs if v in block_layer]
            base = f"L{max(layers)}.residual" if layers else "residual_sum"
            ins = [names[v] for v in op.inputs]
            names[op.res] = g.node("Sum" if len(ins) > 1 else "Identity", ins, base)

    # ---- outputs
    final = names[readout.x]
    g.node_named("Identity", [final], RESIDUAL)
    dims = readout.dims_list
    categorical = readout.encoding_str == T.CATEGORICAL
    if categorical:
        c_dims = g.init("readout.dims", np.array(dims, dtype=np.int64))
        c_thr = g.init("const.none_threshold", np.array(NONE_THRESHOLD, dtype=np.float32))
        c_none = g.init("const.minus_one_i64", np.array(-1, dtype=np.int64))
        r = g.node("Gather", [final, c_dims], "readout.values", axis=2)  # [B, T, K]
        idx = g.node("ArgMax", [r], "readout.argmax", axis=-1, keepdims=0)
        c_last = g.init("const.axes_m1", np.array([-1], dtype=np.int64))
        mx = g.node("ReduceMax", [r, c_last], "readout.max", keepdims=0)  # [B, T]
        is_none = g.node("Less", [mx, c_thr], "readout.is_none")
        g.node_named("Where", [is_none, c_none, idx], OUTPUT)
    else:
        c_dim = g.init("readout.dim", np.array(dims[0], dtype=np.int64))
        g.node_named("Gather", [final, c_dim], OUTPUT, axis=2)

    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["batch", "seq"])]
    outputs = [
        helper.make_tensor_value_info(
            OUTPUT, TensorProto.INT64 if categorical else TensorProto.FLOAT, ["batch", "seq"]
        ),
        helper.make_tensor_value_info(RESIDUAL, TensorProto.FLOAT, ["batch", "seq", d]),
    ]
    if expose_attention:
        for out_name, pattern in patterns:
            g.node_named("Identity", [pattern], out_name)
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", "seq", "seq"]))

    if name is None:
        prog = module.attributes.get(PROGRAM_NAME_ATTR)
        name = prog.data if isinstance(prog, StringAttr) else "raspc_model"
    n_layers = len({op.layer_int for op in model.ops if isinstance(op, T.BlockOp)})
    n_mlps = sum(isinstance(op, T.MlpOp) for op in model.ops)
    graph = helper.make_graph(
        g.nodes,
        name,
        inputs,
        outputs,
        g.initializers,
        doc_string=f"RASP program '{name}' compiled by raspc",
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="raspc",
        doc_string=(
            f"RASP program '{name}' compiled to a transformer by raspc: d_model {d}, {n_layers} layers, "
            f"{len(heads)} attention heads, {n_mlps} MLPs; input `tokens` int64 [batch, seq] "
            f"(BOS id {attrs.bos_id} first, PAD id {attrs.pad_id} after the end); outputs `output` and "
            f"`residual`; see metadata_props raspc.* for the vocabulary and output decoding."
        ),
    )
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(
        onnx_model,
        {
            "raspc.vocab": _json(tuple(attrs.vocab)),
            "raspc.bos": _json(attrs.bos_id),
            "raspc.pad": _json(attrs.pad_id),
            "raspc.output_values": _json(tuple(readout.values_tuple)),
            "raspc.output_encoding": _json(readout.encoding_str),
            "raspc.residual_labels": _json(tuple(attrs.residual_labels)),
            "raspc.max_seq_len": _json(attrs.max_seq_len),
            "raspc.causal": _json(attrs.causal),
        },
    )
    return onnx_model


@dataclass(frozen=True)
class ExportOnnxPass(ModulePass):
    """Writes the module's ONNX model to `output` (the IR itself is left unchanged)."""

    name = "export-onnx"

    output: str = "model.onnx"
    expose_attention: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = tensor_to_onnx(op, expose_attention=self.expose_attention)
        with open(self.output, "wb") as f:
            f.write(model.SerializeToString())


__all__ = ["tensor_to_onnx", "ExportOnnxPass", "json_value", "OPSET", "IR_VERSION", "PROGRAM_NAME_ATTR"]
