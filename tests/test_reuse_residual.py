"""reuse-residual: s-ops that are no longer read give their residual dimensions to later ones.

Every library case compiled with `reuse_residual=True` must answer like the evaluator (and like the
default model), be no wider, and stay readable: the IR round-trips, the verifiers reject a layout
that would mix two s-ops, and the analyses see the model in its labelled basis.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings

import test_e2e_library as e2e
from conftest import build_program
from helpers import MIN_INPUTS, batches, evaluate_rows, n_batches
from raspc import compile_rasp_to_model, lib, rasp
from raspc.analysis.circuits import Circuits
from raspc.analysis.weights import RESIDUAL_LAYOUT, ModelWeights
from raspc.compiler import DEFAULT_PIPELINE, compile_module, parse_ir, with_residual_reuse
from raspc.dialects import craft as C
from raspc.dialects import tensor as T
from raspc.errors import InputError, IRError, PipelineError
from raspc.lowering.program_to_rasp import program_to_rasp

CASES = e2e.USUAL + e2e.BIG
_MODELS: dict[str, tuple[Any, Any]] = {}


def models(case: e2e.Case) -> tuple[Any, Any]:
    """(default model, reuse model) of a case, compiled once per process."""
    if case.name not in _MODELS:
        program = build_program(case.call, case.max_seq_len)
        kw = dict(vocab=list(case.vocab), max_seq_len=case.max_seq_len)
        _MODELS[case.name] = (compile_rasp_to_model(program, **kw), compile_rasp_to_model(program, **kw, reuse_residual=True))
    return _MODELS[case.name]


def width(model: Any) -> int:
    return T.tensor_model(model.module).d_model


@pytest.mark.parametrize("case", e2e._params(CASES))
def test_reuse_answers_like_the_evaluator(case: e2e.Case) -> None:
    """The transformer-shaped graph, where the dimensions are shared, through onnxruntime."""
    from raspc.runtime import OnnxModel

    plain, reused = models(case)
    assert width(reused) <= width(plain)
    numerical = rasp.is_numerical(reused.program)
    dense = OnnxModel(reused.onnx_model.SerializeToString())
    assert dense.session.get_inputs()[0].name and len(dense.residual_labels) == width(reused)
    checked: list[int] = []

    @settings(max_examples=n_batches())
    @given(batches(case.vocab, case.max_seq_len, case.distinct))
    def run(rows: list) -> None:
        cases = evaluate_rows(reused.program, rows)
        assume(cases)
        checked.append(e2e.check_cases(dense, cases, numerical))

    run()
    assert sum(checked) >= MIN_INPUTS


def test_reuse_narrows_programs_whose_s_ops_die_early() -> None:
    """Widths at Tracr's sizes (benchmarks/results/residual_reuse.md has them all). hist: a head
    keyed on the position erases tokens for the output; shift_by's one head writes the output and
    nothing dies before it, so nothing changes."""
    by_name = {c.name: c for c in CASES}
    for name, expected in [("sort", 32), ("shuffle_dyck2", 32), ("reverse", 25), ("hist", 9), ("hist@20", 25)]:
        plain, reused = models(by_name[name])
        assert width(reused) == expected < width(plain), name
    plain, reused = models(by_name["shift_by"])
    assert width(reused) == width(plain)
    assert "erase" not in str(reused.module)


def test_reuse_verifies_at_every_level_against_the_program() -> None:
    """The tensor interpreter (shared dimensions, erasing MLP units) equals the rasp interpreter."""
    program = lib.make_shuffle_dyck2()
    compile_rasp_to_model(program, ["(", ")", "{", "}"], 8, reuse_residual=True, verify=40)
    compile_rasp_to_model(lib.make_sort_freq(max_seq_len=5), ["a", "b", "c", "d"], 5, reuse_residual=True,
                          verify="exhaustive")


def test_causal_models_erase_exactly_too() -> None:
    """Causal masks keep a position's own key: the erasing heads stay exact."""
    # the head reads tokens and indices, the MLP right after it writes the output where they were
    program = rasp.Map(lambda x: x == "a", lib.shift_by(1, rasp.tokens))
    model = compile_rasp_to_model(program, ["a", "b", "c"], 6, causal=True, reuse_residual=True, verify="exhaustive")
    assert " by %indices" in str(model.module_at("craft"))  # a head keyed on indices erases
    assert width(model) < width(compile_rasp_to_model(program, ["a", "b", "c"], 6, causal=True))


def test_position_keyed_heads_stop_where_float32_would_round_their_scores() -> None:
    """Scores 2pq - q^2 times 208 are exact float32 integers up to max_seq_len 200; beyond, the
    pass keys on indices or erases by MLP only."""
    from raspc.passes.reuse_residual import MAX_POSITION_KEYED_LEN, POSITION

    assert 208 * 2 * MAX_POSITION_KEYED_LEN ** 2 < 2 ** 24
    model = compile_rasp_to_model(lib.make_hist(), ["a", "b"], MAX_POSITION_KEYED_LEN + 1, reuse_residual=True)
    assert POSITION not in ModelWeights.from_module(model.module).labels
    small = compile_rasp_to_model(lib.make_hist(), ["a", "b"], MAX_POSITION_KEYED_LEN, reuse_residual=True)
    assert POSITION in ModelWeights.from_module(small.module).labels


@pytest.mark.parametrize("case", e2e._params(CASES))
def test_expanded_reused_model_is_the_default_model(case: e2e.Case) -> None:
    """expand-residual drops exactly what reuse-residual added: the tensor IR is the default one, so
    the compact graph (built from it) is the default model's, byte for byte: reuse costs the deployed
    forward pass nothing."""
    from raspc.passes.expand_residual import expand_residual

    plain, reused = models(case)
    assert str(expand_residual(reused.module)) == str(plain.module)
    for a, b in [(plain.compact_onnx_model.graph, reused.compact_onnx_model.graph)]:
        assert [i.SerializeToString() for i in a.initializer] == [i.SerializeToString() for i in b.initializer]
        assert [n.SerializeToString() for n in a.node] == [n.SerializeToString() for n in b.node]
    assert plain.residual_labels == reused.residual_labels


def test_tracr_activations_of_a_reused_model_are_labelled_by_residual_labels() -> None:
    """What CompiledModel returns is the labelled model's: Tracr's per-sublayer residuals have one
    column per `residual_labels` entry, as without reuse (the file keeps the reuse)."""
    plain, reused = models({c.name: c for c in CASES}["sort"])
    a, b = plain.apply(["BOS", 3, 1, 2]), reused.apply(["BOS", 3, 1, 2])
    assert reused.residual_labels == plain.residual_labels
    assert len(b.residuals) == len(a.residuals)
    for x, y in zip(a.residuals, b.residuals):
        assert y.shape[-1] == len(reused.residual_labels)
        np.testing.assert_array_equal(x, y)
    assert reused.weights.labels == plain.weights.labels
    assert T.tensor_model(reused.module).d_model < len(reused.residual_labels)


def test_compact_and_dense_graphs_agree_on_a_reused_model() -> None:
    plain, reused = models({c.name: c for c in CASES}["shuffle_dyck2"])
    rng = np.random.default_rng(0)
    rows = [["BOS", *rng.choice(["(", ")", "{", "}"], size=8)] for _ in range(64)]
    from raspc.runtime import OnnxModel

    dense = OnnxModel(reused.onnx_model.SerializeToString())
    assert dense.apply_batch(rows) == reused.apply_batch(rows) == plain.apply_batch(rows)


# --------------------------------------------------------------------------- the IR


def _craft_module(reuse: bool) -> Any:
    program = lib.make_reverse(rasp.tokens)
    module = program_to_rasp(program, ["a", "b"], 4, "BOS", "PAD", False)
    pipeline = DEFAULT_PIPELINE.split(",lower-craft-to-tensor")[0]
    return compile_module(module, with_residual_reuse(pipeline) if reuse else pipeline)


def test_craft_ir_round_trips_with_erase_and_dims() -> None:
    module = _craft_module(reuse=True)
    text = str(module)
    assert "craft.erase" in text and "dims = array<i64:" in text
    assert str(parse_ir(text)) == text


def test_dce_keeps_erase_ops() -> None:
    module = _craft_module(reuse=True)
    before = str(module).count("craft.erase")
    assert before > 0
    assert str(compile_module(module, "dce")).count("craft.erase") == before


def test_verifier_rejects_directions_alive_together_on_one_dim() -> None:
    module = _craft_module(reuse=True)
    model = C.ModelOp
    craft_model = next(op for op in module.ops if isinstance(op, model))
    labels = craft_model.residual_labels
    dims = craft_model.residual_dims
    # put the output on the dimension of `tokens:a` (alive until the last layer reads it)
    out = labels.index("reverse:a")
    dims[out] = dims[labels.index("tokens:a")]
    craft_model.set_dims(dims)
    with pytest.raises(Exception, match="share a residual dimension but 'tokens:a' is not erased"):
        module.verify()


def test_verifier_rejects_a_read_after_the_erase() -> None:
    module = _craft_module(reuse=True)
    erase = [op for op in module.walk() if isinstance(op, C.EraseOp)][-1]
    assert erase.layer_index > 0
    erase.properties["layer"] = type(erase.layer)(0, erase.layer.type)  # before its last reader
    with pytest.raises(Exception, match="outside its lifetime|runs before its space is written"):
        module.verify()


def test_tensor_verifier_rejects_overlapping_spans() -> None:
    module = compile_module(_craft_module(reuse=True), "lower-craft-to-tensor")
    tensor_model = T.model_op(module)
    spans = list(tensor_model.spans.get_values())
    dims = list(tensor_model.dims.get_values())
    i = next(i for i, d in enumerate(dims) if dims.count(d) > 1 and spans[2 * i] == min(
        spans[2 * j] for j, e in enumerate(dims) if e == d))  # the first holder of a shared dim
    spans[2 * i + 1] = 2 * 10  # never erased: the next holder of its dim overlaps it
    from xdsl.dialects.builtin import DenseArrayBase, i64

    tensor_model.properties["spans"] = DenseArrayBase.from_list(i64, spans)
    with pytest.raises(Exception, match="overlapping lifetimes"):
        module.verify()


def test_reuse_runs_once_and_needs_the_layout() -> None:
    module = _craft_module(reuse=True)
    with pytest.raises(IRError, match="runs once"):
        compile_module(module, "reuse-residual")
    with pytest.raises(PipelineError, match="after layout-residual"):
        with_residual_reuse("infer-value-sets,lower-rasp-to-craft")
    assert with_residual_reuse(with_residual_reuse(DEFAULT_PIPELINE)).count("reuse-residual") == 1


# --------------------------------------------------------------------------- labels and analyses


def test_labelled_basis_equals_the_default_models_heads() -> None:
    """ModelWeights (and so circuits, the circuit graph, TransformerLens) read a reused model in
    its labelled basis: every head's QK and OV circuits are the default model's, label for label."""
    plain, reused = models({c.name: c for c in CASES}["sort"])
    a, b = ModelWeights.from_module(plain.module), ModelWeights.from_module(reused.module)
    assert set(a.labels) <= set(b.labels)  # plus the position directions of erasing heads, if any
    order = [b.labels.index(x) for x in a.labels]
    ca, cb = Circuits.from_weights(a), Circuits.from_weights(b)
    erasing = [h for h in cb.heads if h.label.startswith("erase_")]
    assert erasing and len(cb.heads) == len(ca.heads) + len(erasing)
    for ha, hb in zip(ca.heads, [h for h in cb.heads if h not in erasing]):
        assert ha.name == hb.name
        np.testing.assert_array_equal(ha.qk, hb.qk[np.ix_(order, order)])
        np.testing.assert_array_equal(ha.ov, hb.ov[np.ix_(order, order)])
    assert [a.labels[d] for d in a.readout_dims] == [b.labels[d] for d in b.readout_dims]


def test_onnx_file_carries_the_layout() -> None:
    plain, reused = models({c.name: c for c in CASES}["shuffle_dyck"])
    meta = {p.key: p.value for p in reused.onnx_model.metadata_props}
    layout = json.loads(meta[RESIDUAL_LAYOUT])
    d = width(reused)
    assert max(layout["dims"]) + 1 == d < len(layout["labels"])
    from raspc.runtime import OnnxModel

    # one label per dim of the dense graph's `residual` output: its final holder
    assert len(OnnxModel(reused.onnx_model.SerializeToString()).residual_labels) == d
    from_file = ModelWeights.from_onnx(reused.onnx_model)
    from_ir = ModelWeights.from_module(reused.module)
    assert from_file.labels == from_ir.labels and from_file.readout_dims == from_ir.readout_dims
    for x, y in zip(from_file.mlps, from_ir.mlps):
        np.testing.assert_array_equal(x.w_in, y.w_in)
        np.testing.assert_array_equal(x.w_out, y.w_out)
    assert RESIDUAL_LAYOUT not in {p.key for p in plain.onnx_model.metadata_props}


def test_final_residual_is_labelled_by_its_last_holder() -> None:
    from raspc.runtime import OnnxModel

    _, reused = models({c.name: c for c in CASES}["reverse"])
    dense = OnnxModel(reused.onnx_model.SerializeToString())
    out = dense.apply(["BOS", "a", "b", "c"])
    labels = dense.residual_labels
    cols = [labels.index(f"reverse:{t}") for t in "abcd"]
    decoded = [("abcd"[int(np.argmax(row[cols]))]) for row in np.asarray(out.residual)[1:]]
    assert decoded == ["c", "b", "a"]


def test_report_refuses_a_reused_model(tmp_path: Any) -> None:
    from raspc.report.model_view import ModelView

    _, reused = models({c.name: c for c in CASES}["reverse"])
    path = tmp_path / "reverse.onnx"
    reused.save_onnx(str(path))
    with pytest.raises(InputError, match="without --reuse-residual"):
        ModelView.load(path)


def test_cli_compile_reuse_residual(tmp_path: Any) -> None:
    out = tmp_path / "m.onnx"
    cmd = [sys.executable, "-m", "raspc.cli.main", "compile", "lib:make_reverse", "--vocab", "a,b,c", "--max-seq-len", "4",
           "--reuse-residual", "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert " dims holding " in result.stderr.splitlines()[-1]  # "3 layers, 20 dims holding 26 directions, ..."
    run = subprocess.run([sys.executable, "-m", "raspc.cli.main", "run", str(out), "a", "b", "c"],
                         capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "['c', 'b', 'a']", run.stderr
    bad = subprocess.run(cmd[:-2] + ["--emit", "rasp"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "layout-residual" in bad.stderr
    hooks = subprocess.run(cmd + ["--hooks"], capture_output=True, text=True, timeout=120)
    assert hooks.returncode != 0 and hooks.stderr.count("\n") == 1 and "--reuse-residual" in hooks.stderr


HAS_TL = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformer_lens"))


@pytest.mark.skipif(not HAS_TL, reason="needs the tl extra (torch, transformer-lens): pip install -e '.[tl]'")
def test_transformer_lens_export_of_a_reused_model_answers_the_same() -> None:
    """TransformerLens gets the labelled basis (one dimension per direction): same answers."""
    import torch

    plain, reused = models({c.name: c for c in CASES}["shuffle_dyck2"])
    tl_model = reused.to_transformer_lens()
    assert tl_model.cfg.d_model == len(plain.residual_labels) > width(reused)
    rng = np.random.default_rng(1)
    rows = [["BOS", *rng.choice(["(", ")", "{", "}"], size=8)] for _ in range(16)]
    ids = torch.tensor([tl_model.raspc.token_ids(r) for r in rows])
    assert tl_model.raspc.decode(tl_model(ids)) == reused.apply_batch(rows)


@pytest.mark.parametrize("name", ["shuffle_dyck", "sort", "hist"])
def test_compact_export_of_the_shared_dimensions_themselves(name: str, monkeypatch: Any) -> None:
    """The compact export handles the reused model as it is too (heads whose keys are read by
    position only, the erasing MLP units), when expand-residual is not run first."""
    import raspc.passes.expand_residual as expand
    from raspc.lowering.compact_onnx import tensor_to_compact_onnx
    from raspc.runtime import OnnxModel

    case = {c.name: c for c in CASES}[name]
    _, reused = models(case)
    monkeypatch.setattr(expand, "expand_residual", lambda module: module)
    physical = OnnxModel(tensor_to_compact_onnx(reused.module).SerializeToString())
    assert len(physical.residual_labels) == width(reused)
    rng = np.random.default_rng(2)
    vocab = list(case.vocab)
    rows = [["BOS", *(vocab[i] for i in rng.integers(0, len(vocab), size=rng.integers(1, case.max_seq_len + 1)))]
            for _ in range(48)]
    assert physical.apply_batch(rows) == reused.apply_batch(rows)
