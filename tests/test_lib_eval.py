"""Reference-evaluator tests for raspc.lib and the raspc.rasp language.

* Tracr's recorded outputs (tests/data/tracr-lib-vectors.json) must be reproduced
  exactly by the same programs built with raspc's names.
* Every documented example of Tracr's library, as explicit tests.
* The language itself: labels, annotations, operator overloads, Map fusion, None
  propagation, selector simplification, aggregation, causal evaluation, sources.
* When Tracr is installed: raspc's library builds the same s-op graphs as Tracr's
  (same primitives, labels, encodings and sharing) and evaluates identically on
  random inputs.
"""

from __future__ import annotations

import inspect
import json
import math
import random
from pathlib import Path
from typing import Any, Callable

import pytest

from raspc import lib, rasp

VECTORS_PATH = Path(__file__).resolve().parent / "data" / "tracr-lib-vectors.json"  # a copy of shared/tracr-lib-vectors.json
THIS_FILE = Path(__file__).name
TOL = 1e-9

LIB_FUNCTIONS = [
    "make_length",
    "make_reverse",
    "make_pair_balance",
    "make_shuffle_dyck",
    "make_shuffle_dyck2",
    "make_hist",
    "make_sort_unique",
    "make_sort",
    "make_sort_freq",
    "make_frac_prevs",
    "shift_by",
    "detect_pattern",
    "make_count_less_freq",
    "make_count",
    "make_nary_sequencemap",
]


def _load_cases() -> list[dict[str, Any]]:
    if not VECTORS_PATH.is_file():
        return []
    return json.loads(VECTORS_PATH.read_text())["cases"]


CASES = _load_cases()
_NO_VECTORS = pytest.mark.skip(reason=f"{VECTORS_PATH} is absent")


def _case_params() -> list[Any]:
    if not CASES:
        return [pytest.param(None, marks=_NO_VECTORS, id="no-vectors")]
    return [pytest.param(case, id=case["name"]) for case in CASES]


def same(actual: Any, expected: Any) -> bool:
    """Structural equality; floats within TOL; bools never equal to numbers."""
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(actual, float) or isinstance(expected, float):
            return math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL)
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def build(call: str, lib_module: Any = lib, rasp_module: Any = rasp) -> Any:
    """Evaluates a program written with Tracr's names (`lib.`, `rasp.`) against the given modules."""
    return eval(call, {"lib": lib_module, "rasp": rasp_module})  # noqa: S307 - trusted test data


# --------------------------------------------------------------------------- Tracr's recorded outputs


@pytest.mark.parametrize("case", _case_params())
def test_tracr_vectors(case: dict[str, Any]) -> None:
    program = build(case["call"])
    assert isinstance(program, rasp.SOp)
    for example in case["examples"]:
        actual = rasp.evaluate(program, example["input"])
        assert same(actual, example["output"]), (case["call"], example["input"], actual, example["output"])


@pytest.mark.parametrize("case", _case_params())
def test_tracr_vectors_through_call_syntax(case: dict[str, Any]) -> None:
    program = build(case["call"])
    example = case["examples"][0]
    assert same(program(example["input"]), example["output"])


# --------------------------------------------------------------------------- documented examples


def approx_list(values: list[Any]) -> Any:
    return pytest.approx(values, rel=TOL, abs=TOL)


def test_make_length_example() -> None:
    assert lib.make_length()("abcdefg") == [7] * 7
    assert lib.length("abcd") == [4, 4, 4, 4]
    assert lib.length.name == "length"


def test_make_reverse_example() -> None:
    assert lib.make_reverse(rasp.tokens)("Hello") == ["o", "l", "l", "e", "H"]
    assert lib.make_reverse(rasp.tokens)("abc") == ["c", "b", "a"]


def test_make_pair_balance_example() -> None:
    balance = lib.make_pair_balance(rasp.tokens, "(", ")")
    assert balance("a()b(c))") == approx_list([0, 1 / 2, 0, 0, 1 / 5, 1 / 6, 0, -1 / 8])
    assert balance("(()") == approx_list([1, 1, 1 / 3])
    assert rasp.is_numerical(balance)


def test_make_shuffle_dyck_examples() -> None:
    dyck2 = lib.make_shuffle_dyck(pairs=["()", "{}"])
    assert dyck2("({)}") == [True, True, True, True]
    assert dyck2("(){)}") == [False] * 5
    dyck1 = lib.make_shuffle_dyck(["()"])
    assert dyck1("(())") == [True] * 4
    assert dyck1(")(") == [False, False]
    with pytest.raises(AssertionError):
        lib.make_shuffle_dyck([])


def test_make_shuffle_dyck2_examples() -> None:
    dyck2 = lib.make_shuffle_dyck2()
    assert dyck2.name == "shuffle_dyck2"
    assert dyck2("({)}") == [True, True, True, True]
    assert dyck2("(){)}") == [False] * 5


def test_make_hist_example() -> None:
    assert lib.make_hist()("abac") == [2, 1, 2, 1]


def test_make_sort_unique_example() -> None:
    sort = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    assert sort([2, 4, 3, 1]) == [1, 2, 3, 4]
    assert sort([3, 1, 2]) == [1, 2, 3]


def test_make_sort_examples() -> None:
    sort = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)
    assert sort([2, 4, 3, 1]) == [1, 2, 3, 4]
    assert sort([2, 4, 1, 2]) == [1, 2, 2, 4]


def test_make_sort_freq_example() -> None:
    assert lib.make_sort_freq(max_seq_len=5)([2, 4, 2, 1]) == [2, 2, 4, 1]


def test_make_frac_prevs_example() -> None:
    frac_l = lib.make_frac_prevs(rasp.tokens == "l")
    assert frac_l("hello") == approx_list([0, 0, 1 / 3, 1 / 2, 2 / 5])
    assert rasp.is_numerical(frac_l)


def test_shift_by_examples() -> None:
    assert lib.shift_by(1, rasp.tokens)("abc") == [None, "a", "b"]
    assert lib.shift_by(2, rasp.tokens)("abcd") == [None, None, "a", "b"]
    assert lib.shift_by(3, rasp.indices)("ab") == [None, None]
    assert lib.shift_by(1, rasp.tokens).name == "shift_by(1)"
    with pytest.raises(TypeError):
        lib.shift_by(offset=1, sop=rasp.tokens)  # offset is positional-only, as in Tracr


def test_detect_pattern_example() -> None:
    detect = lib.detect_pattern(rasp.tokens, "abc")
    assert detect("abcabc") == [None, None, True, False, False, True]
    assert detect.name == "detect_pattern(abc)"
    assert lib.detect_pattern(rasp.tokens, "a")("bab") == [False, True, False]
    with pytest.raises(ValueError):
        lib.detect_pattern(rasp.tokens, "")


def test_make_count_less_freq_examples() -> None:
    count_less_freq = lib.make_count_less_freq(2)
    assert count_less_freq(["a", "a", "a", "b", "b", "c"]) == [3] * 6
    assert count_less_freq(["a", "a", "c", "b", "b", "c"]) == [6] * 6


def test_make_count_examples() -> None:
    count = lib.make_count(rasp.tokens, "a")
    assert count(["a", "a", "a", "b", "b", "c"]) == [3] * 6
    assert count(["c", "a", "b", "c"]) == [1] * 4
    assert count(["c", "a", "b", "a"]) == [2] * 4
    assert count.name == "count_a"


def test_make_nary_sequencemap_examples() -> None:
    program = lib.make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices)
    assert program([3, 2, 2]) == [6, 3, 2]
    pairs = lib.make_nary_sequencemap(lambda x, y: (x, y), rasp.tokens, rasp.indices)
    assert pairs("ab") == [("a", 0), ("b", 1)]


# --------------------------------------------------------------------------- library shape


def graph(root: rasp.RASPExpr) -> list[rasp.RASPExpr]:
    """Every distinct expression reachable from `root` (by identity), children first."""
    seen: dict[int, rasp.RASPExpr] = {}
    order: list[rasp.RASPExpr] = []

    def visit(expr: rasp.RASPExpr) -> None:
        if id(expr) in seen:
            return
        seen[id(expr)] = expr
        for child in expr.children:
            visit(child)
        order.append(expr)

    visit(root)
    return order


@pytest.mark.parametrize(
    "program, names",
    [
        (lambda: lib.make_length(), {"length", "all_true_selector", "tokens"}),
        (
            lambda: lib.make_reverse(rasp.tokens),
            {"reverse", "reverse_selector", "opp_idx-1", "opp_idx", "length", "all_true_selector", "indices"},
        ),
        (lambda: lib.make_hist(), {"hist", "same_tok", "tokens"}),
        (lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens), {"sort", "select", "target_pos", "smaller"}),
        (
            lambda: lib.make_sort_freq(5),
            {"sort_freq", "target_pos", "smaller", "sequence_map", "map", "hist"},
        ),
        (lambda: lib.make_frac_prevs(rasp.tokens == "a"), {"frac_prevs", "select", "map"}),
        (
            lambda: lib.make_pair_balance(rasp.tokens, "(", ")"),
            {"pair_balance", "opens", "closes", "bools_open", "bools_close"},
        ),
        (
            lambda: lib.make_shuffle_dyck(["()"]),
            {
                "shuffle_dyck",
                "last_zero",
                "not_has_neg",
                "has_neg",
                "any_negative",
                "select_all",
                "select_last",
            },
        ),
        (lambda: lib.make_shuffle_dyck2(), {"shuffle_dyck2", "balance_()", "balance_{}"}),
        (lambda: lib.make_count_less_freq(2), {"count_less_freq", "select_less", "hist", "same_tok"}),
        (lambda: lib.make_count(rasp.tokens, "b"), {"count_b", "select"}),
        (lambda: lib.shift_by(2, rasp.tokens), {"shift_by(2)", "select"}),
        (lambda: lib.detect_pattern(rasp.tokens, "ab"), {"detect_pattern(ab)", "shift_by(1)"}),
    ],
)
def test_library_labels(program: Callable[[], rasp.SOp], names: set[str]) -> None:
    present = {expr.name for expr in graph(program())}
    assert names <= present, names - present


def test_library_sharing() -> None:
    # The module-level `length` is one node shared by every program that uses it.
    reverse = lib.make_reverse(rasp.tokens)
    assert sum(expr is lib.length for expr in graph(reverse)) == 1
    dyck = lib.make_shuffle_dyck(["()"])
    assert sum(expr.name == "length" for expr in graph(dyck)) == 1
    # Each balance feeds both the negativity check and the final zero check.
    assert sum(expr.name == "balance_()" for expr in graph(dyck)) == 1


RASPC_ONLY_FUNCTIONS = ["make_induction"]  # library programs beyond Tracr's (no Tracr vectors)


def test_library_tables_cover_every_function() -> None:
    every = sorted(LIB_FUNCTIONS + RASPC_ONLY_FUNCTIONS)
    assert sorted(lib.LIBRARY) == every
    assert sorted(lib.LIBRARY_DEFAULTS) == every
    assert sorted(lib.LIBRARY_EXAMPLE_VOCAB) == every
    for name in every:
        assert callable(getattr(lib, name))
        assert isinstance(lib.LIBRARY_DEFAULTS[name], str) and "\n" not in lib.LIBRARY_DEFAULTS[name]


@pytest.mark.parametrize("name", LIB_FUNCTIONS)
def test_library_default_instances(name: str) -> None:
    vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
    first = lib.LIBRARY[name]()
    second = lib.LIBRARY[name](max_seq_len=max_seq_len)
    assert isinstance(first, rasp.SOp) and isinstance(second, rasp.SOp)
    assert first is not second  # a fresh program each time
    xs = (vocab * max_seq_len)[:max_seq_len]
    assert same(rasp.evaluate(first, xs), rasp.evaluate(second, xs))


def test_library_sort_builder_uses_max_seq_len() -> None:
    sort = lib.LIBRARY["make_sort"](max_seq_len=3)
    assert sort([2, 1, 2]) == [1, 2, 2]
    assert lib.LIBRARY["make_sort_freq"](max_seq_len=7)("abcbb") == ["b", "b", "b", "a", "c"]


def test_library_example_vocab_matches_vectors() -> None:
    if not CASES:
        pytest.skip(f"{VECTORS_PATH} is absent")
    for case in CASES:
        if "@" in case["name"]:
            continue
        name = case["name"] if case["name"] in lib.LIBRARY else f"make_{case['name']}"
        assert lib.LIBRARY_EXAMPLE_VOCAB[name] == (case["vocab"], case["max_seq_len"]), name


# --------------------------------------------------------------------------- the language


def test_default_labels_are_unique() -> None:
    exprs = [
        rasp.Map(lambda x: x, rasp.tokens),
        rasp.Map(lambda x: x, rasp.tokens),
        rasp.SequenceMap(lambda x, y: x, rasp.tokens, rasp.indices),
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ),
        rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), rasp.tokens),
    ]
    labels = [expr.label for expr in exprs]
    assert len(set(labels)) == len(labels)
    for expr in exprs:
        assert expr.label == f"{expr.name}_{expr.unique_id}"
    assert [expr.name for expr in exprs] == ["map", "map", "sequence_map", "select", "aggregate"]
    assert rasp.tokens.label == "tokens" and rasp.indices.label == "indices" and rasp.length.label == "length"
    assert rasp.LinearSequenceMap(rasp.tokens, rasp.indices, 1, 2).name == "linear_sequence_map"
    assert rasp.Full(1).name == "full" and rasp.ConstantSOp([1]).name == "constant_sop"


def test_named_keeps_the_function_and_copies() -> None:
    f = lambda x: x * 2  # noqa: E731
    m = rasp.Map(f, rasp.tokens)
    first_label = m.label
    n = m.named("double")
    assert n is not m
    assert n.f is m.f is f and n.inner is m.inner
    assert n.name == "double" and m.name == "map"
    assert n.label == f"double_{n.unique_id}" and m.label == first_label
    assert n.unique_id != m.unique_id
    assert n([1, 2]) == m([1, 2]) == [2, 4]
    # Other annotations survive a rename, and a rename survives re-annotation.
    assert rasp.is_numerical(rasp.numerical(m).named("x"))
    assert rasp.numerical(m.named("x")).name == "x"
    assert m.annotated(note=1).annotations["note"] == 1


OPERATOR_CASES = [
    # id, build(rasp module), input, expected output, class built
    ("add", lambda r: r.tokens + 1, [1, 2, 3], [2, 3, 4], "Map"),
    ("radd", lambda r: 10 + r.tokens, [1, 2, 3], [11, 12, 13], "Map"),
    ("add_str", lambda r: r.tokens + "!", ["a", "b"], ["a!", "b!"], "Map"),
    ("radd_str", lambda r: "!" + r.tokens, ["a", "b"], ["!a", "!b"], "Map"),
    ("sub", lambda r: r.tokens - 1, [1, 2, 3], [0, 1, 2], "Map"),
    ("rsub", lambda r: 10 - r.tokens, [1, 2, 3], [9, 8, 7], "Map"),
    ("mul", lambda r: r.tokens * 2, [1, 2, 3], [2, 4, 6], "Map"),
    ("rmul", lambda r: 3 * r.tokens, [1, 2, 3], [3, 6, 9], "Map"),
    ("truediv", lambda r: r.tokens / 2, [1, 2, 3], [0.5, 1.0, 1.5], "Map"),
    ("rtruediv", lambda r: 6 / r.tokens, [1, 2, 3], [6.0, 3.0, 2.0], "Map"),
    ("lt", lambda r: r.tokens < 2, [1, 2, 3], [True, False, False], "Map"),
    ("le", lambda r: r.tokens <= 2, [1, 2, 3], [True, True, False], "Map"),
    ("gt", lambda r: r.tokens > 2, [1, 2, 3], [False, False, True], "Map"),
    ("ge", lambda r: r.tokens >= 2, [1, 2, 3], [False, True, True], "Map"),
    ("eq", lambda r: r.tokens == 2, [1, 2, 3], [False, True, False], "Map"),
    ("ne", lambda r: r.tokens != 2, [1, 2, 3], [True, False, True], "Map"),
    ("invert", lambda r: ~r.tokens, [0, 1, True], [True, False, False], "Map"),
    ("and", lambda r: r.tokens & 5, [0, 1, 2], [0, 5, 5], "Map"),
    ("rand", lambda r: 5 & r.tokens, [0, 1, 2], [0, 1, 2], "Map"),
    ("or", lambda r: r.tokens | 5, [0, 1, 2], [5, 1, 2], "Map"),
    # Tracr's __ror__ computes `x or other`, not `other or x`: kept for exact compatibility.
    ("ror", lambda r: 5 | r.tokens, [0, 1, 2], [5, 1, 2], "Map"),
    ("add_sop", lambda r: r.tokens + r.indices, [1, 2, 3], [1, 3, 5], "SequenceMap"),
    ("sub_sop", lambda r: r.tokens - r.indices, [1, 2, 3], [1, 1, 1], "SequenceMap"),
    ("mul_sop", lambda r: r.tokens * r.indices, [1, 2, 3], [0, 2, 6], "SequenceMap"),
    ("div_sop", lambda r: r.indices / r.tokens, [1, 2, 4], [0.0, 0.5, 0.5], "SequenceMap"),
    ("and_sop", lambda r: r.tokens & r.indices, [1, 0, 3], [0, 0, 2], "SequenceMap"),
    ("or_sop", lambda r: r.tokens | r.indices, [1, 0, 3], [1, 1, 3], "SequenceMap"),
]


@pytest.mark.parametrize(
    "make, xs, expected, cls", [pytest.param(*case[1:], id=case[0]) for case in OPERATOR_CASES]
)
def test_operator_overloads(
    make: Callable[[Any], rasp.SOp], xs: list[Any], expected: list[Any], cls: str
) -> None:
    sop = make(rasp)
    assert type(sop).__name__ == cls
    assert same(rasp.evaluate(sop, xs), expected)


@pytest.mark.parametrize(
    "make, xs", [pytest.param(case[1], case[2], id=case[0]) for case in OPERATOR_CASES]
)
def test_operator_overloads_match_tracr(make: Callable[[Any], Any], xs: list[Any]) -> None:
    pytest.importorskip("tracr")
    from tracr.rasp import rasp as tracr_rasp

    ours, theirs = make(rasp), make(tracr_rasp)
    assert type(ours).__name__ == type(theirs).__name__
    assert same(rasp.evaluate(ours, xs), tracr_rasp.evaluate(theirs, xs))


def test_map_of_map_is_fused() -> None:
    inc = rasp.Map(lambda x: x + 1, rasp.tokens)
    fused = rasp.Map(lambda x: x * 10, inc)
    assert fused.inner is rasp.tokens and fused.children == [rasp.tokens]
    assert fused([1, 2]) == [20, 30]
    kept = rasp.Map(lambda x: x * 10, inc, simplify=False)
    assert kept.inner is inc
    assert kept([1, 2]) == [20, 30]
    # A named inner Map is fused too (its name disappears, as in Tracr).
    assert rasp.Map(lambda x: -x, inc.named("inc")).inner is rasp.tokens
    # Operators chain into a single Map as well.
    assert (~(rasp.tokens == "a")).inner is rasp.tokens
    # Fusion composes the functions, so an inner None reaches the outer function.
    to_none = rasp.Map(lambda x: None, rasp.tokens)
    fill = lambda x: 0 if x is None else x  # noqa: E731
    assert rasp.Map(fill, to_none)("ab") == [0, 0]
    assert rasp.Map(fill, to_none, simplify=False)("ab") == [None, None]


def test_none_propagates_through_maps() -> None:
    shifted = lib.shift_by(1, rasp.tokens)
    assert rasp.Map(lambda x: x + "!", shifted)("ab") == [None, "a!"]
    assert rasp.SequenceMap(lambda x, y: x + y, shifted, rasp.tokens)("ab") == [None, "ab"]
    assert rasp.SequenceMap(lambda x, y: x + y, rasp.tokens, shifted)("ab") == [None, "ba"]
    assert (shifted == "a")("ab") == [None, True]
    nothing = rasp.Map(lambda x: None, rasp.tokens)
    assert rasp.LinearSequenceMap(nothing, rasp.indices, 1, 1)("ab") == [None, None]


def test_selectors_with_shared_keys_and_queries_merge_into_one_select() -> None:
    lt = rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.LT)
    gt = rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.GT)
    neq = rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.NEQ)
    xs = [0, 2, 1, 3]

    either = lt | gt
    assert type(either) is rasp.Select
    assert either.keys is rasp.tokens and either.queries is rasp.indices
    assert either(xs) == neq(xs)

    both = rasp.selector_and(lt, gt)
    assert type(both) is rasp.Select
    assert both(xs) == [[False] * 4 for _ in xs]

    negated = ~lt
    assert type(negated) is rasp.Select
    assert negated(xs) == rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.GEQ)(xs)

    assert type(rasp.selector_and(lt, gt, simplify=False)) is rasp.SelectorAnd
    assert type(rasp.selector_or(lt, gt, simplify=False)) is rasp.SelectorOr
    assert type(rasp.selector_not(lt, simplify=False)) is rasp.SelectorNot


def test_selectors_with_different_keys_stay_composite() -> None:
    by_token = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    before = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)
    xs = ["a", "b", "a", "a"]
    a, b = by_token(xs), before(xs)

    both = by_token & before
    assert type(both) is rasp.SelectorAnd and both.children == [by_token, before]
    assert both(xs) == [[x and y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]

    either = by_token | before
    assert type(either) is rasp.SelectorOr
    assert either(xs) == [[x or y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]

    negated = ~both
    assert type(negated) is rasp.SelectorNot
    assert negated(xs) == [[not x for x in row] for row in both(xs)]

    # Counting and aggregating through a composite selector.
    assert rasp.SelectorWidth(both)(xs) == [0, 0, 1, 2]
    assert rasp.Aggregate(both, rasp.indices)(xs) == [None, None, 0, 1.0]


def test_full_keys_or_queries_are_baked_into_the_predicate() -> None:
    sel = rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.LEQ)
    with_full_keys = rasp.Select(rasp.Full(1), rasp.indices, rasp.Comparison.LT)  # 1 < query
    merged = sel & with_full_keys
    assert type(merged) is rasp.Select
    assert merged.keys is rasp.tokens and merged.queries is rasp.indices
    xs = [0, 3, 1, 2]
    unmerged = rasp.selector_and(sel, with_full_keys, simplify=False)
    assert merged(xs) == unmerged(xs)

    with_full_queries = rasp.Select(rasp.tokens, rasp.Full(2), rasp.Comparison.EQ)  # key == 2
    merged = rasp.selector_or(sel, with_full_queries)
    assert type(merged) is rasp.Select
    assert merged.keys is rasp.tokens and merged.queries is rasp.indices
    assert merged(xs) == rasp.selector_or(sel, with_full_queries, simplify=False)(xs)


def test_aggregate_mean_and_default() -> None:
    prefix = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    mean = rasp.numerical(rasp.Aggregate(prefix, rasp.numerical(rasp.tokens)))
    assert mean([1, 2, 3, 4]) == approx_list([1, 1.5, 2.0, 2.5])
    share_of_x = rasp.Aggregate(prefix, rasp.tokens == "x")
    assert share_of_x(["x", "y", "y", "x"]) == approx_list([1, 0.5, 1 / 3, 0.5])

    nothing = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.FALSE)
    assert rasp.Aggregate(nothing, rasp.tokens, default=7)("ab") == [7, 7]
    assert rasp.Aggregate(nothing, rasp.tokens)("ab") == [None, None]

    # One selected value is passed through as it is (any type); several must be numbers.
    same_token = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    assert rasp.Aggregate(same_token, rasp.tokens)("ab") == ["a", "b"]
    with pytest.raises(ValueError):
        rasp.Aggregate(same_token, rasp.tokens)("aa")
    with pytest.raises((TypeError, AssertionError)):
        rasp.Aggregate(same_token, rasp.tokens, default=[0])  # type: ignore[arg-type]


def test_constant_sop_checks_length() -> None:
    const = rasp.ConstantSOp([1, 2, 3])
    assert const("abc") == [1, 2, 3]
    with pytest.raises(ValueError, match="doesn't match"):
        const("ab")
    assert rasp.ConstantSOp([1, 2, 3], check_length=False)("ab") == [1, 2, 3]
    assert (const + rasp.indices)("abc") == [1, 3, 5]
    with pytest.raises(ValueError):
        rasp.ConstantSelector([[True]])("ab")
    assert rasp.Full("z")("abc") == ["z", "z", "z"]


def test_causal_evaluate_masks_future_keys() -> None:
    everything = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE)
    assert rasp.evaluate(everything, "abc") == [[True] * 3] * 3
    assert rasp.causal_evaluate(everything, "abc") == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    assert rasp.causal_evaluate(rasp.SelectorWidth(everything), "abcd") == [1, 2, 3, 4]
    assert rasp.causal_evaluate(lib.make_length(), "abc") == [1, 2, 3]
    mean = rasp.numerical(rasp.Aggregate(everything, rasp.numerical(rasp.tokens)))
    assert rasp.causal_evaluate(mean, [2, 4, 6]) == approx_list([2, 3, 4])
    assert rasp.evaluate(mean, [2, 4, 6]) == approx_list([4, 4, 4])
    # Composite selectors are masked too: NOT(nothing) only sees the past.
    nothing = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.FALSE)
    negated = rasp.selector_not(nothing, simplify=False)
    assert rasp.causal_evaluate(negated, "ab") == [[True, False], [True, True]]
    # frac_prevs only looks backwards, so it is the same either way.
    frac = lib.make_frac_prevs(rasp.tokens == "l")
    assert rasp.causal_evaluate(frac, "hello") == approx_list(rasp.evaluate(frac, "hello"))


def test_numerical_and_categorical_annotations() -> None:
    sop = rasp.Map(lambda x: x + 1, rasp.tokens)
    assert rasp.get_encoding(sop) is rasp.Encoding.CATEGORICAL and rasp.is_categorical(sop)
    num = rasp.numerical(sop)
    assert num is not sop and rasp.is_numerical(num) and not rasp.is_numerical(sop)
    assert num.f is sop.f
    back = rasp.categorical(num)
    assert rasp.is_categorical(back) and rasp.is_numerical(num)
    assert rasp.numerical(sop.named("plus_one")).name == "plus_one"
    with pytest.raises(TypeError):
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).annotations["encoding"]
    with pytest.raises(KeyError):
        sop.annotations["no_such_annotation"]
    # The library's encodings, as in Tracr.
    assert rasp.is_numerical(lib.make_frac_prevs(rasp.tokens == "a"))
    assert rasp.is_numerical(lib.make_pair_balance(rasp.tokens, "(", ")"))
    assert rasp.is_categorical(lib.make_hist()) and rasp.is_categorical(lib.make_shuffle_dyck(["()"]))


def test_source_points_at_the_line_that_built_the_sop() -> None:
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    sop = rasp.Map(lambda x: x, rasp.tokens)
    assert sop.source == f"{THIS_FILE}:{line}"
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    eq = rasp.tokens == "a"
    assert eq.source == f"{THIS_FILE}:{line}"
    eq_sel = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    lt_sel = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT)
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    sel = eq_sel | lt_sel  # merged into one Select inside raspc.rasp, still attributed here
    assert type(sel) is rasp.Select and sel.source == f"{THIS_FILE}:{line}"
    assert sop.named("renamed").source == sop.source  # a rename keeps where the s-op was written
    assert lib.make_hist().source.startswith("lib.py:")


# --------------------------------------------------------------------------- differential against Tracr

EXTRA_DIFF_CASES = [
    # (id, call with Tracr's names, vocab, max_seq_len); every library function appears.
    ("length_module", "lib.length", ["a", "b"], 5),
    ("reverse_indices", "lib.make_reverse(rasp.indices)", ["a", "b"], 5),
    ("reverse_hist", "lib.make_reverse(lib.make_hist())", ["a", "b", "c"], 6),
    ("pair_balance_curly", 'lib.make_pair_balance(rasp.tokens, "{", "}")', ["{", "}", "x"], 6),
    ("shuffle_dyck3", 'lib.make_shuffle_dyck(["()", "{}", "[]"])', list("(){}[]"), 6),
    ("shuffle_dyck2", "lib.make_shuffle_dyck2()", list("(){}"), 6),
    ("hist_ints", "lib.make_hist()", [1, 2, 3], 6),
    ("sort_unique_dupes", "lib.make_sort_unique(rasp.tokens, rasp.tokens)", [1, 2, 3], 4),
    ("sort_by_indices", "lib.make_sort(rasp.tokens, rasp.indices, max_seq_len=5, min_key=1)", ["a", "b"], 5),
    ("sort_min_key_2", "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=6, min_key=2)", [2, 4, 6, 8], 6),
    ("sort_freq_6", "lib.make_sort_freq(max_seq_len=6)", ["a", "b", "c"], 6),
    ("frac_prevs_l", 'lib.make_frac_prevs(rasp.tokens == "l")', list("helo"), 6),
    ("shift_by_1", "lib.shift_by(1, rasp.tokens)", ["a", "b", "c"], 5),
    ("shift_by_3_indices", "lib.shift_by(3, rasp.indices)", ["a"], 5),
    ("detect_ab", 'lib.detect_pattern(rasp.tokens, "ab")', ["a", "b", "c"], 6),
    ("detect_list", "lib.detect_pattern(rasp.tokens, [1, 2, 1])", [1, 2], 6),
    ("count_less_freq_1", "lib.make_count_less_freq(1)", ["a", "b", "c"], 6),
    ("count_int", "lib.make_count(rasp.tokens, 2)", [1, 2, 3], 6),
    ("nary_2", "lib.make_nary_sequencemap(lambda x, y: x * 10 + y, rasp.tokens, rasp.indices)", [1, 2, 3], 5),
    ("nary_1", "lib.make_nary_sequencemap(lambda x: x, rasp.tokens)", ["a", "b"], 4),
]

# Tracr's equivalent of each raspc.lib.LIBRARY default instance ("MSL" = the compile's max_seq_len).
TRACR_DEFAULT_CALLS = {
    "make_length": "lib.make_length()",
    "make_reverse": "lib.make_reverse(rasp.tokens)",
    "make_pair_balance": 'lib.make_pair_balance(rasp.tokens, "(", ")")',
    "make_shuffle_dyck": 'lib.make_shuffle_dyck(["()"])',
    "make_shuffle_dyck2": "lib.make_shuffle_dyck2()",
    "make_hist": "lib.make_hist()",
    "make_sort_unique": "lib.make_sort_unique(rasp.tokens, rasp.tokens)",
    "make_sort": "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=MSL, min_key=1)",
    "make_sort_freq": "lib.make_sort_freq(MSL)",
    "make_frac_prevs": (
        'lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens)))'
    ),
    "shift_by": "lib.shift_by(1, rasp.tokens)",
    "detect_pattern": 'lib.detect_pattern(rasp.tokens, "abc")',
    "make_count_less_freq": "lib.make_count_less_freq(2)",
    "make_count": 'lib.make_count(rasp.tokens, "a")',
    "make_nary_sequencemap": (
        "lib.make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices)"
    ),
}


def _diff_params() -> list[Any]:
    params = [
        pytest.param(case["call"], case["vocab"], case["max_seq_len"], id=f"vectors-{case['name']}")
        for case in CASES
    ]
    params += [pytest.param(call, vocab, msl, id=name) for name, call, vocab, msl in EXTRA_DIFF_CASES]
    return params


def structure(root: Any) -> list[tuple[Any, ...]]:
    """The s-op graph as rows (class, name, encoding, detail, child row numbers); sharing is kept."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[int, int] = {}

    def visit(expr: Any) -> int:
        if id(expr) in numbers:
            return numbers[id(expr)]
        kids = tuple(visit(child) for child in expr.children)
        kind = type(expr).__name__
        is_sop = any(cls.__name__ == "SOp" for cls in type(expr).__mro__)
        encoding = expr.annotations["encoding"].value if is_sop else None
        detail: Any = None
        if kind == "Select":
            predicate = expr.predicate
            detail = predicate.name if hasattr(predicate, "value") else "callable"
        elif kind == "Aggregate":
            detail = ("default", expr.default)
        elif kind == "LinearSequenceMap":
            detail = (expr.fst_fac, expr.snd_fac)
        elif kind == "Full":
            detail = expr.fill
        numbers[id(expr)] = len(rows)
        rows.append((kind, expr.name, encoding, detail, kids))
        return numbers[id(expr)]

    visit(root)
    return rows


def _random_inputs(
    vocab: list[Any], max_seq_len: int, count: int = 100, seed: int = 20240101
) -> list[list[Any]]:
    rng = random.Random(seed)
    return [[rng.choice(vocab) for _ in range(rng.randint(1, max_seq_len))] for _ in range(count)]


def _outcome(evaluate: Callable[[Any, Any], Any], program: Any, xs: list[Any]) -> tuple[str, Any]:
    try:
        return ("ok", evaluate(program, xs))
    except Exception as error:  # noqa: BLE001 - both sides must fail alike
        return ("error", type(error).__name__)


def _assert_same_behaviour(ours: rasp.SOp, theirs: Any, vocab: list[Any], max_seq_len: int) -> None:
    from tracr.rasp import rasp as tracr_rasp

    assert structure(ours) == structure(theirs)
    for xs in _random_inputs(vocab, max_seq_len):
        mine, reference = _outcome(rasp.evaluate, ours, xs), _outcome(tracr_rasp.evaluate, theirs, xs)
        assert mine[0] == reference[0] and same(mine[1], reference[1]), (xs, mine, reference)


@pytest.mark.parametrize("call, vocab, max_seq_len", _diff_params())
def test_differential_against_tracr(call: str, vocab: list[Any], max_seq_len: int) -> None:
    pytest.importorskip("tracr")
    from tracr.compiler import lib as tracr_lib
    from tracr.rasp import rasp as tracr_rasp

    ours = build(call)
    theirs = build(call, tracr_lib, tracr_rasp)
    _assert_same_behaviour(ours, theirs, vocab, max_seq_len)


@pytest.mark.parametrize("name", LIB_FUNCTIONS)
def test_library_defaults_match_tracr(name: str) -> None:
    pytest.importorskip("tracr")
    from tracr.compiler import lib as tracr_lib
    from tracr.rasp import rasp as tracr_rasp

    vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
    ours = lib.LIBRARY[name](max_seq_len=max_seq_len)
    theirs = build(TRACR_DEFAULT_CALLS[name].replace("MSL", str(max_seq_len)), tracr_lib, tracr_rasp)
    _assert_same_behaviour(ours, theirs, vocab, max_seq_len)
