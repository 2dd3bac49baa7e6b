"""TransformerLens export: a compiled model as a TransformerLens model with identical activations.

    from raspc.export import transformer_lens as tl_export
    tl_model = tl_export.to_transformer_lens(model)          # or model.to_transformer_lens()
    logits, cache = tl_model.run_with_cache(tokens)          # tokens: int64 [batch, seq], raspc's ids
    cache["blocks.1.attn.hook_pattern"][:, tl_model.raspc.head("sort")[1]]

TransformerLens 4.x has no HookedTransformer: `to_transformer_lens` builds a `TransformerBridge`
around TransformerLens's own native model (`TransformerBridge.boot_native`); where TransformerLens
3.x is installed it builds a `HookedTransformer`. Both load the same state dict, in
TransformerLens's property format (`embed.W_E`, `blocks.0.attn.W_Q` [n_heads, d_model, d_head],
..., `unembed.W_U`), which `save` writes with the config and raspc's labels as JSON, so a user
can load it without raspc (README, "TransformerLens export").

The mapping (module `tl_weights`):
- heads padded with zeros to a common `d_head`, MLPs to a common `d_mlp`, every layer to the
  most heads any layer has (a layer without heads gets zero heads, which write nothing);
- the readout as an explicit `W_U`: one column per output value, a 1 at the residual dimension
  the readout reads (the output is anywhere in the residual, never assumed to come first);
- raspc's per-head softmax scale folded into `W_Q`: TransformerLens divides scores by
  `cfg.attn_scale`, so `W_Q = W_Q_raspc * scale_head * attn_scale`; attn_scale is pinned to 2.0,
  a power of two, so the division by it is exact, and the loaders check the scale the model
  really applies;
- masks: raspc's BOS attends only to itself and PAD keys are never read. TransformerLens takes
  a boolean mask [batch, 1, q, k] (True = masked) as `attention_mask` in 4.x; HookedTransformer
  (3.x) ignores `attention_mask` in bidirectional mode, so there the mask is applied by a
  permanent hook on every `blocks.{l}.attn.hook_attn_scores` (scores to -inf). Models built
  here apply the mask themselves (a forward pre-hook computes it from the tokens), so
  `model(tokens)` and `run_with_cache(tokens)` are exact with no extra argument.

Everything here needs the `tl` extra (torch, transformer-lens); nothing in the core imports it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from raspc.analysis.circuit_graph import circuit_graph, mlp_nodes
from raspc.analysis.weights import ModelWeights
from raspc.errors import InputError, RaspcError

ATTN_SCALE = 2.0  # a power of two: dividing by it is exact, folding it into W_Q too
FORMAT = "raspc-transformer-lens-1"


class ExtraMissingError(RaspcError):
    """An optional dependency (the `tl` extra) is not installed."""


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ExtraMissingError(
            "the TransformerLens export needs torch and transformer-lens: pip install 'raspc[tl]'") from e
    return torch


# --------------------------------------------------------------------------- labels


def _lookup(table: dict[str, Any], sops: dict[str, str], name: str, label_at: int, what: str, plural: str) -> Any:
    """`table[name]`, else the entry whose name's label (the part after its first `label_at` dots)
    or whose s-op is `name`; KeyError listing the names."""
    if name in table:
        return table[name]
    found = [n for n in table if n.split(".", label_at)[label_at] == name] or [n for n, s in sops.items() if s == name]
    if not found:
        raise KeyError(f"no {what} '{name}'; {plural}: {', '.join(table) or 'none'}")
    return table[found[0]]


@dataclass(frozen=True)
class RaspcLabels:
    """raspc's names for TransformerLens indices: heads, MLP blocks, residual dims, the readout."""

    residual_labels: tuple[str, ...]
    heads: dict[str, tuple[int, int]]  # `L1.sort` -> (layer, head index)
    head_sops: dict[str, str]  # `L1.sort` -> the s-op it computes
    mlps: dict[str, tuple[int, int, int]]  # `L0.mlp.hist` -> (layer, first neuron, stop neuron)
    mlp_sops: dict[str, str]
    vocab: tuple[Any, ...]
    bos_id: int
    pad_id: int
    causal: bool
    output_values: tuple[Any, ...]
    output_encoding: str

    def head(self, name: str) -> tuple[int, int]:
        """(layer, head index) of a head by name (`L1.sort`), label (`sort`) or s-op it computes."""
        return _lookup(self.heads, self.head_sops, name, 1, "head", "heads")

    def mlp(self, name: str) -> tuple[int, int, int]:
        """(layer, first neuron, stop neuron) of an MLP block by node name, label or s-op."""
        return _lookup(self.mlps, self.mlp_sops, name, 2, "MLP block", "blocks")

    def residual_index(self, label: str) -> int:
        try:
            return self.residual_labels.index(label)
        except ValueError:
            raise KeyError(f"no residual direction '{label}'") from None

    def token_ids(self, seq: list[Any]) -> list[int]:
        """Token ids of a sequence starting with the BOS token."""
        ids = {tok: i for i, tok in enumerate(self.vocab)}
        try:
            return [ids[_hashable(t)] for t in seq]
        except KeyError as e:
            raise InputError(f"token {e.args[0]!r} is not in the vocabulary {list(self.vocab)!r}") from None

    def decode(self, logits: Any) -> list[list[Any]]:
        """Decoded outputs per row from TransformerLens logits [batch, seq, d_vocab_out], Tracr's
        shape: the BOS token first (PAD positions decode like any other; strip them)."""
        arr = np.asarray(logits.detach().cpu().numpy() if hasattr(logits, "detach") else logits)
        bos = self.vocab[self.bos_id]
        if self.output_encoding == "numerical":
            return [[bos] + [float(x) for x in row[1:]] for row in arr[..., 0]]
        idx = arr.argmax(-1)
        none = arr.max(-1) < 0.5  # as the ONNX readout: no value direction active = None
        return [[bos] + [None if n else self.output_values[int(i)] for i, n in zip(r[1:], nr[1:])]
                for r, nr in zip(idx, none)]

    def to_json(self) -> dict[str, Any]:
        from raspc.lowering.tensor_to_onnx import json_value

        return {
            "residual_labels": list(self.residual_labels),
            "heads": {k: list(v) for k, v in self.heads.items()}, "head_sops": self.head_sops,
            "mlps": {k: list(v) for k, v in self.mlps.items()}, "mlp_sops": self.mlp_sops,
            "vocab": [json_value(v) for v in self.vocab], "bos_id": self.bos_id, "pad_id": self.pad_id,
            "causal": self.causal, "output_values": [json_value(v) for v in self.output_values],
            "output_encoding": self.output_encoding,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> "RaspcLabels":
        return RaspcLabels(
            tuple(data["residual_labels"]), {k: tuple(v) for k, v in data["heads"].items()}, data["head_sops"],
            {k: tuple(v) for k, v in data["mlps"].items()}, data["mlp_sops"],
            tuple(_hashable(v) for v in data["vocab"]), data["bos_id"], data["pad_id"], data["causal"],
            tuple(_hashable(v) for v in data["output_values"]), data["output_encoding"])


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def raspc_labels(weights: ModelWeights) -> RaspcLabels:
    heads: dict[str, tuple[int, int]] = {}
    for layer in range(weights.n_layers):
        for i, h in enumerate(weights.heads_in(layer)):
            heads[h.name] = (layer, i)
    graph = circuit_graph(weights)
    mlps = {node.name: (node.layer, *node.units) for node, _, _ in mlp_nodes(weights)}
    return RaspcLabels(
        weights.labels, heads, {n.name: n.sop for n in graph.nodes_of("head")}, mlps,
        {n.name: n.sop for n in graph.nodes_of("mlp")}, weights.vocab, weights.bos_id, weights.pad_id,
        weights.causal, weights.output_values, weights.output_encoding)


# --------------------------------------------------------------------------- weights and config


def tl_config(weights: ModelWeights) -> dict[str, Any]:
    """The TransformerLens config (fields both HookedTransformerConfig and TransformerBridgeConfig take)."""
    n_layers = max(weights.n_layers, 1)
    per_layer = [len(weights.heads_in(lyr)) for lyr in range(n_layers)]
    d_head = max([max(h.w_q.shape[1], h.w_v.shape[1]) for h in weights.heads] + [1])
    d_mlp = max([m.w_in.shape[1] for m in weights.mlps] + [1])
    return {
        "n_layers": n_layers, "d_model": weights.d_model, "n_ctx": weights.max_seq_len + 1,
        "d_head": d_head, "n_heads": max(per_layer + [1]), "d_mlp": d_mlp,
        "d_vocab": len(weights.vocab), "d_vocab_out": len(weights.readout_dims),
        "act_fn": "relu", "normalization_type": None, "positional_embedding_type": "standard",
        "attention_dir": "causal" if weights.causal else "bidirectional",
        "attn_only": False, "use_attn_scale": True, "attn_scale": ATTN_SCALE,
        "default_prepend_bos": False,
    }


def tl_weights(weights: ModelWeights, attn_scale: float = ATTN_SCALE) -> dict[str, np.ndarray]:
    """The state dict in TransformerLens's property format, float32 numpy arrays."""
    cfg = tl_config(weights)
    n_layers, d, n_heads, d_head, d_mlp = cfg["n_layers"], cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
    sd: dict[str, np.ndarray] = {
        "embed.W_E": weights.token_embedding.astype(np.float32),
        "pos_embed.W_pos": weights.position_embedding.astype(np.float32),
    }
    for layer in range(n_layers):
        w = {k: np.zeros(shape, np.float32) for k, shape in (
            ("W_Q", (n_heads, d, d_head)), ("W_K", (n_heads, d, d_head)), ("W_V", (n_heads, d, d_head)),
            ("W_O", (n_heads, d_head, d)))}
        for i, h in enumerate(weights.heads_in(layer)):
            # fold the head's own scale and TransformerLens's divisor into the query side
            w["W_Q"][i, :, : h.w_q.shape[1]] = h.w_q * np.float32(h.scale * attn_scale)
            w["W_K"][i, :, : h.w_k.shape[1]] = h.w_k
            w["W_V"][i, :, : h.w_v.shape[1]] = h.w_v
            w["W_O"][i, : h.w_o.shape[0], :] = h.w_o
        b = f"blocks.{layer}"
        for k, v in w.items():
            sd[f"{b}.attn.{k}"] = v
        for k in ("b_Q", "b_K", "b_V"):
            sd[f"{b}.attn.{k}"] = np.zeros((n_heads, d_head), np.float32)
        sd[f"{b}.attn.b_O"] = np.zeros((d,), np.float32)
        mlp = weights.mlp_in(layer)
        w_in, b_in = np.zeros((d, d_mlp), np.float32), np.zeros((d_mlp,), np.float32)
        w_out, b_out = np.zeros((d_mlp, d), np.float32), np.zeros((d,), np.float32)
        if mlp is not None:
            h = mlp.w_in.shape[1]
            w_in[:, :h], b_in[:h], w_out[:h], b_out[:] = mlp.w_in, mlp.b_in, mlp.w_out, mlp.b_out
        sd.update({f"{b}.mlp.W_in": w_in, f"{b}.mlp.b_in": b_in, f"{b}.mlp.W_out": w_out, f"{b}.mlp.b_out": b_out})
    w_u = np.zeros((d, len(weights.readout_dims)), np.float32)
    w_u[list(weights.readout_dims), np.arange(len(weights.readout_dims))] = 1.0
    sd["unembed.W_U"] = w_u
    sd["unembed.b_U"] = np.zeros((w_u.shape[1],), np.float32)
    return sd


def attention_mask(tokens: Any, pad_id: int, causal: bool) -> Any:
    """raspc's mask for TransformerLens: bool [batch, 1, q, k], True where a query must not read a
    key (PAD keys; every key but BOS for the BOS query; causal masking is TransformerLens's own)."""
    torch = _require_torch()
    tokens = torch.as_tensor(tokens)
    t = tokens.shape[1]
    masked = (tokens == pad_id)[:, None, None, :].expand(-1, 1, t, -1).clone()
    if not causal:
        masked[:, :, 0, 1:] = True
    return masked


# --------------------------------------------------------------------------- building models


def _weights_of(source: Any) -> ModelWeights:
    if isinstance(source, ModelWeights):
        return source
    if hasattr(source, "module"):  # a CompiledModel
        return ModelWeights.from_module(source.module)
    return ModelWeights.from_onnx(source)


def to_transformer_bridge(source: Any) -> Any:
    """A TransformerLens 4.x `TransformerBridge` (TransformerLens's native model) with raspc's weights."""
    torch = _require_torch()
    try:
        from transformer_lens import TransformerBridge
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
        import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    except ImportError as e:
        raise ExtraMissingError(f"TransformerLens 4.x (TransformerBridge) is not installed: {e}") from e
    weights = _weights_of(source)
    labels = raspc_labels(weights)
    cfg_dict = tl_config(weights)
    cfg = TransformerBridgeConfig(architecture="TransformerLensNative", init_weights=False, **cfg_dict)
    bridge = TransformerBridge.boot_native(cfg)
    native = bridge.original_model
    scales = {float(layer.attn.scale) for layer in native.layers}
    if scales != {ATTN_SCALE}:  # a TransformerLens that ignores attn_scale: fold what it applies
        raise ExtraMissingError(f"this TransformerLens divides attention scores by {sorted(scales)}, not by "
                                f"cfg.attn_scale={ATTN_SCALE}; the export cannot fold raspc's scales exactly")
    sd = {k: torch.from_numpy(v) for k, v in tl_weights(weights).items()}
    result = bridge.load_state_dict(convert_tl_checkpoint(sd, bridge.cfg), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    bridge.eval()

    def add_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("attention_mask") is None and ids is not None:
            kwargs["attention_mask"] = attention_mask(ids, labels.pad_id, labels.causal)
        return args, kwargs

    native.register_forward_pre_hook(add_mask, with_kwargs=True)
    bridge.raspc = labels
    return bridge


def to_hooked_transformer(source: Any) -> Any:
    """A TransformerLens 3.x `HookedTransformer` with raspc's weights and mask hooks."""
    torch = _require_torch()
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as e:
        raise ExtraMissingError(
            "HookedTransformer is not in this TransformerLens (it was removed in 4.0): "
            "use to_transformer_bridge") from e
    weights = _weights_of(source)
    labels = raspc_labels(weights)
    cfg = HookedTransformerConfig(**tl_config(weights), use_hook_tokens=True, seed=0)
    model = HookedTransformer(cfg)
    scales = {float(block.attn.attn_scale) for block in model.blocks}
    if scales != {ATTN_SCALE}:
        raise ExtraMissingError(f"this TransformerLens divides attention scores by {sorted(scales)}, not by "
                                f"cfg.attn_scale={ATTN_SCALE}; the export cannot fold raspc's scales exactly")
    sd = {k: torch.from_numpy(v) for k, v in tl_weights(weights).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    _add_mask_hooks(model, labels)
    model.raspc = labels
    return model


def _add_mask_hooks(model: Any, labels: RaspcLabels) -> None:
    """HookedTransformer ignores `attention_mask` in bidirectional mode: remember the tokens at
    `hook_tokens`, then set the masked scores to -inf at every `hook_attn_scores`."""
    state: dict[str, Any] = {}

    def keep_tokens(tokens: Any, hook: Any) -> Any:
        state["mask"] = attention_mask(tokens, labels.pad_id, labels.causal)
        return tokens

    def mask_scores(scores: Any, hook: Any) -> Any:
        return scores.masked_fill(state["mask"].to(scores.device), float("-inf"))

    model.add_hook("hook_tokens", keep_tokens, is_permanent=True)
    for layer in range(model.cfg.n_layers):
        model.add_hook(f"blocks.{layer}.attn.hook_attn_scores", mask_scores, is_permanent=True)


def to_transformer_lens(source: Any) -> Any:
    """A TransformerLens model of `source` (a CompiledModel, an ONNX path or ModelWeights): a
    `TransformerBridge` with TransformerLens 4.x, a `HookedTransformer` with 3.x."""
    _require_torch()
    try:
        import transformer_lens
    except ImportError as e:
        raise ExtraMissingError(
            "the TransformerLens export needs transformer-lens: pip install 'raspc[tl]'") from e
    if hasattr(transformer_lens, "TransformerBridge"):
        return to_transformer_bridge(source)
    return to_hooked_transformer(source)


# --------------------------------------------------------------------------- files


def save(source: Any, path: str | os.PathLike[str]) -> tuple[str, str]:
    """Writes the state dict (`torch.save`, TransformerLens property format) to `path` and the
    config with raspc's labels to `path` with `.json`; returns both paths."""
    torch = _require_torch()
    weights = _weights_of(source)
    path = os.fspath(path)
    config_path = os.path.splitext(path)[0] + ".json"
    sd = {k: torch.from_numpy(v) for k, v in tl_weights(weights).items()}
    doc = {"format": FORMAT, "config": tl_config(weights), "raspc": raspc_labels(weights).to_json()}
    try:
        torch.save(sd, path)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
    except OSError as e:
        raise InputError(f"cannot write '{e.filename}': {e.strerror}") from None
    return path, config_path


__all__ = [
    "to_transformer_lens", "to_transformer_bridge", "to_hooked_transformer", "tl_weights", "tl_config",
    "attention_mask", "raspc_labels", "RaspcLabels", "save", "ExtraMissingError", "ATTN_SCALE", "FORMAT",
]
