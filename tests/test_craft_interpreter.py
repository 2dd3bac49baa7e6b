"""The craft interpreter on hand-written craft models whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.parser import Parser

from raspc.dialects.common import Raspc
from raspc.dialects.craft import Craft, ModelOp
from raspc.errors import InputError, IRError
from raspc.interpreters.craft import NO_VALUE, CraftInterpreter, implemented_ops


def parse(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (Builtin, Raspc, Craft):
        ctx.load_dialect(dialect)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


def interpreter(text: str) -> CraftInterpreter:
    return CraftInterpreter(parse(text))


TOKENS_AB = '!craft.cat<"tokens", ["a", "b"]>'

# --------------------------------------------------------------------------- models

# make_hist over {a, b}, max_seq_len 3. The head scores a matching key and BOS alike, so BOS gets
# 1/(w+1) of the attention (`hist.bos_share`). The MLP turns the share back into w with two clamped
# ramps: step0 = 1 above share 0.31 (w <= 2), step1 = 1 above share 0.46 (w = 1); hist:3 = bias - step0,
# hist:2 = step0 - step1, hist:1 = step1. Every unit is switched off at BOS through `bos`.
HIST = f"""
builtin.module {{
  craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {{
    %one = craft.embed {{source = "one"}} : !craft.num<"one">
    %bos = craft.embed {{source = "bos"}} : !craft.num<"bos">
    %tokens = craft.embed {{source = "tokens"}} : {TOKENS_AB}
    %share = craft.attention_head q(%tokens, %one : {TOKENS_AB}, !craft.num<"one">)
        k(%tokens, %bos : {TOKENS_AB}, !craft.num<"bos">) v(%bos : !craft.num<"bos">) {{label = "hist.attn",
        w_qk = #craft.sparse<["tokens:a" -> "tokens:a" = 1.0, "tokens:b" -> "tokens:b" = 1.0, "one" -> "bos" = 1.0]>,
        w_ov = #craft.sparse<["bos" -> "hist.bos_share" = 1.0]>, scale = 30.0 : f64,
        bos_value = #craft.vec<["hist.bos_share" = 1.0]>}} : !craft.num<"hist.bos_share">
    %hist = craft.mlp %share, %one, %bos {{label = "hist",
        hidden = ["hist[0>]", "hist[0<]", "hist[1>]", "hist[1<]", "hist[bias]"],
        w_in = #craft.sparse<["hist.bos_share" -> "hist[0>]" = 25.0, "bos" -> "hist[0>]" = -100.0,
                              "hist.bos_share" -> "hist[0<]" = 25.0, "bos" -> "hist[0<]" = -100.0,
                              "hist.bos_share" -> "hist[1>]" = 10.0, "bos" -> "hist[1>]" = -100.0,
                              "hist.bos_share" -> "hist[1<]" = 10.0, "bos" -> "hist[1<]" = -100.0,
                              "one" -> "hist[bias]" = 1.0, "bos" -> "hist[bias]" = -1.0]>,
        b_in = #craft.vec<["hist[0>]" = -6.75, "hist[0<]" = -7.75, "hist[1>]" = -3.6, "hist[1<]" = -4.6]>,
        w_out = #craft.sparse<["hist[bias]" -> "hist:3" = 1.0,
                               "hist[0>]" -> "hist:3" = -1.0, "hist[0<]" -> "hist:3" = 1.0,
                               "hist[0>]" -> "hist:2" = 1.0, "hist[0<]" -> "hist:2" = -1.0,
                               "hist[1>]" -> "hist:2" = -1.0, "hist[1<]" -> "hist:2" = 1.0,
                               "hist[1>]" -> "hist:1" = 1.0, "hist[1<]" -> "hist:1" = -1.0]>}}
        : (!craft.num<"hist.bos_share">, !craft.num<"one">, !craft.num<"bos">) -> !craft.cat<"hist", [1, 2, 3]>
    craft.output %hist : !craft.cat<"hist", [1, 2, 3]>
  }}
}}
"""

INDICES = '!craft.cat<"indices", [0, 1, 2, 3]>'
PREV = '!craft.cat<"prev", ["a", "b", "x"]>'


def previous_token(default: str | None) -> str:
    """Aggregate(Select(indices, indices, k == q - 1), tokens, default) over {a, b}, max_seq_len 4.
    BOS scores half a match, so the first token (which selects nothing) attends to BOS, whose value
    is the default: `bos -> prev:x` in w_ov, recorded in bos_value. Without a default BOS carries
    nothing, which decodes to None."""
    w_ov = '"tokens:a" -> "prev:a" = 1.0, "tokens:b" -> "prev:b" = 1.0'
    bos_value = ""
    values = f"v(%tokens : {TOKENS_AB})"
    if default is not None:
        w_ov += f', "bos" -> "prev:{default}" = 1.0'
        bos_value = f'"prev:{default}" = 1.0'
        values = f'v(%tokens, %bos : {TOKENS_AB}, !craft.num<"bos">)'
    return f"""
builtin.module {{
  craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 4, causal = false> {{
    %one = craft.embed {{source = "one"}} : !craft.num<"one">
    %bos = craft.embed {{source = "bos"}} : !craft.num<"bos">
    %tokens = craft.embed {{source = "tokens"}} : {TOKENS_AB}
    %indices = craft.embed {{source = "indices"}} : {INDICES}
    %prev = craft.attention_head q(%indices, %one : {INDICES}, !craft.num<"one">)
        k(%indices, %bos : {INDICES}, !craft.num<"bos">) {values} {{label = "prev",
        w_qk = #craft.sparse<["indices:1" -> "indices:0" = 1.0, "indices:2" -> "indices:1" = 1.0,
                              "indices:3" -> "indices:2" = 1.0, "one" -> "bos" = 0.5]>,
        w_ov = #craft.sparse<[{w_ov}]>, scale = 40.0 : f64, bos_value = #craft.vec<[{bos_value}]>}} : {PREV}
    craft.output %prev : {PREV}
  }}
}}
"""


def fraction_of_a(causal: bool) -> str:
    """numerical(Aggregate(Select(tokens, tokens, TRUE), tokens == "a")) over {a, b}, max_seq_len 4:
    every key scores 1, BOS half a step less; causal, each query averages its prefix (frac_prevs)."""
    return f"""
builtin.module {{
  craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 4, causal = {str(causal).lower()}> {{
    %one = craft.embed {{source = "one"}} : !craft.num<"one">
    %bos = craft.embed {{source = "bos"}} : !craft.num<"bos">
    %tokens = craft.embed {{source = "tokens"}} : {TOKENS_AB}
    %is_a = craft.mlp %tokens {{label = "is_a", hidden = ["is_a[a]"], w_in = #craft.sparse<["tokens:a" -> "is_a[a]" = 1.0]>,
        b_in = #craft.vec<[]>, w_out = #craft.sparse<["is_a[a]" -> "is_a" = 1.0]>}} : ({TOKENS_AB}) -> !craft.num<"is_a">
    %frac = craft.attention_head q(%one : !craft.num<"one">) k(%one, %bos : !craft.num<"one">, !craft.num<"bos">)
        v(%is_a : !craft.num<"is_a">) {{label = "frac",
        w_qk = #craft.sparse<["one" -> "one" = 1.0, "one" -> "bos" = -0.5]>,
        w_ov = #craft.sparse<["is_a" -> "frac" = 1.0]>, scale = 40.0 : f64, bos_value = #craft.vec<[]>}} : !craft.num<"frac">
    craft.output %frac {{values = #raspc.values<[0.0, 0.25, 0.3333333333333333, 0.5, 0.6666666666666666, 0.75, 1.0]>}}
        : !craft.num<"frac">
  }}
}}
"""


# Every embedding, over {a, b, c} at max_seq_len 3: a tokens space over a subset of the vocabulary
# in another order, categorical and numerical indices, categorical (with None) and numerical constants.
EMBEDDINGS = """
builtin.module {
  craft.model<vocab = ["a", "b", "c"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %one = craft.embed {source = "one"} : !craft.num<"one">
    %bos = craft.embed {source = "bos"} : !craft.num<"bos">
    %tokens = craft.embed {source = "tokens"} : !craft.cat<"tokens", ["c", "a"]>
    %indices = craft.embed {source = "indices"} : !craft.cat<"indices", [0, 1, 2]>
    %index = craft.embed {source = "indices"} : !craft.num<"index">
    %marks = craft.positional {label = "marks", values = #raspc.values<["x", none, "y"]>} : !craft.cat<"marks", ["x", "y"]>
    %weights = craft.positional {label = "weights", values = #raspc.values<[1.5, -2.0, 0.25]>} : !craft.num<"weights">
    craft.output %marks : !craft.cat<"marks", ["x", "y"]>
  }
}
"""

BOS_AB, PAD_AB = 2, 3  # token ids over {a, b}: a = 0, b = 1
BOS_ABC, PAD_ABC = 3, 4  # over {a, b, c}


# --------------------------------------------------------------------------- registration


def test_every_craft_op_has_an_implementation():
    """The container is run by CraftInterpreter (its body through run_ssacfg_region); every other op
    has an interpreter function."""
    assert implemented_ops() == set(Craft.operations) - {ModelOp}


# --------------------------------------------------------------------------- embeddings


def test_embeddings_at_every_position_including_bos_and_pad():
    ids = np.array([[BOS_ABC, 0, 2, PAD_ABC], [BOS_ABC, 1, PAD_ABC, PAD_ABC]])
    output, spaces = interpreter(EMBEDDINGS).run_ids(ids)
    assert list(spaces) == ["one", "bos", "tokens", "indices", "index", "marks", "weights"]
    assert all(a.dtype == np.float32 and a.shape[:2] == (2, 4) for a in spaces.values())
    np.testing.assert_array_equal(spaces["one"][..., 0], np.ones((2, 4)))
    np.testing.assert_array_equal(spaces["bos"][..., 0], [[1, 0, 0, 0]] * 2)
    # tokens space is [c, a]: a -> [0, 1], c -> [1, 0], b (not a value), BOS and PAD -> nothing
    np.testing.assert_array_equal(spaces["tokens"][0], [[0, 0], [0, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(spaces["tokens"][1], [[0, 0], [0, 0], [0, 0], [0, 0]])
    # positions: index i at position i + 1, PAD positions included (a position embedding)
    for row in range(2):
        np.testing.assert_array_equal(spaces["indices"][row], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
        np.testing.assert_array_equal(spaces["index"][row, :, 0], [0, 0, 1, 2])
        np.testing.assert_array_equal(spaces["marks"][row], [[0, 0], [1, 0], [0, 0], [0, 1]])
        np.testing.assert_array_equal(spaces["weights"][row, :, 0], [0, 1.5, -2.0, 0.25])
    # the output decodes `marks`: x, None, y (and None at BOS)
    assert output.dtype == np.int64
    np.testing.assert_array_equal(output, [[NO_VALUE, 0, NO_VALUE, 1]] * 2)


def test_shorter_batch_reads_the_first_positions():
    output, spaces = interpreter(EMBEDDINGS).run_ids(np.array([[BOS_ABC, 2]]))
    np.testing.assert_array_equal(spaces["weights"][0, :, 0], [0, 1.5])
    np.testing.assert_array_equal(output, [[NO_VALUE, 0]])


def test_categorical_none_decodes_to_none():
    assert interpreter(EMBEDDINGS).run_batch([["a", "b", "c"], ["c"]]) == [["x", None, "y"], ["x"]]


# --------------------------------------------------------------------------- selector width


@pytest.mark.parametrize(
    "tokens, expected",
    [(["a", "b", "a"], [2, 1, 2]), (["b"], [1]), (["a", "a", "a"], [3, 3, 3]), (["b", "b", "a"], [2, 2, 1])],
)
def test_histogram(tokens, expected):
    assert interpreter(HIST).run(tokens) == expected


def test_histogram_bos_share_and_patterns():
    """BOS receives 1/(w+1) of the attention; BOS attends only to itself; PAD keys get nothing."""
    patterns: dict[str, np.ndarray] = {}
    ids = np.array([[BOS_AB, 0, 1, 0], [BOS_AB, 1, PAD_AB, PAD_AB]])
    output, spaces = interpreter(HIST).run_ids(ids, patterns=patterns)
    np.testing.assert_allclose(spaces["hist.bos_share"][0, :, 0], [1, 1 / 3, 1 / 2, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(spaces["hist.bos_share"][1, :2, 0], [1, 1 / 2], atol=1e-6)
    np.testing.assert_array_equal(spaces["hist"][:, 0], 0)  # the MLP writes nothing at BOS
    np.testing.assert_array_equal(output[0, 1:], [1, 0, 1])  # indices of 2, 1, 2 in [1, 2, 3]
    assert list(patterns) == ["hist.attn"]
    pattern = patterns["hist.attn"]
    assert pattern.shape == (2, 4, 4) and pattern.dtype == np.float32
    np.testing.assert_allclose(pattern.sum(axis=-1), 1, atol=1e-6)
    np.testing.assert_array_equal(pattern[:, 0], [[1, 0, 0, 0]] * 2)
    assert pattern[1, :, 2:].max() == 0.0
    np.testing.assert_allclose(pattern[0, 1], [1 / 3, 1 / 3, 0, 1 / 3], atol=1e-6)


def test_padded_mixed_length_batch_equals_unpadded_runs():
    run = interpreter(HIST)
    inputs = [["a", "b", "a"], ["b"], ["a", "a"], ["b", "a", "b"], []]
    assert run.run_batch(inputs) == [run.run(xs) for xs in inputs] == [[2, 1, 2], [1], [2, 2], [2, 1, 2], []]
    _, padded = run.run_ids(run.encode(inputs))
    for row, xs in enumerate(inputs):
        _, alone = run.run_ids(run.encode([xs]))
        for name, space in alone.items():
            np.testing.assert_allclose(padded[name][row, : len(xs) + 1], space[0], atol=1e-6, err_msg=name)


def test_encode_pads_on_the_right():
    ids = interpreter(HIST).encode([["a", "b"], ["b"], []])
    np.testing.assert_array_equal(ids, [[BOS_AB, 0, 1], [BOS_AB, 1, PAD_AB], [BOS_AB, PAD_AB, PAD_AB]])
    assert ids.dtype == np.int64


# --------------------------------------------------------------------------- aggregate


def test_aggregate_default_is_carried_by_bos_value():
    run = interpreter(previous_token(default="x"))
    assert run.run_batch([["a", "b", "b", "a"], ["b"], ["b", "a"]]) == [["x", "a", "b", "b"], ["x"], ["x", "b"]]
    _, spaces = run.run_ids(run.encode([["a"]]))
    np.testing.assert_allclose(spaces["prev"][0, 0], [0, 0, 1], atol=1e-6)  # at BOS: bos_value


def test_aggregate_without_default_decodes_none():
    run = interpreter(previous_token(default=None))
    assert run.run_batch([["a", "b", "b", "a"], ["b", "a"]]) == [[None, "a", "b", "b"], [None, "b"]]
    output, _ = run.run_ids(run.encode([["a", "b"]]))
    np.testing.assert_array_equal(output, [[NO_VALUE, NO_VALUE, 0]])


# --------------------------------------------------------------------------- causal, numerical


def test_causal_model_averages_prefixes():
    run = interpreter(fraction_of_a(causal=True))
    (answer,) = run.run_batch([["a", "b", "a", "a"]])
    assert answer == pytest.approx([1.0, 0.5, 2 / 3, 0.75], abs=1e-6)
    assert all(type(x) is float for x in answer)


def test_non_causal_model_averages_everything():
    (answer,) = interpreter(fraction_of_a(causal=False)).run_batch([["a", "b", "a", "a"]])
    assert answer == pytest.approx([0.75] * 4, abs=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_numerical_output_padded_batch(causal):
    run = interpreter(fraction_of_a(causal))
    inputs = [["b", "a"], ["a", "a", "b", "b"], ["a"]]
    output, _ = run.run_ids(run.encode(inputs))
    assert output.dtype == np.float32 and output.shape == (3, 5)
    batch = run.run_batch(inputs)
    for xs, answer in zip(inputs, batch):
        assert answer == pytest.approx(run.run(xs), abs=1e-6)
    if causal:
        assert batch[0] == pytest.approx([0.0, 0.5], abs=1e-6)
        assert batch[1] == pytest.approx([1.0, 1.0, 2 / 3, 0.5], abs=1e-6)
    else:
        assert batch[0] == pytest.approx([0.5, 0.5], abs=1e-6)
        assert batch[1] == pytest.approx([0.5] * 4, abs=1e-6)
    assert batch[2] == pytest.approx([1.0], abs=1e-6)


def test_empty_batch():
    assert interpreter(HIST).run_batch([]) == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("tokens", [["a", "z"], ["BOS"], ["a", "PAD"], [["a"]], [1]])
def test_unknown_tokens_are_refused(tokens):
    with pytest.raises(InputError, match="unknown token"):
        interpreter(HIST).run_batch([["a"], tokens])


def test_too_long_inputs_are_refused():
    with pytest.raises(InputError, match="longer than max_seq_len 3"):
        interpreter(HIST).run_batch([["a", "b", "a", "b"]])
    with pytest.raises(InputError, match="longer than"):
        interpreter(HIST).run_ids(np.full((1, 5), BOS_AB))


@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([BOS_AB, 0]), "2-D"),
        (np.array([[BOS_AB, 0.0]]), "integers"),
        (np.zeros((1, 0), np.int64), "at least one position"),
        (np.array([[BOS_AB, 7]]), "must lie in"),
        (np.array([[BOS_AB, -1]]), "must lie in"),
        (np.array([[0, 1]]), "BOS"),
        (np.array([[BOS_AB, BOS_AB]]), "BOS"),
    ],
)
def test_bad_token_ids_are_refused(ids, message):
    with pytest.raises(InputError, match=message):
        interpreter(HIST).run_ids(ids)


def test_a_module_without_one_craft_model_is_refused():
    with pytest.raises(IRError):
        CraftInterpreter(parse("builtin.module {}"))
    model = HIST.strip()[len("builtin.module {") : -1]
    with pytest.raises(IRError):
        CraftInterpreter(parse("builtin.module {" + model + model + "}"))


def test_a_model_without_output_is_refused():
    body = EMBEDDINGS.replace('    craft.output %marks : !craft.cat<"marks", ["x", "y"]>\n', "")
    ctx = Context()
    for dialect in (Builtin, Raspc, Craft):
        ctx.load_dialect(dialect)
    module = Parser(ctx, body).parse_module()  # not verified: the verifier refuses it too
    with pytest.raises(IRError, match="craft.output"):
        CraftInterpreter(module)


def test_the_functions_need_a_run_set_up():
    from xdsl.interpreter import Interpreter

    from raspc.interpreters.craft import CraftFunctions

    craft = interpreter(HIST)
    bare = Interpreter(craft.module)
    bare.register_implementations(CraftFunctions())
    with pytest.raises(IRError, match="CraftInterpreter"):
        bare.run_ssacfg_region(craft.model.body, ())


def test_weights_are_rebuilt_when_an_op_changes():
    """Dense weights are cached per op, but follow an op whose weights a pass replaced."""
    from raspc.dialects.craft import AttentionHeadOp, SparseMatrixAttr

    run = interpreter(previous_token(default="x"))
    assert run.run(["a", "b"]) == ["x", "a"]
    head = next(op for op in run.model.ops if isinstance(op, AttentionHeadOp))
    swapped = {(r, c.replace(":a", ":B").replace(":b", ":a").replace(":B", ":b") if r != "bos" else c): v
               for (r, c), v in head.w_ov.as_dict().items()}
    head.properties["w_ov"] = SparseMatrixAttr.from_dict(swapped)
    assert run.run(["a", "b"]) == ["x", "b"]


# --------------------------------------------------------------------------- against the transformer


def lowered_to_tensor(text: str) -> ModuleOp:
    from raspc.compiler import build_pipeline, context

    module = parse(text)
    for lowering in build_pipeline("allocate-layers,layout-residual,lower-craft-to-tensor"):
        lowering.apply(context(), module)
    module.verify()
    return module


@pytest.mark.parametrize(
    "text, inputs",
    [
        (HIST, [["a", "b", "a"], ["b"], ["a", "a", "a"], []]),
        (previous_token(default="x"), [["a", "b", "b", "a"], ["b"], ["b", "a"]]),
        (previous_token(default=None), [["a", "b", "b", "a"], ["a", "b"]]),
        (fraction_of_a(causal=True), [["a", "b", "a", "a"], ["b"], ["a", "b"]]),
        (fraction_of_a(causal=False), [["a", "b", "a", "a"], ["b"], ["a", "b"]]),
        (EMBEDDINGS, [["a", "c", "b"], ["c"]]),
    ],
)
def test_spaces_equal_the_transformer_residual(text, inputs):
    """Every space is the compiled transformer's residual restricted to its directions, at every
    position (PAD included); the outputs are the transformer's."""
    from raspc.dialects.tensor import model_op
    from raspc.interpreters.tensor import run_tensor

    craft = interpreter(text)
    ids = craft.encode(inputs)
    output, spaces = craft.run_ids(ids)
    tensor = lowered_to_tensor(text)
    tensor_output, residual = run_tensor(tensor, ids)
    column = {label: i for i, label in enumerate(model_op(tensor).residual_labels)}
    for op in craft.model.ops:
        for space in op.results:
            labels = space.type.labels
            np.testing.assert_allclose(spaces[space.type.space.data], residual[:, :, [column[x] for x in labels]],
                                       atol=1e-5, err_msg=str(labels))
    assert output.dtype == tensor_output.dtype
    np.testing.assert_allclose(output, tensor_output, atol=1e-5)
