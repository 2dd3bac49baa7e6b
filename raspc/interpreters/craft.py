"""The craft-level interpreter: xDSL interpreter functions, one per craft op, on numpy arrays.

It runs a `craft.model` on token ids exactly as the compiled transformer does, one residual
*space* at a time: every SSA value is a float32 array [B, T, dim] holding that space's directions
(in its type's label order), and equals the transformer's residual restricted to those
directions up to float rounding. Spaces are written once each, so no residual bookkeeping is
needed.

Inputs are token ids int64 [B, T] (the model's ids: vocabulary, then BOS, then PAD): BOS at
position 0, token i of an input at position i + 1, shorter rows padded on the right with PAD.

- `craft.embed`: `one` is 1 everywhere (BOS and PAD included), `bos` is 1 at position 0 only,
  `tokens` is the one-hot of the token (0 at BOS and PAD), `indices` holds index i at position
  i + 1 (0 at BOS; PAD positions get their index too, it is a position embedding).
- `craft.positional`: `values[i]` at position i + 1 (0 at BOS).
- `craft.mlp`: relu(x W_in + b_in) W_out.
- `craft.attention_head`: softmax(scale * x_q W_qk x_k^T + mask) x_v W_ov, where the mask adds
  `MASK_VALUE` at PAD keys, at later keys (causal), and at every key but position 0 for the BOS
  query (not causal).
- `craft.erase`: nothing here (a space is its own value; erasing matters only where spaces share
  residual dimensions, which the tensor interpreter runs).
- `craft.output`: the tensor readout's decoding: categorical the argmax direction (-1 where the
  largest is below `NONE_THRESHOLD`), numerical the one direction's value.

Sparse labelled weights become dense matrices once per op (rebuilt only when the op's weights or
types change); everything else is vectorised over batch and positions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

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
from xdsl.ir import Operation, SSAValue

from raspc.dialects import craft as C
from raspc.dialects.common import InputSpec, container_of
from raspc.dialects.tensor import MASK_VALUE, NONE_THRESHOLD
from raspc.errors import InputError, IRError
from raspc.utils.values import UnsupportedValue, Value, ValueIndex, format_value, normalize

NO_VALUE = -1
"""A decoded categorical output that is None (no direction reaches NONE_THRESHOLD)."""

# --------------------------------------------------------------------------- per-run state


@dataclass
class CraftRun:
    """The input of one run: token ids, the attention mask they imply, and where to record patterns."""

    spec: InputSpec
    ids: np.ndarray
    """int64 [B, T]: BOS at position 0, PAD on the right."""
    mask: np.ndarray
    """float32 [B, T, T]: added to every head's scores."""
    patterns: dict[str, np.ndarray] | None = None
    """When a dict, each head's softmax pattern [B, T, T] is stored in it under the head's label."""

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        return self.ids.shape[1]


def _no_run() -> CraftRun:
    raise IRError("the craft interpreter runs a model through CraftInterpreter, which sets up the input")


def current_run(interpreter: Interpreter) -> CraftRun:
    """The run the interpreter is executing (set up by `CraftInterpreter`)."""
    return interpreter.get_data(CraftFunctions, "run", _no_run)


def attention_mask(ids: np.ndarray, pad_id: int, causal: bool) -> np.ndarray:
    """The additive mask, float32 [B, T, T]: PAD keys, later keys when causal, and (not causal)
    every key but position 0 for the BOS query."""
    positions = np.arange(int(ids.shape[1]), dtype=np.int64)
    if causal:
        hidden_keys = positions[None, :] > positions[:, None]
    else:
        hidden_keys = (positions[:, None] == 0) & (positions[None, :] > 0)
    masked = np.equal(ids, pad_id)[:, None, :] | hidden_keys[None, :, :]
    return np.where(masked, MASK_VALUE, np.float32(0.0)).astype(np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32."""
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def decode_output(space: np.ndarray, output: C.OutputOp) -> np.ndarray:
    """The tensor readout's decoding of the output space [B, T, dim]. Categorical: int64 [B, T],
    the index of the largest direction, NO_VALUE where it is below NONE_THRESHOLD; numerical:
    float32 [B, T], the one direction's value."""
    if isinstance(output.inp.type, C.NumericalSpaceType):
        return space[:, :, 0].astype(np.float32)
    if space.shape[-1] == 0:
        return np.full(space.shape[:2], NO_VALUE, dtype=np.int64)
    best = space.argmax(axis=-1).astype(np.int64)
    return np.where(space.max(axis=-1) < NONE_THRESHOLD, np.int64(NO_VALUE), best)


# --------------------------------------------------------------------------- dense weights


def direction_index(spaces: Sequence[SSAValue]) -> dict[str, int]:
    """The column of each direction in the concatenation of `spaces`. A direction listed twice
    (the same space passed twice) is one residual direction: the weights use its first column."""
    index: dict[str, int] = {}
    for column, label in enumerate(label for space in spaces for label in C.space_labels(space)):
        index.setdefault(label, column)
    return index


def width(spaces: Sequence[SSAValue]) -> int:
    """The number of directions of the concatenation of `spaces`."""
    return sum(len(C.space_labels(space)) for space in spaces)


def dense_matrix(
    weights: C.SparseMatrixAttr, rows: dict[str, int], n_rows: int, columns: dict[str, int], n_columns: int
) -> np.ndarray:
    """The sparse labelled matrix as float32 [n_rows, n_columns] (repeated entries add up)."""
    unknown = [x for x in weights.row_labels if x not in rows] + [x for x in weights.col_labels if x not in columns]
    if unknown:
        raise IRError(f"weight {unknown[0]!r} names a direction the op does not read or write")
    return weights.dense(rows, n_rows, columns, n_columns).astype(np.float32)


def dense_vector(weights: C.SparseVectorAttr, index: dict[str, int], size: int) -> np.ndarray:
    """The sparse labelled vector as float32 [size]."""
    vector = np.zeros((size,), dtype=np.float64)
    for label, value in weights.data:
        if label not in index:
            raise IRError(f"bias {label!r} names a direction the op does not write")
        vector[index[label]] += value
    return vector.astype(np.float32)


def concatenate(spaces: Sequence[np.ndarray], run: CraftRun) -> np.ndarray:
    """The spaces side by side, [B, T, sum of dims] (no spaces: no directions)."""
    if not spaces:
        return np.zeros((run.batch_size, run.length, 0), dtype=np.float32)
    return spaces[0] if len(spaces) == 1 else np.concatenate(spaces, axis=-1)


@dataclass(frozen=True)
class MlpWeights:
    """An MLP's dense weights: x [.., in] -> relu(x w_in + b_in) w_out [.., out]."""

    w_in: np.ndarray
    b_in: np.ndarray
    w_out: np.ndarray


@dataclass(frozen=True)
class HeadWeights:
    """A head's dense weights: w_qk [query dims, key dims], w_ov [value dims, out dims], scale."""

    w_qk: np.ndarray
    w_ov: np.ndarray
    scale: np.float32


def mlp_weights(op: C.MlpOp) -> MlpWeights:
    inputs = list(op.inputs)
    hidden = {label: i for i, label in enumerate(op.hidden_labels)}
    outputs = direction_index([op.res])
    n_in, n_hidden, n_out = width(inputs), len(hidden), len(outputs)
    return MlpWeights(
        w_in=dense_matrix(op.w_in, direction_index(inputs), n_in, hidden, n_hidden),
        b_in=dense_vector(op.b_in, hidden, n_hidden),
        w_out=dense_matrix(op.w_out, hidden, n_hidden, outputs, n_out),
    )


def head_weights(op: C.AttentionHeadOp) -> HeadWeights:
    queries, keys, values = list(op.queries), list(op.keys), list(op.values)
    outputs = direction_index([op.res])
    return HeadWeights(
        w_qk=dense_matrix(op.w_qk, direction_index(queries), width(queries), direction_index(keys), width(keys)),
        w_ov=dense_matrix(op.w_ov, direction_index(values), width(values), outputs, len(outputs)),
        scale=np.float32(op.scale.value.data),
    )


def token_table(space: C.CategoricalSpaceType | C.NumericalSpaceType, spec: InputSpec) -> np.ndarray:
    """float32 [len(vocab) + 2, dim]: the one-hot of each token id over the space's values;
    BOS, PAD and tokens that are not values of the space get no direction."""
    if not isinstance(space, C.CategoricalSpaceType):
        raise IRError("a 'tokens' embedding is categorical (one direction per token)")
    directions = ValueIndex(space.values.data)
    table = np.zeros((len(spec.token_ids), len(space.values.data)), dtype=np.float32)
    for token_id, token in enumerate(spec.vocab):
        column = directions.get(token)
        if column >= 0:
            table[token_id, column] = 1.0
    return table


def position_table(
    space: C.CategoricalSpaceType | C.NumericalSpaceType, values: Sequence[Value], max_seq_len: int, strict: bool
) -> np.ndarray:
    """float32 [max_seq_len + 1, dim]: `values[i]` at position i + 1, nothing at BOS (position 0).
    Categorical: the value's direction (None: none; a value that is not a direction: none, or an
    IRError when `strict`); numerical: the number."""
    dim = len(space.labels)
    table = np.zeros((max_seq_len + 1, dim), dtype=np.float32)
    if isinstance(space, C.NumericalSpaceType):
        for i, value in enumerate(values[:max_seq_len]):
            table[i + 1, 0] = float(value)
        return table
    directions = ValueIndex(space.values.data)
    for i, value in enumerate(values[:max_seq_len]):
        column = directions.get(value) if value is not None else NO_VALUE
        if column >= 0:
            table[i + 1, column] = 1.0
        elif value is not None and strict:
            raise IRError(f"positional value {format_value(value)} is not a direction of {space}")
    return table


def per_position(table: np.ndarray, run: CraftRun) -> np.ndarray:
    """A position embedding table's first T rows, for every row of the batch: [B, T, dim]."""
    rows = table[: run.length]
    return np.broadcast_to(rows, (run.batch_size, *rows.shape)).copy()


# --------------------------------------------------------------------------- implementations


@register_impls
class CraftFunctions(InterpreterFunctions):
    """One implementation per craft op (the `craft.model` container is run by `CraftInterpreter`).

    Keeps the dense form of each op's weights across runs; an op whose weights or types change
    gets new dense weights on its next run.
    """

    def __init__(self) -> None:
        self._dense: dict[Operation, tuple[Hashable, Any]] = {}

    def dense(self, op: Operation, key: Hashable, build: Callable[[], Any]) -> Any:
        """`build()`, cached for `op` as long as `key` (the attributes it reads) stays equal."""
        cached = self._dense.get(op)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = build()
        self._dense[op] = (key, value)
        return value

    @impl(C.EmbedOp)
    def run_embed(self, interpreter: Interpreter, op: C.EmbedOp, args: PythonValues) -> PythonValues:
        run = current_run(interpreter)
        source = op.source.data
        if source == "one":
            return (np.ones((run.batch_size, run.length, 1), dtype=np.float32),)
        if source == "bos":
            at_bos = (np.arange(run.length) == 0).astype(np.float32)
            return (np.broadcast_to(at_bos[None, :, None], (run.batch_size, run.length, 1)).copy(),)
        space = op.res.type
        assert isinstance(space, (C.CategoricalSpaceType, C.NumericalSpaceType))
        if source == "tokens":
            table = self.dense(op, (space, run.spec), lambda: token_table(space, run.spec))
            return (table[run.ids],)
        if source == "indices":
            n = run.spec.max_seq_len
            table = self.dense(op, (space, n), lambda: position_table(space, range(n), n, strict=False))
            return (per_position(table, run),)
        raise IRError(f"unknown embedding source '{source}'")

    @impl(C.PositionalOp)
    def run_positional(self, interpreter: Interpreter, op: C.PositionalOp, args: PythonValues) -> PythonValues:
        run = current_run(interpreter)
        space = op.res.type
        assert isinstance(space, (C.CategoricalSpaceType, C.NumericalSpaceType))
        n = run.spec.max_seq_len
        table = self.dense(op, (space, op.values, n),
                           lambda: position_table(space, op.values.data, n, strict=True))
        return (per_position(table, run),)

    @impl(C.MlpOp)
    def run_mlp(self, interpreter: Interpreter, op: C.MlpOp, args: PythonValues) -> PythonValues:
        run = current_run(interpreter)
        key = (op.w_in, op.b_in, op.w_out, op.hidden, tuple(v.type for v in op.inputs), op.res.type)
        weights: MlpWeights = self.dense(op, key, lambda: mlp_weights(op))
        hidden = np.maximum(concatenate(args, run) @ weights.w_in + weights.b_in, np.float32(0.0))
        return ((hidden @ weights.w_out).astype(np.float32),)

    @impl(C.AttentionHeadOp)
    def run_attention_head(
        self, interpreter: Interpreter, op: C.AttentionHeadOp, args: PythonValues
    ) -> PythonValues:
        run = current_run(interpreter)
        key = (op.w_qk, op.w_ov, op.scale, *(tuple(v.type for v in vs) for vs in (op.queries, op.keys, op.values)),
               op.res.type)
        weights: HeadWeights = self.dense(op, key, lambda: head_weights(op))
        n_queries, n_keys = len(op.queries), len(op.keys)
        x_q = concatenate(args[:n_queries], run)
        x_k = concatenate(args[n_queries : n_queries + n_keys], run)
        x_v = concatenate(args[n_queries + n_keys :], run)
        scores = (x_q @ weights.w_qk) @ x_k.transpose(0, 2, 1) * weights.scale + run.mask
        pattern = softmax(scores.astype(np.float32))
        if run.patterns is not None:
            run.patterns[op.label.data] = pattern
        return ((pattern @ (x_v @ weights.w_ov)).astype(np.float32),)

    @impl(C.EraseOp)
    def run_erase(self, interpreter: Interpreter, op: C.EraseOp, args: PythonValues) -> PythonValues:
        return ()

    @impl_terminator(C.OutputOp)
    def run_output(
        self, interpreter: Interpreter, op: C.OutputOp, args: PythonValues
    ) -> tuple[TerminatorValue, PythonValues]:
        return ReturnedValues((decode_output(args[0], op),)), ()


def implemented_ops() -> frozenset[type[Operation]]:
    """The op types CraftFunctions implements."""
    return frozenset(op_type for op_type, _ in CraftFunctions._impls())  # pyright: ignore[reportPrivateUsage]


# --------------------------------------------------------------------------- driver


class SpaceRecorder(Interpreter.Listener):
    """Collects every space a run computes, by space name."""

    def __init__(self) -> None:
        self.spaces: dict[str, np.ndarray] = {}

    def did_interpret_op(self, op: Operation, results: PythonValues) -> None:
        for result, array in zip(op.results, results):
            space = result.type
            if isinstance(space, (C.CategoricalSpaceType, C.NumericalSpaceType)):
                self.spaces[space.space.data] = array


class CraftInterpreter:
    """Runs the `craft.model` of a module on token ids, as the compiled transformer would."""

    def __init__(self, module: ModuleOp):
        model = container_of(module)
        if not isinstance(model, C.ModelOp):
            raise IRError(f"the craft interpreter runs a craft.model, not a {model.name}")
        output = model.body.block.last_op
        if not isinstance(output, C.OutputOp):
            raise IRError("a craft.model ends with craft.output")
        self.module = module
        self.model = model
        self.output = output
        self.functions = CraftFunctions()

    @property
    def spec(self) -> InputSpec:
        return self.model.spec

    def check_ids(self, ids: Any) -> np.ndarray:
        """`ids` as int64 [B, T]; InputError unless it is a batch of BOS-first model inputs."""
        spec = self.spec
        array = np.asarray(ids)
        if array.ndim != 2:
            raise InputError(f"token ids must be a 2-D [batch, seq] array, got shape {array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"token ids must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64)
        if array.shape[1] < 1:
            raise InputError("every row starts with BOS: a sequence has at least one position")
        if array.shape[1] > spec.max_seq_len + 1:
            raise InputError(f"sequence of {array.shape[1]} positions (BOS included) is longer than the "
                             f"{spec.max_seq_len + 1} the model has")
        if array.size and (array.min() < 0 or array.max() > spec.pad_id):
            raise InputError(f"token ids must lie in [0, {spec.pad_id}], got range [{array.min()}, {array.max()}]")
        if (array[:, 0] != spec.bos_id).any() or (array[:, 1:] == spec.bos_id).any():
            raise InputError(f"BOS (id {spec.bos_id}) must be at position 0 of every row, and only there")
        return array

    def run_ids(
        self, ids: Any, *, patterns: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Runs token ids int64 [B, T] (BOS at position 0, PAD on the right).

        Returns the decoded output [B, T] (categorical: int64 index into the output values, -1
        for None; numerical: float32) and every space by name, float32 [B, T, dim]. If `patterns`
        is a dict, each head's softmax pattern [B, T, T] is stored in it under the head's label.
        """
        array = self.check_ids(ids)
        spec = self.spec
        run = CraftRun(spec, array, attention_mask(array, spec.pad_id, spec.causal), patterns)
        recorder = SpaceRecorder()
        interpreter = Interpreter(self.module, listeners=(recorder,))
        interpreter.register_implementations(self.functions)
        interpreter.set_data(CraftFunctions, "run", run)
        (output,) = interpreter.run_ssacfg_region(self.model.body, (), "craft.model")
        return output, recorder.spaces

    def encode(self, inputs: Sequence[Sequence[Value]]) -> np.ndarray:
        """Token ids int64 [B, 1 + longest input]: BOS, the tokens, then PAD."""
        spec = self.spec
        vocab = ValueIndex(spec.vocab)
        length = max((len(xs) for xs in inputs), default=0)
        if length > spec.max_seq_len:
            raise InputError(f"sequence of length {length} is longer than max_seq_len {spec.max_seq_len}")
        ids = np.full((len(inputs), length + 1), spec.pad_id, dtype=np.int64)
        ids[:, 0] = spec.bos_id
        for row, xs in enumerate(inputs):
            for position, token in enumerate(xs, start=1):
                token_id = _token_id(vocab, token)
                if token_id < 0:
                    raise InputError(f"unknown token {token!r}; the vocabulary is {list(spec.vocab)}")
                ids[row, position] = token_id
        return ids

    def decode(self, output: np.ndarray, lengths: Sequence[int]) -> list[list[Value]]:
        """Per input, its decoded values without the BOS position (categorical: the output
        values, None for -1; numerical: floats)."""
        if isinstance(self.output.inp.type, C.NumericalSpaceType):
            return [[float(x) for x in row[1 : n + 1]] for row, n in zip(output.tolist(), lengths)]
        values = self.output.output_values
        return [[values[i] if i >= 0 else None for i in row[1 : n + 1]] for row, n in zip(output.tolist(), lengths)]

    def run_batch(self, inputs: Sequence[Sequence[Value]]) -> list[list[Value]]:
        """The output per input (tokens without BOS; inputs of mixed lengths are padded with PAD)."""
        if not inputs:
            return []
        output, _ = self.run_ids(self.encode(inputs))
        return self.decode(output, [len(xs) for xs in inputs])

    def run(self, xs: Sequence[Value]) -> list[Value]:
        """The output for one input (tokens without BOS)."""
        return self.run_batch([xs])[0]


def _token_id(vocab: ValueIndex, token: Any) -> int:
    """The id of a token (numpy scalars count as the Python value they hold); -1 if unknown."""
    try:
        return vocab.get(normalize(token))
    except UnsupportedValue:
        return -1


__all__ = [
    "NO_VALUE",
    "CraftFunctions",
    "CraftInterpreter",
    "CraftRun",
    "SpaceRecorder",
    "attention_mask",
    "current_run",
    "decode_output",
    "implemented_ops",
    "softmax",
]
