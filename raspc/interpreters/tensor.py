"""The tensor-level interpreter: xDSL interpreter functions, one per tensor op, on numpy float32.

It has exactly the exported ONNX graph's semantics: float32 throughout, the same additive mask
(MASK_VALUE on a PAD key, on a later key when causal, and on every key but BOS at the BOS query
otherwise), the same readout decoding. Use it as the reference to diff onnxruntime against.

A residual (and a head's or an MLP's contribution) is a float32 array [B, T, D]; `tensor.readout`
returns (output, residual) as the ONNX model's `output` and `residual`. What one run needs beyond
the operands is interpreter data (`Interpreter.get_data`) of `TensorFunctions`: the token ids, the
mask (computed on first use and shared by every head, as in the ONNX graph) and, when asked for,
a dict collecting each head's softmax pattern.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.interpreter import (
    Interpreter,
    InterpreterFunctions,
    PythonValues,
    ReturnedValues,
    TerminatorValue,
    impl,
    impl_terminator,
    register_impls,
)
from xdsl.ir import Operation
from xdsl.utils.exceptions import InterpretationError

from raspc.dialects import tensor as T
from raspc.dialects.common import InputSpec
from raspc.dialects.tensor import MASK_VALUE, NONE_THRESHOLD
from raspc.errors import InputError
from raspc.utils.values import UnsupportedValue, Value, ValueIndex, normalize

TOKEN_IDS = "token_ids"  # int64 [B, T]
MASK = "mask"  # float32 [B, T, T]
PATTERNS = "patterns"  # dict: head op -> its pattern [B, T, T]; absent when nobody asked


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
    """categorical: int64 [B, T] index into readout values, -1 where no dim reaches NONE_THRESHOLD;
    numerical: float32 [B, T]."""
    dims = readout.dims_list
    if readout.is_categorical:
        r = residual[:, :, dims]
        idx = r.argmax(axis=-1).astype(np.int64)
        return np.where(r.max(axis=-1) < NONE_THRESHOLD, np.int64(-1), idx).astype(np.int64)
    return residual[:, :, dims[0]].astype(np.float32)


# --------------------------------------------------------------------------- per-run data


def _missing_token_ids() -> np.ndarray:
    raise InterpretationError("the tensor interpreter needs token ids: run a module with run_tensor")


def _token_ids(interpreter: Interpreter) -> np.ndarray:
    return interpreter.get_data(TensorFunctions, TOKEN_IDS, _missing_token_ids)


def _spec(op: Operation) -> InputSpec:
    model = op.parent_op()
    if not isinstance(model, T.ModelOp):
        raise InterpretationError(f"{op.name} runs inside a tensor.model")
    return model.spec


def _mask(interpreter: Interpreter, head: T.AttentionHeadOp) -> np.ndarray:
    spec = _spec(head)
    return interpreter.get_data(
        TensorFunctions, MASK, lambda: attention_mask(_token_ids(interpreter), spec.pad_id, spec.causal)
    )


def _record_pattern(interpreter: Interpreter, head: T.AttentionHeadOp, pattern: np.ndarray) -> None:
    patterns = interpreter.get_data(TensorFunctions, PATTERNS, lambda: None)
    if patterns is not None:
        patterns[head] = pattern


# --------------------------------------------------------------------------- the ops


@register_impls
class TensorFunctions(InterpreterFunctions):
    """One implementation per tensor op, with the exported ONNX graph's float32 arithmetic."""

    @impl(T.EmbedOp)
    def run_embed(self, interpreter: Interpreter, op: T.EmbedOp, args: PythonValues) -> PythonValues:
        ids = _token_ids(interpreter)
        tok = T.dense_to_numpy(op.token_embedding)
        pos = T.dense_to_numpy(op.position_embedding)
        return ((tok[ids] + pos[: ids.shape[1]][None, :, :]).astype(np.float32),)

    @impl(T.AttentionHeadOp)
    def run_attention_head(
        self, interpreter: Interpreter, op: T.AttentionHeadOp, args: PythonValues
    ) -> PythonValues:
        (x,) = args
        q = x @ T.dense_to_numpy(op.w_q)
        k = x @ T.dense_to_numpy(op.w_k)
        scores = (q @ k.transpose(0, 2, 1)) * np.float32(op.scale_float) + _mask(interpreter, op)
        pattern = softmax(scores.astype(np.float32))
        _record_pattern(interpreter, op, pattern)
        z = pattern @ (x @ T.dense_to_numpy(op.w_v))
        return ((z @ T.dense_to_numpy(op.w_o)).astype(np.float32),)

    @impl(T.MlpOp)
    def run_mlp(self, interpreter: Interpreter, op: T.MlpOp, args: PythonValues) -> PythonValues:
        (x,) = args
        hidden = np.maximum(x @ T.dense_to_numpy(op.w_in) + T.dense_to_numpy(op.b_in), np.float32(0))
        return ((hidden @ T.dense_to_numpy(op.w_out) + T.dense_to_numpy(op.b_out)).astype(np.float32),)

    @impl(T.AddOp)
    def run_add(self, interpreter: Interpreter, op: T.AddOp, args: PythonValues) -> PythonValues:
        total = args[0]
        for contribution in args[1:]:  # left to right, as the exported Sum
            total = total + contribution
        return (total.astype(np.float32),)

    @impl_terminator(T.ReadoutOp)
    def run_readout(
        self, interpreter: Interpreter, op: T.ReadoutOp, args: PythonValues
    ) -> tuple[TerminatorValue, PythonValues]:
        (residual,) = args
        return ReturnedValues((decode_readout(residual, op), residual)), ()


# --------------------------------------------------------------------------- running a module


def _checked_token_ids(model: T.TensorModel, token_ids: Any) -> np.ndarray:
    ids = np.asarray(token_ids)
    if ids.ndim != 2:
        raise InputError(f"token ids must be a 2-D [batch, seq] array, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    n_ids = len(model.spec.token_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= n_ids):
        raise InputError(f"token ids must lie in [0, {n_ids}), got range [{ids.min()}, {ids.max()}]")
    n_pos = model.embed.num_positions
    if ids.shape[1] > n_pos:
        raise InputError(
            f"sequence of {ids.shape[1]} positions (BOS included) is longer than the {n_pos} the model has"
        )
    return ids


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
    return _run(module, model, _checked_token_ids(model, token_ids), patterns)


def _run(
    module: ModuleOp, model: T.TensorModel, ids: np.ndarray, patterns: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    interpreter = Interpreter(module)
    interpreter.register_implementations(TensorFunctions())
    interpreter.set_data(TensorFunctions, TOKEN_IDS, ids)
    head_patterns: dict[T.AttentionHeadOp, np.ndarray] = {}
    if patterns is not None:
        interpreter.set_data(TensorFunctions, PATTERNS, head_patterns)
    output, residual = interpreter.run_ssacfg_region(T.model_op(module).body, (), "tensor.model")
    if patterns is not None:
        for head, name in model.attention_names().items():
            patterns[name] = head_patterns[head]
    return output, residual


def encode_inputs(spec: InputSpec, inputs: Sequence[Sequence[Value]]) -> np.ndarray:
    """Token ids int64 [B, 1 + longest input]: BOS, the tokens, then PAD."""
    vocab = ValueIndex(spec.vocab)
    length = max((len(xs) for xs in inputs), default=0)
    if length > spec.max_seq_len:
        raise InputError(f"sequence of length {length} is longer than max_seq_len {spec.max_seq_len}")
    ids = np.full((len(inputs), length + 1), spec.pad_id, dtype=np.int64)
    ids[:, 0] = spec.bos_id
    for row, xs in enumerate(inputs):
        for position, token in enumerate(xs, start=1):
            ids[row, position] = _token_id(vocab, token)
    return ids


def _token_id(vocab: ValueIndex, token: Any) -> int:
    """The id of a token (a numpy scalar counts as the Python value it holds)."""
    try:
        token_id = vocab.get(normalize(token))
    except UnsupportedValue:
        token_id = -1
    if token_id < 0:
        raise InputError(f"unknown token {token!r}; the vocabulary is {list(vocab.values)}")
    return token_id


def run_tensor_batch(module: ModuleOp, inputs: Sequence[Sequence[Value]]) -> list[list[Value]]:
    """The decoded output per input (tokens without BOS; inputs of mixed lengths are padded with
    PAD), without the BOS position: categorical values (None where no value is read), or floats."""
    if not inputs:
        return []
    model = T.tensor_model(module)
    output, _ = _run(module, model, encode_inputs(model.spec, inputs), None)
    rows = [row[1 : len(xs) + 1] for row, xs in zip(output.tolist(), inputs)]
    if not model.readout.is_categorical:
        return [[float(x) for x in row] for row in rows]
    values = model.readout.values_tuple
    return [[values[i] if i >= 0 else None for i in row] for row in rows]


__all__ = [
    "TensorFunctions", "run_tensor", "run_tensor_batch", "encode_inputs", "attention_mask", "decode_readout",
    "softmax",
]
