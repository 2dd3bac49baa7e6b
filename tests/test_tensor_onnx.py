"""The tensor dialect, its interpreter, the ONNX export and the onnxruntime runtime.

Small tensor models are built by hand (random weights, fixed seed): round-trips, verifier
errors, checker, onnxruntime == run_tensor, padding never read, causal masking, dynamic
batch/seq, metadata, deterministic bytes, runtime input errors, None decoding; and the level's
structure (xDSL interpreter functions and one emitter per op, no import of a higher level).
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any, Sequence

import numpy as np
import onnx
import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.interpreter import Interpreter
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.passes import PassPipeline
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from raspc.dialects import tensor as T
from raspc.dialects.common import InputSpec, Raspc
from raspc.errors import InputError, IRError
from raspc.interpreters import tensor as interp
from raspc.interpreters.tensor import TensorFunctions, run_tensor, run_tensor_batch
from raspc.lowering.tensor_to_onnx import EMITTERS, ExportOnnxPass, tensor_to_onnx
from raspc.runtime import OnnxModel

D = 7
MAX_SEQ_LEN = 6
VOCAB = ("a", "b", "c")
BOS_ID, PAD_ID = 3, 4
TOKEN_IDS = (*VOCAB, "BOS", "PAD")
LABELS = ("one", "tokens:a", "tokens:b", "tokens:c", "out:x", "out:y", "num")


def _ctx() -> Context:
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Raspc)
    ctx.load_dialect(T.Tensor)
    return ctx


def _spec(vocab: Sequence[Any] = VOCAB, causal: bool = False) -> InputSpec:
    return InputSpec(tuple(vocab), "BOS", "PAD", MAX_SEQ_LEN, causal)


def _model(ops: Sequence[Operation], *, vocab: Sequence[Any] = VOCAB, causal: bool = False,
           labels: Sequence[str] = LABELS, name: str | None = None) -> ModuleOp:
    return ModuleOp([T.ModelOp(_spec(vocab, causal), labels, ops, name=name)])


def _body(module: ModuleOp) -> list[Operation]:
    return list(T.model_op(module).body.block.ops)


def build_module(
    *,
    seed: int = 0,
    causal: bool = False,
    encoding: str = "categorical",
    readout_dims: Sequence[int] = (4, 5),
    values: Sequence[Any] = ("x", (1, 2)),
    two_layers: bool = False,
    vocab: Sequence[Any] = VOCAB,
) -> ModuleOp:
    """1 layer: 2 heads of different sizes (3 and 2 / 4 and 1) + an MLP; optionally a second layer.
    The token embedding has a row per token id: `vocab`, then BOS, then PAD."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    ops: list[Any] = []
    emb = T.EmbedOp(w(len(vocab) + 2, D), w(MAX_SEQ_LEN + 1, D))
    ops.append(emb)
    h1 = T.AttentionHeadOp(emb, "h1", 0, w(D, 3), w(D, 3), w(D, 4), w(4, D), 1.5)
    h2 = T.AttentionHeadOp(emb, "h2", 0, w(D, 2), w(D, 2), w(D, 1), w(1, D), 0.25)
    add1 = T.AddOp([emb, h1, h2])
    mlp = T.MlpOp(add1, "m", 1, w(D, 11), w(11), w(11, D), w(D))
    add2 = T.AddOp([add1, mlp])
    ops += [h1, h2, add1, mlp, add2]
    last = add2
    if two_layers:
        h3 = T.AttentionHeadOp(last, "h1", 2, w(D, 5), w(D, 5), w(D, 2), w(2, D), 3.0)  # label reused
        last = T.AddOp([last, h3])
        ops += [h3, last]
    ops.append(T.ReadoutOp(last, list(readout_dims), encoding, values))
    module = _model(ops, vocab=vocab, causal=causal, name="toy")
    module.verify()
    return module


def random_ids(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    ids = rng.integers(0, 3, size=(batch, seq)).astype(np.int64)
    ids[:, 0] = BOS_ID
    return ids


@pytest.fixture(scope="module")
def module() -> ModuleOp:
    return build_module()


@pytest.fixture(scope="module")
def model_bytes(module: ModuleOp) -> bytes:
    return tensor_to_onnx(module, expose_attention=True).SerializeToString()


@pytest.fixture(scope="module")
def runtime(model_bytes: bytes) -> OnnxModel:
    return OnnxModel.load(model_bytes)


# ------------------------------------------------------------------ dialect


def test_roundtrip_custom_and_generic_bit_exact() -> None:
    m = build_module(two_layers=True)
    text = str(m)
    assert "tensor.model<" in text and "tensor.attention_head" in text and "tensor.readout categorical" in text
    m2 = Parser(_ctx(), text).parse_module()
    m2.verify()
    assert str(m2) == text
    assert m2.is_structurally_equivalent(m)
    assert T.model_op(m2).properties == T.model_op(m).properties
    for a, b in zip(_body(m), _body(m2), strict=True):
        for key, attr in a.properties.items():
            if isinstance(attr, T.DenseIntOrFPElementsAttr):
                x, y = T.dense_to_numpy(attr), T.dense_to_numpy(b.properties[key])
                assert x.tobytes() == y.tobytes(), key
            else:
                assert attr == b.properties[key]
    buf = StringIO()
    Printer(stream=buf, print_generic_format=True).print_op(m)
    m3 = Parser(_ctx(), buf.getvalue()).parse_module()
    assert str(m3) == text


def test_dense_helpers_bit_exact() -> None:
    a = np.array([[0.0, -0.0, 1e-40, np.float32(0.1)], [3.4e38, -1.5, 7.0, 1 / 3]], dtype=np.float32)
    attr = T.dense_from_numpy(a)
    back = T.dense_to_numpy(attr)
    assert back.dtype == np.float32 and back.shape == (2, 4)
    assert back.tobytes() == a.tobytes()
    # through text, too (small attrs print as decimal lists)
    m = ModuleOp([T.EmbedOp(a, a)])
    text = str(m)
    m2 = Parser(_ctx(), text).parse_module()
    (emb,) = list(m2.ops)
    assert T.dense_to_numpy(emb.token_embedding).tobytes() == a.tobytes()


def _emb(d: int = D) -> T.EmbedOp:
    return T.EmbedOp(np.zeros((5, d), np.float32), np.zeros((7, d), np.float32))


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda e: T.AttentionHeadOp(e, "h", 0, np.zeros((D, 3)), np.zeros((D, 2)), np.zeros((D, 2)), np.zeros((2, D)), 1.0), "w_k has shape 7x2"),
        (lambda e: T.AttentionHeadOp(e, "h", 0, np.zeros((D + 1, 3)), np.zeros((D + 1, 3)), np.zeros((D, 2)), np.zeros((2, D)), 1.0), "w_q has shape 8x3"),
        (lambda e: T.AttentionHeadOp(e, "h", 0, np.zeros((D, 3)), np.zeros((D, 3)), np.zeros((D, 2)), np.zeros((3, D)), 1.0), "w_o has shape 3x7"),
        (lambda e: T.AttentionHeadOp(e, "h", 0, np.zeros((D, 3)), np.zeros((D, 3)), np.zeros((D, 2)), np.zeros((2, D - 1)), 1.0), "w_o has shape 2x6"),
        (lambda e: T.MlpOp(e, "m", 0, np.zeros((D, 4)), np.zeros(5), np.zeros((4, D)), np.zeros(D)), "b_in has shape 5"),
        (lambda e: T.MlpOp(e, "m", 0, np.zeros((D, 4)), np.zeros(4), np.zeros((4, D)), np.zeros(D + 1)), "b_out has shape 8"),
        (lambda e: T.MlpOp(e, "m", 0, np.zeros((D, 4)), np.zeros(4), np.zeros((5, D)), np.zeros(D)), "w_out has shape 5x7"),
        (lambda e: T.MlpOp(e, "m", -1, np.zeros((D, 4)), np.zeros(4), np.zeros((4, D)), np.zeros(D)), "layer must be >= 0"),
        (lambda e: T.ReadoutOp(e, [0, D], "categorical", ["x", "y"]), "out of range"),
        (lambda e: T.ReadoutOp(e, [0, 1], "categorical", ["x"]), "2 dims but 1 values"),
        (lambda e: T.ReadoutOp(e, [0, 1], "numerical", []), "exactly one dim"),
        (lambda e: T.ReadoutOp(e, [0], "numerical", ["x"]), "must be numbers"),
        (lambda e: T.AddOp([e, _emb(D + 1)]), "expected from variable 'T'"),
    ],
)
def test_verifier_rejects_bad_shapes(make: Any, reason: str) -> None:
    """Each op in an otherwise valid model (a readout as its terminator), rejected for its own reason."""
    e = _emb()
    op = make(e)
    ops = [e, op] if isinstance(op, T.ReadoutOp) else [e, op, T.ReadoutOp(e, [0], "numerical")]
    module = _model(ops)
    with pytest.raises(VerifyException, match=reason):
        module.verify()


def test_readout_encoding_is_an_enum() -> None:
    with pytest.raises(ValueError):
        T.ReadoutOp(_emb(), [0], "ordinal", [])
    text = str(build_module(encoding="numerical", readout_dims=[6], values=()))
    assert "tensor.readout numerical %" in text
    with pytest.raises(ParseError):
        Parser(_ctx(), text.replace("tensor.readout numerical", "tensor.readout ordinal")).parse_module()


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda e: [e, T.ReadoutOp(e, [0], "numerical"), T.AddOp([e])], "must be the last operation"),
        (lambda e: [e, _emb(), T.ReadoutOp(e, [0], "numerical")], "exactly one tensor.embed"),
        (lambda e: [T.AddOp([e]), e, T.ReadoutOp(e, [0], "numerical")], "defined after it"),
        (lambda e: _embed_only(T.EmbedOp(np.zeros((4, D)), np.zeros((7, D)))), "token_embedding has 4 rows"),
        (lambda e: _embed_only(T.EmbedOp(np.zeros((5, D)), np.zeros((6, D)))), "position_embedding has 6 rows"),
    ],
)
def test_model_verifier(make: Any, reason: str) -> None:
    e = _emb()
    with pytest.raises(VerifyException, match=reason):
        _model(make(e)).verify()


def _embed_only(e: T.EmbedOp) -> list[Operation]:
    return [e, T.ReadoutOp(e, [0], "numerical")]


def test_model_verifier_checks_residual_labels() -> None:
    with pytest.raises(VerifyException, match="6 residual labels for residual width 7"):
        _model(_embed_only(_emb()), labels=LABELS[:-1]).verify()
    with pytest.raises(VerifyException, match="unique"):
        _model(_embed_only(_emb()), labels=(*LABELS[:-1], "one")).verify()


def test_readout_lives_in_a_model() -> None:
    e = _emb()
    with pytest.raises(VerifyException, match="tensor.model"):
        ModuleOp([e, T.ReadoutOp(e, [0], "numerical")]).verify()


def test_verifier_rejects_bad_embed() -> None:
    with pytest.raises(VerifyException):
        T.EmbedOp(np.zeros((5, D)), np.zeros((7, D + 1))).verify()
    with pytest.raises(VerifyException):
        T.EmbedOp(np.zeros((5, D)), np.zeros(7)).verify()


def test_verify_errors_through_parser() -> None:
    text = str(build_module()).replace("tensor<7x3xf32>, w_k", "tensor<7x3xf32>, w_kk", 1)
    m = Parser(_ctx(), text).parse_module()
    with pytest.raises(VerifyException):
        m.verify()


def test_bad_module_is_irerror() -> None:
    with pytest.raises(IRError, match="tensor.model"):
        tensor_to_onnx(ModuleOp([]))
    m = build_module()
    del T.model_op(m).properties["residual"]
    with pytest.raises(IRError):
        tensor_to_onnx(m)
    m = build_module(vocab=("a", "b"))
    emb = _body(m)[0]
    assert isinstance(emb, T.EmbedOp)
    emb.properties["token_embedding"] = T.dense_from_numpy(np.zeros((5, D)))  # 5 rows, 4 token ids: mismatch
    with pytest.raises(IRError, match="token_embedding has 5 rows"):
        run_tensor(m, np.array([[2, 0]]))


# ------------------------------------------------------------------ export and onnxruntime


def test_checker_full(model_bytes: bytes) -> None:
    model = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 11
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 23)]
    assert model.producer_name == "raspc" and model.doc_string and model.graph.name == "toy"
    init_names = {i.name for i in model.graph.initializer}
    assert {"L0.h1.W_Q", "L0.h1.W_K", "L0.h1.W_V", "L0.h1.W_O", "L0.h2.W_O", "L1.m.W_in", "L1.m.b_out"} <= init_names
    node_outs = {o for n in model.graph.node for o in n.output}
    assert {"L0.h1.scores", "L0.h1.pattern", "L0.h2.pattern", "L1.m.hidden"} <= node_outs
    assert [o.name for o in model.graph.output] == ["output", "residual", "attn.h1", "attn.h2"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]
    # scalars stay 0-d (a [1]-shaped index would make Gather keep an axis) and ranks infer cleanly
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    assert inits["const.pad_id"] == [] and inits["L0.h1.scale"] == []
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    assert ranks["seq_len"] == 0 and ranks["positions"] == 1 and ranks["embed"] == 3
    assert ranks["L0.h1.pattern"] == 3 and ranks["readout.max"] == 2


def test_metadata(runtime: OnnxModel, model_bytes: bytes) -> None:
    props = {p.key: p.value for p in onnx.load_from_string(model_bytes).metadata_props}
    for key in (
        "raspc.vocab", "raspc.bos", "raspc.pad", "raspc.output_values", "raspc.output_encoding",
        "raspc.residual_labels", "raspc.max_seq_len", "raspc.causal",
    ):
        json.loads(props[key])
    assert json.loads(props["raspc.output_values"]) == ["x", [1, 2]]
    assert json.loads(props["raspc.causal"]) is False
    assert json.loads(props["raspc.output_encoding"]) == "categorical"
    assert runtime.vocab == TOKEN_IDS and runtime.bos == "BOS" and runtime.bos_id == BOS_ID
    assert runtime.pad_id == PAD_ID and runtime.max_seq_len == MAX_SEQ_LEN
    assert runtime.output_values == ("x", (1, 2)) and runtime.output_encoding == "categorical"
    assert runtime.residual_labels == LABELS and runtime.causal is False


def test_deterministic_bytes() -> None:
    a = tensor_to_onnx(build_module(two_layers=True)).SerializeToString()
    b = tensor_to_onnx(build_module(two_layers=True)).SerializeToString()
    assert a == b


def _check_against_interpreter(module: ModuleOp, m: OnnxModel, ids: np.ndarray) -> None:
    out, res = m.run_ids(ids)
    patterns: dict[str, np.ndarray] = {}
    ref_out, ref_res = run_tensor(module, ids, patterns=patterns)
    assert out.dtype == ref_out.dtype and out.shape == ids.shape
    assert res.dtype == np.float32 and res.shape == ids.shape + (D,)
    np.testing.assert_allclose(res, ref_res, rtol=1e-5, atol=1e-5)
    if out.dtype == np.int64:
        np.testing.assert_array_equal(out, ref_out)
    else:
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    if any(n.startswith("attn.") for n in m.output_names):
        attn = m.attention(ids)
        assert set(attn) == set(patterns)
        for k, v in attn.items():
            np.testing.assert_allclose(v, patterns[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,seq", [(1, 2), (5, 2), (1, 7), (5, 7), (3, 1), (2, 4)])
def test_ort_matches_interpreter_dynamic_shapes(module: ModuleOp, runtime: OnnxModel, batch: int, seq: int) -> None:
    rng = np.random.default_rng(batch * 100 + seq)
    _check_against_interpreter(module, runtime, random_ids(rng, batch, seq))


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_read(causal: bool) -> None:
    module = build_module(causal=causal, seed=3)
    m = OnnxModel.load(tensor_to_onnx(module, expose_attention=True).SerializeToString())
    rng = np.random.default_rng(7)
    lengths = [7, 3, 1, 5]
    rows = [random_ids(rng, 1, n)[0] for n in lengths]
    ids = np.full((len(rows), 7), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    _check_against_interpreter(module, m, ids)
    out, res = m.run_ids(ids)
    attn = m.attention(ids)
    for i, r in enumerate(rows):
        alone_out, alone_res = m.run_ids(r[None, :])
        n = len(r)
        np.testing.assert_array_equal(out[i, :n], alone_out[0])
        np.testing.assert_allclose(res[i, :n], alone_res[0], rtol=1e-5, atol=1e-5)
        for pattern in attn.values():
            assert np.all(pattern[i, :, n:] == 0.0)  # no query ever attends a PAD key
        ref_out, ref_res = run_tensor(module, r[None, :])
        np.testing.assert_array_equal(ref_out[0], alone_out[0])


def test_causal_mode() -> None:
    module = build_module(causal=True, seed=5, two_layers=True)
    model = tensor_to_onnx(module, expose_attention=True)
    onnx.checker.check_model(model, full_check=True)
    m = OnnxModel.load(model.SerializeToString())
    assert m.causal is True
    assert {n for n in m.output_names if n.startswith("attn.")} == {"attn.L0.h1", "attn.L2.h1", "attn.h2"}
    ids = random_ids(np.random.default_rng(1), 4, 7)
    _check_against_interpreter(module, m, ids)
    for pattern in m.attention(ids).values():
        assert np.all(np.triu(pattern, k=1) == 0.0)
        np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    # a prefix's outputs do not depend on later tokens
    out, _ = m.run_ids(ids)
    out3, _ = m.run_ids(ids[:, :3])
    np.testing.assert_array_equal(out[:, :3], out3)
    # and causal differs from non-causal on the same weights
    nc = OnnxModel.load(tensor_to_onnx(build_module(causal=False, seed=5, two_layers=True)).SerializeToString())
    assert not np.allclose(nc.run_ids(ids)[1], m.run_ids(ids)[1])


def test_numerical_readout() -> None:
    module = build_module(encoding="numerical", readout_dims=[6], values=())
    m = OnnxModel.load(tensor_to_onnx(module).SerializeToString())
    ids = random_ids(np.random.default_rng(2), 3, 5)
    _check_against_interpreter(module, m, ids)
    out, res = m.run_ids(ids)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, res[:, :, 6])
    y = m.apply(["BOS", "a", "c"]).decoded
    assert y[0] == "BOS" and len(y) == 3 and all(isinstance(v, float) for v in y[1:])


def _one_hot_readout_module(threshold_value: float) -> ModuleOp:
    """Residual = embeddings only: token a -> dim 4 = threshold_value, token b -> dim 5 = 1, c -> nothing."""
    tok = np.zeros((5, D), np.float32)
    tok[0, 4] = threshold_value
    tok[1, 5] = 1.0
    tok[1, 4] = 0.25
    pos = np.zeros((MAX_SEQ_LEN + 1, D), np.float32)
    emb = T.EmbedOp(tok, pos)
    return _model([emb, T.ReadoutOp(emb, [4, 5], "categorical", ["x", "y"])])


def test_categorical_none_below_half() -> None:
    module = _one_hot_readout_module(0.49)
    m = OnnxModel.load(tensor_to_onnx(module).SerializeToString())
    assert m.apply(["BOS", "a", "b", "c"]).decoded == ["BOS", None, "y", None]
    out, _ = m.run_ids(np.array([[BOS_ID, 0, 1, 2]]))
    assert out.tolist() == [[-1, -1, 1, -1]]
    assert run_tensor(module, np.array([[BOS_ID, 0, 1, 2]]))[0].tolist() == [[-1, -1, 1, -1]]
    m2 = OnnxModel.load(tensor_to_onnx(_one_hot_readout_module(0.5)).SerializeToString())
    assert m2.apply(["BOS", "a", "b", "c"]).decoded == ["BOS", "x", "y", None]


def test_export_pass_writes_file(tmp_path: Any, module: ModuleOp) -> None:
    out = tmp_path / "m.onnx"
    p = ExportOnnxPass(output=str(out))
    assert p.name == "export-onnx"
    p.apply(_ctx(), module)
    m = OnnxModel.load(str(out))
    assert m.output_names == ("output", "residual")
    assert out.read_bytes() == tensor_to_onnx(module).SerializeToString()
    # through a pipeline spec, as raspc-opt would run it
    out2 = tmp_path / "attn.onnx"
    pipeline = PassPipeline.parse_spec(
        {"export-onnx": lambda: ExportOnnxPass}, f'export-onnx{{output="{out2}" expose-attention=true}}'
    )
    pipeline.apply(_ctx(), module)
    assert OnnxModel.load(str(out2)).output_names == ("output", "residual", "attn.h1", "attn.h2")


# ------------------------------------------------------------------ runtime


def test_runtime_apply_and_batch(module: ModuleOp, runtime: OnnxModel) -> None:
    seqs = [["BOS", "a", "b", "c"], ["BOS"], ["BOS", "c", "c", "a", "b", "a", "b"], ["BOS", "b"]]
    batch = runtime.apply_batch(seqs)
    assert [len(b) for b in batch] == [len(s) for s in seqs]
    for s, b in zip(seqs, batch):
        assert b == runtime.apply(s).decoded
        assert b[0] == "BOS"
        ids = np.array([runtime.encode(s)])
        ref = run_tensor(module, ids)[0][0]
        assert b[1:] == [None if i < 0 else runtime.output_values[i] for i in ref[1:]]
        assert all(v is None or v in runtime.output_values for v in b[1:])
    assert runtime.apply_batch([]) == []
    assert runtime.encode(["BOS", "a", "c"]) == [BOS_ID, 0, 2]


@pytest.mark.parametrize("encoding", ["categorical", "numerical"])
def test_run_tensor_batch_equals_runtime(encoding: str) -> None:
    """Token sequences without BOS, mixed lengths: the same decoded values as onnxruntime's."""
    module = build_module(seed=6) if encoding == "categorical" else build_module(
        seed=6, encoding="numerical", readout_dims=[6], values=())
    m = OnnxModel.load(tensor_to_onnx(module).SerializeToString())
    seqs = [["a", "b", "c"], [], ["c", "c", "a", "b", "a", "b"], ["b"]]
    got = run_tensor_batch(module, seqs)
    expected = [y[1:] for y in m.apply_batch([["BOS", *s] for s in seqs])]
    if encoding == "categorical":
        assert got == expected
    else:  # float32 rounding differs between numpy and onnxruntime
        assert [len(r) for r in got] == [len(r) for r in expected]
        assert all(isinstance(x, float) for r in got for x in r)
        np.testing.assert_allclose(sum(got, []), sum(expected, []), rtol=1e-5, atol=1e-5)
    assert run_tensor_batch(module, []) == []
    with pytest.raises(InputError, match="'z'"):
        run_tensor_batch(module, [["a", "z"]])
    with pytest.raises(InputError, match="max_seq_len"):
        run_tensor_batch(module, [["a"] * (MAX_SEQ_LEN + 1)])


@pytest.mark.parametrize(
    "seq,fragment",
    [
        ([], "empty"),
        (["a", "b"], "BOS"),
        (["BOS", "a", "BOS"], "position 2"),
        (["BOS", "a", "z"], "'z'"),
        (["BOS", "PAD"], "'PAD'"),
        (["BOS"] + ["a"] * (MAX_SEQ_LEN + 1), f"{MAX_SEQ_LEN + 1} tokens"),
    ],
)
def test_runtime_input_errors(runtime: OnnxModel, seq: list[Any], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")) as info:
        runtime.apply(seq)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        runtime.apply_batch([["BOS", "a"], seq])


def test_runtime_error_messages(runtime: OnnxModel) -> None:
    with pytest.raises(InputError) as info:
        runtime.encode(["BOS", "z"])
    assert "'a', 'b', 'c'" in str(info.value)  # shows the vocabulary
    with pytest.raises(InputError) as info:
        runtime.encode(["BOS"] + ["a"] * 9)
    assert "9" in str(info.value) and str(MAX_SEQ_LEN) in str(info.value)
    with pytest.raises(InputError):
        runtime.run_ids(np.array([[BOS_ID, 17]]))
    with pytest.raises(InputError):
        runtime.run_ids(np.array([BOS_ID, 0]))


def test_runtime_imports_only_allowed_modules() -> None:
    import ast
    import raspc.runtime as rt

    tree = ast.parse(open(rt.__file__).read())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module if node.module.startswith("raspc") else node.module.split(".")[0])
    assert mods <= {"__future__", "dataclasses", "json", "os", "typing", "numpy", "onnxruntime", "raspc.errors"}


def test_tuple_vocab_roundtrip_through_metadata() -> None:
    vocab = ((1, 2), 3, "a")
    module = build_module(vocab=vocab, values=(True, 2.5))
    m = OnnxModel.load(tensor_to_onnx(module).SerializeToString())
    assert m.vocab == (*vocab, "BOS", "PAD") and m.output_values == (True, 2.5)
    assert m.encode(["BOS", (1, 2), [1, 2], 3]) == [BOS_ID, 0, 0, 1]


# ------------------------------------------------------------------ the level's structure


def test_interpreter_is_xdsl_interpreter_functions(module: ModuleOp) -> None:
    """One registered implementation per tensor op; the region runs in a plain xDSL Interpreter."""
    registered = {op_type for op_type, _ in TensorFunctions._impls()}
    assert registered == set(T.TENSOR_OPS)
    ids = random_ids(np.random.default_rng(4), 3, 5)
    interpreter = Interpreter(module)
    interpreter.register_implementations(TensorFunctions())
    interpreter.set_data(TensorFunctions, interp.TOKEN_IDS, ids)
    out, res = interpreter.run_ssacfg_region(T.model_op(module).body, ())
    ref_out, ref_res = run_tensor(module, ids)
    np.testing.assert_array_equal(out, ref_out)
    assert res.tobytes() == ref_res.tobytes()
    # the mask is per-run data, built once from the token ids and the model's input
    mask = interpreter.get_data(TensorFunctions, interp.MASK, lambda: None)
    np.testing.assert_array_equal(mask, interp.attention_mask(ids, PAD_ID, False))


def test_interpreter_without_token_ids_fails_clearly(module: ModuleOp) -> None:
    from xdsl.utils.exceptions import InterpretationError

    interpreter = Interpreter(module)
    interpreter.register_implementations(TensorFunctions())
    with pytest.raises(InterpretationError, match="run_tensor"):
        interpreter.run_ssacfg_region(T.model_op(module).body, ())


def test_one_emitter_per_op() -> None:
    assert set(EMITTERS) == set(T.TENSOR_OPS)


def test_constants_belong_to_the_dialect() -> None:
    assert T.MASK_VALUE == np.float32(-1e9) and T.MASK_VALUE.dtype == np.float32
    assert T.NONE_THRESHOLD == np.float32(0.5) and T.NONE_THRESHOLD.dtype == np.float32
    model = onnx.load_from_string(tensor_to_onnx(build_module()).SerializeToString())
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["const.mask_value"] == T.MASK_VALUE and inits["const.none_threshold"] == T.NONE_THRESHOLD


@pytest.mark.parametrize(
    "path", ["raspc/dialects/tensor.py", "raspc/interpreters/tensor.py", "raspc/lowering/tensor_to_onnx.py"]
)
def test_tensor_level_imports_no_higher_level(path: str) -> None:
    """A lower level never imports a higher one: tensor code imports common, errors, utils and itself."""
    import ast
    from pathlib import Path

    import raspc

    source = Path(raspc.__file__).parent.parent / path
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    allowed = ("raspc.dialects.common", "raspc.errors", "raspc.utils", "raspc.dialects.tensor",
               # tensor-level analyses (tests/test_architecture.py level 2): the export stores the circuit graph
               "raspc.analysis.weights", "raspc.analysis.circuit_graph")
    raspc_imports = {m for m in imported if m.startswith("raspc")}
    bad = {m for m in raspc_imports if not m.startswith(allowed) and m != "raspc.dialects"}
    assert not bad, bad


def test_program_name_is_optional() -> None:
    m = build_module()
    assert onnx.load_from_string(tensor_to_onnx(m).SerializeToString()).graph.name == "toy"
    del T.model_op(m).properties["name"]
    m.verify()
    assert "name =" not in str(m)
    assert tensor_to_onnx(m).graph.name == "raspc_model"
    assert tensor_to_onnx(m, name="other").graph.name == "other"
