"""Run an exported raspc model with nothing but onnxruntime and the model's own metadata.

    model = OnnxModel("reverse.onnx")          # or OnnxModel.load(path or bytes)
    model.apply(["BOS", "a", "b", "c"]).decoded    # -> ["BOS", "c", "b", "a"]
    model.apply_batch([["BOS", "a"], ["BOS", "a", "b", "c"]])   # -> [["BOS", "a"], ["BOS", "c", "b", "a"]]

`apply` answers a `ModelOutput` (`.decoded`, `.output`, `.residual`), as `CompiledModel.apply` does.

This module imports only numpy, onnxruntime, the standard library and raspc.errors, so a deployer can copy it
next to a .onnx file and use it without the compiler.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from raspc.errors import InputError


def _tuplify(v: Any) -> Any:
    """JSON lists back to RASP tuples (recursively)."""
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def _key(token: Any) -> Any:
    """A hashable lookup key for a token (lists given by a caller are read as tuples)."""
    return _tuplify(token) if isinstance(token, list) else token


def _session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # onnxruntime's own choice, a thread per physical core: it keeps small ops on one thread (no
    # cost on small models or batch 1) and splits big MatMuls (1.6-1.9x at batch 64 from
    # max_seq_len 32 on 2 cores); each output element is still summed by one thread, in one order
    opts.intra_op_num_threads = 0
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


@dataclass
class ModelOutput:
    """What `apply` answers; `decoded` has Tracr's shape: BOS first, then one value per token."""

    decoded: list[Any]
    output: np.ndarray  # [seq]: categorical indices into output_values (-1 = None), or floats
    residual: np.ndarray  # [seq, d_model]: the final residual stream


def _session(path_or_bytes: str | os.PathLike[str] | bytes) -> ort.InferenceSession:
    if isinstance(path_or_bytes, (bytes, bytearray)):
        src: str | bytes = bytes(path_or_bytes)
    else:
        try:
            src = os.fspath(path_or_bytes)
        except TypeError:
            raise InputError(
                f"OnnxModel takes a file path, serialized bytes or an onnxruntime session, "
                f"not {type(path_or_bytes).__name__}"
            ) from None
        if not os.path.isfile(src):
            raise InputError(f"model file '{src}' does not exist")
    try:
        return ort.InferenceSession(src, sess_options=_session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise InputError(f"cannot load ONNX model: {e}") from e


class OnnxModel:
    """An exported raspc model: token encoding, one onnxruntime session, output decoding.

    `OnnxModel("m.onnx")` (a path, serialized bytes, or an onnxruntime session)."""

    def __init__(self, model: "str | os.PathLike[str] | bytes | ort.InferenceSession"):
        session = model if isinstance(model, ort.InferenceSession) else _session(model)
        self.session = session
        meta = session.get_modelmeta().custom_metadata_map
        try:
            def get(key: str) -> Any:
                return json.loads(meta[key])

            self._vocab: tuple[Any, ...] = tuple(_tuplify(v) for v in get("raspc.vocab"))
            self._bos_id = int(get("raspc.bos"))
            self._pad_id = int(get("raspc.pad"))
            self._output_values: tuple[Any, ...] = tuple(_tuplify(v) for v in get("raspc.output_values"))
            self._output_encoding = str(get("raspc.output_encoding"))
            self._residual_labels: tuple[str, ...] = tuple(get("raspc.residual_labels"))
            self._max_seq_len = int(get("raspc.max_seq_len"))
            self._causal = bool(get("raspc.causal"))
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"not a raspc model: missing or malformed metadata ({e})") from e
        n = len(self._vocab)
        if not (0 <= self._bos_id < n and 0 <= self._pad_id < n):
            raise InputError(f"not a raspc model: BOS id {self._bos_id} / PAD id {self._pad_id} outside the vocabulary")
        if self._output_encoding not in ("categorical", "numerical"):
            raise InputError(f"not a raspc model: unknown output encoding '{self._output_encoding}'")
        self._ids: dict[Any, int] = {}
        for i, tok in enumerate(self._vocab):
            self._ids.setdefault(tok, i)
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())

    @classmethod
    def load(cls, path_or_bytes: str | os.PathLike[str] | bytes) -> "OnnxModel":
        """Loads a model from a file path or from serialized bytes (the same as `OnnxModel(...)`).
        Raises InputError for a missing file, a file that is not ONNX, or an ONNX model without
        raspc's metadata."""
        return cls(path_or_bytes)

    # ------------------------------------------------------------------ metadata

    @property
    def vocab(self) -> tuple[Any, ...]:
        """Every token in id order (BOS and PAD included)."""
        return self._vocab

    @property
    def bos(self) -> Any:
        """The BOS token."""
        return self._vocab[self._bos_id]

    @property
    def pad(self) -> Any:
        """The PAD token (never a valid input token)."""
        return self._vocab[self._pad_id]

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def max_seq_len(self) -> int:
        """The longest input, BOS not counted."""
        return self._max_seq_len

    @property
    def output_values(self) -> tuple[Any, ...]:
        return self._output_values

    @property
    def output_encoding(self) -> str:
        return self._output_encoding

    @property
    def residual_labels(self) -> tuple[str, ...]:
        return self._residual_labels

    @property
    def causal(self) -> bool:
        return self._causal

    @property
    def input_vocab(self) -> tuple[Any, ...]:
        """The tokens a sequence may hold after BOS (BOS and PAD excluded)."""
        return tuple(t for i, t in enumerate(self._vocab) if i not in (self._bos_id, self._pad_id))

    # ------------------------------------------------------------------ encoding

    def encode(self, seq: Sequence[Any]) -> list[int]:
        """Token ids of `seq` (a list of tokens starting with the BOS token). Raises InputError."""
        seq = list(seq)
        if not seq:
            raise InputError(f"empty sequence: an input starts with the BOS token {self.bos!r}")
        if self._lookup(seq[0]) != self._bos_id:
            raise InputError(f"the first token must be the BOS token {self.bos!r}, got {seq[0]!r}")
        n = len(seq) - 1
        if n > self._max_seq_len:
            raise InputError(
                f"sequence has {n} tokens after BOS, more than the model's max_seq_len {self._max_seq_len}"
            )
        ids = [self._bos_id]
        for pos, tok in enumerate(seq[1:], start=1):
            i = self._lookup(tok)
            if i == self._bos_id:
                raise InputError(f"the BOS token {self.bos!r} may appear only at position 0, found at position {pos}")
            if i is None or i == self._pad_id:
                raise InputError(
                    f"token {tok!r} at position {pos} is not in the vocabulary {list(self.input_vocab)!r}"
                )
            ids.append(i)
        return ids

    def _lookup(self, tok: Any) -> int | None:
        try:
            return self._ids.get(_key(tok))
        except TypeError:  # unhashable
            return None

    # ------------------------------------------------------------------ running

    def run(self, ids_2d: Any, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Runs the session on int64 [batch, seq] ids; returns the requested outputs by name."""
        ids = np.asarray(ids_2d)
        if ids.ndim != 2:
            raise InputError(f"token ids must be a 2-D [batch, seq] array, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = len(self._vocab)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise InputError(f"token ids must lie in [0, {n}), got range [{ids.min()}, {ids.max()}]")
        if ids.shape[1] > self._max_seq_len + 1:
            raise InputError(
                f"sequence has {ids.shape[1] - 1} tokens after BOS, more than the model's max_seq_len {self._max_seq_len}"
            )
        names = list(outputs) if outputs is not None else list(self.output_names)
        results = self.session.run(names, {"tokens": ids})
        return dict(zip(names, results))

    def run_ids(self, ids_2d: Any) -> tuple[np.ndarray, np.ndarray]:
        """(output, residual) for int64 [batch, seq] ids (BOS first, PAD-padded on the right)."""
        r = self.run(ids_2d, ["output", "residual"])
        return r["output"], r["residual"]

    def attention(self, ids_2d: Any) -> dict[str, np.ndarray]:
        """Each head's softmax pattern [batch, seq, seq] (a model exported with expose_attention)."""
        names = [n for n in self.output_names if n.startswith("attn.")]
        if not names:
            raise InputError("this model was exported without attention outputs (expose_attention=False)")
        return self.run(ids_2d, names)

    def decode(self, row: np.ndarray) -> list[Any]:
        """One row of `output` as Tracr-style values: element 0 is the BOS token."""
        if self._output_encoding == "categorical":
            vals = [None if int(i) < 0 else self._output_values[int(i)] for i in row[1:]]
        else:
            vals = [float(x) for x in row[1:]]
        return [self.bos, *vals]

    def apply(self, seq: Sequence[Any]) -> ModelOutput:
        """Runs one sequence (starting with BOS); `.decoded` is [BOS, value at position 1, ...]."""
        ids = self.encode(seq)
        output, residual = self.run_ids(np.array([ids], dtype=np.int64))
        return ModelOutput(decoded=self.decode(output[0]), output=output[0], residual=residual[0])

    def apply_batch(self, seqs: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Runs sequences of mixed lengths in one session call (PAD on the right, stripped again)."""
        encoded = [self.encode(s) for s in seqs]
        if not encoded:
            return []
        width = max(len(e) for e in encoded)
        ids = np.full((len(encoded), width), self._pad_id, dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = e
        output, _ = self.run_ids(ids)
        return [self.decode(output[row, : len(e)]) for row, e in enumerate(encoded)]

    def __repr__(self) -> str:
        return (
            f"OnnxModel({self._output_encoding} output, {len(self._vocab)} tokens, "
            f"max_seq_len={self._max_seq_len}, causal={self._causal}, d_model={len(self._residual_labels)})"
        )


__all__ = ["OnnxModel", "ModelOutput"]
