"""The exact constructions of raspc/lowering/rasp_to_craft.py, through small programs compiled end to end.

Each program is compiled to ONNX and compared with `rasp.evaluate` on every input up to a small
length (exhaustive over vocab^n) or, for the max_seq_len 20 cases, on 300 seeded random inputs;
all rows of a case go through one padded `apply_batch` call. Categorical values must be equal
(None decodes to None), numerical ones within 1e-4.

Where Tracr is known to be inexact (numerical MLPs clipping negatives to 0, selector width
wrong past ~10 at max_seq_len 12, numerical Map after a mean mis-sized), a test pins the exact
answer explicitly.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from raspc import lib, rasp
from helpers import TOL, same
from raspc.errors import CompileError, RaspcError
from raspc.model import compile_rasp_to_model

Comparison = rasp.Comparison
tokens, indices = rasp.tokens, rasp.indices


# --------------------------------------------------------------------------- helpers


def all_inputs(vocab: Sequence[Any], max_len: int) -> list[list[Any]]:
    return [list(x) for n in range(1, max_len + 1) for x in itertools.product(vocab, repeat=n)]


def random_inputs(vocab: Sequence[Any], max_len: int, count: int, seed: str) -> list[list[Any]]:
    rng = random.Random(seed)
    return [[rng.choice(list(vocab)) for _ in range(rng.randint(1, max_len))] for _ in range(count)]


def check(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    inputs: Sequence[Sequence[Any]] | None = None,
    *,
    causal: bool = False,
    min_checked: int = 1,
) -> Any:
    """Compiles `program` and compares every input (default: all inputs up to max_seq_len) with
    the evaluator in one apply_batch call. Inputs where the evaluator raises are skipped."""
    model = compile_rasp_to_model(program, list(vocab), max_seq_len, causal=causal)
    if inputs is None:
        inputs = all_inputs(vocab, max_seq_len)
    evaluate = rasp.causal_evaluate if causal else rasp.evaluate
    cases = []
    for x in inputs:
        try:
            cases.append((list(x), evaluate(program, list(x))))
        except Exception:  # noqa: BLE001 - outside the program's domain
            continue
    assert len(cases) >= min_checked, f"only {len(cases)} inputs in the program's domain"
    numerical = rasp.is_numerical(program)
    decoded = model.apply_batch([["BOS", *x] for x, _ in cases])
    bad = [
        (x, got[1:], expected)
        for (x, expected), got in zip(cases, decoded)
        if len(got) != len(x) + 1 or not all(same(a, e, numerical) for a, e in zip(got[1:], expected))
    ]
    assert not bad, f"{len(bad)} of {len(cases)} inputs differ; first: input {bad[0][0]}, model {bad[0][1]}, " \
                    f"rasp.evaluate {bad[0][2]}"
    return model


def max_error(model: Any, program: rasp.SOp, inputs: Sequence[Sequence[Any]]) -> float:
    decoded = model.apply_batch([["BOS", *x] for x in inputs])
    return max(
        abs(float(a) - float(e))
        for x, got in zip(inputs, decoded)
        for a, e in zip(got[1:], rasp.evaluate(program, x))
    )


def num_map(table: dict, sop: rasp.SOp = tokens, name: str = "num_map") -> rasp.SOp:
    return rasp.numerical(rasp.Map(lambda x: table[x], sop)).named(name)


def frac_a() -> rasp.SOp:
    """make_frac_prevs over tokens == "a": values k/n, a numerical mean."""
    return lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, tokens)).named("is_a"))


def digits() -> rasp.SOp:
    return num_map({"a": 0, "b": 1, "c": 2, "d": 3}, name="digits")


@dataclass(frozen=True)
class Prog:
    """A construction test: `build()` gives a fresh program, checked on all inputs up to
    `max_len` (default max_seq_len) or on `random` seeded random inputs."""

    build: Callable[[], rasp.SOp]
    vocab: tuple[Any, ...]
    max_seq_len: int
    max_len: int | None = None
    random: int | None = None


def P(build: Callable[[], rasp.SOp], vocab: Sequence[Any], max_seq_len: int, **kw: Any) -> Prog:
    return Prog(build, tuple(vocab), max_seq_len, **kw)


def run_prog(p: Prog, name: str) -> Any:
    program = p.build()
    if p.random:
        inputs = random_inputs(p.vocab, p.max_len or p.max_seq_len, p.random, name)
    else:
        inputs = all_inputs(p.vocab, p.max_len or p.max_seq_len)
    return check(program, p.vocab, p.max_seq_len, inputs)


ABC, ABCD = "abc", "abcd"

# --------------------------------------------------------------------------- maps

MAPS = {
    "cat->num-negative": P(lambda: num_map({"a": -2, "b": 3, "c": 0, "d": -0.5}), ABCD, 4),
    "cat->num-all-negative": P(lambda: num_map({"a": -1, "b": -7.25}), "ab", 5),
    "cat->cat": P(lambda: rasp.Map(lambda t: "vowel" if t in "ae" else "consonant", tokens).named("kind"), "abcde", 3),
    "cat->cat-with-none": P(lambda: rasp.Map(lambda t: None if t == "a" else t.upper(), tokens).named("up"), ABC, 4),
    "cat->bool": P(lambda: rasp.Map(lambda t: t == "b", tokens).named("is_b"), ABC, 4),
    "map-of-none-input": P(lambda: rasp.Map(lambda t: t.upper(), lib.shift_by(1, tokens)).named("up"), ABC, 5),
    "num->num-one-minus-mean": P(lambda: rasp.numerical(rasp.Map(lambda x: 1 - x, frac_a())).named("not_frac"),
                                 "ab", 7),
    "num->num-nonlinear": P(lambda: rasp.numerical(rasp.Map(lambda x: x * x - 0.25, frac_a())).named("sq"), "ab", 7),
    "num->num-negative-mean": P(
        lambda: rasp.numerical(rasp.Map(lambda x: abs(x) - 1, rasp.numerical(rasp.Aggregate(
            rasp.Select(indices, indices, Comparison.LEQ), num_map({"a": -1, "b": 2, "c": -3}), default=0)))).named(
            "abs_mean"), ABC, 5),
    "num->cat-threshold": P(lambda: rasp.Map(lambda x: x > 0.5, frac_a()).named("majority"), "ab", 7),
    "num->cat-round": P(lambda: rasp.Map(lambda x: round(3 * x), frac_a()).named("thirds"), "ab", 6),
    "num->cat-after-linear": P(
        lambda: rasp.Map(lambda x: x > 0, rasp.numerical(rasp.LinearSequenceMap(digits(), frac_a(), 1, -2))).named(
            "positive"), ABCD, 5),
    "numerical-bool-map-mean": P(
        lambda: rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Comparison.LEQ),
                                              rasp.numerical(tokens == "a"), default=0)).named("share_a"), ABC, 5),
    "float-tokens": P(
        lambda: rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Comparison.LEQ),
                                              rasp.numerical(rasp.Map(lambda x: x, tokens)), default=0)).named("mean"),
        (0.5, 1.25, -2.0), 5),
    "bool-tokens": P(lambda: rasp.Map(lambda x: not x, tokens).named("negated"), (True, False), 4),
}


@pytest.mark.parametrize("name", list(MAPS))
def test_map(name: str) -> None:
    run_prog(MAPS[name], name)


def test_categorical_to_numerical_negative_outputs_are_exact() -> None:
    """Tracr's categorical->numerical MLP clips negative outputs to 0; raspc's must not."""
    program = num_map({"a": -2, "b": 3, "c": 0, "d": -0.5})
    model = compile_rasp_to_model(program, list(ABCD), 4)
    out = model.apply(["BOS", "a", "b", "c", "d"])
    np.testing.assert_allclose(out.output[1:], [-2.0, 3.0, 0.0, -0.5], atol=1e-6)
    assert max_error(model, program, all_inputs(ABCD, 3)) < 1e-5


def test_numerical_map_after_mean_is_exact_on_every_input() -> None:
    """1 - frac_prevs: every mean k/n (n <= 8) is in the discretised MLP's value set."""
    program = rasp.numerical(rasp.Map(lambda x: 1 - x, frac_a())).named("not_frac")
    inputs = all_inputs("ab", 8)
    model = check(program, "ab", 8, inputs)
    assert max_error(model, program, inputs) < 1e-5


# --------------------------------------------------------------------------- sequence maps

SEQUENCE_MAPS = {
    "categorical": P(lambda: rasp.SequenceMap(lambda t, i: (ord(t) + i) % 3, tokens, indices).named("mix"), ABC, 5),
    "same-operand": P(lambda: rasp.SequenceMap(lambda a, b: a * b, tokens, tokens).named("square"), [1, 2, 3], 4),
    "tuple-values": P(lambda: rasp.SequenceMap(lambda t, i: (t, i), tokens, indices).named("pair"), "ab", 4),
    "with-none-operands": P(
        lambda: rasp.SequenceMap(lambda a, b: f"{a}{b}", lib.shift_by(1, tokens),
                                 rasp.Aggregate(rasp.Select(indices, indices, lambda k, q: q == k + 2), tokens,
                                                default="z").named("back2")).named("joined"), ABC, 5),
    "none-results": P(lambda: rasp.SequenceMap(lambda t, i: None if i == 1 else t, tokens, indices).named("holes"),
                      ABC, 4),
    "length": P(lambda: rasp.SequenceMap(lambda n, i: n - i, rasp.length, indices).named("remaining"), "ab", 5),
    "nary": P(lambda: lib.make_nary_sequencemap(lambda x, y, z: x * y - z, tokens, tokens, indices), [1, 2, 3], 4),
    "full-operand": P(lambda: rasp.SequenceMap(lambda a, b: a + b, tokens, rasp.Full(10)).named("plus10"),
                      [1, 2, 3], 4),
    "numerical-operand": P(
        lambda: rasp.SequenceMap(lambda x, t: f"{t}{x > 0.5}", frac_a(), tokens).named("tagged"), "ab", 6),
}


@pytest.mark.parametrize("name", list(SEQUENCE_MAPS))
def test_sequence_map(name: str) -> None:
    run_prog(SEQUENCE_MAPS[name], name)


def test_numerical_sequence_map() -> None:
    program = rasp.numerical(rasp.SequenceMap(lambda t, i: i - 2 * t + 0.5, tokens, indices)).named("smn")
    try:
        check(program, [1, 2, 3], 4)
    except CompileError as err:  # a refusal is acceptable if it names the s-op
        assert "smn" in str(err)


# --------------------------------------------------------------------------- linear sequence maps


def _num_t() -> rasp.SOp:
    return num_map({"a": 1, "b": -2, "c": 0.5}, name="num_t")


def _num_i() -> rasp.SOp:
    return rasp.numerical(rasp.Map(lambda i: i, indices)).named("num_i")


LINEAR = {
    "numerical": P(lambda: rasp.numerical(rasp.LinearSequenceMap(_num_t(), _num_i(), 2, -3)).named("lin"), ABC, 5),
    "same-operand": P(lambda: rasp.numerical(rasp.LinearSequenceMap(t := _num_t(), t, 1, 2)).named("lin2"), ABC, 5),
    "of-means": P(lambda: rasp.numerical(rasp.LinearSequenceMap(frac_a(), rasp.numerical(rasp.Aggregate(
        rasp.Select(indices, indices, Comparison.LEQ), digits(), default=0)).named("mean_digits"), 0.5, -1.5)).named(
        "lin_means"), ABCD, 5),
    "numerical-full": P(lambda: rasp.numerical(rasp.LinearSequenceMap(
        _num_t(), rasp.numerical(rasp.Full(1.5)).named("one_and_half"), 1, 1)).named("shifted"), ABC, 4),
    "categorical": P(lambda: rasp.LinearSequenceMap(tokens, indices, 1, 1).named("lin_cat"), [1, 2, 3], 5),
    "pair-balance": P(lambda: lib.make_pair_balance(tokens, "(", ")"), "()a", 6),
}


@pytest.mark.parametrize("name", list(LINEAR))
def test_linear_sequence_map(name: str) -> None:
    run_prog(LINEAR[name], name)


# --------------------------------------------------------------------------- selector width

WIDTHS = {
    "length@20": P(lib.make_length, range(20), 20, random=300),
    "hist@20": P(lib.make_hist, range(20), 20, random=300),
    "hist@20-small-vocab": P(lib.make_hist, "ab", 20, random=300),
    "lt-width-from-0@20": P(lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, Comparison.LT)).named("below"),
                            range(20), 20, random=300),
    "lt-width": P(lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, Comparison.LT)).named("below"), ABCD, 5),
    "numerical-width": P(lambda: rasp.numerical(
        rasp.SelectorWidth(rasp.Select(tokens, tokens, Comparison.LEQ))).named("rank"), ABC, 5),
    "false-width": P(lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, Comparison.FALSE)).named("zero"), ABC, 4),
    "count-less-freq": P(lambda: lib.make_count_less_freq(2), ABC, 6),
    "width-as-keys": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(h := lib.make_hist(), h, Comparison.EQ), digits(), default=0)).named("mean_same_count"), ABCD, 5),
    "width-as-query": P(lambda: rasp.Aggregate(
        rasp.Select(indices, lib.make_hist(), lambda k, q: k == q - 1), tokens, default="-").named("at_count"),
        ABC, 5),
}


@pytest.mark.parametrize("name", list(WIDTHS))
def test_selector_width(name: str) -> None:
    run_prog(WIDTHS[name], name)


def test_length_is_exact_for_every_length_up_to_20() -> None:
    model = compile_rasp_to_model(lib.make_length(), list(range(20)), 20)
    seqs = [["BOS", *[(3 * i + n) % 20 for i in range(n)]] for n in range(1, 21)]
    for n, got in enumerate(model.apply_batch(seqs), start=1):
        assert got[1:] == [n] * n, (n, got)


def test_length_11_at_max_seq_len_12() -> None:
    """Tracr answers 10 for an input of length 11 at max_seq_len 12."""
    model = compile_rasp_to_model(lib.make_length(), ["a", "b"], 12)
    for n in range(1, 13):
        assert model.apply(["BOS", *["a", "b"] * (n // 2), *["a"] * (n % 2)]).decoded[1:] == [n] * n


# --------------------------------------------------------------------------- aggregate


def _prev() -> rasp.Selector:
    return rasp.Select(indices, indices, lambda k, q: q == k + 1).named("prev")


def _default_z() -> rasp.SOp:
    return rasp.Aggregate(_prev(), tokens, default="z").named("prev_or_z")


AGGREGATES = {
    "shift-by-1": P(lambda: lib.shift_by(1, tokens), ABC, 5),
    "shift-by-3": P(lambda: lib.shift_by(3, tokens), ABC, 5),
    "categorical-default": P(_default_z, ABC, 5),
    "empty-selection-default": P(lambda: rasp.Aggregate(
        rasp.Select(tokens, tokens, Comparison.FALSE), tokens, default="q").named("nothing"), ABC, 4),
    "numerical-mean-0-3": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(indices, indices, Comparison.LEQ), digits(), default=0)).named("mean_digits"), ABCD, 5),
    "numerical-mean-all": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(tokens, tokens, Comparison.TRUE), digits(), default=0)).named("mean_all"), ABCD, 5),
    "numerical-nonzero-default": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(tokens, tokens, Comparison.LT), digits(), default=2.5)).named("mean_below"), ABCD, 5),
    "numerical-negative-default": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(indices, indices, Comparison.LT), num_map({"a": -1, "b": 2, "c": -3}), default=-7)).named(
        "mean_before"), ABC, 5),
    "mean-of-mean": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(indices, indices, Comparison.LEQ), rasp.numerical(rasp.Aggregate(
            rasp.Select(indices, indices, Comparison.LEQ), digits(), default=0)).named("m1"), default=0)).named("m2"),
        ABCD, 5),
    "aggregate-of-default-aggregate": P(lambda: rasp.Aggregate(_prev(), _default_z(), default="y").named("twice"),
                                        ABC, 5),
    "select-on-default-aggregate": P(lambda: rasp.SelectorWidth(
        rasp.Select(_default_z(), tokens, Comparison.EQ)).named("matches_prev"), ABC, 5),
    "reverse": P(lambda: lib.make_reverse(tokens), ABC, 5),
    "detect-pattern": P(lambda: lib.detect_pattern(tokens, "ab"), "abc", 5),
}


@pytest.mark.parametrize("name", list(AGGREGATES))
def test_aggregate(name: str) -> None:
    run_prog(AGGREGATES[name], name)


def test_empty_selection_decodes_to_none() -> None:
    model = compile_rasp_to_model(lib.shift_by(1, tokens), list(ABC), 5)
    out = model.apply(["BOS", "a", "b", "c"])
    assert out.decoded == ["BOS", None, "a", "b"]
    assert out.output[1] == -1  # no output dimension reaches the threshold
    assert model.apply_batch([["BOS", "c"], ["BOS", "b", "a"]]) == [["BOS", None], ["BOS", None, "b"]]


def test_numerical_aggregate_with_non_zero_default_when_nothing_is_selected() -> None:
    program = rasp.numerical(rasp.Aggregate(rasp.Select(tokens, tokens, Comparison.LT), digits(),
                                            default=2.5)).named("mean_below")
    model = compile_rasp_to_model(program, list(ABCD), 5)
    # "a" selects nothing (default 2.5); "d" sees a, b, c; "b" sees a
    np.testing.assert_allclose(model.apply(["BOS", "a", "d", "b", "c"]).output[1:], [2.5, 1.0, 0.0, 0.5], atol=TOL)


# --------------------------------------------------------------------------- full and constant s-ops

CONSTANTS = {
    "full-in-sequence-map": P(lambda: rasp.SequenceMap(lambda a, b: a + b, tokens, rasp.Full(10)).named("plus10"),
                              [1, 2, 3], 4),
    "full-query": P(lambda: rasp.SelectorWidth(rasp.Select(tokens, rasp.Full("a"), Comparison.EQ)).named("count_a"),
                    ABC, 5),
    "numerical-full": P(lambda: rasp.numerical(rasp.LinearSequenceMap(
        _num_t(), rasp.numerical(rasp.Full(-1.5)).named("minus"), 1, 1)).named("shifted"), ABC, 4),
    "constant-sop-exact-length": P(lambda: rasp.SequenceMap(
        lambda a, b: a * b, tokens, rasp.ConstantSOp([1, 2, 3, 4])).named("weighted"), [1, 2, 3], 4),
    "constant-sop-unchecked": P(lambda: rasp.SequenceMap(
        lambda a, b: a * b, tokens, rasp.ConstantSOp([1, 2, 3, 4], check_length=False)).named("weighted"),
        [1, 2, 3], 4),
    "constant-sop-aggregated": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(indices, tokens, Comparison.EQ),
        rasp.numerical(rasp.ConstantSOp([0.5, -1, 2, 4], check_length=False)).named("weights"), default=0)).named(
        "weight_at_token"), [0, 1, 2, 3], 4),
}


@pytest.mark.parametrize("name", list(CONSTANTS))
def test_full_and_constant(name: str) -> None:
    run_prog(CONSTANTS[name], name)


def test_checked_constant_sop_runs_at_its_length() -> None:
    """ConstantSOp with check_length: the evaluator accepts only inputs of its length; there the model agrees."""
    program = rasp.SequenceMap(lambda a, b: a * b, tokens, rasp.ConstantSOp([1, 2, 3, 4])).named("weighted")
    model = check(program, [1, 2, 3], 4, all_inputs([1, 2, 3], 4), min_checked=81)
    assert model.apply(["BOS", 3, 3, 3, 3]).decoded[1:] == [3, 6, 9, 12]


# --------------------------------------------------------------------------- numerical keys / queries


def _num_keys() -> rasp.SOp:
    return num_map({"a": 0.5, "b": -1, "c": 2}, name="num_keys")


NUMERICAL_SELECTS = {
    "numerical-keys-width": P(lambda: rasp.SelectorWidth(
        rasp.Select(_num_keys(), indices, lambda k, q: k < q)).named("w"), ABC, 5),
    "numerical-keys-aggregate": P(lambda: rasp.numerical(rasp.Aggregate(
        rasp.Select(_num_keys(), indices, lambda k, q: k < q), digits(), default=0)).named("a"), ABCD[:3], 5),
    "numerical-keys-and-queries": P(lambda: rasp.SelectorWidth(
        rasp.Select(k := _num_keys(), k, Comparison.LT)).named("rank"), ABC, 5),
    "numerical-queries": P(lambda: rasp.SelectorWidth(rasp.Select(
        indices, num_map({"a": 0.5, "b": 1.5, "c": 2.5}, name="num_q"), lambda k, q: k < q)).named("w"), ABC, 5),
    "mean-as-keys": P(lambda: rasp.SelectorWidth(rasp.Select(f := frac_a(), f, Comparison.GT)).named("higher"),
                      "ab", 6),
    "mean-as-keys-categorical-aggregate": P(lambda: rasp.Aggregate(rasp.SelectorAnd(
        rasp.Select(frac_a(), frac_a(), Comparison.EQ), _prev()), tokens).named("prev_same_frac"), "ab", 6),
}


@pytest.mark.parametrize("name", list(NUMERICAL_SELECTS))
def test_select_with_numerical_operands(name: str) -> None:
    run_prog(NUMERICAL_SELECTS[name], name)


# --------------------------------------------------------------------------- composite selectors


def _same_tok() -> rasp.Selector:
    return rasp.Select(tokens, tokens, Comparison.EQ).named("same_tok")


def _before() -> rasp.Selector:
    return rasp.Select(indices, indices, Comparison.LT).named("before")


def _and() -> rasp.Selector:
    return rasp.SelectorAnd(_same_tok(), _before()).named("same_before")


def _or() -> rasp.Selector:
    return rasp.SelectorOr(_same_tok(), rasp.Select(indices, indices, lambda k, q: k == 0).named("first")).named(
        "same_or_first")


COMPOSITES = {
    "and-width": P(lambda: rasp.SelectorWidth(_and()).named("seen_before"), ABC, 5),
    "and-numerical-aggregate": P(lambda: rasp.numerical(rasp.Aggregate(_and(), digits(), default=0)).named("a"),
                                 ABCD, 5),
    "and-numerical-aggregate-default": P(lambda: rasp.numerical(rasp.Aggregate(_and(), digits(), default=-1)).named(
        "a"), ABCD, 5),
    "and-categorical-aggregate": P(lambda: rasp.Aggregate(rasp.SelectorAnd(_prev(), _same_tok()), tokens,
                                                          default="-").named("prev_if_same"), ABC, 5),
    "and-three-leaves": P(lambda: rasp.SelectorWidth(rasp.SelectorAnd(_and(), rasp.Select(
        _num_keys(), indices, lambda k, q: k < q))).named("w3"), ABC, 5),
    "and-with-full": P(lambda: rasp.SelectorWidth(rasp.SelectorAnd(
        rasp.Select(tokens, rasp.Full("a"), Comparison.EQ), _before())).named("a_before"), ABC, 5),
    "or-width": P(lambda: rasp.SelectorWidth(_or()).named("w"), ABC, 5),
    "or-numerical-aggregate": P(lambda: rasp.numerical(rasp.Aggregate(_or(), digits(), default=0)).named("a"),
                                ABCD, 5),
    "not-and-width": P(lambda: rasp.SelectorWidth(rasp.SelectorNot(_and())).named("w"), ABC, 5),
    "not-and-numerical-aggregate": P(lambda: rasp.numerical(
        rasp.Aggregate(rasp.SelectorNot(_and()), digits(), default=0)).named("a"), ABCD, 5),
    "not-or-width": P(lambda: rasp.SelectorWidth(rasp.SelectorNot(_or())).named("w"), ABC, 5),
    "not-or-categorical-aggregate": P(lambda: rasp.Aggregate(rasp.SelectorNot(rasp.SelectorOr(
        rasp.Select(indices, indices, lambda k, q: k != q + 1), _same_tok())), tokens, default="-").named("nxt"),
        ABC, 5),
    "or-of-and-and-not": P(lambda: rasp.SelectorWidth(rasp.SelectorOr(
        _and(), rasp.SelectorNot(rasp.Select(indices, indices, Comparison.GEQ)))).named("w"), ABC, 5),
    "not-not": P(lambda: rasp.SelectorWidth(rasp.SelectorNot(rasp.SelectorNot(_and()))).named("w"), ABC, 5),
    "operators": P(lambda: rasp.SelectorWidth((_same_tok() & _before()) | ~rasp.Select(
        tokens, indices, lambda k, q: k == "a")).named("w"), ABC, 5),
    "composite-width@20": P(lambda: rasp.SelectorWidth(rasp.SelectorAnd(
        rasp.Select(tokens, tokens, Comparison.LEQ), _before())).named("w"), range(20), 20, random=300),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_selector(name: str) -> None:
    run_prog(COMPOSITES[name], name)


# --------------------------------------------------------------------------- causal compilation


@pytest.mark.parametrize(
    "build,vocab,max_seq_len",
    [
        pytest.param(frac_a, "ab", 6, id="frac_prevs"),
        pytest.param(lambda: lib.make_pair_balance(tokens, "(", ")"), "()", 6, id="pair_balance"),
        pytest.param(lambda: lib.shift_by(1, tokens), ABC, 5, id="shift_by"),
        pytest.param(lambda: rasp.SelectorWidth(_and()).named("seen_before"), ABC, 5, id="and-width"),
    ],
)
def test_causal_model_equals_causal_evaluate(build: Callable[[], rasp.SOp], vocab: str, max_seq_len: int) -> None:
    check(build(), vocab, max_seq_len, causal=True)


# --------------------------------------------------------------------------- refusals and edge cases


def test_always_none_output_compiles_or_is_refused_by_name() -> None:
    program = rasp.Map(lambda t: None, tokens).named("nothing")
    try:
        model = compile_rasp_to_model(program, ["a", "b"], 3)
    except CompileError as err:
        assert "nothing" in str(err)
        return
    except RaspcError as err:
        pytest.fail(f"{type(err).__name__} instead of a CompileError naming the s-op: {err}")
    assert model.apply(["BOS", "a", "b"]).decoded == ["BOS", None, None]


def test_numerical_aggregate_of_categorical_is_refused_by_name() -> None:
    program = rasp.numerical(rasp.Aggregate(rasp.Select(indices, indices, Comparison.LEQ), tokens,
                                            default=0)).named("bad_mean")
    with pytest.raises(CompileError, match="bad_mean"):
        compile_rasp_to_model(program, [1, 2], 3)
