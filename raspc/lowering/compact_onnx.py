"""The compact export: the ONNX contract of `tensor_to_onnx`, with a forward pass whose cost follows
the non-zero work.

A compiled residual stream is mostly zeros as far as any one block is concerned: a head reads a few
named directions and writes a few others. The dense ("transformer-shaped") graph multiplies the
whole residual by every weight matrix; this one never materialises the residual between blocks.
The residual dimensions are partitioned into *segments* (dims with the same writers and the same
readers), and the stream is a set of segment tensors of rows [B*T, |segment|] (2-D, so an MLP is
one Gemm with its bias, and onnxruntime fuses the ReLU into it; attention reshapes to [B, T, .]):

- the embedding gathers rows of the token and position tables restricted to the segments they write;
- each head / MLP concatenates only the segments it reads (Q, K and V separately), multiplies by its
  weights restricted to those rows and to the columns that can be non-zero (a Q/K column whose other
  side is zero, a hidden unit that writes nothing, are dropped: exact, they only add zeros), and its
  output covers only the segments it writes;
- dims only the embedding writes hold a function of (token, position) at every layer: a read of
  them is tabulated at export, `tok_table[token] + pos_table[position]` gathered (a first-layer
  head's Q, K and V are Gathers), and an MLP reading nothing else is one Gather of its outputs;
- a head whose K gathers a token table masks PAD keys inside its scores (one more Q/K column) and
  adds only the [T, T] position mask;
- `output` reads only the output s-op's segments; `residual` is assembled once, at the end, from the
  final segments (onnxruntime computes every graph output on every run, asked for or not).

Same inputs, outputs, metadata and decoding as the dense graph (raspc/runtime.py runs both); sums
skip zero terms, so floats may differ from the dense graph in the last bits, never the decoded answer
(tests/test_compact_onnx.py checks both against the tensor interpreter). The metadata key
`raspc.graph` says "compact"; hooks and TransformerLens build on the dense graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from raspc.analysis.weights import nonzero_cols, nonzero_rows
from raspc.dialects import tensor as T
from raspc.dialects.tensor import MASK_VALUE, NONE_THRESHOLD
from raspc.lowering.tensor_to_onnx import (
    INPUT,
    OUTPUT,
    RESIDUAL,
    _graph_outputs,
    _GraphBuilder,
    _scalar,
    assemble_model,
    emit_mask,
)

GRAPH_KIND = "raspc.graph"  # metadata key: "compact" here (absent on the dense graph)


# --------------------------------------------------------------------------- which dims each block touches


@dataclass
class _Block:
    """One head or MLP with its weights as numpy arrays, and the residual dims it reads and writes."""

    op: T.AttentionHeadOp | T.MlpOp
    weights: dict[str, np.ndarray]
    reads: dict[str, np.ndarray]  # "q", "k", "v" (a head) or "in" (an MLP) -> residual dims
    writes: np.ndarray


def _block(op: T.AttentionHeadOp | T.MlpOp) -> _Block:
    if isinstance(op, T.AttentionHeadOp):
        w = {k: T.dense_to_numpy(getattr(op, f"w_{k}")) for k in "qkvo"}
        # a Q/K column only matters when both sides can be non-zero, a V/O column likewise
        qk = np.any(w["q"] != 0, axis=0) & np.any(w["k"] != 0, axis=0)
        ov = np.any(w["v"] != 0, axis=0) & np.any(w["o"] != 0, axis=1)
        w = {"q": w["q"][:, qk], "k": w["k"][:, qk], "v": w["v"][:, ov], "o": w["o"][ov, :]}
        reads = {k: nonzero_rows(w[k]) for k in "qkv"}
        return _Block(op, w, reads, nonzero_cols(w["o"]))
    w = {k: T.dense_to_numpy(getattr(op, k)) for k in ("w_in", "b_in", "w_out", "b_out")}
    # a hidden unit that writes nothing, or is never positive (no input, bias <= 0), adds only zeros
    live = np.any(w["w_out"] != 0, axis=1) & (np.any(w["w_in"] != 0, axis=0) | (w["b_in"] > 0))
    w = {"w_in": w["w_in"][:, live], "b_in": w["b_in"][live], "w_out": w["w_out"][live, :], "b_out": w["b_out"]}
    return _Block(op, w, {"in": nonzero_rows(w["w_in"])}, nonzero_cols(w["w_out"], w["b_out"][None, :]))


@dataclass(frozen=True)
class ResidualPartition:
    """The residual dims grouped into segments: dims with the same writers and the same readers.

    `segments[s]` lists the dims of segment s (ascending); `segment_of[d]` is d's segment, -1 for a
    dim nothing writes (it is always zero and never stored).
    """

    segments: tuple[np.ndarray, ...]
    segment_of: np.ndarray

    def covering(self, dims: np.ndarray) -> list[int]:
        """The segments holding `dims` (dims nothing writes are zero: no segment)."""
        segs = self.segment_of[dims]
        return sorted({int(s) for s in segs[segs >= 0]})


def partition_residual(d_model: int, writers: list[np.ndarray], readers: list[np.ndarray]) -> ResidualPartition:
    """Groups the residual dims by the set of writers and readers (lists of dims) touching them."""
    touch = np.zeros((len(writers) + len(readers), d_model), dtype=bool)
    for i, dims in enumerate([*writers, *readers]):
        touch[i, dims] = True
    written = touch[: len(writers)].any(axis=0)
    keys: dict[bytes, int] = {}
    segment_of = np.full(d_model, -1, dtype=np.int64)
    members: list[list[int]] = []
    for d in np.flatnonzero(written):
        s = keys.setdefault(np.packbits(touch[:, d]).tobytes(), len(keys))
        if s == len(members):
            members.append([])
        members[s].append(int(d))
        segment_of[d] = s
    return ResidualPartition(tuple(np.array(m, dtype=np.int64) for m in members), segment_of)


# --------------------------------------------------------------------------- segment tensors in the graph


@dataclass(eq=False)
class _Chunk:
    """An ONNX tensor [B*T, width] holding some segments side by side (a tensor may be read as
    more than one chunk: an identity projection's output is its input, holding other segments)."""

    name: str
    segments: list[int]
    offsets: list[int]  # column of each segment in the chunk
    width: int
    order: int  # creation order: reads concatenate chunks in it, neighbours becoming one slice


@dataclass
class _Stream:
    """A residual stream as segment tensors: segment -> (chunk, index of the segment in it)."""

    where: dict[int, tuple[_Chunk, int]] = field(default_factory=dict)


@dataclass
class _Read:
    """`x @ w (+ bias)` for the residual rows a block reads, split by where those rows come from.

    Rows only the embedding writes hold the same value at every layer, a function of the token and
    of the position: their product with `w` is tabulated here, by token id and by position, and
    gathered at run time (exact: the same few non-zero products, summed in another order)."""

    rest: tuple[str, np.ndarray] | None  # [B*T, r] tensor of the other segments, and w's rows for it
    by_token: np.ndarray | None  # [vocab, out]
    by_position: np.ndarray | None  # [positions, out]
    bias: np.ndarray | None  # [out]: added to every row (a table whose rows are all equal becomes one)

    @property
    def nonzero(self) -> bool:
        return any(p is not None for p in (self.rest, self.by_token, self.by_position, self.bias))

    def with_column(self, token_column: np.ndarray | None = None, constant: np.float32 | None = None) -> _Read:
        """This read with one more output column: a value per token (into the token table, which
        must exist) or a constant (into the first table there is, else the bias)."""
        def grow(a: np.ndarray | None, value: Any) -> np.ndarray | None:
            return None if a is None else np.concatenate([a, np.broadcast_to(np.float32(value), (*a.shape[:-1], 1))],
                                                         axis=-1)
        by_token, by_position, bias = self.by_token, self.by_position, self.bias
        rest = self.rest and (self.rest[0], grow(self.rest[1], 0))
        if token_column is not None:
            assert by_token is not None
            return _Read(rest, np.concatenate([by_token, token_column[:, None]], axis=1), grow(by_position, 0),
                         grow(bias, 0))
        if by_token is not None:
            return _Read(rest, grow(by_token, constant), grow(by_position, 0), grow(bias, 0))
        if by_position is not None:
            return _Read(rest, None, grow(by_position, constant), grow(bias, 0))
        width = rest[1].shape[1] - 1 if rest is not None else 0
        return _Read(rest, None, None, grow(bias if bias is not None else np.zeros(width, np.float32), constant))


class _CompactBuilder:
    def __init__(self, g: _GraphBuilder, partition: ResidualPartition, embedding_only: np.ndarray,
                 tok: np.ndarray, pos: np.ndarray, expose_attention: bool):
        self.g = g
        self.part = partition
        self.embedding_only = embedding_only  # [d_model] bool: dims no block writes (fixed after the embedding)
        self.tok, self.pos = tok, pos
        self.expose_attention = expose_attention
        self.constants: dict[str, str] = {}
        self.n_chunks = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """A constant initializer, made once per name."""
        if name not in self.constants:
            self.constants[name] = self.g.init(name, value)
        return self.constants[name]

    def shared(self, name: str, build: Callable[[], str]) -> str:
        """A tensor every block may use (token ids flattened, positions, shapes), built on first use."""
        if name not in self.constants:
            self.constants[name] = build()
        return self.constants[name]

    # ------------------------------------------------------------------ shared index tensors

    def seq_len_1d(self) -> str:
        return self.shared("seq_len_1d", lambda: self.g.node("Shape", [INPUT], "seq_len_1d", start=1, end=2))

    def positions(self) -> str:
        """0..T-1 [T]."""
        return self.shared("positions", lambda: self.g.node(
            "Slice", [self.const("const.positions", np.arange(len(self.pos), dtype=np.int64)),
                      self.const("const.start_0", np.array([0], dtype=np.int64)), self.seq_len_1d()], "positions"))

    def tokens_flat(self) -> str:
        """Token ids as one row per (batch, position) [B*T]: the stream's row order."""
        return self.shared("tokens_flat", lambda: self.g.node(
            "Reshape", [INPUT, self.const("const.shape_rows", np.array([-1], dtype=np.int64))], "tokens_flat"))

    def positions_flat(self) -> str:
        """The position of every row [B*T]."""
        def build() -> str:
            zeros = self.g.node("Mul", [INPUT, self.const("const.zero_i64", _scalar(0, np.int64))], "batch_zeros")
            ids = self.g.node("Add", [zeros, self.positions()], "position_ids")  # [B, T]
            return self.g.node("Reshape", [ids, self.const("const.shape_rows", np.array([-1], dtype=np.int64))],
                               "positions_flat")
        return self.shared("positions_flat", build)

    def shape_3d(self) -> str:
        """[B, T, -1]: reshapes rows back to sequences."""
        return self.shared("shape_3d", lambda: self.g.node(
            "Concat", [self.batch_seq(), self.const("const.minus_one", np.array([-1], dtype=np.int64))], "shape_3d",
            axis=0))

    def batch_seq(self) -> str:
        """[B, T]."""
        return self.shared("batch_seq", lambda: self.g.node("Shape", [INPUT], "batch_seq"))

    def full_mask(self) -> str:
        """The additive attention mask [B, T, T] of the dense graph (positions and PAD keys)."""
        return self.shared("mask", lambda: emit_mask(self.g, self.seq_len_1d(), len(self.pos)))

    def position_mask(self) -> str:
        """The position part of the mask [T, T] alone, for heads whose keys carry the PAD part."""
        def build() -> str:
            spec = self.g.model.spec
            q, k = np.arange(len(self.pos))[:, None], np.arange(len(self.pos))[None, :]
            hidden = (k > q) if spec.causal else ((q == 0) & (k > 0))  # as emit_mask has it
            static = self.g.init("mask.positions", np.where(hidden, MASK_VALUE, 0.0).astype(np.float32))
            ends = self.g.node("Concat", [self.seq_len_1d(), self.seq_len_1d()], "mask.ends", axis=0)
            return self.g.node("Slice", [static, self.const("const.starts_00", np.array([0, 0], dtype=np.int64)), ends],
                               "mask.square")
        return self.shared("position_mask", build)

    def to_3d(self, rows: str, name: str) -> str:
        return self.g.node("Reshape", [rows, self.shape_3d()], name)

    def to_rows(self, x: str, width: int, name: str) -> str:
        return self.g.node("Reshape", [x, self.const(f"const.shape_rows_{width}", np.array([-1, width], dtype=np.int64))],
                           name)

    # ------------------------------------------------------------------ segments

    def chunk(self, name: str, segments: list[int]) -> _Chunk:
        """The tensor `name` read as the given segments side by side."""
        sizes = [len(self.part.segments[s]) for s in segments]
        offsets = [int(o) for o in np.cumsum([0, *sizes])]
        self.n_chunks += 1
        return _Chunk(name, segments, offsets[:-1], offsets[-1], self.n_chunks)

    def zeros(self, width: int) -> str:
        """A zero tensor [B*T, width] (for residual dims nothing writes)."""
        g = self.g
        def build() -> str:
            ids = g.node("Unsqueeze", [self.tokens_flat(), self.const("const.axes_m1", np.array([-1], dtype=np.int64))],
                         "zeros.ids")  # [B*T, 1]
            zero = self.const("const.zero_i64", _scalar(0, np.int64))
            return g.node("Cast", [g.node("Mul", [ids, zero], "zeros.i64")], "zeros.f32", to=TensorProto.FLOAT)
        column = self.shared("zeros", build)
        return g.node("Tile", [column, g.init("zeros.repeats", np.array([1, width], dtype=np.int64))], "zeros")

    def put(self, stream: _Stream, chunk: _Chunk) -> None:
        for i, s in enumerate(chunk.segments):
            stream.where[s] = (chunk, i)

    def slice(self, chunk: _Chunk, first: int, last: int, name: str) -> str:
        """Columns of segments first..last (indices into chunk.segments) of a chunk."""
        if first == 0 and last == len(chunk.segments) - 1:
            return chunk.name
        stop = chunk.offsets[last] + len(self.part.segments[chunk.segments[last]])
        return self.columns(chunk.name, chunk.offsets[first], stop, name)

    def columns(self, tensor: str, start: int, stop: int, name: str) -> str:
        """Columns start..stop-1 of a [B*T, width] tensor."""
        starts = self.g.init(f"{name}.start", np.array([start], dtype=np.int64))
        stops = self.g.init(f"{name}.stop", np.array([stop], dtype=np.int64))
        axis = self.const("const.axes_m1", np.array([-1], dtype=np.int64))
        return self.g.node("Slice", [tensor, starts, stops, axis], name)

    def read(self, stream: _Stream, dims: np.ndarray, name: str) -> tuple[str, np.ndarray] | None:
        """A tensor of the segments holding `dims` in `stream`, and the residual dim of each of its
        columns; None when all of them are zero (nothing wrote them yet)."""
        segs = [s for s in self.part.covering(dims) if s in stream.where]
        if not segs:
            return None
        # order by where segments live, so neighbours in one chunk become one slice
        segs.sort(key=lambda s: (stream.where[s][0].order, stream.where[s][1]))
        runs: list[tuple[_Chunk, int, int]] = []  # (chunk, first, last index of its segments)
        for s in segs:
            chunk, i = stream.where[s]
            if runs and runs[-1][0] is chunk and runs[-1][2] == i - 1:
                runs[-1] = (chunk, runs[-1][1], i)
            else:
                runs.append((chunk, i, i))
        pieces = [self.slice(chunk, first, last, f"{name}.part") for chunk, first, last in runs]
        x = pieces[0] if len(pieces) == 1 else self.g.node("Concat", pieces, name, axis=-1)
        return x, np.concatenate([self.part.segments[s] for s in segs])

    def read_linear(self, stream: _Stream, dims: np.ndarray, w: np.ndarray, name: str,
                    bias: np.ndarray | None = None, tabulate_all: bool = False) -> _Read:
        """`x[:, dims] @ w[dims] + bias`, the embedding-only rows tabulated (see _Read) when they are
        all the read, many of its rows (a few rows beside others cost less as MatMul rows), or
        `tabulate_all`."""
        fixed = self.embedding_only[dims]
        if not tabulate_all and not fixed.all() and fixed.sum() < TABULATE_MIN_ROWS:
            fixed[:] = False
        rest = self.read(stream, dims[~fixed], name) if not fixed.all() else None
        fixed_dims = dims[fixed]
        tables = [table[:, fixed_dims].astype(np.float64) @ w[fixed_dims] for table in (self.tok, self.pos)]
        tables = [t if len(fixed_dims) and t.any() else None for t in tables]
        total = None if bias is None else bias.astype(np.float64)
        if rest is not None or (tables[0] is not None and tables[1] is not None):
            for i, t in enumerate(tables):  # a table whose rows are all equal is a bias
                if t is not None and np.all(t == t[0]) and (rest is not None or tables[1 - i] is not None):
                    total = t[0] if total is None else total + t[0]
                    tables[i] = None
        if total is not None and (tables[0] is not None or tables[1] is not None):
            i = 0 if tables[0] is not None else 1  # the bias rides in a table: each row gathers it once
            tables[i] = tables[i] + total
            total = None
        def as32(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.astype(np.float32)

        return _Read(rest and (rest[0], w[rest[1]]), as32(tables[0]), as32(tables[1]), as32(total))

    def gathered(self, rd: _Read, name: str, rows: bool) -> list[str]:
        """The tabulated terms of a read: [B*T, out] when `rows`, else [B, T, out] (or [T, out])."""
        g = self.g
        terms = []
        if rd.by_token is not None:
            terms.append(g.node("Gather", [g.init(f"{name}.by_token", rd.by_token),
                                           self.tokens_flat() if rows else INPUT], f"{name}.tokens", axis=0))
        if rd.by_position is not None:
            terms.append(g.node("Gather", [g.init(f"{name}.by_position", rd.by_position),
                                           self.positions_flat() if rows else self.positions()],
                                f"{name}.positions", axis=0))
        return terms

    def linear(self, rd: _Read, name: str, rows: bool) -> str | None:
        """A read's value: [B*T, out] when `rows`, else [B, T, out]; None when it is zero."""
        g = self.g
        if rd.rest is None and rd.by_token is None and rd.by_position is None and rd.bias is not None:
            # only constant directions (`one`): the same row at every position
            rd = replace(rd, by_position=np.zeros((len(self.pos), len(rd.bias)), np.float32))
        terms = self.gathered(rd, name, rows or rd.rest is not None)
        if rd.rest is not None:
            terms.insert(0, _project(g, rd.rest[0], rd.rest[1], name))
        if not terms:
            return None
        if rd.bias is not None:
            terms.append(g.init(f"{name}.bias", rd.bias))
        y = terms[0]
        for t in terms[1:]:
            y = g.node("Add", [y, t], name)
        if not rows and rd.rest is not None:
            y = self.to_3d(y, f"{name}.seq")
        return y

    def write(self, dims: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The segments a block output holding `dims` covers, and the residual dim of each column."""
        segs = self.part.covering(dims)
        cols = [self.part.segments[s] for s in segs]
        return segs, np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)

    def merge(self, streams: list[_Stream], name: str) -> _Stream:
        """The sum of residual streams: segments held by one are shared, others are added."""
        out = _Stream()
        held: dict[int, list[_Stream]] = {}
        for st in streams:
            for s in st.where:
                held.setdefault(s, []).append(st)
        for s in sorted(held):
            if len(held[s]) == 1:
                out.where[s] = held[s][0].where[s]
                continue
            parts = []
            for st in held[s]:
                chunk, i = st.where[s]
                parts.append(self.slice(chunk, i, i, f"{name}.seg{s}"))
            total = self.g.node("Sum", parts, f"{name}.seg{s}")
            self.put(out, self.chunk(total, [s]))
        return out


# --------------------------------------------------------------------------- emitters

# Below this many rows a MatMul beats a column Gather in onnxruntime: a float gathered along the
# last axis costs about as much as 300-500 multiply-adds (x86, onnxruntime 1.32: [8256, 257] -> 128
# columns, Gather 7.9 ms, MatMul 5.1 ms; [4160, 600] -> 64, Gather 2.0 ms, MatMul 3.0 ms).
GATHER_MIN_ROWS = 400

# Heads whose keys gather a token table mask PAD keys inside their scores (see _emit_head); off, every
# head adds the [B, T, T] mask of the dense graph (the tests compare both ways).
PAD_IN_SCORES = True

# A read tabulates its embedding-only rows when they are all it reads or at least this many of them.
TABULATE_MIN_ROWS = 16

# From this width on, the residual output is concatenated from [B, T, width] views of its pieces
# rather than reshaped once at the end (a copy of all of it); below, the fewer nodes win.
RESIDUAL_PIECEWISE_MIN = 128

# A block whose input is a function of (token, position) both is tabulated over the pairs up to
# this many floats; past it the pair table costs more memory than the MLP saves.
PAIR_TABLE_MAX = 1 << 18


def _project(g: _GraphBuilder, x: str, w: np.ndarray, name: str) -> str:
    """x @ w, strength-reduced where w picks columns: when every column of w has one non-zero
    (a permutation or selection, as most one-hot to one-hot maps are), each output column is one
    input column times that entry, exactly what the MatMul would sum (the other terms are zeros)."""
    nz = w != 0
    if not np.all(nz.sum(axis=0) == 1):
        return g.node("MatMul", [x, g.init(f"{name}.W", w)], name)
    rows = np.argmax(nz, axis=0).astype(np.int64)
    coef = w[rows, np.arange(w.shape[1])]
    if np.array_equal(rows, np.arange(len(rows))) and len(rows) == w.shape[0]:
        y = x
    elif np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        starts = g.init(f"{name}.start", np.array([rows[0]], dtype=np.int64))
        stops = g.init(f"{name}.stop", np.array([rows[0] + len(rows)], dtype=np.int64))
        axis = g.init(f"{name}.axis", np.array([-1], dtype=np.int64))
        y = g.node("Slice", [x, starts, stops, axis], f"{name}.cols")
    elif w.shape[0] >= GATHER_MIN_ROWS:
        y = g.node("Gather", [x, g.init(f"{name}.cols", rows)], f"{name}.cols", axis=-1)
    else:
        return g.node("MatMul", [x, g.init(f"{name}.W", w)], name)
    if np.all(coef == 1):
        return y  # the input itself when w is the identity
    return g.node("Mul", [y, g.init(f"{name}.coef", coef.astype(np.float32))], name)


def _affine(g: _GraphBuilder, x: str, w: np.ndarray, c: str, name: str) -> str:
    """x @ w + c on rows: one Gemm (onnxruntime fuses a following Relu into it), or the strength-
    reduced projection plus c where w only picks columns."""
    nz = w != 0
    if np.all(nz.sum(axis=0) == 1):
        return g.node("Add", [_project(g, x, w, f"{name}.xW"), c], name)
    return g.node("Gemm", [x, g.init(f"{name}.W", w), c], name)


def _emit_embed(b: _CompactBuilder, embed: T.EmbedOp) -> _Stream:
    """The segments the embedding writes, as rows (what the residual output, the readout and blocks
    that read dims others write too see; reads of embedding-only dims are tabulated instead)."""
    g = b.g
    tok, pos = b.tok, b.pos
    stream = _Stream()
    tok_segs = b.part.covering(nonzero_cols(tok))
    pos_segs = b.part.covering(nonzero_cols(pos))
    if not set(tok_segs) & set(pos_segs):  # separate tables: no Add
        for segs, table, ids, what in ((tok_segs, tok, b.tokens_flat, "tokens"),
                                       (pos_segs, pos, b.positions_flat, "positions")):
            if not segs:
                continue
            cols = np.concatenate([b.part.segments[s] for s in segs])
            w = g.init(f"{what}_embedding", table[:, cols])
            b.put(stream, b.chunk(g.node("Gather", [w, ids()], f"embed.{what}", axis=0), segs))
        return stream
    segs = sorted(set(tok_segs) | set(pos_segs))
    cols = np.concatenate([b.part.segments[s] for s in segs])
    tok_part = g.node("Gather", [g.init("token_embedding", tok[:, cols]), b.tokens_flat()], "embed.tokens", axis=0)
    pos_part = g.node("Gather", [g.init("position_embedding", pos[:, cols]), b.positions_flat()], "embed.positions",
                      axis=0)
    b.put(stream, b.chunk(g.node("Add", [tok_part, pos_part], "embed"), segs))
    return stream


def _emit_head(b: _CompactBuilder, blk: _Block, x: _Stream, prefix: str) -> _Stream:
    g, w = b.g, blk.weights
    op = blk.op
    assert isinstance(op, T.AttentionHeadOp)
    out_segs, out_dims = b.write(blk.writes)
    if not len(out_dims) and not b.expose_attention:
        return _Stream()
    reads = {k: b.read_linear(x, blk.reads[k], w[k], f"{prefix}.x_{k}", tabulate_all=k == "k") for k in "qkv"}
    mask = b.full_mask
    if PAD_IN_SCORES and reads["k"].by_token is not None and reads["q"].nonzero and op.scale_float != 0:
        # PAD keys masked inside the scores: K gets a column "is PAD" (its token table's), Q a column
        # MASK_VALUE / scale, so the product adds MASK_VALUE on PAD keys and 0 (exactly) elsewhere
        is_pad = (np.arange(len(b.tok)) == g.model.spec.pad_id).astype(np.float32)
        reads["k"] = reads["k"].with_column(token_column=is_pad)
        reads["q"] = reads["q"].with_column(constant=np.float32(MASK_VALUE / np.float32(op.scale_float)))
        mask = b.position_mask
    # the projections [B, T, d], each from what it reads (a projection of zeros is zeros: skipped)
    proj = {k: b.linear(reads[k], f"{prefix}.{k}", rows=False) for k in "qkv"}
    if proj["q"] is None or proj["k"] is None:  # scores all zero: a uniform pattern over unmasked keys
        scores = b.full_mask()
    else:
        # a key read only by position is one [T, d] table for the whole batch
        by_position_only = reads["k"].rest is None and reads["k"].by_token is None
        k_t = g.node("Transpose", [proj["k"]], f"{prefix}.k_T", perm=[1, 0] if by_position_only else [0, 2, 1])
        qk = g.node("MatMul", [proj["q"], k_t], f"{prefix}.qk")
        scale = g.init(f"{prefix}.scale", _scalar(op.scale_float, np.float32))
        scores = g.node("Add", [g.node("Mul", [qk, scale], f"{prefix}.scaled"), mask()], f"{prefix}.scores")
    pattern = g.node("Softmax", [scores], f"{prefix}.pattern", axis=-1)
    g.patterns.append((g.attention_names[op], pattern))
    if proj["v"] is None or not len(out_dims):
        return _Stream()
    z = g.node("MatMul", [pattern, proj["v"]], f"{prefix}.z")
    z_rows = b.to_rows(z, w["v"].shape[1], f"{prefix}.z_rows")
    out = _Stream()
    b.put(out, b.chunk(_project(g, z_rows, w["o"][:, out_dims], f"{prefix}.out"), out_segs))
    return out


def _emit_mlp(b: _CompactBuilder, blk: _Block, x: _Stream, prefix: str) -> _Stream:
    g, w = b.g, blk.weights
    out_segs, out_dims = b.write(blk.writes)
    if not len(out_dims):
        return _Stream()
    w_out, b_out = w["w_out"][:, out_dims], w["b_out"][out_dims]
    rd = b.read_linear(x, blk.reads["in"], w["w_in"], f"{prefix}.x", bias=w["b_in"])
    out = _Stream()
    if rd.rest is None and rd.by_token is None and rd.by_position is None:
        # it reads only constant directions (`one`): one row per position, all the same
        rd = replace(rd, by_position=np.zeros((len(b.pos), w_out.shape[0]), np.float32))
    if rd.rest is None:  # a function of the token and/or the position: tabulated whole
        table = _tabulate_mlp(rd, w_out, b_out)
        if table is not None:
            ids, what = (b.tokens_flat(), "by_token") if rd.by_position is None else (
                (b.positions_flat(), "by_position") if rd.by_token is None else (_pair_ids(b), "by_pair"))
            y = g.node("Gather", [g.init(f"{prefix}.{what}", table), ids], f"{prefix}.out", axis=0)
            b.put(out, b.chunk(y, out_segs))
            return out
    terms = b.gathered(rd, f"{prefix}.x", rows=True)
    c = terms[0] if len(terms) == 1 else (g.node("Add", terms, f"{prefix}.x_tabulated") if terms else "")
    if rd.bias is not None:
        bias = g.init(f"{prefix}.b_in", rd.bias)
        c = g.node("Add", [c, bias], f"{prefix}.x_tabulated") if c else bias
    if rd.rest is None:
        pre = c
    else:
        pre = _affine(g, rd.rest[0], rd.rest[1], c or g.init(f"{prefix}.b_in", np.zeros(w_out.shape[0], np.float32)),
                      f"{prefix}.pre")
    hidden = g.node("Relu", [pre], f"{prefix}.hidden")
    y = _affine(g, hidden, w_out, g.init(f"{prefix}.b_out", b_out), f"{prefix}.out")
    b.put(out, b.chunk(y, out_segs))
    return out


def _tabulate_mlp(rd: _Read, w_out: np.ndarray, b_out: np.ndarray) -> np.ndarray | None:
    """The MLP's output for every token (or position, or pair of both) when that is all it reads;
    None for a pair table past PAIR_TABLE_MAX."""
    tok, pos = rd.by_token, rd.by_position
    if tok is not None and pos is not None:
        if len(tok) * len(pos) * w_out.shape[1] > PAIR_TABLE_MAX:
            return None
        pre = (tok.astype(np.float64)[:, None, :] + pos[None, :, :]).reshape(len(tok) * len(pos), -1)
    else:
        pre = next(t for t in (tok, pos) if t is not None).astype(np.float64)
    if rd.bias is not None:  # (read_linear folds it into a table whenever there is one)
        pre = pre + rd.bias
    return (np.maximum(pre, 0) @ w_out + b_out).astype(np.float32)


def _pair_ids(b: _CompactBuilder) -> str:
    """token * positions + position, per row: the row index of a (token, position) pair table."""
    g = b.g
    return b.shared("pair_ids", lambda: g.node("Add", [
        g.node("Mul", [b.tokens_flat(), b.const("const.n_positions", _scalar(len(b.pos), np.int64))], "pair_ids.token"),
        b.positions_flat()], "pair_ids"))


def _emit_readout(b: _CompactBuilder, op: T.ReadoutOp, x: _Stream) -> None:
    g = b.g
    dims = np.array(op.dims_list, dtype=np.int64)
    r = b.read(x, dims, "readout.x")
    if r is None or not np.isin(dims, r[1]).all():  # some output dims are never written (zeros)
        r = (RESIDUAL, np.arange(g.model.d_model))
    column = {int(d): i for i, d in enumerate(r[1])}
    cols = np.array([column[int(d)] for d in dims], dtype=np.int64)
    if op.is_categorical:
        values = r[0] if np.array_equal(cols, np.arange(len(r[1]))) else g.node(
            "Gather", [r[0], g.init("readout.dims", cols)], "readout.values", axis=-1)
        c_thr = g.init("const.none_threshold", _scalar(NONE_THRESHOLD, np.float32))
        c_none = g.init("const.minus_one_i64", _scalar(-1, np.int64))
        c_last = b.const("const.axes_m1", np.array([-1], dtype=np.int64))
        idx = g.node("ArgMax", [values], "readout.argmax", axis=-1, keepdims=0)
        mx = g.node("ReduceMax", [values, c_last], "readout.max", keepdims=0)
        is_none = g.node("Less", [mx, c_thr], "readout.is_none")
        flat = g.node("Where", [is_none, c_none, idx], "readout.ids")
    else:
        flat = g.node("Gather", [r[0], g.init("readout.dim", _scalar(cols[0], np.int64))], "readout.value", axis=-1)
    g.node_named("Reshape", [flat, b.batch_seq()], OUTPUT)


def _emit_full_residual(b: _CompactBuilder, x: _Stream, d_model: int) -> None:
    """The `residual` output [B, T, D]: runs of consecutive dims cut from the final segments and
    concatenated in residual order (a copy, no gather), zeros where nothing writes."""
    def held(dim: int) -> bool:
        return int(b.part.segment_of[dim]) in x.where  # (-1, never written, is in no stream)

    runs: list[tuple[_Chunk | None, int, int]] = []  # (chunk or None for zeros, first column, width)
    d = 0
    while d < d_model:
        s = int(b.part.segment_of[d])
        if not held(d):  # a run of dims nothing wrote: zeros
            end = d
            while end < d_model and not held(end):
                end += 1
            runs.append((None, 0, end - d))
            d = end
            continue
        chunk, i = x.where[s]
        dims = b.part.segments[s]
        k = int(np.searchsorted(dims, d))  # d's column in its segment; the run goes on while dims do
        end = k
        while end + 1 < len(dims) and dims[end + 1] == dims[end] + 1:
            end += 1
        start_col = chunk.offsets[i] + k
        last = runs[-1] if runs else None
        if last is not None and last[0] is chunk and last[1] + last[2] == start_col:
            runs[-1] = (chunk, last[1], last[2] + end - k + 1)  # the next columns of the same chunk
        else:
            runs.append((chunk, start_col, end - k + 1))
        d = int(dims[end]) + 1
    pieces = [b.zeros(width) if chunk is None else
              chunk.name if start == 0 and width == chunk.width else
              b.columns(chunk.name, start, start + width, "residual.part") for chunk, start, width in runs]
    if d_model >= RESIDUAL_PIECEWISE_MIN:
        # a Reshape of an intermediate is a view, of the graph output a copy of the whole residual
        seqs = [b.to_3d(p, "residual.seq") for p in pieces]
        b.g.node_named("Concat", seqs, RESIDUAL, axis=-1)
    else:
        rows = pieces[0] if len(pieces) == 1 else b.g.node("Concat", pieces, "residual.rows", axis=-1)
        b.g.node_named("Reshape", [rows, b.shape_3d()], RESIDUAL)


# --------------------------------------------------------------------------- the model


def tensor_to_compact_onnx(
    module: ModuleOp, *, expose_attention: bool = False, name: str | None = None
) -> onnx.ModelProto:
    """Exports a tensor-level module as a compact ONNX model (same contract as `tensor_to_onnx`).
    Directions sharing dimensions (reuse-residual) are kept apart here anyway: such a module is
    expanded first (expand-residual), so its erasures cost nothing."""
    from raspc.passes.expand_residual import expand_residual

    model = T.tensor_model(expand_residual(module))
    g = _GraphBuilder(model)
    blocks = [_block(op) for op in model.ops if isinstance(op, (T.AttentionHeadOp, T.MlpOp))]
    tok = T.dense_to_numpy(model.embed.token_embedding)
    pos = T.dense_to_numpy(model.embed.position_embedding)
    readout_dims = np.array(model.readout.dims_list, dtype=np.int64)
    part = partition_residual(
        model.d_model,
        writers=[nonzero_cols(tok), nonzero_cols(pos), *(blk.writes for blk in blocks)],
        readers=[*(dims for blk in blocks for dims in blk.reads.values()), readout_dims],
    )
    embedding_only = np.zeros(model.d_model, dtype=bool)
    embedding_only[nonzero_cols(tok, pos)] = True
    for blk in blocks:
        embedding_only[blk.writes] = False
    b = _CompactBuilder(g, part, embedding_only, tok, pos, expose_attention)
    by_op = {blk.op: blk for blk in blocks}
    streams: dict[object, _Stream] = {model.embed.res: _emit_embed(b, model.embed)}
    for op in model.ops:
        if isinstance(op, T.AddOp):
            streams[op.res] = b.merge([streams[v] for v in op.inputs], "residual")
        else:
            emit = _emit_head if isinstance(op, T.AttentionHeadOp) else _emit_mlp
            streams[op.res] = emit(b, by_op[op], streams[op.x], g.prefixes[op])
    final = streams[model.readout.x]
    _emit_full_residual(b, final, model.d_model)
    _emit_readout(b, model.readout, final)
    return assemble_model(g, _graph_outputs(g, expose_attention), name, "compact graph",
                          {GRAPH_KIND: '"compact"'})


@dataclass(frozen=True)
class ExportCompactOnnxPass(ModulePass):
    """Writes the module's compact ONNX model to `output` (the IR itself is left unchanged)."""

    name = "export-compact-onnx"

    output: str = "model.onnx"
    expose_attention: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = tensor_to_compact_onnx(op, expose_attention=self.expose_attention)
        with open(self.output, "wb") as f:
            f.write(model.SerializeToString())


__all__ = ["GRAPH_KIND", "ExportCompactOnnxPass", "ResidualPartition", "partition_residual", "tensor_to_compact_onnx"]
