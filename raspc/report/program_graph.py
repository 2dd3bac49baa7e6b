"""The program as a graph of s-ops, small enough to travel in an ONNX file's metadata.

`program_graph(module)` reads a rasp-level module (the program as traced, or after the rasp
passes) into plain JSON data: one node per s-op or selector with its op, encoding, value set
(the first `MAX_VALUES` values, and how many there are), the `file:line` it was written at and
the labels of its inputs. `attach_program_graph` stores it under the metadata key
`raspc.program`, so a report can draw the program from the ONNX file alone.
"""

from __future__ import annotations

import json
from typing import Any

import onnx
from xdsl.dialects.builtin import ModuleOp

from raspc.dialects import rasp as R
from raspc.dialects.common import container_of
from raspc.utils.values import format_value

PROGRAM_KEY = "raspc.program"
MAX_VALUES = 64  # values listed per s-op; the count says how many there are


def _detail(op: R.RaspOp) -> str:
    """One line on what the op does beyond its inputs (predicate, default, table size)."""
    if isinstance(op, R.SelectOp):
        comparison = op.comparison
        return f"predicate {comparison.value}" if comparison is not None else "predicate: a relation table"
    if isinstance(op, R.AggregateOp):
        return f"default {format_value(op.default.data)}"
    fn = getattr(op, "fn", None)
    if fn is not None and hasattr(fn, "data"):
        return f"table of {len(fn.data)} entries"
    return ""


def _node(op: R.RaspOp, labels: dict[Any, str]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "label": op.label_str,
        "op": op.name.removeprefix("rasp."),
        "src": op.src_str,
        "inputs": [labels[v] for v in op.operands if v in labels],
        "detail": _detail(op),
    }
    if isinstance(op, R.SOpOp):
        t = op.result_type
        values = t.value_set
        node["kind"] = "sop"
        node["encoding"] = t.enc.value
        node["n_values"] = None if values is None else len(values)
        node["values"] = [] if values is None else [format_value(v) for v in values[:MAX_VALUES]]
    else:
        node["kind"] = "selector"
    return node


def program_graph(module: ModuleOp) -> dict[str, Any]:
    """The program's s-ops and selectors in definition order, and the label of its output."""
    container = container_of(module)
    if not isinstance(container, R.ProgramOp):
        raise TypeError(f"program_graph reads a rasp.program, not a {container.name}")
    labels: dict[Any, str] = {}
    nodes = []
    output = None
    for op in container.body.block.ops:
        if isinstance(op, R.RaspOp):
            labels[op.results[0]] = op.label_str
            nodes.append(_node(op, labels))
        elif isinstance(op, R.OutputOp):
            output = labels.get(op.operands[0])
    return {"nodes": nodes, "output": output}


class ProgramGraphRecorder:
    """An `on_pass` hook for `compile_module`: keeps the graph of the last rasp-level module, i.e.
    the program as the rasp passes left it (fused maps are one node), whose labels the blocks carry."""

    def __init__(self) -> None:
        self.graph: dict[str, Any] | None = None

    def __call__(self, _pass: Any, module: ModuleOp) -> None:
        if isinstance(container_of(module), R.ProgramOp):
            self.graph = program_graph(module)


def attach_program_graph(model: onnx.ModelProto, graph: ModuleOp | dict[str, Any] | None) -> onnx.ModelProto:
    """Stores a program graph (or that of a rasp-level module) in `model`'s metadata, in place."""
    if graph is None:
        return model
    data = program_graph(graph) if isinstance(graph, ModuleOp) else graph
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for prop in model.metadata_props:
        if prop.key == PROGRAM_KEY:
            prop.value = text
            return model
    model.metadata_props.add(key=PROGRAM_KEY, value=text)
    return model


def read_program_graph(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The program graph stored in `model`'s metadata, or None when it has none."""
    for prop in model.metadata_props:
        if prop.key == PROGRAM_KEY:
            return json.loads(prop.value)
    return None


__all__ = ["PROGRAM_KEY", "program_graph", "ProgramGraphRecorder", "attach_program_graph", "read_program_graph"]
