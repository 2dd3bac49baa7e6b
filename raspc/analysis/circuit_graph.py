"""The ground-truth circuit graph: which block computes which s-op and whose outputs it reads.

A compiled model's residual stream is a direct sum of labelled spaces, each written by exactly
the block that computes it, and every block reads exact zeros outside the directions it uses.
So the graph is read off the weights without any threshold: a block *reads* a direction when
its row of `W_Q`, `W_K`, `W_V` or `W_in` is non-zero, and *writes* it when its column of the
token or position embedding, `W_O` or `W_out` is; an edge joins every earlier writer of a
direction to its reader, through the side that reads it (`Q`, `K`, `V`, `mlp_in`, `readout`).

Nodes: one `embed` node per space the embedding writes (`embed.tokens`, `embed.indices`,
`embed.one`, `embed.bos`, constants), one `head` per attention head (`L1.sort`), one `mlp`
node per MLP block of the program (`L0.mlp.hist`: a layer's MLP is its blocks side by side,
split again here by the spaces their hidden units write), and the `readout`. Each node names the
s-op it computes (`sop`): a selector width's BOS-share head `hist.attn` computes part of `hist`.

This is what the compiler knows: on every library program it equals the graph of operands at
the craft level (tests/test_circuits_graph.py checks it). `raspc circuits MODEL.onnx --json` prints
it; the ONNX export stores it in the metadata (`raspc.circuit_graph`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raspc.analysis.weights import HeadWeights, ModelWeights, nonzero_cols, nonzero_rows

VIAS = ("Q", "K", "V", "mlp_in", "readout")
KINDS = ("embed", "head", "mlp", "readout")
# blocks whose label extends the s-op's own (`hist.attn` is the BOS-share head of `hist`,
# `x.interval` the one-hot of intervals a numerical map of `x` goes through)
_PART_SUFFIXES = (".attn", ".interval")


def space_of(label: str) -> str:
    """The space a residual direction belongs to: `hist:3` -> `hist`; a numerical `frac` -> `frac`."""
    return label.split(":", 1)[0]


def sop_of(block_label: str) -> str:
    """The s-op a block computes (or helps compute)."""
    for suffix in _PART_SUFFIXES:
        if block_label.endswith(suffix):
            return block_label[: -len(suffix)]
    return block_label


@dataclass(frozen=True)
class Node:
    name: str
    layer: int  # -1 for the embedding, n_layers for the readout
    kind: str  # embed | head | mlp | readout
    label: str
    sop: str | None
    order: int = field(default=0, compare=False)  # position in the computation (writers before readers)
    units: tuple[int, int] | None = field(default=None, compare=False)  # an MLP node's hidden units [start, stop)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "label": self.label, "sop": self.sop}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    via: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "via": self.via}


@dataclass(frozen=True)
class CircuitGraph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node '{name}'; nodes: {', '.join(n.name for n in self.nodes)}")

    def nodes_of(self, kind: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == kind)

    def has_edge(self, source: str, target: str, via: str) -> bool:
        return Edge(source, target, via) in self._edge_set

    @property
    def _edge_set(self) -> frozenset[Edge]:
        cached = self.__dict__.get("_edges_cache")
        if cached is None:
            cached = frozenset(self.edges)
            object.__setattr__(self, "_edges_cache", cached)
        return cached

    def inputs(self, target: str, via: str | None = None) -> list[str]:
        return [e.source for e in self.edges if e.target == target and (via is None or e.via == via)]

    def find(self, sop_or_name: str, kind: str | None = None) -> list[Node]:
        """Nodes named `sop_or_name`, or labelled so, or computing that s-op."""
        return [n for n in self.nodes if (kind is None or n.kind == kind)
                and sop_or_name in (n.name, n.label, n.sop)]

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes], "edges": [e.to_json() for e in self.edges]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> "CircuitGraph":
        order = {"embed": 0, "head": 1, "mlp": 2, "readout": 3}
        nodes = tuple(Node(n["name"], int(n["layer"]), n["kind"], n["label"], n["sop"],
                           order=2 * int(n["layer"]) + order[n["kind"]]) for n in data["nodes"])
        edges = tuple(Edge(e["from"], e["to"], e["via"]) for e in data["edges"])
        return CircuitGraph(nodes, edges)

    def to_text(self) -> str:
        lines = []
        for n in self.nodes:
            reads = {}
            for e in self.edges:
                if e.target == n.name:
                    reads.setdefault(e.via, []).append(e.source)
            what = f"{n.kind} {n.name}" + (f" computes {n.sop}" if n.sop and n.kind != "embed" else "")
            parts = [f"{via} <- {', '.join(srcs)}" for via, srcs in reads.items()]
            lines.append(f"  {what}" + (f": {'; '.join(parts)}" if parts else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------- building


def split_mlp(label: str, w_out: np.ndarray, labels: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """A layer MLP's blocks as (label, first unit, stop unit): the tensor level joins the blocks'
    labels with `+` and their hidden units in that order, and each block writes the space named
    after it. A unit writing nothing belongs to its predecessor's block. One part when the
    labels do not split the units cleanly (a user label containing `+`)."""
    hidden = w_out.shape[0]
    parts = label.split("+")
    if len(parts) == 1 or hidden == 0:
        return [(label, 0, hidden)]
    index = {p: i for i, p in enumerate(parts)}
    part_of_dir = np.array([index.get(space_of(lbl), -1) for lbl in labels], np.int64)
    written = w_out != 0
    unit_part = np.where(written, part_of_dir[None, :], -1).max(axis=1)
    known = unit_part >= 0
    if not known.any():
        return [(label, 0, hidden)]
    source = np.maximum.accumulate(np.where(known, np.arange(hidden), 0))  # last known unit so far
    source[: int(np.flatnonzero(known)[0])] = int(np.flatnonzero(known)[0])
    unit_part = unit_part[source]
    if np.any(np.diff(unit_part) < 0):  # not contiguous in the joined order: do not guess
        return [(label, 0, hidden)]
    out = []
    for i, p in enumerate(parts):
        units = np.flatnonzero(unit_part == i)
        if units.size:
            out.append((p, int(units[0]), int(units[-1]) + 1))
    return out


def mlp_nodes(weights: ModelWeights) -> list[tuple[Node, np.ndarray, np.ndarray]]:
    """Every MLP node with its slice of W_in [d, units] and W_out [units, d]."""
    out = []
    for m in weights.mlps:
        for label, start, stop in split_mlp(m.label, m.w_out, weights.labels):
            node = Node(f"L{m.layer}.mlp.{label}", m.layer, "mlp", label, sop_of(label),
                        order=2 * m.layer + 2, units=(start, stop))
            out.append((node, m.w_in[:, start:stop], m.w_out[start:stop]))
    return out


def _head_node(h: HeadWeights) -> Node:
    return Node(h.name, h.layer, "head", h.label, sop_of(h.label), order=2 * h.layer + 1)


def circuit_graph(weights: ModelWeights) -> CircuitGraph:
    """The graph of blocks and the directions they read from each other (module docstring)."""
    labels = weights.labels
    d = len(labels)
    writers: list[list[Node]] = [[] for _ in range(d)]
    nodes: list[Node] = []

    # the embedding: one node per space it writes, in residual order
    embedded = np.union1d(nonzero_cols(weights.token_embedding), nonzero_cols(weights.position_embedding))
    by_space: dict[str, list[int]] = {}
    for i in embedded.tolist():
        by_space.setdefault(space_of(labels[i]), []).append(i)
    for space, dirs in by_space.items():
        node = Node(f"embed.{space}", -1, "embed", space, None if space in ("one", "bos") else space, order=0)
        nodes.append(node)
        for i in dirs:
            writers[i].append(node)

    reads: list[tuple[Node, str, np.ndarray]] = []
    blocks: list[tuple[Node, np.ndarray]] = []  # (node, written directions), in computation order
    mlps = mlp_nodes(weights)
    for layer in range(weights.n_layers):
        for h in weights.heads_in(layer):
            node = _head_node(h)
            for via, m in (("Q", h.w_q), ("K", h.w_k), ("V", h.w_v)):
                reads.append((node, via, nonzero_rows(m)))
            blocks.append((node, nonzero_cols(h.w_o)))
        for node, w_in, w_out in mlps:
            if node.layer == layer:
                reads.append((node, "mlp_in", nonzero_rows(w_in)))
                blocks.append((node, nonzero_cols(w_out)))
    readout = Node("readout", weights.n_layers, "readout", "readout",
                   space_of(labels[weights.readout_dims[0]]) if weights.readout_dims else None,
                   order=2 * weights.n_layers + 1)
    reads.append((readout, "readout", np.array(weights.readout_dims, np.int64)))
    for node, written in blocks:
        nodes.append(node)
        for i in written.tolist():
            writers[i].append(node)
    nodes.append(readout)

    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()  # plain tuples: hashing a frozen dataclass is 5x slower
    for node, via, dirs in reads:
        for i in dirs.tolist():
            for w in writers[i]:
                key = (w.name, node.name, via)
                if w.order < node.order and key not in seen:
                    seen.add(key)
                    edges.append(Edge(*key))
    rank = {n.name: k for k, n in enumerate(nodes)}
    edges.sort(key=lambda e: (rank[e.target], VIAS.index(e.via), rank[e.source]))
    return CircuitGraph(tuple(nodes), tuple(edges))


def graph_json(weights: ModelWeights) -> str:
    """The graph as the compact JSON the ONNX metadata stores."""
    return json.dumps(circuit_graph(weights).to_json(), separators=(",", ":"), ensure_ascii=False)


__all__ = ["CircuitGraph", "Node", "Edge", "circuit_graph", "graph_json", "mlp_nodes", "split_mlp", "space_of",
           "sop_of", "VIAS", "KINDS"]
