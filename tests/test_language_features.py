"""Causal mode, None handling, float rounding, value-set inference, per-pass verification and circuits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from raspc import compile_rasp_to_model, lib, rasp
from raspc.analysis.circuits import Circuits
from raspc.compiler import DEFAULT_PIPELINE, register_pass
from raspc.errors import UnsupportedError
from raspc.verification import VerificationError


def _all_inputs(vocab, max_len):
    for n in range(1, max_len + 1):
        yield from (list(x) for x in itertools.product(vocab, repeat=n))


def _check_exhaustive(program, vocab, max_len, **kw):
    model = compile_rasp_to_model(program, vocab, max_len, **kw)
    inputs = list(_all_inputs(vocab, max_len))
    got = model.apply_batch([["BOS", *x] for x in inputs])
    for x, g in zip(inputs, got):
        expected = rasp.evaluate(program, x)
        for e, v in zip(expected, g[1:]):
            if isinstance(e, float) or isinstance(v, float):
                assert e is not None and abs(e - v) < 1e-4, (x, expected, g)
            else:
                assert e == v, (x, expected, g)
    return model


# ---------------------------------------------------------------- causal


def test_causal_frac_prevs_compiles_and_is_exact():
    bools = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens))
    model = _check_exhaustive(lib.make_frac_prevs(bools), ["a", "b"], 4, causal=True)
    assert model.runtime.causal


def test_causal_shift_by_is_safe():
    _check_exhaustive(lib.shift_by(1, rasp.tokens), ["a", "b", "c"], 3, causal=True)


@pytest.mark.parametrize(
    "program",
    [lib.make_reverse(rasp.tokens), lib.make_length(), lib.make_hist(), lib.make_sort_unique(rasp.tokens, rasp.tokens)],
    ids=["reverse", "length", "hist", "sort_unique"],
)
def test_causal_refuses_programs_whose_meaning_would_change(program):
    with pytest.raises(UnsupportedError, match="causal=True would change"):
        compile_rasp_to_model(program, [1, 2, 3], 4, causal=True)


def test_causal_refusal_is_justified_the_causal_evaluator_differs():
    xs = ["a", "b", "a"]
    assert rasp.evaluate(lib.make_hist(), xs) != rasp.causal_evaluate(lib.make_hist(), xs)


def test_causal_look_ahead_on_indices_is_refused():
    nxt = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1), rasp.tokens)
    with pytest.raises(UnsupportedError, match="select a key after the query"):
        compile_rasp_to_model(nxt.named("next_token"), ["a", "b"], 4, causal=True)


# ---------------------------------------------------------------- None


def test_empty_selection_decodes_to_none():
    model = compile_rasp_to_model(lib.shift_by(2, rasp.tokens), ["a", "b"], 5)
    assert model.apply(["BOS", "a", "b", "b", "a"]).decoded == ["BOS", None, None, "a", "b"]


def test_none_flows_through_categorical_maps_as_none():
    shifted = lib.shift_by(1, rasp.tokens)
    program = rasp.SequenceMap(lambda x, y: x + y, rasp.Map(lambda t: t.upper(), shifted), rasp.tokens)
    _check_exhaustive(program, ["a", "b"], 4)


def test_categorical_aggregate_default_is_exact():
    sel = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1)
    program = rasp.Aggregate(sel, rasp.tokens, default="z").named("next_or_z")
    model = _check_exhaustive(program, ["a", "b"], 4)
    assert model.apply(["BOS", "a", "b"]).decoded == ["BOS", "b", "z"]


def test_default_carrying_aggregate_read_again_as_key_and_value():
    # The BOS position holds the first aggregate's default; later heads must cancel it exactly.
    nxt = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1), rasp.tokens,
                         default="a").named("nxt")
    same = rasp.Select(nxt, rasp.tokens, rasp.Comparison.EQ).named("same_as_next")
    program = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ), nxt).named("copy")
    _check_exhaustive(program, ["a", "b"], 4)
    _check_exhaustive(rasp.SelectorWidth(same).named("w"), ["a", "b"], 4)


def test_numerical_map_of_a_maybe_none_input_is_refused_naming_it():
    shifted = lib.shift_by(1, rasp.tokens)
    program = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, shifted)).named("is_a_before")
    with pytest.raises(UnsupportedError, match=r"is_a_before.*can be None"):
        compile_rasp_to_model(program, ["a", "b"], 4)


# ---------------------------------------------------------------- verification


def test_verify_passes_on_the_library():
    for program in (lib.make_sort_freq(4), lib.make_shuffle_dyck(["()"])):
        compile_rasp_to_model(program, ["(", ")"], 4, verify=True)


def test_verify_names_the_pass_that_breaks_semantics():
    from dataclasses import dataclass

    from xdsl.passes import ModulePass

    from raspc.dialects import rasp as R

    @register_pass
    @dataclass(frozen=True)
    class FlipFirstMapEntry(ModulePass):
        """A deliberately wrong pass: swaps two entries of every map table."""

        name = "test-flip-map"

        def apply(self, ctx, op):
            for o in op.walk():
                if isinstance(o, R.MapOp):
                    (a, fa), (b, fb) = o.fn.data[:2]
                    if fa != fb:
                        o.properties["fn"] = R.TableAttr.of([(a, fb), (b, fa), *o.fn.data[2:]])

    program = rasp.Map(lambda t: t == "a", rasp.tokens).named("is_a")
    with pytest.raises(VerificationError, match="after pass 'test-flip-map'"):
        compile_rasp_to_model(program, ["a", "b"], 3, pipeline="test-flip-map," + DEFAULT_PIPELINE, verify=True)


# ---------------------------------------------------------------- circuits


def test_qk_and_ov_circuits_are_labelled_and_match_the_program():
    model = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), ["a", "b", "c"], 3)
    circuits = Circuits.from_module(model.module)
    sort = circuits.head("sort")
    qk = dict(((r, c), v) for r, c, v in circuits.qk_circuit("sort").entries())
    assert qk[("indices:0", "target_pos:0")] == pytest.approx(sort.scale)
    assert qk[("one", "bos")] == pytest.approx(sort.scale / 2)
    ov = circuits.ov_circuit("sort").entries()
    assert sorted((r, c) for r, c, _ in ov) == [("tokens:a", "sort:a"), ("tokens:b", "sort:b"), ("tokens:c", "sort:c")]
    from_onnx = Circuits.from_onnx(model.onnx_model)
    assert [h.name for h in from_onnx.heads] == [h.name for h in circuits.heads]
    assert np.allclose(from_onnx.head("sort").qk, sort.qk)


def test_composition_scores_find_head_to_head_v_composition():
    first = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1), rasp.tokens,
                           default="a").named("prev")
    second = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1), first,
                            default="a").named("prev2")
    model = compile_rasp_to_model(second, ["a", "b"], 4)
    scores = Circuits.from_module(model.module).composition_scores()
    assert any(kind == "V" and a.endswith("prev") and b.endswith("prev2") and s > 0.1 for kind, a, b, s in scores)


# ---------------------------------------------------------------- float rounding of means


def test_function_that_depends_on_the_last_bit_of_a_mean_of_non_integers_is_refused():
    halves = rasp.numerical(rasp.Map(lambda t: 0.1 if t == "a" else 0.7, rasp.tokens))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ), halves,
                                         default=0)).named("mean")
    exact_third = rasp.Map(lambda x: x == 0.3, mean).named("is_0.3")  # 0.3 = (0.1 + 0.7 + 0.1) / 3, rounding-dependent
    with pytest.raises(UnsupportedError, match=r"is_0\.3.*summation order"):
        compile_rasp_to_model(exact_third, ["a", "b"], 4)


def test_threshold_on_a_mean_of_integers_is_exact():
    bools = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens))
    thirds = rasp.Map(lambda x: round(3 * x), lib.make_frac_prevs(bools)).named("thirds")
    _check_exhaustive(thirds, ["a", "b"], 5)


# ---------------------------------------------------------------- value-set inference


def test_balance_of_two_means_over_one_selector_is_inferred_jointly():
    """opens - closes over the same prefix selector takes ~1k values, not all ~10^5 pairs of means."""
    from raspc.lowering.program_to_rasp import program_to_rasp

    module = program_to_rasp(lib.make_pair_balance(rasp.tokens, "(", ")"), ["(", ")"], 30)
    balance = next(op for op in module.walk() if op.name == "rasp.linear_sequence_map")
    assert len(balance.res.type.value_set) < 2_000
    program = lib.make_shuffle_dyck(["()"])
    model = compile_rasp_to_model(program, ["(", ")"], 30)
    inputs = [list("(" * k + ")" * k) for k in range(1, 16)] + [list("()" * 15), list(")(" * 15), list("(()" * 10)]
    for xs, got in zip(inputs, model.apply_batch([["BOS", *x] for x in inputs])):
        assert got[1:] == rasp.evaluate(program, xs), xs


def test_bad_pipelines_are_pipeline_errors_and_short_pipelines_are_explained():
    from raspc.errors import IRError, PipelineError

    for spec in ("no-such-pass", "cse{", "fuse-maps{max-growth=x}"):
        with pytest.raises(PipelineError, match="bad pipeline"):
            compile_rasp_to_model(lib.make_hist(), ["a"], 3, pipeline=spec)
    with pytest.raises(IRError, match="ends at the rasp level"):
        compile_rasp_to_model(lib.make_hist(), ["a"], 3, pipeline="cse")


def test_a_tracr_program_ports_by_changing_its_imports():
    from raspc import compiling, lib as raspc_lib, rasp as raspc_rasp

    program = raspc_lib.make_length()
    model = compiling.compile_rasp_to_model(program, vocab={1, 2, 3}, max_seq_len=5,
                                            compiler_bos=compiling.COMPILER_BOS)
    assert model.apply([compiling.COMPILER_BOS, 1, 2, 3]).decoded == [compiling.COMPILER_BOS, 3, 3, 3]
    assert raspc_rasp.evaluate(program, [1, 2]) == [2, 2]
