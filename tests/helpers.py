"""Helpers shared by the end-to-end, IR and construction tests."""

from __future__ import annotations

import math
from typing import Any, Sequence

from hypothesis import settings
from hypothesis import strategies as st

from raspc import rasp
from raspc.utils.values import same_result

BATCH = 50  # inputs per hypothesis example, run in one apply_batch call
MIN_INPUTS = 200  # per program, as the issues ask
TOL = 1e-4  # numerical outputs


def n_batches() -> int:
    """Batches per case: >= MIN_INPUTS inputs in the ci profile, more under HYPOTHESIS_PROFILE=fuzz."""
    return max(math.ceil(MIN_INPUTS / BATCH) + 1, settings().max_examples // 20)


def same(actual: Any, expected: Any, numerical: bool) -> bool:
    """One output value against the evaluator's (raspc.utils.values.same_result: None only for None,
    numerical within TOL, categorical by value and type: 1, 1.0 and True differ)."""
    return same_result(expected, actual, numerical, TOL)


@st.composite
def batches(draw: Any, vocab: Sequence[Any], max_len: int, distinct: bool = False, size: int = BATCH) -> list:
    """`size` inputs, each of a uniformly drawn length in 1..max_len (tokens pairwise distinct if asked)."""
    if distinct:
        max_len = min(max_len, len(vocab))
    rows = []
    for _ in range(size):
        n = draw(st.integers(1, max_len))
        if distinct:
            rows.append(list(draw(st.permutations(list(vocab))))[:n])
        else:
            rows.append(draw(st.lists(st.sampled_from(list(vocab)), min_size=n, max_size=n)))
    return rows


def evaluate_rows(program: Any, rows: Sequence[Sequence[Any]]) -> list[tuple[list[Any], list[Any]]]:
    """(input, expected) for every row the evaluator accepts; rows where it raises are dropped."""
    out = []
    for row in rows:
        try:
            out.append((list(row), rasp.evaluate(program, row)))
        except Exception:  # noqa: BLE001 - outside the program's domain: skipped
            continue
    return out


_LIBRARY_MODELS: dict[str, Any] = {}


def library_model(name: str) -> Any:
    """The library program at its example vocabulary and length, compiled once per test process."""
    from raspc import compile_rasp_to_model, lib

    if name not in _LIBRARY_MODELS:
        vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
        _LIBRARY_MODELS[name] = compile_rasp_to_model(lib.LIBRARY[name](max_seq_len=max_seq_len), vocab, max_seq_len)
    return _LIBRARY_MODELS[name]
