"""What the pictures need from a model, read from an ONNX file alone.

`ModelView` is the one accessor the report and the plots read through: the metadata (vocabulary,
residual labels, the program graph when `raspc compile` stored one), the blocks (heads and MLPs
with their layer, label, the s-op they compute, the residual directions they read and write, their
parameters) and, for one input, the residual stream at every layer boundary and every head's
attention pattern. Those come from running the model with its named intermediates (`embed`,
`L1.residual`, `L1.sort.pattern`, ...) added as outputs of an in-memory copy: the transformer-shaped
graph that `tensor_to_onnx` writes. A file that lacks them (a compact export) still gives the
metadata, and the boundaries it cannot show are simply absent (`ModelView.notes` says why).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from raspc.analysis.weights import RESIDUAL_LAYOUT
from raspc.errors import InputError
from raspc.report.program_graph import read_program_graph
from raspc.runtime import OnnxModel

REQUIRED_METADATA = ("raspc.vocab", "raspc.residual_labels", "raspc.output_values", "raspc.max_seq_len")
HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")
MLP_WEIGHTS = ("W_in", "b_in", "W_out", "b_out")
_PREFIX = re.compile(r"^L(\d+)\.(.+)$")


@dataclass(frozen=True)
class Block:
    """A head or an MLP of the exported model."""

    name: str  # the ONNX prefix, e.g. "L1.sort" or "L2.sort.2"
    layer: int
    kind: str  # "head" | "mlp"
    label: str  # the block's label ("sort.attn", "sort.2", "a+b" for one MLP computing two s-ops, ...)
    sops: tuple[str, ...]  # the s-ops (residual groups) it computes
    params: int
    reads: dict[str, tuple[int, ...]]  # "q", "k", "v" (heads) or "in" (MLPs) -> residual dims read
    writes: tuple[int, ...]  # residual dims written
    width: int  # d_head (heads) or hidden units (MLPs)

    @property
    def sop(self) -> str:
        return ", ".join(self.sops)


@dataclass(frozen=True)
class Boundary:
    """The residual stream after a sublayer (or after the embedding)."""

    name: str  # "embedding", "L0 attention", "L0 MLP", ...
    tensor: str  # the ONNX value holding it
    layer: int  # -1 for the embedding


@dataclass
class Activations:
    """One input's run: residuals [seq, d_model] per boundary, patterns [seq, seq] per head."""

    tokens: list[Any]  # BOS first
    decoded: list[Any]
    residuals: dict[str, np.ndarray] = field(default_factory=dict)
    patterns: dict[str, np.ndarray] = field(default_factory=dict)


def residual_groups(labels: Sequence[str], sops: Sequence[str] = ()) -> list[tuple[str, list[int]]]:
    """Residual dims grouped by s-op, in residual order: `tokens:a` and `tokens:b` -> "tokens";
    `sort.selected:1` -> "sort" when `sort` is a known s-op, else "sort.selected"."""
    known = sorted(set(sops), key=len, reverse=True)
    groups: dict[str, list[int]] = {}
    for d, label in enumerate(labels):
        groups.setdefault(group_of(label, known), []).append(d)
    return list(groups.items())


def group_of(label: str, known: Sequence[str] = ()) -> str:
    """The s-op a residual label (or block label) belongs to: the longest known s-op label it
    starts with (followed by ':' or '.'), else the part before ':'."""
    for sop in known:
        if label == sop or label.startswith(sop + ":") or label.startswith(sop + "."):
            return sop
    return label.split(":", 1)[0]


class ModelView:
    """A raspc ONNX model seen by the report: metadata, blocks, and activations on demand."""

    def __init__(self, model: onnx.ModelProto, source: str = "<model>"):
        self.model = model
        self.source = source
        self.meta = {p.key: p.value for p in model.metadata_props}
        missing = [k for k in REQUIRED_METADATA if k not in self.meta]
        if missing:
            raise InputError(
                f"{source} is not a raspc model: its metadata has no {', '.join(missing)} "
                "(compile the program with raspc to get one)"
            )
        if RESIDUAL_LAYOUT in self.meta:
            raise InputError(
                f"{source} shares residual dimensions between s-ops (compiled with reuse-residual), and the "
                "report shows one s-op per dimension: compile it without --reuse-residual to view it"
            )
        try:
            self.labels: tuple[str, ...] = tuple(json.loads(self.meta["raspc.residual_labels"]))
        except ValueError as exc:
            raise InputError(f"{source}: malformed raspc.residual_labels metadata ({exc})") from None
        self.program = read_program_graph(model)
        self.notes: list[str] = []
        self.sops = self._sop_labels()
        self.groups = residual_groups(self.labels, self.sops)
        self.blocks = self._blocks()
        self.boundaries = self._boundaries()
        if not self.boundaries:
            self.notes.append("this file has no per-layer residuals (a compact export): only the final one is shown")
        node_outputs = {o for n in model.graph.node for o in n.output}
        self._patterns = {b.name: f"{b.name}.pattern" for b in self.blocks
                          if b.kind == "head" and f"{b.name}.pattern" in node_outputs}
        # one session that also answers the intermediates: the runtime encodes, runs and decodes
        self.runtime = OnnxModel(self._session([b.tensor for b in self.boundaries] + list(self._patterns.values())))

    @staticmethod
    def load(path: str | os.PathLike[str]) -> "ModelView":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"model file '{path}' does not exist")
        try:
            model = onnx.load(path)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise InputError(f"cannot read '{path}' as an ONNX model: {exc}") from None
        return ModelView(model, os.path.basename(path))

    # ------------------------------------------------------------------ structure

    def _sop_labels(self) -> list[str]:
        if self.program is not None:
            return [n["label"] for n in self.program["nodes"] if n.get("kind") == "sop"]
        return list(dict.fromkeys(label.split(":", 1)[0] for label in self.labels))

    @property
    def title(self) -> str:
        """The program's output s-op and the file, e.g. "sort (sort.onnx)"."""
        output = (self.program or {}).get("output")
        name = self.model.graph.name
        named = output or (name if name and name != "raspc_model" else None)
        return f"{named} ({self.source})" if named else self.source

    def _blocks(self) -> list[Block]:
        inits = {i.name: i for i in self.model.graph.initializer}
        blocks = []
        for name in inits:
            for kind, weights in (("head", HEAD_WEIGHTS), ("mlp", MLP_WEIGHTS)):
                if not name.endswith("." + weights[0]):
                    continue
                prefix = name[: -len(weights[0]) - 1]
                m = _PREFIX.match(prefix)
                if m is None or not all(f"{prefix}.{w}" in inits for w in weights):
                    continue
                arrays = {w: numpy_helper.to_array(inits[f"{prefix}.{w}"]) for w in weights}
                blocks.append(self._block(prefix, int(m.group(1)), m.group(2), kind, arrays))
        blocks.sort(key=lambda b: (b.layer, b.kind != "head", b.name))
        return blocks

    def _block(self, prefix: str, layer: int, label: str, kind: str, w: dict[str, np.ndarray]) -> Block:
        def rows(a: np.ndarray) -> tuple[int, ...]:
            return tuple(int(i) for i in np.flatnonzero(np.any(a != 0, axis=1)))

        def cols(a: np.ndarray) -> tuple[int, ...]:
            return tuple(int(i) for i in np.flatnonzero(np.any(a != 0, axis=0)))

        params = int(sum(a.size for a in w.values()))
        if kind == "head":
            reads = {"q": rows(w["W_Q"]), "k": rows(w["W_K"]), "v": rows(w["W_V"])}
            writes, width = cols(w["W_O"]), int(w["W_Q"].shape[1])
        else:
            reads = {"in": rows(w["W_in"])}
            out = w["W_out"] if not np.any(w["b_out"]) else np.vstack([w["W_out"], w["b_out"][None, :]])
            writes, width = cols(out), int(w["W_in"].shape[1])
        written = [self.labels[d] for d in writes]
        sops = tuple(dict.fromkeys(self._sop_of(part, written) for part in label.split("+")))
        return Block(prefix, layer, kind, label, sops, params, reads, writes, width)

    def _sop_of(self, label: str, written: list[str]) -> str:
        """The s-op a block (or one part of a fused block's label) computes: the label's s-op, or
        failing that the group the block writes most."""
        known = sorted(self.sops, key=len, reverse=True)
        by_label = group_of(label, known)
        if by_label in self.sops:
            return by_label
        if written:
            groups = [group_of(w, known) for w in written]
            return max(sorted(set(groups)), key=groups.count)
        return by_label

    def _boundaries(self) -> list[Boundary]:
        """`embed`, then every residual sum, in graph order, named by the blocks it adds."""
        heads = {b.name for b in self.blocks if b.kind == "head"}
        mlps = {b.name for b in self.blocks if b.kind == "mlp"}
        out: list[Boundary] = []
        for node in self.model.graph.node:
            name = node.output[0] if node.output else ""
            if name == "embed":
                out.append(Boundary("embedding", name, -1))
            elif re.match(r"^L\d+\.residual(\.\d+)?$", name) and node.op_type in ("Sum", "Identity", "Add"):
                added = [i[: -len(".out")] for i in node.input if i.endswith(".out")]
                layer = int(name[1:].split(".", 1)[0])
                kind = "MLP" if added and all(a in mlps for a in added) else (
                    "attention" if added and all(a in heads for a in added) else "blocks")
                out.append(Boundary(f"L{layer} {kind}", name, layer))
        return out

    # ------------------------------------------------------------------ numbers

    @property
    def params(self) -> int:
        embed = sum(int(np.prod(i.dims)) for i in self.model.graph.initializer
                    if i.name in ("token_embedding", "position_embedding"))
        return embed + sum(b.params for b in self.blocks)

    @property
    def layers(self) -> list[int]:
        return sorted({b.layer for b in self.blocks})

    def example_input(self) -> list[Any]:
        """A short input drawn from the vocabulary (deterministic): BOS, then tokens cycling."""
        vocab = list(self.runtime.input_vocab)
        n = min(self.runtime.max_seq_len, max(4, min(len(vocab), 8)))
        return [self.runtime.bos, *[vocab[(i * 7 + i // len(vocab)) % len(vocab)] for i in range(n)]]

    def run(self, seq: Sequence[Any]) -> Activations:
        """Residuals at every boundary and every head's pattern for one input (BOS first)."""
        ids = np.array([self.runtime.encode(seq)], dtype=np.int64)
        names = ["output", "residual", *[b.tensor for b in self.boundaries], *self._patterns.values()]
        values = self.runtime.run(ids, list(dict.fromkeys(names)))
        act = Activations(tokens=list(seq), decoded=self.runtime.decode(values["output"][0]))
        for b in self.boundaries:
            act.residuals[b.name] = values[b.tensor][0]
        act.residuals["final"] = values["residual"][0]
        for head, tensor in self._patterns.items():
            act.patterns[head] = values[tensor][0]
        return act

    def _session(self, intermediates: list[str]) -> Any:
        """An onnxruntime session of the model with `intermediates` as extra outputs (added to the
        proto only while it is serialised, so the caller's model is left as it was)."""
        import onnxruntime as ort

        graph = self.model.graph
        have = {o.name for o in graph.output}
        extra = [helper.make_empty_tensor_value_info(n) for n in dict.fromkeys(intermediates) if n not in have]
        graph.output.extend(extra)
        try:
            data = self.model.SerializeToString()
        finally:
            del graph.output[len(graph.output) - len(extra):]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        try:
            return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise InputError(f"cannot load {self.source}: {exc}") from None

    def circuit_graph(self) -> dict[str, Any]:
        """The ground-truth circuit graph stored in the file (`raspc.circuit_graph`, from
        raspc.analysis.circuit_graph) when there is one, else the same wiring read off the weights
        here: blocks as nodes and, for every block, an edge from each earlier block (or the
        embedding) whose written directions it reads, through Q, K, V or the MLP input."""
        stored = self.meta.get("raspc.circuit_graph")
        if stored:
            try:
                graph = json.loads(stored)
                return {"nodes": list(graph["nodes"]), "edges": list(graph["edges"])}
            except (ValueError, KeyError, TypeError):
                self.notes.append("the file's raspc.circuit_graph is malformed: the graph is read off the weights")
        return self._circuit_graph_from_weights()

    def _circuit_graph_from_weights(self) -> dict[str, Any]:
        writers: dict[int, list[str]] = {d: ["embed"] for d in self._embedding_dims()}
        nodes = [{"name": "embed", "layer": -1, "kind": "embed", "sop": "tokens, indices"}]
        edges = []
        sublayers: dict[tuple[int, str], list[Block]] = {}
        for b in self.blocks:
            sublayers.setdefault((b.layer, b.kind != "head"), []).append(b)  # type: ignore[arg-type]
        for key in sorted(sublayers):
            group = sublayers[key]
            for b in group:  # a sublayer's blocks see what earlier sublayers wrote, not each other
                nodes.append({"name": b.name, "layer": b.layer, "kind": b.kind, "sop": b.sop, "label": b.label})
                for via, dims in b.reads.items():
                    sources = dict.fromkeys(w for d in dims for w in writers.get(d, ()))
                    for src in sources:
                        edges.append({"from": src, "to": b.name, "via": via.upper() if via != "in" else "mlp_in"})
            for b in group:
                for d in b.writes:
                    writers.setdefault(d, []).append(b.name)
        return {"nodes": nodes, "edges": self._edges_in_order(edges)}

    def _edges_in_order(self, edges: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(edges, key=lambda e: (self._order(e["to"]), self._order(e["from"]), e["via"]))

    def _order(self, name: str) -> int:
        return -1 if name == "embed" else [b.name for b in self.blocks].index(name)

    def _embedding_dims(self) -> set[int]:
        inits = {i.name: i for i in self.model.graph.initializer}
        dims: set[int] = set()
        for name in ("token_embedding", "position_embedding"):
            if name in inits:
                a = numpy_helper.to_array(inits[name])
                dims.update(int(i) for i in np.flatnonzero(np.any(a != 0, axis=0)))
        return dims


def metadata_json(view: ModelView, key: str) -> Any:
    return json.loads(view.meta[key])


__all__ = ["ModelView", "Block", "Boundary", "Activations", "residual_groups", "group_of"]
