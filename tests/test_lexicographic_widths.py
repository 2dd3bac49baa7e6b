"""lexicographic-widths: make_sort's unique keys no longer take vocab x max_seq_len directions, the
rewrite is exact on every key order it accepts, and the size budget refuses with a clear message."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raspc import compile_rasp_to_model, lib, rasp
from raspc.compiler import DEFAULT_PIPELINE
from raspc.errors import UnsupportedError
from raspc.passes.lexicographic_widths import _lexicographic

ALWAYS = DEFAULT_PIPELINE.replace("lexicographic-widths", "lexicographic-widths{min-ratio=0}")


def _check(model, program, vocab, max_seq_len: int, n: int = 60, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = [[rng.choice(vocab) for _ in range(rng.randint(1, max_seq_len))] for _ in range(n)]
    rows.append([vocab[-1]] * max_seq_len)  # full length, all equal keys: every tie goes to the index
    got = model.apply_batch([["BOS", *r] for r in rows])
    for row, answer in zip(rows, got):
        assert answer[1:] == rasp.evaluate(program, row), row


@pytest.mark.parametrize("make", ["sort", "sort_freq"])
def test_make_sort_at_64_is_small_and_exact(make: str) -> None:
    n = 64
    program = (lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1) if make == "sort"
               else lib.make_sort_freq(max_seq_len=n))
    model = compile_rasp_to_model(program, list(range(1, n + 1)), n)
    # before: one direction per (token, index) key, 4,096 of them, a 4,355-wide residual
    assert len(model.residual_labels) < 600
    assert not any(label.startswith("sequence_map") for label in model.residual_labels)
    _check(model, program, list(range(1, n + 1)), n)


def test_make_sort_compiles_at_128() -> None:
    n = 128
    program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1)
    model = compile_rasp_to_model(program, list(range(1, n + 1)), n)  # 16,384 keys: refused before
    _check(model, program, list(range(1, n + 1)), n, n=8)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_key_order_compiles_exactly(data: st.DataObject) -> None:
    """Random key tables over (token, index): lexicographic ones (either operand major, either
    direction) are rewritten, others are not; every comparison answers like the evaluator."""
    vocab = [0, 1, 2]
    msl = 4
    major_first = data.draw(st.booleans())
    sign_a = data.draw(st.sampled_from([1, -1]))
    sign_b = data.draw(st.sampled_from([1, -1]))
    scramble = data.draw(st.booleans())  # a random table, usually not lexicographic
    noise = {(x, i): data.draw(st.integers(0, 30)) for x in vocab for i in range(msl)}

    def key(x: int, i: int) -> float:
        if scramble:
            return noise[(x, i)]
        return sign_a * x * 10 + sign_b * i if major_first else sign_b * i * 10 + sign_a * x + 0.5

    cmp = data.draw(st.sampled_from([rasp.Comparison.LT, rasp.Comparison.LEQ, rasp.Comparison.GT,
                                     rasp.Comparison.GEQ]))
    keys = rasp.SequenceMap(key, rasp.tokens, rasp.indices)
    program = rasp.SelectorWidth(rasp.Select(keys, keys, cmp))
    # min-ratio=0: rewrite these small keys too (by default only keys 4x more than their parts are)
    model = compile_rasp_to_model(program, vocab, msl, pipeline=ALWAYS)
    _check(model, program, vocab, msl, n=20, seed=data.draw(st.integers(0, 1000)))


def test_small_keys_keep_the_one_hot_by_default() -> None:
    """At Tracr's sizes (4 tokens x 5 indices) the rewrite would only add layers: not done."""
    program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)
    default = compile_rasp_to_model(program, [1, 2, 3, 4], 5)
    forced = compile_rasp_to_model(program, [1, 2, 3, 4], 5, pipeline=ALWAYS)
    assert any(label.startswith("sequence_map") for label in default.residual_labels)
    assert not any(label.startswith("sequence_map") for label in forced.residual_labels)
    _check(default, program, [1, 2, 3, 4], 5)
    _check(forced, program, [1, 2, 3, 4], 5)


def test_order_detection() -> None:
    lex = np.array([[1.0, 1.5], [2.0, 2.5]])
    assert _lexicographic(lex) is not None
    assert _lexicographic(lex.T) is None  # column-major order is not row-major
    tie = np.array([[1.0, 2.0], [2.0, 3.0]])
    assert _lexicographic(tie) is None and _lexicographic(tie.T) is None
    rows, cols = _lexicographic(np.array([[2.0, 2.5], [1.0, 1.5]]))  # rows given in reverse order
    assert rows.tolist() == [1, 0] and cols.tolist() == [0, 1]


def test_a_categorical_s_op_past_the_direction_budget_is_refused_by_name() -> None:
    # 100 tokens x 60 indices: 6,000 categorical values, read by an aggregate (no rewrite applies)
    pair = rasp.SequenceMap(lambda x, i: x * 100 + i, rasp.tokens, rasp.indices).named("pair")
    program = rasp.Aggregate(rasp.Select(pair, pair, rasp.Comparison.EQ), rasp.tokens).named("out")
    with pytest.raises(UnsupportedError, match=r"s-op 'pair'.*6,000 values.*6,000 residual directions "
                                               r"\(budget 5,000 per s-op\)"):
        compile_rasp_to_model(program, list(range(100)), 60)
