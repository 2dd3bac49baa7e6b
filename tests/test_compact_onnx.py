"""The compact deployment graph (raspc/lowering/compact_onnx.py) answers exactly like the
transformer-shaped one, on every library program, and does less work.

(Every library program's compact graph is also checked against `rasp.evaluate` by
test_e2e_library.py: `CompiledModel.apply_batch` runs it.)
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from test_e2e_library import AT16, BIG, USUAL, Case

from raspc import compile_rasp_to_model, lib, rasp
from raspc.lowering import compact_onnx
from raspc.lowering.compact_onnx import GRAPH_KIND, partition_residual, tensor_to_compact_onnx
from raspc.lowering.tensor_to_onnx import tensor_to_onnx
from raspc.runtime import OnnxModel

RNG_SEED = 0


def _program(case: Case) -> rasp.SOp:
    return eval(case.call, {"lib": lib, "rasp": rasp})


def _compile(case: Case, program: rasp.SOp | None = None):
    program = _program(case) if program is None else program
    return compile_rasp_to_model(program, vocab=list(case.vocab), max_seq_len=case.max_seq_len)


def _random_ids(model: OnnxModel, max_seq_len: int, batch: int = 16) -> np.ndarray:
    """Random rows of mixed lengths, BOS first, PAD after the end (the runtime's own encoding)."""
    rng = np.random.default_rng(RNG_SEED)
    vocab = [t for t in model.input_vocab if t not in (model.bos, model.pad)]
    rows = [[model.bos, *(vocab[i] for i in rng.integers(0, len(vocab), rng.integers(0, max_seq_len + 1)))]
            for _ in range(batch)]
    width = max(len(r) for r in rows)
    ids = np.full((batch, width), model.pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = model.encode(r)
    return ids


def _sessions(case: Case, expose_attention: bool = False) -> tuple[OnnxModel, OnnxModel]:
    m = _compile(case)
    dense = OnnxModel.load(tensor_to_onnx(m.module, expose_attention=expose_attention).SerializeToString())
    compact = OnnxModel.load(tensor_to_compact_onnx(m.module, expose_attention=expose_attention).SerializeToString())
    return dense, compact


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in USUAL + BIG + AT16])
def test_compact_equals_dense(case: Case) -> None:
    dense, compact = _sessions(case, expose_attention=True)
    ids = _random_ids(dense, case.max_seq_len)
    a, b = dense.run(ids), compact.run(ids)
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["output"], b["output"])  # decoded answers identical
    for name in a:  # residual and every head's pattern: the same up to float32 summation order
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in USUAL[:6]])
def test_compact_graph_is_valid_and_deterministic(case: Case) -> None:
    program = _program(case)
    m = _compile(case, program)
    first = tensor_to_compact_onnx(m.module)
    onnx.checker.check_model(first, full_check=True)
    assert first.SerializeToString() == _compile(case, program).compact_onnx_model.SerializeToString()
    meta = {p.key: p.value for p in first.metadata_props}
    assert meta[GRAPH_KIND] == '"compact"'
    dense_meta = {p.key: p.value for p in m.onnx_model.metadata_props}
    assert {k: v for k, v in meta.items() if k != GRAPH_KIND}.items() <= dense_meta.items()
    assert {"raspc.vocab", "raspc.bos", "raspc.pad", "raspc.output_values", "raspc.output_encoding",
            "raspc.residual_labels", "raspc.max_seq_len", "raspc.causal"} <= meta.keys()
    assert [i.name for i in first.graph.input] == ["tokens"]
    dims = [d.dim_param or d.dim_value for d in first.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]


def _weight_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_compact_graph_multiplies_only_what_blocks_read_and_write() -> None:
    m = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), vocab=list(range(20)), max_seq_len=20)
    dense, compact = m.onnx_model, m.compact_onnx_model
    assert _weight_count(compact) * 5 < _weight_count(dense)
    # sort_unique's value head copies tokens one-to-one: no MatMul left for its W_V / W_O
    names = {n.name: n.op_type for n in compact.graph.node}
    assert names.get("L1.sort.v") != "MatMul" and names.get("L1.sort.out") != "MatMul"
    assert _ops(dense).count("MatMul") > _ops(compact).count("MatMul")


def test_strength_reduction_keeps_coefficients() -> None:
    # a numerical aggregate scales its value direction: the Gather/Slice must keep the factor
    program = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
                                            rasp.numerical(rasp.Map(lambda t: 3 * t, rasp.tokens)), default=0))
    m = compile_rasp_to_model(program, vocab=[0, 1, 2, 5], max_seq_len=6)
    dense = OnnxModel.load(m.onnx_model.SerializeToString())
    ids = _random_ids(dense, 6)
    np.testing.assert_allclose(dense.run(ids)["output"], m.runtime.run(ids)["output"], rtol=1e-6)
    assert m.apply(["BOS", 5, 0, 1]).decoded[1:] == pytest.approx([15.0, 7.5, 6.0])


def test_partition_groups_dims_by_writers_and_readers() -> None:
    writers = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5, 6, 1])]
    readers = [np.array([0, 3]), np.array([5, 6])]
    part = partition_residual(8, writers, readers)
    groups = sorted(tuple(int(d) for d in s) for s in part.segments)
    # 0: w0+r0, 1: w0+w2, 2: w0, 3: w1+r0, 4: w1, 5,6: w2+r1; 7 is written by nobody
    assert groups == [(0,), (1,), (2,), (3,), (4,), (5, 6)]
    assert part.segment_of[7] == -1
    assert part.covering(np.array([5, 7])) == [int(part.segment_of[5])]


def test_compiled_model_runs_the_compact_graph_and_saves_either(tmp_path) -> None:
    m = compile_rasp_to_model(lib.make_hist(), vocab=["a", "b", "c"], max_seq_len=5)
    meta = m.runtime.session.get_modelmeta().custom_metadata_map
    assert meta[GRAPH_KIND] == '"compact"'
    m.save_onnx(tmp_path / "dense.onnx")
    m.save_onnx(tmp_path / "compact.onnx", compact=True)
    assert GRAPH_KIND not in OnnxModel.load(tmp_path / "dense.onnx").session.get_modelmeta().custom_metadata_map
    for path in ("dense.onnx", "compact.onnx"):
        assert OnnxModel.load(tmp_path / path).apply_batch([["BOS", "a", "b", "a"]]) == [["BOS", 2, 1, 2]]


def test_cli_compact_flag_and_export_pass(tmp_path) -> None:
    out = tmp_path / "hist.onnx"
    cmd = [sys.executable, "-m", "raspc.cli.main", "compile", "lib:make_hist", "--vocab", "a,b,c",
           "--max-seq-len", "5", "--compact", "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert OnnxModel.load(out).session.get_modelmeta().custom_metadata_map[GRAPH_KIND] == '"compact"'
    run = subprocess.run([sys.executable, "-m", "raspc.cli.main", "run", str(out), "a", "b", "a"],
                         check=True, capture_output=True, text=True)
    assert run.stdout.strip() == "[2, 1, 2]"
    from raspc.compiler import DEFAULT_PIPELINE, compile_module
    from raspc.lowering.program_to_rasp import program_to_rasp

    module = program_to_rasp(lib.make_hist(), ["a", "b", "c"], 5)
    out2 = tmp_path / "hist2.onnx"
    compile_module(module, f'{DEFAULT_PIPELINE},export-compact-onnx{{output="{out2}"}}')
    assert onnx.load(out2).graph == onnx.load(out).graph


def _assert_compact_equals_dense(m, max_seq_len: int) -> onnx.ModelProto:
    compact_proto = tensor_to_compact_onnx(m.module, expose_attention=True)
    dense = OnnxModel.load(tensor_to_onnx(m.module, expose_attention=True).SerializeToString())
    compact = OnnxModel.load(compact_proto.SerializeToString())
    ids = _random_ids(dense, max_seq_len, batch=24)
    a, b = dense.run(ids), compact.run(ids)
    np.testing.assert_array_equal(a["output"], b["output"])
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6, err_msg=name)
    return compact_proto


def _nodes(model: onnx.ModelProto) -> dict[str, str]:
    return {n.name: n.op_type for n in model.graph.node}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in USUAL[:5] + AT16[:4]])
def test_untabulated_reads_and_the_full_mask_give_the_same_graph_function(case: Case, monkeypatch) -> None:
    # the paths the speed-ups skip: every embedding row read from the stream (no token/position
    # tables but for K), and the [B, T, T] mask instead of PAD keys masked inside the scores
    monkeypatch.setattr(compact_onnx, "PAD_IN_SCORES", False)
    monkeypatch.setattr(compact_onnx, "TABULATE_MIN_ROWS", 10**9)
    proto = _assert_compact_equals_dense(_compile(case), case.max_seq_len)
    assert "mask" in _nodes(proto)  # the dense graph's mask is built


def test_pad_keys_are_masked_inside_the_scores() -> None:
    m = compile_rasp_to_model(lib.make_hist(), vocab=list("abcd"), max_seq_len=6)
    proto = _assert_compact_equals_dense(m, 6)
    nodes = _nodes(proto)
    assert "mask" not in nodes and nodes["mask.square"] == "Slice"  # only the [T, T] position part
    k_table = {t.name: t for t in proto.graph.initializer}["L0.hist.attn.k.by_token"]
    pad_column = onnx.numpy_helper.to_array(k_table)[:, -1]
    assert pad_column.tolist() == [float(i == m.runtime.pad_id) for i in range(len(m.runtime.vocab))]
    # a batch with PAD on the right answers each row as alone
    rows = [["BOS", "a", "b", "a"], ["BOS", "c"], ["BOS", "d", "d", "d", "a", "b", "c"]]
    assert m.apply_batch(rows) == [m.apply(r).decoded for r in rows]


@pytest.mark.parametrize("kind,program", [
    ("by_position", rasp.Aggregate(rasp.Select(rasp.indices, rasp.Map(lambda i: (i + 1) % 5, rasp.indices),
                                               rasp.Comparison.EQ), rasp.tokens)),
    ("by_token", rasp.numerical(rasp.Map(lambda t: t / 2, rasp.tokens))),
    ("by_pair", rasp.SequenceMap(lambda t, i: t * i, rasp.tokens, rasp.indices)),
])
def test_mlps_of_tokens_positions_or_both_are_tabulated(kind: str, program: rasp.SOp, monkeypatch) -> None:
    m = compile_rasp_to_model(program, vocab=[0, 1, 2, 3], max_seq_len=5)
    proto = _assert_compact_equals_dense(m, 5)
    tables = [t.name for t in proto.graph.initializer if t.name.endswith(f".{kind}")]
    assert tables and _nodes(proto)[tables[0].rsplit(".", 1)[0] + ".out"] == "Gather"  # no MLP left
    assert m.apply(["BOS", 3, 0, 2]).decoded[1:] == pytest.approx(rasp.evaluate(program, [3, 0, 2]))
    if kind == "by_pair":  # past the pair-table budget: an MLP on gathered inputs, the same function
        monkeypatch.setattr(compact_onnx, "PAIR_TABLE_MAX", 0)
        proto = _assert_compact_equals_dense(m, 5)
        assert not any(t.name.endswith(".by_pair") for t in proto.graph.initializer)


def test_wide_residual_is_concatenated_from_views() -> None:
    m = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), vocab=list(range(32)), max_seq_len=32)
    assert len(m.residual_labels) >= compact_onnx.RESIDUAL_PIECEWISE_MIN
    proto = _assert_compact_equals_dense(m, 32)
    assert _nodes(proto)["residual"] == "Concat"


def test_column_gathers_give_the_same_function(monkeypatch) -> None:
    # a weight picking scattered columns is a Gather from GATHER_MIN_ROWS rows on (make_sort_freq's
    # map of the histogram at 128); forced here at a small size
    monkeypatch.setattr(compact_onnx, "GATHER_MIN_ROWS", 1)
    m = compile_rasp_to_model(lib.make_sort_freq(max_seq_len=8), vocab=list(range(8)), max_seq_len=8)
    proto = _assert_compact_equals_dense(m, 8)
    assert any(n.op_type == "Gather" and ".cols" in n.name for n in proto.graph.node)
