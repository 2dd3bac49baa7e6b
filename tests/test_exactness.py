"""Exact on every input the evaluator accepts: each class of wrong answer or crash the
'exactness' issue found, compiled and checked on every input up to max_seq_len (or refused with
the typed error that says why no model can be exact).

Every program here was answered wrongly, crashed, or was refused needlessly before that issue.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import pytest

from raspc import rasp
from raspc.errors import UnsupportedError, ValueSetError
from raspc.model import compile_rasp_to_model
from raspc.utils.values import identity, same_results

tokens, indices, Cmp = rasp.tokens, rasp.indices, rasp.Comparison


def exhaustive(program: rasp.SOp, vocab: Sequence[Any], max_seq_len: int, causal: bool = False) -> int:
    """Compiles and checks every input up to max_seq_len in one padded batch; returns how many were checked."""
    model = compile_rasp_to_model(program, list(vocab), max_seq_len, causal=causal)
    evaluate = rasp.causal_evaluate if causal else rasp.evaluate
    inputs = [list(x) for n in range(1, max_seq_len + 1) for x in itertools.product(vocab, repeat=n)]
    cases = []
    for x in inputs:
        try:
            cases.append((x, evaluate(program, x)))
        except Exception:  # noqa: BLE001 - outside the program's domain
            continue
    outs = model.apply_batch([["BOS", *x] for x, _ in cases])
    bad = [(x, got[1:], want) for (x, want), got in zip(cases, outs)
           if not same_results(want, got[1:], rasp.is_numerical(program))]
    assert not bad, f"{len(bad)} of {len(cases)} wrong; first: input {bad[0][0]}, model {bad[0][1]}, evaluator {bad[0][2]}"
    return len(cases)


def prev_token() -> rasp.SOp:
    """The previous token; None at position 0."""
    return rasp.Aggregate(rasp.Select(indices, indices, lambda k, q: k == q - 1), tokens).named("prev")


# --------------------------------------------------------------------------- None inside selectors


def test_a_none_key_is_selected_where_the_predicate_says_so() -> None:
    program = rasp.SelectorWidth(rasp.Select(prev_token(), tokens, lambda k, q: k != q))
    assert rasp.evaluate(program, ["a"]) == [1]
    assert compile_rasp_to_model(program, ["a", "b"], 4).apply(["BOS", "a"]).decoded == ["BOS", 1]
    assert exhaustive(program, ["a", "b"], 4) == 30


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: ~rasp.Select(p, tokens, lambda k, q: k == q), id="not"),
    pytest.param(lambda p: rasp.Select(p, tokens, lambda k, q: k != q) | rasp.Select(indices, indices, Cmp.EQ),
                 id="or"),
    pytest.param(lambda p: rasp.Select(p, p, lambda k, q: k == q), id="none-equals-none"),
    pytest.param(lambda p: rasp.Select(p, tokens, lambda k, q: k != q) & rasp.Select(indices, indices, Cmp.LEQ),
                 id="and"),
])
def test_selects_over_a_maybe_none_s_op(make: Any) -> None:
    exhaustive(rasp.SelectorWidth(make(prev_token())), ["a", "b"], 4)


def test_a_numerical_mean_over_a_none_query() -> None:
    ones = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, tokens))
    sel = rasp.Select(tokens, prev_token(), lambda k, q: q is None or k == q)
    exhaustive(rasp.numerical(rasp.Aggregate(sel, ones, default=0)), ["a", "b"], 4)


# --------------------------------------------------------------------------- value identity


def test_true_and_one_stay_distinct() -> None:
    mixed = rasp.SequenceMap(lambda a, b: True if a == "a" else 1, tokens, indices)
    exhaustive(rasp.Map(str, mixed), ["a", "b"], 3)
    exhaustive(rasp.Map(lambda v: type(v).__name__, mixed), ["a", "b"], 3)


def test_the_mean_of_equal_ints_is_a_float() -> None:
    program = rasp.Map(str, rasp.Aggregate(rasp.Select(tokens, tokens, Cmp.EQ), tokens))
    assert rasp.evaluate(program, [1, 1]) == ["1.0", "1.0"]
    model = compile_rasp_to_model(program, [1, 2], 4)
    assert model.apply(["BOS", 1, 1]).decoded == ["BOS", "1.0", "1.0"]
    assert model.apply(["BOS", 1, 2]).decoded == ["BOS", "1", "2"]
    exhaustive(program, [1, 2], 4)


def test_sort_of_repeated_ints_answers_with_the_evaluators_types() -> None:
    from raspc import lib

    program = lib.make_sort_unique(tokens, tokens)
    model = compile_rasp_to_model(program, [1, 2, 3], 4)
    out = model.apply(["BOS", 2, 2, 1]).decoded[1:]
    want = rasp.evaluate(program, [2, 2, 1])
    assert [identity(v) for v in out] == [identity(v) for v in want]


def test_zero_and_false_and_zero_point_zero_stay_distinct() -> None:
    program = rasp.Map(repr, rasp.Map(lambda t: {"a": 0, "b": 0.0, "c": False}[t], tokens))
    exhaustive(program, ["a", "b", "c"], 2)


# --------------------------------------------------------------------------- floats


def test_the_float_the_evaluator_computes_is_in_the_value_set() -> None:
    """3 * 0.2 - 0.6 is 1.1e-16, not 0: the sign after it is not something a float32 model can follow."""
    prefix = rasp.Select(indices, indices, Cmp.LEQ)
    frac = lambda t: rasp.numerical(rasp.Aggregate(prefix, rasp.numerical(rasp.Map(  # noqa: E731
        lambda x, t=t: 1 if x == t else 0, tokens)), default=0))
    balance = rasp.numerical(rasp.LinearSequenceMap(frac("a"), frac("b"), 3, -1)).named("balance")
    from raspc.lowering.program_to_rasp import program_to_rasp

    module = program_to_rasp(rasp.Map(lambda x: x > 0, balance), ["a", "b", "c"], 5)
    values = next(op for op in module.walk() if getattr(op, "label_str", "") == "balance").res.type.value_set
    assert 3 * 0.2 - 0.6 in values
    with pytest.raises(UnsupportedError, match="cannot tell apart"):
        compile_rasp_to_model(rasp.Map(lambda x: x > 0, balance), ["a", "b", "c"], 5)


def test_a_function_of_a_rounding_dependent_mean_is_refused() -> None:
    floats = rasp.numerical(rasp.Map(lambda t: t, tokens))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.LEQ), floats, default=0))
    with pytest.raises(UnsupportedError, match="summation order"):
        compile_rasp_to_model(rasp.Map(lambda x: x > 0.5, mean).named("half"), [0.1, 0.2, 0.7, 1.0], 4)


def test_a_linear_map_of_a_mean_with_itself_is_deterministic() -> None:
    floats = rasp.numerical(rasp.Map(lambda t: t, tokens))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.LEQ), floats, default=0))
    tripled = rasp.numerical(rasp.LinearSequenceMap(mean, mean, 3, 0))
    exhaustive(rasp.numerical(rasp.Map(lambda x: x > 1, tripled)), [0.25, 0.75], 3)


@pytest.mark.parametrize("default", [1e9, -1e6, 12345.5])
def test_large_defaults_stay_out_of_selected_positions(default: float) -> None:
    ones = rasp.numerical(rasp.Map(lambda t: 1, tokens))
    sometimes = rasp.Select(tokens, tokens, lambda k, q: k == "a" and q == "a")
    exhaustive(rasp.numerical(rasp.Aggregate(sometimes, ones, default=default)), ["a", "b"], 4)


def test_large_outputs_next_to_small_ones_go_through_a_one_hot_of_intervals() -> None:
    # ramps of +1e6 then -1e6 would leave a float32 error of several units on the -1s around them
    frac = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.LEQ),
                                         rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, tokens)), default=0))
    spike = rasp.numerical(rasp.Map(lambda x: 1e6 if 0.4 < x < 0.6 else -1.0, frac, simplify=False))
    exhaustive(spike, ["a", "b"], 8)
    model = compile_rasp_to_model(spike, ["a", "b"], 8)
    assert "map_interval" in str(model.module_at("craft"))
    # one step with nothing cancelling stays a single MLP
    step = rasp.numerical(rasp.Map(lambda x: 1e6 if x > 0.5 else 0.0, frac, simplify=False))
    assert "interval" not in str(compile_rasp_to_model(step, ["a", "b"], 8).module_at("craft"))


def test_a_far_value_does_not_blur_steps_between_small_ones() -> None:
    # ramps rising from -1 would be saturated at 1e9, where float32 rounds them by ~64
    far = rasp.numerical(rasp.ConstantSOp([1e9, False, 0.2, -1]))
    ones = rasp.numerical(rasp.Map(lambda t: 1 if t == "y" else -1, tokens))
    exhaustive(rasp.numerical(rasp.Aggregate(rasp.Select(far, far, Cmp.LEQ), ones, default=0)), ["x", "y"], 4)


def test_far_values_on_both_sides_of_small_steps_are_refused_with_the_reason() -> None:
    both = rasp.numerical(rasp.ConstantSOp([-1e9, 2, 3, 1e9]))
    with pytest.raises(UnsupportedError, match=r"as far apart as -1000000000.0 and 1000000000.0"):
        compile_rasp_to_model(rasp.SequenceMap(lambda t, c: c == 2, tokens, both), ["a"], 4)


def test_a_categorical_mean_of_equal_numbers_of_different_types_is_their_float() -> None:
    # 4 and 4.0 selected together average to 4.0, whichever of them the source holds where
    fours = rasp.SequenceMap(lambda t, i: 4 if i % 2 == 0 else 4.0, tokens, indices)
    mean = rasp.Aggregate(rasp.Select(tokens, tokens, Cmp.EQ), fours)
    assert exhaustive(rasp.Map(repr, mean), ["a", "b"], 4) == 30
    bools = rasp.SequenceMap(lambda t, i: True if i < 2 else 1, tokens, indices)
    exhaustive(rasp.Map(repr, rasp.Aggregate(rasp.Select(tokens, tokens, Cmp.EQ), bools)), ["a", "b"], 4)


def test_gaps_are_relative_to_the_values() -> None:
    tiny = rasp.numerical(rasp.Map(lambda t: 1e-6 if t == "a" else 1.125e-6, tokens))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.EQ), tiny, default=0))
    exhaustive(rasp.Map(lambda x: x > 1.05e-6, mean), ["a", "b"], 3)


# --------------------------------------------------------------------------- values a function returns


def test_numpy_scalars_are_plain_values() -> None:
    exhaustive(rasp.Map(lambda t: np.float64(0.5) if t == "a" else np.int64(2), tokens), ["a", "b"], 3)
    exhaustive(rasp.Map(lambda t: np.bool_(t == "a"), tokens), ["a", "b"], 3)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), [1], Fraction(1, 3), 1j, b"x", frozenset()],
                         ids=["inf", "nan", "list", "fraction", "complex", "bytes", "frozenset"])
def test_unsupported_values_are_a_value_set_error_naming_the_s_op(bad: Any) -> None:
    program = rasp.Map(lambda t: bad if t == "a" else 1, tokens).named("odd")
    with pytest.raises(ValueSetError, match=r"s-op 'odd'.*unsupported value"):
        compile_rasp_to_model(program, ["a", "b"], 3)


def test_a_function_that_raises_only_outside_the_domain_compiles() -> None:
    exhaustive(rasp.SequenceMap(lambda n, i: 12 // (n - i), rasp.length, indices), ["a", "b"], 4)


def test_a_causal_compile_sees_the_selector_after_it_is_simplified() -> None:
    ones = rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, tokens))
    not_after = rasp.SelectorNot(rasp.Select(indices, indices, Cmp.GT))  # LEQ
    exhaustive(rasp.numerical(rasp.Aggregate(not_after, ones, default=0)), ["a", "b"], 4, causal=True)


def test_one_ulp_twins_feeding_a_numerical_output_need_no_refusal() -> None:
    twins = rasp.numerical(rasp.Map(lambda t: 0.3 if t == "a" else 0.1 + 0.2, tokens))  # 0.3, 0.30000000000000004
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.EQ), twins, default=0))
    exhaustive(rasp.numerical(rasp.Map(lambda x: 2 * x - 1, mean)), ["a", "b"], 3)


def test_twins_a_function_tells_apart_are_refused_with_both_values_shown() -> None:
    twins = rasp.numerical(rasp.Map(lambda t: 0.3 if t == "a" else 0.1 + 0.2, tokens))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Cmp.EQ), twins, default=0))
    with pytest.raises(UnsupportedError, match=r"0\.3 and 0\.30000000000000004"):
        compile_rasp_to_model(rasp.Map(lambda x: x == 0.3, mean), ["a", "b"], 3)
