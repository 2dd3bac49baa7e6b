"""lower-craft-to-tensor: labelled craft blocks -> a `tensor.model` with dense per-layer weights.

Needs `layer` on every block (allocate-layers) and the model's `residual` (layout-residual).
Each head's W_QK (query directions x key directions) is factored exactly, without SVD:
W_Q selects a class of identical query rows and W_K carries each class's row of the table (or
the other way round, with key columns), so the head size is the number of distinct rows or
columns, whichever is smaller (at most min(#query directions, #key directions)); W_OV likewise. Heads keep their
own size and their own scale. A layer's MLP blocks are concatenated into one MLP, with two hidden
units per direction of each MLP `craft.erase` in that layer; the layer's erasures by attention
become one more head, attending to its own position.

When the craft.model has `dims` (reuse-residual), each direction sits at its dimension and the
`tensor.model` records `dims` and each direction's lifetime (`spans`), so every dimension stays
named at every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, ModuleOp, StringAttr, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from raspc.constructions.attention import erasing_head_weights
from raspc.dialects import craft as C
from raspc.dialects import tensor as T
from raspc.dialects.common import CATEGORICAL, NUMERICAL, InputSpec
from raspc.errors import IRError
from raspc.passes.allocate_layers import craft_model
from raspc.utils.naming import ssa_name


def factor_bilinear(weights: C.SparseMatrixAttr, index: dict[str, int], d_model: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with A @ B.T == W as a d_model x d_model matrix, exactly: A selects a class of
    identical rows of W (all-zero rows in none) and B holds each class's row, or the same with
    columns, whichever has fewer classes. The inner size is that count: a select whose every
    query row is the same (TRUE, a constant comparison) needs one, not one per query value."""
    _, _, vals = weights.arrays
    if not vals.size:
        return np.zeros((d_model, 0), np.float32), np.zeros((d_model, 0), np.float32)
    r_res = np.array([index[x] for x in weights.row_labels], np.int64)
    c_res = np.array([index[x] for x in weights.col_labels], np.int64)
    w = weights.dense({x: i for i, x in enumerate(weights.row_labels)}, len(r_res),
                      {x: j for j, x in enumerate(weights.col_labels)}, len(c_res))
    # residual order, so classes are numbered the same way whatever order the labels came in
    r_order, c_order = np.argsort(r_res, kind="stable"), np.argsort(c_res, kind="stable")
    w, r_res, c_res = w[r_order][:, c_order], r_res[r_order], c_res[c_order]
    rows, cols = _classes(w), _classes(w.T)
    if len(rows[1]) <= len(cols[1]):
        return _select_and_carry(w, r_res, c_res, *rows, d_model)
    b, a = _select_and_carry(w.T, c_res, r_res, *cols, d_model)
    return a, b


def _select_and_carry(w: np.ndarray, r_res: np.ndarray, c_res: np.ndarray, row_class: np.ndarray,
                      row_first: np.ndarray, d_model: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with A @ B.T == w placed at rows r_res, columns c_res: A selects each row's class of
    identical rows (`_classes`), B holds each class's row."""
    a = np.zeros((d_model, len(row_first)), np.float32)
    live = row_class >= 0
    a[r_res[live], row_class[live]] = 1.0
    b = np.zeros((d_model, len(row_first)), np.float32)
    b[c_res, :] = w[row_first, :].T
    return a, b


def _classes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of m, its class of identical rows (-1 for an all-zero row), and each class's
    first row (classes numbered in order of first appearance)."""
    row_class = np.full(len(m), -1, np.int64)
    classes: dict[bytes, int] = {}
    firsts: list[int] = []
    for i in np.flatnonzero(np.any(m != 0, axis=1)):
        key = m[i].tobytes()
        if key not in classes:
            classes[key] = len(firsts)
            firsts.append(int(i))
        row_class[i] = classes[key]
    return row_class, np.array(firsts, np.int64)


def embeddings(model: C.ModelOp, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Token rows (vocab ids, then BOS, then PAD) and position rows (0 = BOS)."""
    spec = model.spec
    d = len(set(index.values()))
    tok = np.zeros((len(spec.vocab) + 2, d), np.float32)
    pos = np.zeros((spec.max_seq_len + 1, d), np.float32)
    tok[:, index["one"]] = 1.0
    tok[spec.bos_id, index["bos"]] = 1.0
    from raspc.utils.values import ValueIndex

    token_ids = ValueIndex(spec.vocab)
    for op in model.ops:
        if isinstance(op, C.EmbedOp) and op.source.data == "tokens":
            t = op.res.type
            assert isinstance(t, C.CategoricalSpaceType)
            for value, label in zip(t.values.data, t.labels):
                tok[token_ids[value], index[label]] = 1.0
        elif isinstance(op, C.EmbedOp) and op.source.data == "indices":
            _positional(pos, op.res.type, list(range(spec.max_seq_len)), index)
        elif isinstance(op, C.PositionalOp):
            _positional(pos, op.res.type, list(op.values.data), index)
    return tok, pos


def _positional(pos: np.ndarray, t: C.SpaceType, values: Sequence, index: dict[str, int]) -> None:
    """Token position i sits at model position i + 1 (BOS is position 0 and gets nothing)."""
    from raspc.utils.values import ValueIndex

    if isinstance(t, C.CategoricalSpaceType):
        labels = t.labels
        where = ValueIndex(t.values.data)
        for i, v in enumerate(values[: pos.shape[0] - 1]):
            if v is not None and v in where:
                pos[i + 1, index[labels[where[v]]]] = 1.0
    else:
        for i, v in enumerate(values[: pos.shape[0] - 1]):
            pos[i + 1, index[t.space.data]] = float(v)


def _mlp(mlps: list[C.MlpOp], erasures: list[C.EraseOp], x: SSAValue, layer: int, index: dict[str, int],
         d: int) -> Operation:
    """One tensor MLP for the layer's MLP blocks side by side, then its erasures: relu(x) and
    relu(-x) per erased dimension, written back as -relu(x) + relu(-x) = -x (exact)."""
    hidden = [h for m in mlps for h in m.hidden_labels]
    hpos = {h: i for i, h in enumerate(hidden)}
    erased = np.array([index[label] for e in erasures for label in C.space_labels(e.space)], np.int64)
    n = len(hidden)
    w_in = np.zeros((d, n + 2 * len(erased)), np.float32)
    b_in = np.zeros((n + 2 * len(erased),), np.float32)
    w_out = np.zeros((n + 2 * len(erased), d), np.float32)
    for m in mlps:
        m.w_in.add_into(w_in, index, hpos)
        for h, v in m.b_in.data:
            b_in[hpos[h]] += v
        m.w_out.add_into(w_out, hpos, index)
    units = n + 2 * np.arange(len(erased))
    w_in[erased, units], w_in[erased, units + 1] = 1.0, -1.0
    w_out[units, erased], w_out[units + 1, erased] = -1.0, 1.0
    # named for the blocks it computes; for what it erases only when that is all it does
    label = "+".join(m.label.data for m in mlps) or _erasing_label(erasures)
    op = T.MlpOp(x, label, layer, w_in, b_in, w_out, np.zeros((d,), np.float32))
    op.results[0].name_hint = f"L{layer}_mlp"
    return op


def _erasing_label(erasures: list[C.EraseOp]) -> str:
    return "erase_" + "_".join(e.space.type.space.data for e in erasures)


def _erasing_head(erasures: list[C.EraseOp]) -> list[tuple[str, C.SparseMatrixAttr, C.SparseMatrixAttr, float]]:
    """The layer's erasures by attention as one head attending to its own position (no erasure:
    no head)."""
    if not erasures:
        return []
    erased = [label for e in erasures for label in C.space_labels(e.space)]
    positions = [C.space_labels(v) for v in erasures[0].positions]
    w_qk, w_ov, scale = erasing_head_weights(erased, positions)
    return [(_erasing_label(erasures), C.SparseMatrixAttr.from_dict(w_qk), C.SparseMatrixAttr.from_dict(w_ov), scale)]


def _add(values: Sequence[SSAValue], hint: str) -> Operation:
    add = T.AddOp(list(values))
    add.results[0].name_hint = hint
    return add


@dataclass(frozen=True)
class LowerCraftToTensorPass(ModulePass):
    """Lowers labelled craft blocks to dense per-layer, per-head tensor weights."""

    name = "lower-craft-to-tensor"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = craft_model(op, self.name)
        labels = model.residual_labels
        if labels is None:
            raise IRError("lower-craft-to-tensor needs the residual layout: run layout-residual first")
        dims = model.residual_dims or list(range(len(labels)))
        index = dict(zip(labels, dims))
        d = len(set(dims))
        blocks = [o for o in model.ops if isinstance(o, C.BLOCK_OPS)]
        erasures = [o for o in model.ops if isinstance(o, C.EraseOp)]
        if any(b.layer_index is None for b in blocks):
            raise IRError("lower-craft-to-tensor needs a layer on every block: run allocate-layers first")
        out_op = model.body.block.last_op
        assert isinstance(out_op, C.OutputOp)

        tok, pos = embeddings(model, index)
        embed = T.EmbedOp(tok, pos)
        new_ops: list[Operation] = [embed]
        x: SSAValue = embed.results[0]
        x.name_hint = "resid0"
        n_layers = max((b.layer_index for b in blocks), default=-1) + 1
        for layer in range(n_layers):
            heads = [b for b in blocks if isinstance(b, C.AttentionHeadOp) and b.layer_index == layer]
            mlps = [b for b in blocks if isinstance(b, C.MlpOp) and b.layer_index == layer]
            erased = [e for e in erasures if e.layer_index == layer and not e.by_attention]
            erasing_head = _erasing_head([e for e in erasures if e.layer_index == layer and e.by_attention])
            if heads or erasing_head:
                outs = []
                for label, w_qk, w_ov, scale in [*((h.label.data, h.w_qk, h.w_ov, h.scale.value.data) for h in heads),
                                                 *erasing_head]:
                    w_q, w_k = factor_bilinear(w_qk, index, d)
                    w_v, w_o_t = factor_bilinear(w_ov, index, d)
                    head = T.AttentionHeadOp(x, label, layer, w_q, w_k, w_v, w_o_t.T.copy(), scale)
                    head.results[0].name_hint = f"L{layer}_{ssa_name(label)}"
                    new_ops.append(head)
                    outs.append(head.results[0])
                new_ops.append(add := _add([x, *outs], f"resid{layer}_attn"))
                x = add.results[0]
            if mlps or erased:
                mlp = _mlp(mlps, erased, x, layer, index, d)
                new_ops.append(mlp)
                new_ops.append(add := _add([x, mlp.results[0]], f"resid{layer}_mlp"))
                x = add.results[0]
        out_t = out_op.inp.type
        encoding = CATEGORICAL if isinstance(out_t, C.CategoricalSpaceType) else NUMERICAL
        new_ops.append(T.ReadoutOp(x, [index[lbl] for lbl in out_t.labels], encoding, out_op.output_values))

        props: dict = {"residual": ArrayAttr([StringAttr(s) for s in labels])}
        if model.residual_dims is not None:
            spans = C.residual_spans(model)
            props["dims"] = DenseArrayBase.from_list(i64, dims)
            props["spans"] = DenseArrayBase.from_list(i64, [x for label in labels for x in spans[label]])
        tensor_model = T.ModelOp.wrap(model.spec, new_ops, **props)
        parent = model.parent_block()
        assert parent is not None
        parent.insert_op_before(tensor_model, model)
        model.detach()
        model.erase()


__all__ = ["LowerCraftToTensorPass", "factor_bilinear", "embeddings"]
