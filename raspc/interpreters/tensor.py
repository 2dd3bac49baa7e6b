"""A numpy interpreter for tensor-dialect modules, with exactly the exported ONNX model's semantics.

float32 throughout; the same masking as the ONNX graph (a PAD key, and in causal mode a later key,
gets MASK_VALUE added to its score before the softmax); the same readout decoding. Use it as the
reference to diff onnxruntime against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from raspc.dialects import tensor as T
from raspc.errors import InputError, IRError

MASK_VALUE = np.float32(-1e9)
"""Added to a masked score. Finite, so a fully masked row gives a uniform pattern, never NaN."""

NONE_THRESHOLD = np.float32(0.5)
"""A categorical output is None (-1) where the largest readout dim is below this."""


def attention_mask(token_ids: np.ndarray, pad_id: int, causal: bool) -> np.ndarray:
    """The additive mask, float32 [B, T, T]: PAD keys, future keys when causal, and BOS sees only itself."""
    masked = (token_ids == pad_id)[:, None, :]
    t = token_ids.shape[1]
    pos = np.arange(t, dtype=np.int64)
    if causal:
        masked = masked | (pos[None, :] > pos[:, None])[None, :, :]
    else:  # BOS (query 0) attends only to itself
        masked = masked | ((pos[:, None] == 0) & (pos[None, :] > 0))[None, :, :]
    return np.where(masked, MASK_VALUE, np.float32(0.0)).astype(np.float32)


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def decode_readout(residual: np.ndarray, readout: T.ReadoutOp) -> np.ndarray:
    """categorical: int64 [B, T] index into readout values, -1 where no dim reaches 0.5;
    numerical: float32 [B, T]."""
    dims = readout.dims_list
    if readout.encoding_str == T.CATEGORICAL:
        r = residual[:, :, dims]
        idx = r.argmax(axis=-1).astype(np.int64)
        return np.where(r.max(axis=-1) < NONE_THRESHOLD, np.int64(-1), idx).astype(np.int64)
    return residual[:, :, dims[0]].astype(np.float32)


def run_tensor(
    module: ModuleOp,
    token_ids: Any,
    *,
    patterns: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs a tensor-level module on token ids int64 [B, T] (BOS at position 0, PAD on the right).

    Returns (output, residual) exactly as the exported ONNX model's `output` and `residual`.
    If `patterns` is a dict, each head's softmax pattern [B, T, T] is stored in it under the
    name the exporter gives its `expose_attention` output (`attn.<label>`).
    """
    model = T.tensor_model(module)
    ids = np.asarray(token_ids)
    if ids.ndim != 2:
        raise InputError(f"token ids must be a 2-D [batch, seq] array, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    n_vocab = len(model.attrs.vocab)
    if ids.size and (ids.min() < 0 or ids.max() >= n_vocab):
        raise InputError(f"token ids must lie in [0, {n_vocab}), got range [{ids.min()}, {ids.max()}]")
    n_pos = model.embed.position_embedding.get_shape()[0]
    if ids.shape[1] > n_pos:
        raise InputError(f"sequence of {ids.shape[1]} positions (BOS included) is longer than the {n_pos} the model has")

    mask = attention_mask(ids, model.attrs.pad_id, model.attrs.causal)
    attn_names = model.attention_names()
    env: dict[SSAValue, np.ndarray] = {}

    tok = T.dense_to_numpy(model.embed.token_embedding)
    pos = T.dense_to_numpy(model.embed.position_embedding)
    env[model.embed.res] = (tok[ids] + pos[np.arange(ids.shape[1])][None, :, :]).astype(np.float32)

    def get(v: SSAValue) -> np.ndarray:
        if v not in env:
            raise IRError("tensor op uses a value defined after it")
        return env[v]

    for op in model.ops:
        if isinstance(op, T.AttentionHeadOp):
            x = get(op.x)
            q = x @ T.dense_to_numpy(op.w_q)
            k = x @ T.dense_to_numpy(op.w_k)
            scores = (q @ k.transpose(0, 2, 1)) * np.float32(op.scale_float) + mask
            pattern = softmax(scores.astype(np.float32))
            if patterns is not None:
                patterns[attn_names[op]] = pattern
            z = pattern @ (x @ T.dense_to_numpy(op.w_v))
            env[op.res] = (z @ T.dense_to_numpy(op.w_o)).astype(np.float32)
        elif isinstance(op, T.MlpOp):
            x = get(op.x)
            h = np.maximum(x @ T.dense_to_numpy(op.w_in) + T.dense_to_numpy(op.b_in), np.float32(0))
            env[op.res] = (h @ T.dense_to_numpy(op.w_out) + T.dense_to_numpy(op.b_out)).astype(np.float32)
        elif isinstance(op, T.AddOp):
            vals = [get(v) for v in op.inputs]
            acc = vals[0]
            for v in vals[1:]:
                acc = acc + v
            env[op.res] = acc.astype(np.float32)
        else:  # pragma: no cover - tensor_model admits nothing else
            raise IRError(f"unexpected op '{op.name}'")

    residual = get(model.readout.x)
    return decode_readout(residual, model.readout), residual


__all__ = ["run_tensor", "attention_mask", "decode_readout", "softmax", "MASK_VALUE", "NONE_THRESHOLD"]
