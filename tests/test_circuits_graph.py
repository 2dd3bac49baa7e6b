"""The ground-truth circuit graph, composition scores through MLPs, `circuits --json`, make_induction."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import library_model

from raspc import compile_rasp_to_model, lib, rasp
from raspc.analysis.circuit_graph import KINDS, VIAS, CircuitGraph, circuit_graph, split_mlp
from raspc.analysis.composition import analysis_json, composition_scores, precision_recall
from raspc.analysis.weights import ModelWeights
from raspc.lowering.tensor_to_onnx import CIRCUIT_GRAPH


def craft_graph_edges(model) -> set[tuple[str, str, str]]:
    """(writer, reader, via) from the craft level's operands: what the compiler knows."""
    from raspc.dialects import craft as C
    from raspc.dialects.common import container_of

    craft = container_of(model.module_at("craft"))

    def writer(value) -> str:
        op = value.owner
        if isinstance(op, (C.EmbedOp, C.PositionalOp)):
            return f"embed.{value.type.space.data}"
        if isinstance(op, C.AttentionHeadOp):
            return f"L{op.layer_index}.{op.label.data}"
        return f"L{op.layer_index}.mlp.{op.label.data}"

    edges = set()
    for op in craft.body.block.ops:
        if isinstance(op, C.AttentionHeadOp):
            name = f"L{op.layer_index}.{op.label.data}"
            for via, operands in (("Q", op.queries), ("K", op.keys), ("V", op.values)):
                edges |= {(writer(v), name, via) for v in operands}
        elif isinstance(op, C.MlpOp):
            edges |= {(writer(v), f"L{op.layer_index}.mlp.{op.label.data}", "mlp_in") for v in op.inputs}
        elif isinstance(op, C.OutputOp):
            edges.add((writer(op.inp), "readout", "readout"))
    return edges


@pytest.mark.parametrize("name", sorted(lib.LIBRARY))
def test_every_library_program_has_a_ground_truth_graph(name: str) -> None:
    model = library_model(name)
    weights = ModelWeights.from_module(model.module)
    graph = circuit_graph(weights)
    blocks = [n for n in graph.nodes if n.kind in ("head", "mlp")]
    assert blocks and graph.edges
    assert graph.inputs("readout", "readout"), "the readout reads the block computing the output"
    assert all(n.kind in KINDS for n in graph.nodes) and all(e.via in VIAS for e in graph.edges)
    names = {n.name for n in graph.nodes}
    assert len(names) == len(graph.nodes)
    order = {n.name: n.order for n in graph.nodes}
    assert all(order[e.source] < order[e.target] for e in graph.edges), "edges run forward"
    # the file alone carries the same graph, and its weights give the same graph again
    meta = {p.key: p.value for p in model.onnx_model.metadata_props}
    assert json.loads(meta[CIRCUIT_GRAPH]) == graph.to_json()
    assert circuit_graph(ModelWeights.from_onnx(model.onnx_model)).to_json() == graph.to_json()
    assert CircuitGraph.from_json(graph.to_json()).to_json() == graph.to_json()


@pytest.mark.parametrize("name", ["make_sort_unique", "make_sort_freq", "make_shuffle_dyck", "make_frac_prevs",
                                  "make_induction", "make_count_less_freq", "make_nary_sequencemap"])
def test_the_graph_read_off_the_weights_is_the_craft_level_graph(name: str) -> None:
    model = library_model(name)
    graph = circuit_graph(ModelWeights.from_module(model.module))
    assert {(e.source, e.target, e.via) for e in graph.edges} == craft_graph_edges(model)


def test_split_mlp_recovers_each_block_of_a_layer() -> None:
    labels = ("one", "a:1", "a:2", "b")
    w_out = np.zeros((4, 4), np.float32)
    w_out[0, 1] = w_out[1, 2] = w_out[3, 3] = 1.0  # unit 2 writes nothing: it belongs to `a`
    assert split_mlp("a+b", w_out, labels) == [("a", 0, 3), ("b", 3, 4)]
    assert split_mlp("a+b+c", w_out, labels) == [("a", 0, 3), ("b", 3, 4)]  # `c` without units
    assert split_mlp("x", w_out, labels) == [("x", 0, 4)]
    w_out[:] = 0
    w_out[0, 3] = w_out[3, 1] = 1.0  # out of the joined order: not split
    assert split_mlp("a+b", w_out, labels) == [("a+b", 0, 4)]


def test_induction_head_reads_the_previous_token_head_through_its_keys() -> None:
    model = library_model("make_induction")
    weights = ModelWeights.from_module(model.module)
    graph = circuit_graph(weights)
    (prev,) = graph.find("prev_token", kind="head")
    (ind,) = graph.find("induction", kind="head")
    assert prev.layer < ind.layer
    assert graph.has_edge(prev.name, ind.name, "K")
    assert not graph.has_edge(prev.name, ind.name, "Q") and not graph.has_edge(prev.name, ind.name, "V")
    scores = {(c.source, c.target, c.kind, c.path): c for c in composition_scores(weights, graph)}
    k = scores[(prev.name, ind.name, "K", "direct")]
    assert k.ground_truth and k.score > 0.1
    assert scores[(prev.name, ind.name, "Q", "direct")].score == 0.0
    assert scores[(prev.name, ind.name, "V", "direct")].score == 0.0


def test_induction_answers_like_the_evaluator_where_matches_agree() -> None:
    program = lib.make_induction()
    model = library_model("make_induction")
    rng = np.random.default_rng(0)
    rows = []
    while len(rows) < 200:
        xs = list(rng.choice(list("abcd"), size=int(rng.integers(1, 9))))
        try:
            expected = rasp.evaluate(program, xs)
        except (TypeError, ValueError):
            continue  # two different successors: a mean of strings, outside the domain
        rows.append((xs, expected))
    got = model.apply_batch([["BOS", *xs] for xs, _ in rows])
    assert [g[1:] for g in got] == [e for _, e in rows]
    causal = compile_rasp_to_model(program, {"a", "b", "c", "d"}, 8, causal=True)
    assert causal.apply_batch([["BOS", *xs] for xs, _ in rows[:50]]) == got[:50]


def test_composition_through_an_mlp_is_scored_and_is_ground_truth() -> None:
    weights = ModelWeights.from_module(library_model("make_sort_unique").module)
    scores = composition_scores(weights)
    direct = [c for c in scores if c.path == "direct"]
    assert not any(c.ground_truth for c in direct)  # every head-to-head path goes through an MLP
    through = [c for c in scores if c.path == "mlp" and c.ground_truth]
    assert through and all(c.kind == "K" and c.score > 0.1 for c in through)
    assert all(c.mlp == "L0.mlp.target_pos" for c in through)
    pr = precision_recall(scores, 0.05)
    assert (pr.precision, pr.recall) == (1.0, 1.0)
    assert precision_recall(scores, 0.99).recall == 0.0


def test_chains_of_mlps_are_found_in_shuffle_dyck() -> None:
    weights = ModelWeights.from_module(library_model("make_shuffle_dyck").module)
    chains = [c for c in composition_scores(weights) if c.path == "mlp_chain"]
    assert chains and all(c.ground_truth for c in chains if c.score > 0)
    assert all(c.mlp.count(">") >= 1 for c in chains if c.score > 0)
    # the balance heads feed the final heads' values through three lookups; the length's
    # selector-width head feeds the last-zero head's query through two
    assert {c.kind for c in chains if c.ground_truth} == {"Q", "V"}


def test_circuits_json_on_the_command_line(tmp_path) -> None:
    path = tmp_path / "ind.onnx"
    library_model("make_induction").save_onnx(str(path))
    out = subprocess.run([sys.executable, "-m", "raspc.cli.main", "circuits", str(path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert set(data) >= {"nodes", "edges", "composition", "precision_recall"}
    assert all(set(n) == {"name", "layer", "kind", "label", "sop"} for n in data["nodes"])
    assert all(set(e) == {"from", "to", "via"} for e in data["edges"])
    names = {n["name"] for n in data["nodes"]}
    assert all(c["from"] in names and c["to"] in names for c in data["composition"])
    assert {"from": "L0.prev_token", "to": "L1.induction", "via": "K"} in data["edges"]
    assert data == json.loads(json.dumps(analysis_json(ModelWeights.from_onnx(str(path)))))
    head = json.loads(subprocess.run(
        [sys.executable, "-m", "raspc.cli.main", "circuits", str(path), "--head", "induction", "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert head["head"] == "L1.induction" and head["qk"] and head["ov"]
    text = subprocess.run([sys.executable, "-m", "raspc.cli.main", "circuits", str(path)],
                          capture_output=True, text=True, check=True).stdout
    assert "QK circuit" in text and "circuit graph" in text
    bad = subprocess.run([sys.executable, "-m", "raspc.cli.main", "circuits", str(tmp_path / "none.onnx"), "--json"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("raspc: error:") and "Traceback" not in bad.stderr
