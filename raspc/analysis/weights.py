"""A compiled model's weights as plain numpy arrays, from a tensor-level module or an ONNX file alone.

The circuit graph, the composition scores, Tracr's `params` and the TransformerLens export all
read the same things: the residual labels, the embeddings, every head's `W_Q W_K W_V W_O` and
softmax scale, every layer's MLP, and the readout. `ModelWeights` holds them in block order with
the names the ONNX export gives them (`L1.sort` for a head, `L0.hist` for a layer's MLP), so an
analysis written once works on `CompiledModel.module` and on a `.onnx` file.

A model compiled with reuse-residual (directions sharing residual dimensions over time) is read
in its *labelled* basis: one dimension per direction, each block's weights on the directions alive
when it runs (`expand_layout`); that model computes what the compiled one does, dimension for
direction, so every analysis reads labels as usual.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from raspc.errors import InputError


def nonzero_rows(*matrices: np.ndarray) -> np.ndarray:
    """The rows (residual dims, for a matrix that reads the residual) where any matrix is non-zero."""
    return np.flatnonzero(np.any(np.concatenate(matrices, axis=1) != 0, axis=1))


def nonzero_cols(*matrices: np.ndarray) -> np.ndarray:
    """The columns (residual dims, for a matrix that writes it) where any matrix is non-zero."""
    return np.flatnonzero(np.any(np.concatenate(matrices, axis=0) != 0, axis=0))


@dataclass(frozen=True)
class HeadWeights:
    """One attention head: softmax((x W_Q)(x W_K)^T * scale + mask) (x W_V) W_O."""

    layer: int
    label: str
    name: str  # `L{layer}.{label}`, unique in the model
    w_q: np.ndarray  # [d_model, d_qk]
    w_k: np.ndarray  # [d_model, d_qk]
    w_v: np.ndarray  # [d_model, d_ov]
    w_o: np.ndarray  # [d_ov, d_model]
    scale: float

    @property
    def qk(self) -> np.ndarray:
        """d x d: score(query x, key y) = x @ qk @ y."""
        return np.float32(self.scale) * self.w_q @ self.w_k.T

    @property
    def ov(self) -> np.ndarray:
        """d x d: a key residual y contributes y @ ov to the output."""
        return self.w_v @ self.w_o


@dataclass(frozen=True)
class MlpWeights:
    """One layer's MLP: relu(x W_in + b_in) W_out + b_out (the layer's MLP blocks side by side;
    `label` joins their labels with `+`)."""

    layer: int
    label: str
    name: str
    w_in: np.ndarray  # [d_model, hidden]
    b_in: np.ndarray  # [hidden]
    w_out: np.ndarray  # [hidden, d_model]
    b_out: np.ndarray  # [d_model]


@dataclass(frozen=True)
class ModelWeights:
    """Everything a weight-level analysis needs, in block order."""

    labels: tuple[str, ...]  # one per residual dimension
    token_embedding: np.ndarray  # [len(vocab), d_model]: token ids are vocab, BOS, PAD
    position_embedding: np.ndarray  # [max_seq_len + 1, d_model]: position 0 is BOS
    heads: tuple[HeadWeights, ...]
    mlps: tuple[MlpWeights, ...]
    readout_dims: tuple[int, ...]
    output_encoding: str  # "categorical" | "numerical"
    output_values: tuple[Any, ...]
    vocab: tuple[Any, ...]  # every token id's token, BOS and PAD included
    bos_id: int
    pad_id: int
    max_seq_len: int
    causal: bool

    @property
    def d_model(self) -> int:
        return len(self.labels)

    @property
    def n_layers(self) -> int:
        layers = [h.layer for h in self.heads] + [m.layer for m in self.mlps]
        return max(layers, default=-1) + 1

    def heads_in(self, layer: int) -> tuple[HeadWeights, ...]:
        return tuple(h for h in self.heads if h.layer == layer)

    def mlp_in(self, layer: int) -> MlpWeights | None:
        return next((m for m in self.mlps if m.layer == layer), None)

    def head(self, name: str) -> HeadWeights:
        """A head by its name (`L1.sort`) or label (`sort`)."""
        for h in self.heads:
            if name in (h.name, h.label):
                return h
        raise KeyError(f"no head '{name}'; heads: {', '.join(h.name for h in self.heads) or 'none'}")

    # -- constructors ----------------------------------------------------------------------

    @staticmethod
    def from_module(module: Any) -> "ModelWeights":
        """From a tensor-level module (`CompiledModel.module`)."""
        from raspc.dialects import tensor as T

        return ModelWeights.from_tensor_model(T.tensor_model(module))

    @staticmethod
    def from_tensor_model(model: Any, erasures: bool = True) -> "ModelWeights":
        """From a verified `raspc.dialects.tensor.TensorModel` view (a model whose directions share
        dimensions in its labelled basis: `expand_layout`, with or without its `erasures`)."""
        from raspc.dialects import tensor as T

        prefixes = model.block_prefixes()
        heads, mlps = [], []
        for op in model.ops:
            if isinstance(op, T.AttentionHeadOp):
                heads.append(HeadWeights(
                    op.layer_int, op.label_str, prefixes[op], T.dense_to_numpy(op.w_q), T.dense_to_numpy(op.w_k),
                    T.dense_to_numpy(op.w_v), T.dense_to_numpy(op.w_o), op.scale_float))
            elif isinstance(op, T.MlpOp):
                mlps.append(MlpWeights(
                    op.layer_int, op.label_str, prefixes[op], T.dense_to_numpy(op.w_in), T.dense_to_numpy(op.b_in),
                    T.dense_to_numpy(op.w_out), T.dense_to_numpy(op.b_out)))
        spec, readout = model.spec, model.readout
        weights = ModelWeights(
            labels=model.residual_labels,
            token_embedding=T.dense_to_numpy(model.embed.token_embedding),
            position_embedding=T.dense_to_numpy(model.embed.position_embedding),
            heads=tuple(heads), mlps=tuple(mlps),
            readout_dims=tuple(readout.dims_list),
            output_encoding=readout.encoding_enum.value,
            output_values=tuple(readout.values_tuple),
            vocab=tuple(spec.token_ids), bos_id=spec.bos_id, pad_id=spec.pad_id,
            max_seq_len=spec.max_seq_len, causal=spec.causal,
        )
        return weights if model.layout is None else expand_layout(weights, model.layout, erasures)

    @staticmethod
    def from_onnx(path_or_model: Any) -> "ModelWeights":
        """From an exported file alone: the initializers the export names (`L1.sort.W_Q`, ...,
        `token_embedding`, `readout.dims`) and the `raspc.*` metadata. InputError if it is not one."""
        import onnx
        from onnx import numpy_helper

        if isinstance(path_or_model, onnx.ModelProto):
            model = path_or_model
        else:
            if not os.path.isfile(os.fspath(path_or_model)):
                raise InputError(f"model file '{os.fspath(path_or_model)}' does not exist")
            try:
                model = onnx.load(os.fspath(path_or_model))
            except Exception as e:  # onnx raises DecodeError and friends
                raise InputError(f"cannot read ONNX model '{os.fspath(path_or_model)}': {e}") from e
        try:
            meta = {p.key: json.loads(p.value) for p in model.metadata_props if p.key.startswith("raspc.")}
            inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            return _from_parts(meta, inits)
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"not a raspc model: missing or malformed weights or metadata ({e})") from e


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def _split_prefix(prefix: str) -> tuple[int, str]:
    layer, _, label = prefix.partition(".")
    if not layer.startswith("L") or not layer[1:].isdigit():
        raise ValueError(f"block name '{prefix}' is not L<layer>.<label>")
    return int(layer[1:]), label


def _from_parts(meta: dict[str, Any], inits: dict[str, np.ndarray]) -> ModelWeights:
    heads, mlps = [], []
    seen: set[str] = set()

    def split(prefix: str) -> tuple[int, str]:
        # a block whose `L{layer}.{label}` was taken gets `.2`, `.3`... (FreshNames): not its label
        base, dot, count = prefix.rpartition(".")
        layer, label = _split_prefix(base if dot and count.isdigit() and base in seen else prefix)
        seen.add(prefix)
        return layer, label

    for name in inits:
        if name.endswith(".W_Q"):
            p = name[: -len(".W_Q")]
            layer, label = split(p)
            heads.append(HeadWeights(layer, label, p, inits[f"{p}.W_Q"], inits[f"{p}.W_K"], inits[f"{p}.W_V"],
                                     inits[f"{p}.W_O"], float(inits[f"{p}.scale"])))
        elif name.endswith(".W_in"):
            p = name[: -len(".W_in")]
            layer, label = split(p)
            mlps.append(MlpWeights(layer, label, p, inits[f"{p}.W_in"], inits[f"{p}.b_in"], inits[f"{p}.W_out"],
                                   inits[f"{p}.b_out"]))
    # initializers are in block order already; sort by layer only (stable) to be safe
    heads.sort(key=lambda h: h.layer)
    mlps.sort(key=lambda m: m.layer)
    dims = inits["readout.dims"] if "readout.dims" in inits else np.atleast_1d(inits["readout.dim"])
    weights = ModelWeights(
        labels=tuple(meta["raspc.residual_labels"]),
        token_embedding=inits["token_embedding"],
        position_embedding=inits["position_embedding"],
        heads=tuple(heads), mlps=tuple(mlps),
        readout_dims=tuple(int(d) for d in dims),
        output_encoding=str(meta["raspc.output_encoding"]),
        output_values=tuple(_tuplify(v) for v in meta["raspc.output_values"]),
        vocab=tuple(_tuplify(v) for v in meta["raspc.vocab"]),
        bos_id=int(meta["raspc.bos"]), pad_id=int(meta["raspc.pad"]),
        max_seq_len=int(meta["raspc.max_seq_len"]), causal=bool(meta["raspc.causal"]),
    )
    if RESIDUAL_LAYOUT not in meta:
        return weights
    from raspc.dialects.tensor import ResidualLayout

    layout = meta[RESIDUAL_LAYOUT]
    return expand_layout(weights, ResidualLayout(tuple(layout["labels"]), tuple(layout["dims"]),
                                                 tuple(tuple(s) for s in layout["spans"])))


RESIDUAL_LAYOUT = "raspc.residual_layout"  # metadata of a model whose directions share dimensions


def expand_layout(weights: ModelWeights, layout: Any, erasures: bool = True) -> ModelWeights:
    """The model in its labelled basis (a `ResidualLayout`'s directions, one dimension each): every
    block reads the directions alive in its sublayer slot and writes those it writes or erases
    there, from the dimensions that hold them then. Without `erasures`, what only erases is left
    out (in the labelled basis nothing reads an erased direction again): erasing heads, erasing
    MLP units, and the directions only they read (the positions an erasing head keys on); that
    is the model compiled without reuse-residual."""
    dims = np.asarray(layout.dims, np.int64)
    slot_of = {id(h): 2 * h.layer for h in weights.heads} | {id(m): 2 * m.layer + 1 for m in weights.mlps}
    writes = {s: [i for i in layout.written_at(s) if erasures or layout.spans[i][0] == s] for s in set(slot_of.values())}
    reads = {s: layout.readable_at(s) for s in set(slot_of.values())}
    n = len(layout.labels)

    def rows(w: np.ndarray, live: list[int]) -> np.ndarray:
        out = np.zeros((n, w.shape[1]), w.dtype)
        out[live] = w[dims[live]]
        return out

    def cols(w: np.ndarray, live: list[int]) -> np.ndarray:
        out = np.zeros((*w.shape[:-1], n), w.dtype)
        out[..., live] = w[..., dims[live]]
        return out

    heads, dropped_reads = [], []
    for h in weights.heads:
        r, w = reads[slot_of[id(h)]], writes[slot_of[id(h)]]
        head = replace(h, w_q=rows(h.w_q, r), w_k=rows(h.w_k, r), w_v=rows(h.w_v, r), w_o=cols(h.w_o, w))
        if erasures or np.any(head.w_o):
            heads.append(head)
        else:
            dropped_reads.append(nonzero_rows(head.w_q, head.w_k, head.w_v))
    mlps = []
    for m in weights.mlps:
        r, w = reads[slot_of[id(m)]], writes[slot_of[id(m)]]
        w_out = cols(m.w_out, w)
        units = np.ones(len(m.b_in), bool) if erasures else np.any(w_out != 0, axis=1)
        if erasures or units.any():
            mlps.append(replace(m, w_in=rows(m.w_in, r)[:, units], b_in=m.b_in[units], w_out=w_out[units],
                                b_out=cols(m.b_out, w)))
    index, holders = {label: i for i, label in enumerate(layout.labels)}, layout.final_labels()
    expanded = replace(
        weights, labels=tuple(layout.labels),
        token_embedding=cols(weights.token_embedding, layout.written_at(-1)),
        position_embedding=cols(weights.position_embedding, layout.written_at(-1)),
        heads=tuple(heads), mlps=tuple(mlps),
        readout_dims=tuple(index[holders[d]] for d in weights.readout_dims),
    )
    if not dropped_reads:
        return expanded
    # the directions only erasing heads read (the positions they key on): nothing reads them now
    still_read = set(nonzero_rows(*(x for h in heads for x in (h.w_q, h.w_k, h.w_v)), *(m.w_in for m in mlps))
                     if heads or mlps else [])
    unread = set(np.concatenate(dropped_reads).tolist()) - still_read - set(expanded.readout_dims)
    return _drop_directions(expanded, sorted(unread)) if unread else expanded


def _drop_directions(weights: ModelWeights, drop: list[int]) -> ModelWeights:
    keep = np.setdiff1d(np.arange(len(weights.labels)), drop)
    new = {int(i): j for j, i in enumerate(keep)}
    return replace(
        weights, labels=tuple(weights.labels[i] for i in keep),
        token_embedding=weights.token_embedding[:, keep], position_embedding=weights.position_embedding[:, keep],
        heads=tuple(replace(h, w_q=h.w_q[keep], w_k=h.w_k[keep], w_v=h.w_v[keep], w_o=h.w_o[:, keep])
                    for h in weights.heads),
        mlps=tuple(replace(m, w_in=m.w_in[keep], w_out=m.w_out[:, keep], b_out=m.b_out[keep]) for m in weights.mlps),
        readout_dims=tuple(new[d] for d in weights.readout_dims),
    )


__all__ = ["ModelWeights", "HeadWeights", "MlpWeights", "nonzero_rows", "nonzero_cols", "expand_layout",
           "RESIDUAL_LAYOUT"]
