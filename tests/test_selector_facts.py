"""Facts about a select computed from sorted values (large numeric value sets) equal the ones
read off its [query, key] matrix (raspc.analysis.selectors)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from raspc.analysis import selectors as S
from raspc.dialects import rasp as R

NUMBERS = st.one_of(st.integers(-6, 6), st.integers(-12, 12).map(lambda x: x / 2))
COMPARISONS = st.sampled_from([R.Comparison.LT, R.Comparison.LEQ, R.Comparison.GT, R.Comparison.GEQ,
                               R.Comparison.EQ, R.Comparison.NEQ])


@settings(max_examples=300, deadline=None)
@given(COMPARISONS, st.lists(NUMBERS, min_size=1, max_size=9, unique=True),
       st.lists(NUMBERS, min_size=1, max_size=9, unique=True), st.booleans())
def test_comparison_facts_equal_the_matrix(cmp: R.Comparison, keys: list, queries: list, same: bool) -> None:
    if same:
        queries = keys
    m = S.comparison_matrix(cmp, keys, queries)
    own, some, every, most = S._comparison_facts(cmp, np.sort(np.array(keys, float)), np.array(queries, float), same)
    sel = m > 0
    assert (some, every, most) == (bool(sel.any()), bool(sel.all()), int(sel.sum(axis=1).max()))
    if same:
        diag = np.diagonal(m)
        assert own == (True if diag.all() else False if not diag.any() else None)
    else:
        assert own is None
