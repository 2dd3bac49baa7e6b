"""lower-craft-to-tensor: labelled craft blocks -> dense per-layer weights.

Needs `layer` on every block (allocate-layers) and `raspc.residual_labels` (layout-residual).
Each head's W_QK (query directions x key directions) is factored exactly, without SVD:
W_Q selects the smaller side's directions and W_K carries the table (or the other way
round), so the head size is min(#query directions, #key directions); W_OV likewise. Heads keep
their own size and their own scale. A layer's MLP blocks are concatenated into one MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import craft as C
from raspc.dialects import rasp as R
from raspc.dialects import tensor as T
from raspc.errors import IRError
from raspc.lowering.program_to_rasp import ssa_name


def _index_map(labels: list[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(labels)}


def factor_bilinear(
    weights: C.SparseMatrixAttr, index: dict[str, int], d_model: int
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with A @ B.T == W as a d_model x d_model matrix; inner size min(#rows, #cols)."""
    entries = weights.data
    rows = sorted({r for r, _, _ in entries}, key=index.__getitem__)
    cols = sorted({c for _, c, _ in entries}, key=index.__getitem__)
    if len(rows) <= len(cols):
        a = np.zeros((d_model, len(rows)), np.float32)
        b = np.zeros((d_model, len(rows)), np.float32)
        pos = {r: j for j, r in enumerate(rows)}
        a[[index[r] for r in rows], range(len(rows))] = 1.0
        for r, c, v in entries:
            b[index[c], pos[r]] += v
    else:
        a = np.zeros((d_model, len(cols)), np.float32)
        b = np.zeros((d_model, len(cols)), np.float32)
        pos = {c: j for j, c in enumerate(cols)}
        b[[index[c] for c in cols], range(len(cols))] = 1.0
        for r, c, v in entries:
            a[index[r], pos[c]] += v
    return a, b


def _embeddings(module: ModuleOp, index: dict[str, int], vocab: tuple, max_seq_len: int):
    d = len(index)
    tok = np.zeros((len(vocab) + 2, d), np.float32)  # + BOS + PAD
    pos = np.zeros((max_seq_len + 1, d), np.float32)
    bos_id, pad_id = len(vocab), len(vocab) + 1
    tok[:, index["one"]] = 1.0
    tok[bos_id, index["bos"]] = 1.0
    for op in module.ops:
        if isinstance(op, C.EmbedOp) and op.source.data == "tokens":
            t = op.res.type
            assert isinstance(t, C.CategoricalSpaceType)
            where = {v: i for i, v in enumerate(vocab)}
            for value, label in zip(t.values.data, t.labels):
                tok[where[value], index[label]] = 1.0
        elif isinstance(op, C.EmbedOp) and op.source.data == "indices":
            _positional(pos, op.res.type, list(range(max_seq_len)), index)
        elif isinstance(op, C.PositionalOp):
            _positional(pos, op.res.type, list(op.values.data), index)
    return tok, pos, bos_id, pad_id


def _positional(pos: np.ndarray, t, values: list, index: dict[str, int]) -> None:
    """Token position i sits at model position i + 1 (BOS is position 0 and gets nothing)."""
    if isinstance(t, C.CategoricalSpaceType):
        labels = dict(zip(t.values.data, t.labels))
        for i, v in enumerate(values[: pos.shape[0] - 1]):
            if v is not None:
                pos[i + 1, index[labels[v]]] = 1.0
    else:
        for i, v in enumerate(values[: pos.shape[0] - 1]):
            pos[i + 1, index[t.space.data]] = float(v)


@dataclass(frozen=True)
class LowerCraftToTensorPass(ModulePass):
    """Lowers labelled craft blocks to dense per-layer, per-head tensor weights."""

    name = "lower-craft-to-tensor"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if "raspc.residual_labels" not in op.attributes:
            raise IRError("lower-craft-to-tensor needs raspc.residual_labels: run layout-residual first")
        labels = [s.data for s in op.attributes["raspc.residual_labels"].data]  # type: ignore[union-attr]
        index = _index_map(labels)
        d = len(labels)
        vocab = op.attributes["raspc.vocab"].data  # type: ignore[union-attr]
        max_seq_len = op.attributes["raspc.max_seq_len"].value.data  # type: ignore[union-attr]
        bos = op.attributes["raspc.bos"].data  # type: ignore[union-attr]
        pad = op.attributes["raspc.pad"].data  # type: ignore[union-attr]

        blocks = [o for o in op.ops if isinstance(o, C.BLOCK_OPS)]
        if any(b.layer_index is None for b in blocks):
            raise IRError("lower-craft-to-tensor needs a layer on every block: run allocate-layers first")
        out_op = next((o for o in op.ops if isinstance(o, C.OutputOp)), None)
        if out_op is None:
            raise IRError("craft module has no craft.output")

        tok, pos, bos_id, pad_id = _embeddings(op, index, vocab, max_seq_len)
        new_ops: list[Operation] = []
        embed = T.EmbedOp(tok, pos)
        new_ops.append(embed)
        x: SSAValue = embed.results[0]
        x.name_hint = "resid0"
        n_layers = max((b.layer_index for b in blocks), default=-1) + 1
        for layer in range(n_layers):
            heads = [b for b in blocks if isinstance(b, C.AttentionHeadOp) and b.layer_index == layer]
            mlps = [b for b in blocks if isinstance(b, C.MlpOp) and b.layer_index == layer]
            if heads:
                outs = []
                for h in heads:
                    w_q, w_k = factor_bilinear(h.w_qk, index, d)
                    w_v, w_o_t = factor_bilinear(h.w_ov, index, d)
                    head = T.AttentionHeadOp(x, h.label.data, layer, w_q, w_k, w_v, w_o_t.T.copy(),
                                             h.scale.value.data)
                    head.results[0].name_hint = f"L{layer}_{_hint(h.label.data)}"
                    new_ops.append(head)
                    outs.append(head.results[0])
                add = T.AddOp([x, *outs])
                add.results[0].name_hint = f"resid{layer}_attn"
                new_ops.append(add)
                x = add.results[0]
            if mlps:
                mlp = self._mlp(mlps, x, layer, index, d)
                new_ops.append(mlp)
                add = T.AddOp([x, mlp.results[0]])
                add.results[0].name_hint = f"resid{layer}_mlp"
                new_ops.append(add)
                x = add.results[0]
        out_t = out_op.inp.type
        out_labels = out_t.labels  # type: ignore[union-attr]
        encoding = R.CATEGORICAL if isinstance(out_t, C.CategoricalSpaceType) else R.NUMERICAL
        out_values = op.attributes.get("raspc.output_values", R.ValuesAttr(()))
        new_ops.append(T.ReadoutOp(x, [index[lbl] for lbl in out_labels], encoding, out_values.data))

        for old in reversed(list(op.ops)):
            old.detach()
            old.drop_all_references()
        op.body.block.add_ops(new_ops)
        op.attributes["raspc.vocab"] = R.ValuesAttr((*vocab, bos, pad))
        op.attributes["raspc.bos_id"] = IntegerAttr(bos_id, i64)
        op.attributes["raspc.pad_id"] = IntegerAttr(pad_id, i64)

    @staticmethod
    def _mlp(mlps: list[C.MlpOp], x: SSAValue, layer: int, index: dict[str, int], d: int) -> Operation:
        hidden = [h for m in mlps for h in m.hidden_labels]
        hpos = _index_map(hidden)
        w_in = np.zeros((d, len(hidden)), np.float32)
        b_in = np.zeros((len(hidden),), np.float32)
        w_out = np.zeros((len(hidden), d), np.float32)
        for m in mlps:
            for r, c, v in m.w_in.data:
                w_in[index[r], hpos[c]] += v
            for h, v in m.b_in.data:
                b_in[hpos[h]] += v
            for r, c, v in m.w_out.data:
                w_out[hpos[r], index[c]] += v
        label = "+".join(m.label.data for m in mlps)
        op = T.MlpOp(x, label, layer, w_in, b_in, w_out, np.zeros((d,), np.float32))
        op.results[0].name_hint = f"L{layer}_mlp"
        return op


def _hint(label: str) -> str:
    return ssa_name(label)


