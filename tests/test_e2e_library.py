"""End to end: every library program, compiled to ONNX and run by onnxruntime, equals `rasp.evaluate`.

The acceptance test of the end-to-end issue. For every case (the program as a call written with
Tracr's names, a vocabulary and a max_seq_len) the program is compiled once per session, then
hypothesis draws batches of random inputs (random lengths 1..max_seq_len, random tokens from the
vocabulary); each batch goes through ONE `apply_batch` call, so rows of mixed lengths share a
padded, masked batch. Every row must equal the reference evaluator: categorical values exactly
(None decodes to None), numerical values within 1e-4. At least 200 inputs are checked per case.

The in-repo case list below is the primary one: Tracr's usual sizes (the cases of
tests/data/tracr-lib-vectors.json), the big cases at vocab range(20) and max_seq_len 20, and every
program again at max_seq_len 16. When tests/data/tracr-lib-vectors.json is present, its cases are
also checked: any case missing from the in-repo list gets the random test too, and every case's
recorded Tracr outputs must be reproduced by the compiled model.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from hypothesis import assume, given, settings

from raspc import rasp
from helpers import MIN_INPUTS, TOL, batches, evaluate_rows, n_batches, same

VECTORS_PATH = Path(__file__).resolve().parent / "data" / "tracr-lib-vectors.json"  # a copy of shared/tracr-lib-vectors.json

ABCD = ["a", "b", "c", "d"]
R20 = list(range(20))
FRAC_PREVS_CALL = 'lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens)))'
NARY_CALL = "lib.make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices)"


@dataclass(frozen=True)
class Case:
    name: str
    call: str  # the program, written with Tracr's names
    vocab: tuple[Any, ...]
    max_seq_len: int
    distinct: bool = False  # the program's precondition: pairwise distinct tokens (make_sort_unique)

    @property
    def key(self) -> tuple[str, tuple[Any, ...], int]:
        return (self.call, self.vocab, self.max_seq_len)


def _case(name: str, call: str, vocab: Sequence[Any], max_seq_len: int) -> Case:
    return Case(name, call, tuple(vocab), max_seq_len, distinct="make_sort_unique" in call)


# Tracr's usual sizes: the same (call, vocab, max_seq_len) as shared/tracr-lib-vectors.json.
USUAL = [
    _case("length", "lib.make_length()", ABCD, 5),
    _case("reverse", "lib.make_reverse(rasp.tokens)", ABCD, 5),
    _case("hist", "lib.make_hist()", ABCD, 5),
    _case("sort_unique", "lib.make_sort_unique(rasp.tokens, rasp.tokens)", [1, 2, 3, 4, 5], 5),
    _case("sort", "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)", [1, 2, 3, 4], 5),
    _case("sort_freq", "lib.make_sort_freq(max_seq_len=5)", ABCD, 5),
    _case("frac_prevs", FRAC_PREVS_CALL, ["a", "b", "c", "d", "e"], 8),
    _case("pair_balance", 'lib.make_pair_balance(rasp.tokens, "(", ")")', ["(", ")", "a"], 8),
    _case("shuffle_dyck", 'lib.make_shuffle_dyck(pairs=["()"])', ["(", ")"], 8),
    _case("shuffle_dyck2", "lib.make_shuffle_dyck2()", ["(", ")", "{", "}"], 8),
    _case("count_less_freq", "lib.make_count_less_freq(2)", ABCD, 6),
    _case("count", 'lib.make_count(rasp.tokens, "a")', ["a", "b", "c"], 8),
    _case("nary_sequencemap", NARY_CALL, [1, 2, 3], 5),
    _case("shift_by", "lib.shift_by(2, rasp.tokens)", ABCD, 5),
    _case("shift_by_1", "lib.shift_by(1, rasp.tokens)", ABCD, 5),
    _case("detect_pattern", 'lib.detect_pattern(rasp.tokens, "abc")', ["a", "b", "c"], 6),
    _case("shuffle_dyck@bal", 'lib.make_shuffle_dyck(pairs=["()"])', ["(", ")"], 10),
    _case("shuffle_dyck2@bal", "lib.make_shuffle_dyck2()", ["(", ")", "{", "}"], 10),
]

# The big cases of the issue: vocab range(20), max_seq_len 20.
BIG = [
    _case("sort_unique@20", "lib.make_sort_unique(rasp.tokens, rasp.tokens)", R20, 20),
    _case("hist@20", "lib.make_hist()", R20, 20),
    _case("length@20", "lib.make_length()", R20, 20),
]

# Every program at max_seq_len 16 (make_sort_unique needs 16 distinct tokens: vocab range(16)).
AT16 = [
    _case("length@16", "lib.make_length()", ABCD, 16),
    _case("reverse@16", "lib.make_reverse(rasp.tokens)", ABCD, 16),
    _case("hist@16", "lib.make_hist()", ABCD, 16),
    _case("sort_unique@16", "lib.make_sort_unique(rasp.tokens, rasp.tokens)", list(range(16)), 16),
    _case("sort@16", "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=16, min_key=1)", [1, 2, 3, 4], 16),
    _case("sort_freq@16", "lib.make_sort_freq(max_seq_len=16)", ABCD, 16),
    _case("frac_prevs@16", FRAC_PREVS_CALL, ["a", "b", "c", "d", "e"], 16),
    _case("pair_balance@16", 'lib.make_pair_balance(rasp.tokens, "(", ")")', ["(", ")", "a"], 16),
    _case("shuffle_dyck@16", 'lib.make_shuffle_dyck(pairs=["()"])', ["(", ")"], 16),
    _case("shuffle_dyck2@16", "lib.make_shuffle_dyck2()", ["(", ")", "{", "}"], 16),
    _case("count_less_freq@16", "lib.make_count_less_freq(2)", ABCD, 16),
    _case("count@16", 'lib.make_count(rasp.tokens, "a")', ["a", "b", "c"], 16),
    _case("nary_sequencemap@16", NARY_CALL, [1, 2, 3], 16),
    _case("shift_by@16", "lib.shift_by(2, rasp.tokens)", ABCD, 16),
    _case("detect_pattern@16", 'lib.detect_pattern(rasp.tokens, "abc")', ["a", "b", "c"], 16),
]

IN_REPO = USUAL + BIG + AT16
NUMERICAL = {"frac_prevs", "pair_balance", "frac_prevs@16", "pair_balance@16"}


def _shared_cases() -> list[Case]:
    if not VECTORS_PATH.is_file():
        return []
    return [
        _case(c["name"], c["call"], c["vocab"], c["max_seq_len"])
        for c in json.loads(VECTORS_PATH.read_text())["cases"]
    ]


SHARED = _shared_cases()
_IN_REPO_KEYS = {c.key for c in IN_REPO}
SHARED_EXTRA = [c for c in SHARED if c.key not in _IN_REPO_KEYS]
ALL_CASES = IN_REPO + [Case("shared:" + c.name, c.call, c.vocab, c.max_seq_len, c.distinct) for c in SHARED_EXTRA]


def _params(cases: Sequence[Case]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in cases]


# --------------------------------------------------------------------------- helpers


def same_row(decoded: Sequence[Any], expected: Sequence[Any], numerical: bool) -> bool:
    return len(decoded) == len(expected) + 1 and all(
        same(a, e, numerical) for a, e in zip(decoded[1:], expected)
    )


def check_batch(model: Any, rows: Sequence[Sequence[Any]], numerical: bool) -> int:
    """Runs `rows` through one apply_batch call and compares each row; returns how many were checked."""
    return check_cases(model, evaluate_rows(model.program, rows), numerical)


def check_cases(model: Any, cases: Sequence[tuple[list[Any], list[Any]]], numerical: bool) -> int:
    """One apply_batch call over the (input, expected) pairs; every row must match."""
    decoded = model.apply_batch([["BOS", *x] for x, _ in cases])
    assert len(decoded) == len(cases)
    for (x, expected), got in zip(cases, decoded):
        assert got[0] == "BOS"
        assert same_row(got, expected, numerical), f"input {x}: model {got[1:]}, rasp.evaluate {expected}"
    return len(cases)


def model_of(compiled: Any, case: Case) -> Any:
    return compiled(case.call, case.vocab, case.max_seq_len)


def is_numerical(model: Any) -> bool:
    return rasp.is_numerical(model.program)


# --------------------------------------------------------------------------- the acceptance test


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_onnx_equals_evaluator_on_random_batches(compiled: Any, case: Case) -> None:
    model = model_of(compiled, case)
    numerical = is_numerical(model)
    assert model.output_encoding == ("numerical" if numerical else "categorical")
    assert set(model.vocab) == set(case.vocab)
    assert model.max_seq_len == case.max_seq_len
    checked: list[int] = []
    lengths: set[int] = set()

    @settings(max_examples=n_batches())
    @given(batches(case.vocab, case.max_seq_len, case.distinct))
    def run(rows: list) -> None:
        cases = evaluate_rows(model.program, rows)
        assume(cases)  # every row outside the program's domain: nothing to compare
        checked.append(check_cases(model, cases, numerical))
        lengths.update(len(r) for r in rows)

    run()
    assert sum(checked) >= MIN_INPUTS, f"only {sum(checked)} inputs checked"
    # mixed lengths, including the longest one, went through the padded batches
    top = min(case.max_seq_len, len(case.vocab)) if case.distinct else case.max_seq_len
    assert top in lengths and len(lengths) > 1


@pytest.mark.parametrize("case", _params(IN_REPO))
def test_edge_inputs(compiled: Any, case: Case) -> None:
    """Deterministic edge inputs in one batch: every length 1..max_seq_len with constant,
    cycling and reversed-cycling tokens (distinct-token programs: prefixes of sorted/reversed vocab)."""
    model = model_of(compiled, case)
    vocab = list(case.vocab)
    rows: list[list[Any]] = []
    top = min(case.max_seq_len, len(vocab)) if case.distinct else case.max_seq_len
    for n in range(1, top + 1):
        if case.distinct:
            rows += [vocab[:n], vocab[::-1][:n], vocab[n - 1 :: -1] if n <= len(vocab) else vocab[:n]]
        else:
            rows += [[vocab[0]] * n, [vocab[-1]] * n, [vocab[i % len(vocab)] for i in range(n)],
                     [vocab[-1 - i % len(vocab)] for i in range(n)]]
    assert check_batch(model, rows, is_numerical(model)) == len(rows)


@pytest.mark.parametrize("case", _params(USUAL + BIG))
def test_apply_agrees_with_apply_batch(compiled: Any, case: Case) -> None:
    """apply() on one sequence gives the same decoded values (and output row) as apply_batch."""
    model = model_of(compiled, case)
    rng = random.Random(f"apply:{case.name}")
    vocab = list(case.vocab)
    seqs = []
    for n in [1, case.max_seq_len] + [rng.randint(1, case.max_seq_len) for _ in range(6)]:
        if case.distinct:
            row = rng.sample(vocab, min(n, len(vocab)))
        else:
            row = [rng.choice(vocab) for _ in range(n)]
        seqs.append(["BOS", *row])
    batch = model.apply_batch(seqs)
    numerical = is_numerical(model)
    for seq, from_batch in zip(seqs, batch):
        single = model.apply(seq)
        assert single.decoded[0] == "BOS"
        assert len(single.decoded) == len(seq)
        assert len(from_batch) == len(seq) and from_batch[0] == "BOS"
        assert all(same(a, b, numerical) for a, b in zip(single.decoded[1:], from_batch[1:])), (
            seq, single.decoded, from_batch)
        assert single.output.shape == (len(seq),)
        assert single.residual.shape == (len(seq), len(model.residual_labels))
        expected = rasp.evaluate(model.program, seq[1:])
        assert same_row(single.decoded, expected, numerical)


def test_apply_batch_of_nothing(compiled: Any) -> None:
    case = USUAL[0]
    assert model_of(compiled, case).apply_batch([]) == []


def test_padding_does_not_change_a_row(compiled: Any) -> None:
    """The same short input alone and next to the longest input decodes identically."""
    for case in (USUAL[1], USUAL[8], BIG[1]):
        model = model_of(compiled, case)
        short = ["BOS", *list(case.vocab)[:2]]
        long = ["BOS", *[case.vocab[i % len(case.vocab)] for i in range(case.max_seq_len)]]
        alone = model.apply_batch([short])[0]
        padded = model.apply_batch([short, long])[0]
        assert alone == padded == model.apply(short).decoded


# --------------------------------------------------------------------------- numerical programs


@pytest.mark.parametrize(
    "call,vocab,max_len",
    [
        pytest.param(FRAC_PREVS_CALL, ("a", "b", "c", "d", "e"), 5, id="frac_prevs"),
        pytest.param('lib.make_pair_balance(rasp.tokens, "(", ")")', ("(", ")", "a"), 6, id="pair_balance"),
    ],
)
def test_numerical_programs_exhaustive_within_tolerance(compiled: Any, call: str, vocab: tuple, max_len: int) -> None:
    """Every input up to `max_len` (on the model compiled at max_seq_len 8): within 1e-4 of the evaluator."""
    import itertools

    model = compiled(call, vocab, 8)
    rows = [list(x) for n in range(1, max_len + 1) for x in itertools.product(vocab, repeat=n)]
    cases = evaluate_rows(model.program, rows)
    decoded = model.apply_batch([["BOS", *x] for x, _ in cases])
    worst = 0.0
    for (x, expected), got in zip(cases, decoded):
        assert len(got) == len(x) + 1
        for a, e in zip(got[1:], expected):
            assert isinstance(a, float)
            worst = max(worst, abs(a - float(e)))
    assert worst <= TOL, f"largest error {worst}"


def test_numerical_output_row_is_float32_array(compiled: Any) -> None:
    model = compiled(FRAC_PREVS_CALL, ("a", "b", "c", "d", "e"), 8)
    out = model.apply(["BOS", "a", "b", "a", "a"])
    assert out.output.dtype == np.float32
    np.testing.assert_allclose(out.output[1:], [1.0, 0.5, 2 / 3, 0.75], atol=TOL)


# --------------------------------------------------------------------------- Tracr's recorded outputs


def _shared_params() -> list[Any]:
    if not SHARED:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{VECTORS_PATH} is absent"), id="no-vectors")]
    return [pytest.param(c, id=c.name) for c in SHARED]


def test_shared_cases_are_in_the_repo_list() -> None:
    """The in-repo list is primary: it must cover every case of shared/ (so nothing depends on it)."""
    if not SHARED:
        pytest.skip(f"{VECTORS_PATH} is absent")
    assert not SHARED_EXTRA, [c.name for c in SHARED_EXTRA]


@pytest.mark.parametrize("case", _shared_params())
def test_reproduces_tracr_recorded_outputs(compiled: Any, case: Case) -> None:
    """The compiled model reproduces every output Tracr's evaluator recorded for the case."""
    record = next(c for c in json.loads(VECTORS_PATH.read_text())["cases"] if c["name"] == case.name)
    model = model_of(compiled, case)
    numerical = record["encoding"] == "numerical"
    examples = record["examples"]
    decoded = model.apply_batch([["BOS", *ex["input"]] for ex in examples])
    for ex, got in zip(examples, decoded):
        assert same_row(got, ex["output"], numerical), f"input {ex['input']}: model {got[1:]}, Tracr {ex['output']}"
