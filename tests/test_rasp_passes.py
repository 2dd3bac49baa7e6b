"""The rasp-level passes: each keeps what the program computes, and each refusal is typed and named.

- Every library case (USUAL + BIG of test_e2e_library) is traced, then run through the rasp part of
  the default pipeline one pass at a time; after each pass the module verifies and the rasp
  interpreter answers exactly as `rasp.evaluate` on 200 seeded random inputs (None where the
  evaluator raises).
- Targeted tests per pattern and per refusal, on programs with None inside selectors, values that
  Python calls equal (1, 1.0, True) and causal selectors. Where a test program leaves the
  compiler's domain on some inputs (a categorical mean of different values), the pass must keep
  exactly the traced program's answers, None included.
"""

from __future__ import annotations

import random
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import irdl_op_definition

from raspc import lib, rasp
from raspc.analysis.value_sets import infer_op
from raspc.compiler import RASP_PIPELINE, available_passes, build_pipeline, context, parse_ir
from raspc.dialects import rasp as R
from raspc.dialects.common import CATEGORICAL, InputSpec, ModelContainer, container_of
from raspc.errors import IRError, UnsupportedError
from raspc.interpreters.rasp import RaspInterpreter
from raspc.lowering.program_to_rasp import program_to_rasp
from raspc.passes.canonicalization_patterns.rasp import COMPARISON_KINDS, combine_comparisons
from raspc.passes.check_causal import CheckCausalPass
from raspc.passes.combine_selectors import CombineSelectorsPass
from raspc.passes.discretise_numerical import DiscretiseNumericalOperandsPass
from raspc.passes.fuse_maps import FuseMapsPass
from raspc.passes.infer_value_sets import InferValueSetsPass
from raspc.passes.product_selectors import ProductSelectorsPass
from raspc.utils.values import identity
from test_e2e_library import BIG, USUAL, Case

Cmp = rasp.Comparison
N_INPUTS = 200
_RAISED = object()


# --------------------------------------------------------------------------- helpers


def passes(spec: str) -> list[Any]:
    built = build_pipeline(spec)
    return list(getattr(built, "passes", built))  # a PassPipeline or a tuple of passes


def run(module: ModuleOp, spec: str) -> ModuleOp:
    ctx = context()
    for p in passes(spec):
        p.apply(ctx, module)
        module.verify()
    return module


def program_of(module: ModuleOp) -> R.ProgramOp:
    program = container_of(module)
    assert isinstance(program, R.ProgramOp)
    return program


def ops(module: ModuleOp, kind: type[Operation] | tuple[type[Operation], ...] = Operation) -> list[Any]:
    return [op for op in program_of(module).ops if isinstance(op, kind)]


def by_label(module: ModuleOp, label: str) -> Any:
    (op,) = [op for op in program_of(module).ops if isinstance(op, R.RaspOp) and op.label_str == label]
    return op


def random_inputs(vocab: Sequence[Any], max_len: int, count: int = N_INPUTS, seed: int = 0,
                  distinct: bool = False) -> list[list[Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        n = rng.randint(1, min(max_len, len(vocab)) if distinct else max_len)
        rows.append(rng.sample(list(vocab), n) if distinct else [rng.choice(list(vocab)) for _ in range(n)])
    return rows


def same_row(a: list[Any] | None, b: list[Any] | None, numerical: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is None or y is None:
            if not (x is None and y is None):
                return False
        elif numerical:
            if abs(float(x) - float(y)) > 1e-9:
                return False
        elif identity(x) != identity(y):
            return False
    return True


def evaluate(program: rasp.SOp, xs: list[Any], causal: bool = False) -> Any:
    try:
        return (rasp.causal_evaluate if causal else rasp.evaluate)(program, xs)
    except Exception:  # noqa: BLE001 - outside the program's domain
        return _RAISED


def check_evaluator(program: rasp.SOp, module: ModuleOp, inputs: list[list[Any]], *, strict: bool,
                    causal: bool = False) -> list[Any]:
    """The interpreter's answers: None where the evaluator raises, the evaluator's answer elsewhere
    (or, unless `strict`, None where the program leaves the compiler's domain)."""
    got = RaspInterpreter(module).run_batch(inputs)
    numerical = rasp.is_numerical(program)
    for xs, g in zip(inputs, got):
        e = evaluate(program, xs, causal)
        if e is _RAISED:
            assert g is None, (xs, g)
        elif g is not None or strict:
            assert same_row(g, e, numerical), (xs, g, e)
    return got


def check_preserved(program: rasp.SOp, vocab: Sequence[Any], max_seq_len: int, spec: str, *,
                    causal: bool = False, count: int = N_INPUTS, min_answers: int = 10) -> ModuleOp:
    """Runs `spec` pass by pass on the traced program; after each, the answers equal the traced ones
    (of which at least `min_answers` are not None, so the comparison means something)."""
    module = program_to_rasp(program, list(vocab), max_seq_len, causal=causal)
    inputs = random_inputs(vocab, max_seq_len, count)
    before = check_evaluator(program, module, inputs, strict=False, causal=causal)
    assert sum(row is not None for row in before) >= min_answers
    numerical = rasp.is_numerical(program)
    ctx = context()
    for p in passes(spec):
        p.apply(ctx, module)
        module.verify()
        after = RaspInterpreter(module).run_batch(inputs)
        bad = [(x, a, b) for x, a, b in zip(inputs, before, after) if not same_row(a, b, numerical)]
        assert not bad, f"after {p.name}: {bad[:3]}"
    return module


def prev_of(sop: rasp.SOp) -> rasp.SOp:
    """`sop` shifted right by one: None at position 0."""
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1), sop).named("prev")


def token_or_none() -> rasp.SOp:
    """tokens (0, 1, 2) read at position token: None where the token is not a position (token >= length)."""
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.tokens, Cmp.EQ), rasp.tokens).named("sometimes")


def numerical_one(sop: rasp.SOp) -> rasp.SOp:
    return rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, sop))


# --------------------------------------------------------------------------- the library, pass by pass


@pytest.mark.parametrize("case", USUAL + BIG, ids=[c.name for c in USUAL + BIG])
def test_library_case_keeps_its_answers_after_every_rasp_pass(case: Case) -> None:
    program = eval(case.call, {"lib": lib, "rasp": rasp})  # noqa: S307 - the case list's own text
    module = program_to_rasp(program, list(case.vocab), case.max_seq_len)
    inputs = random_inputs(case.vocab, case.max_seq_len, distinct=case.distinct)
    check_evaluator(program, module, inputs, strict=True)
    ctx = context()
    for p in passes(RASP_PIPELINE):
        p.apply(ctx, module)
        module.verify()
        check_evaluator(program, module, inputs, strict=True)
    assert not ops(module, R.SelectorNotOp)
    for op in ops(module, (R.AggregateOp, R.SelectorWidthOp)):
        sel = op.selector.owner
        assert isinstance(sel, R.SelectOp) or isinstance(sel, R.SelectorAndOp), op.label_str
    for op in ops(module, (R.SelectOp, R.SequenceMapOp)):
        assert all(R.sop_type(v).is_categorical for v in op.operands), op.label_str


def test_reverse_fuses_into_one_sequence_map() -> None:
    module = check_preserved(lib.make_reverse(rasp.tokens), "abc", 4, RASP_PIPELINE)
    assert not ops(module, R.MapOp)
    assert by_label(module, "opp_idx-1").name == "rasp.sequence_map"


# --------------------------------------------------------------------------- every pass


class _FakeModel(ModelContainer):
    name = "test.model"
    LEVEL: ClassVar[str] = "test"


FakeModel = irdl_op_definition(_FakeModel)
PASS_CLASSES = [InferValueSetsPass, CombineSelectorsPass, CheckCausalPass, ProductSelectorsPass,
                DiscretiseNumericalOperandsPass, FuseMapsPass]


@pytest.mark.parametrize("cls", PASS_CLASSES, ids=[c.name for c in PASS_CLASSES])
def test_pass_is_registered_and_refuses_other_levels(cls: type) -> None:
    assert available_passes()[cls.name]() is cls
    import importlib

    assert importlib.import_module(cls.__module__).__doc__
    module = ModuleOp([FakeModel.wrap(InputSpec(("a",), "BOS", "PAD", 2, False), [])])
    with pytest.raises(IRError, match=f"pass '{cls.name}' works at the rasp level, but the module holds a test.model"):
        cls().apply(Context(), module)


# --------------------------------------------------------------------------- infer-value-sets

HAND_WRITTEN = """
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %is_a = rasp.map %tokens {label = "is_a", fn = #rasp.table<{"a" -> 1, "b" -> 0}>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %prev = rasp.select %indices, %indices {label = "prev", predicate = #rasp.relation<keys = [0, 1, 2], queries = [0, 1, 2], rows = ["000", "100", "010"]>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %shifted = rasp.aggregate %prev, %is_a {label = "shifted", default = #raspc.value<none>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %hist = rasp.selector_width %same {label = "hist"} : !rasp.sop<categorical>
    %out = rasp.sequence_map %shifted, %hist {label = "out", fn = #rasp.table<{0, 1 -> "x", 0, 2 -> "y", 1, 1 -> "z"}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %out : !rasp.sop<categorical>
  }
}
"""


def test_infer_value_sets_fills_a_hand_written_program() -> None:
    module = parse_ir(HAND_WRITTEN)
    run(module, "infer-value-sets")
    sets = {op.label_str: R.sop_type(op.res).value_set for op in ops(module, R.SOpOp)}
    assert sets == {"tokens": ("a", "b"), "indices": (0, 1, 2), "is_a": (0, 1), "shifted": (None, 0, 1),
                    "hist": (1, 2, 3), "out": (None, "x", "y", "z")}
    interp = RaspInterpreter(module)
    assert interp.run(["a", "b"]) == [None, "z"]  # shifted = [None, 1], hist = [1, 1]
    assert interp.run(["b", "b", "a"]) == [None, "y", "x"]  # shifted = [None, 0, 0], hist = [2, 2, 1]
    assert interp.run(["a", "a", "b"]) is None  # (1, 2) has no entry: outside the domain


def test_infer_value_sets_is_idempotent_on_a_traced_program() -> None:
    module = program_to_rasp(lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3], 3)
    text = str(module)
    run(module, "infer-value-sets")
    assert str(module) == text


# --------------------------------------------------------------------------- canonicalization patterns


def _canonical(program: rasp.SOp, vocab: Sequence[Any] = "abc", n: int = 4) -> ModuleOp:
    return check_preserved(program, vocab, n, "canonicalize")


def test_canonicalize_cancels_double_not() -> None:
    sel = rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)
    inner = rasp.SelectorNot(rasp.SelectorAnd(sel, rasp.Select(rasp.indices, rasp.indices, Cmp.LEQ)))
    module = _canonical(rasp.numerical(rasp.Aggregate(rasp.SelectorNot(inner), numerical_one(rasp.tokens), default=0)))
    assert not ops(module, R.SelectorNotOp)
    assert len(ops(module, R.SelectorAndOp)) == 1


@pytest.mark.parametrize("cmp", list(Cmp), ids=[c.name for c in Cmp])
def test_canonicalize_folds_not_into_a_comparison(cmp: rasp.Comparison) -> None:
    sel = rasp.SelectorNot(rasp.Select(rasp.indices, rasp.tokens, cmp).named("cmp")).named("negated")
    module = _canonical(rasp.SelectorWidth(sel), [0, 1, 2], 3)
    select = by_label(module, "negated")
    assert isinstance(select, R.SelectOp) and select.res.name_hint == "negated"
    assert select.comparison is R.COMPARISON_NEGATION[R.Comparison(cmp.name)]
    assert select.src_str and "test_rasp_passes.py" in select.src_str


def test_canonicalize_folds_not_into_a_relation_keeping_undefined_entries() -> None:
    prev = prev_of(rasp.tokens)
    sel = rasp.SelectorNot(rasp.Select(prev, rasp.tokens, lambda k, q: k != q).named("differs")).named("same")
    module = _canonical(rasp.numerical(rasp.Aggregate(sel, numerical_one(rasp.tokens), default=0)))
    select = by_label(module, "same")
    assert isinstance(select.predicate, R.RelationAttr)
    m = select.predicate.matrix  # not(k != q): k == q, and the lambda answers on None (None != q)
    assert select.predicate.keys[0] is None and (m[:, 0] == 0).all()
    assert (np.diag(m[:, 1:]) == 1).all() and m[:, 1:].sum() == 3


@pytest.mark.parametrize(
    "a,b,is_and,expected",
    [(Cmp.LT, Cmp.EQ, False, R.Comparison.LEQ), (Cmp.EQ, Cmp.NEQ, True, R.Comparison.FALSE),
     (Cmp.EQ, Cmp.NEQ, False, R.Comparison.TRUE), (Cmp.LEQ, Cmp.NEQ, True, R.Comparison.LT),
     (Cmp.GT, Cmp.TRUE, True, R.Comparison.GT), (Cmp.LEQ, Cmp.GEQ, True, R.Comparison.EQ),
     (Cmp.LT, Cmp.GT, True, R.Comparison.FALSE)],
)
def test_canonicalize_merges_two_comparisons_into_one(a: Cmp, b: Cmp, is_and: bool, expected: R.Comparison) -> None:
    comb = rasp.SelectorAnd if is_and else rasp.SelectorOr
    sel = comb(rasp.Select(rasp.indices, rasp.indices, a), rasp.Select(rasp.indices, rasp.indices, b)).named("both")
    module = _canonical(rasp.numerical(rasp.Aggregate(sel, rasp.numerical(rasp.Map(float, rasp.tokens)), default=0)),
                        [0, 1], 4)
    select = by_label(module, "both")
    assert isinstance(select, R.SelectOp) and select.comparison is expected


def test_comparison_combinations_that_raise_differently_are_not_comparisons() -> None:
    # LEQ and GEQ raises where the operands cannot be ordered; EQ answers 0 there
    assert combine_comparisons(R.Comparison.LEQ, R.Comparison.GEQ, True) is None
    assert combine_comparisons(R.Comparison.LT, R.Comparison.FALSE, True) is None
    assert combine_comparisons(R.Comparison.LT, R.Comparison.EQ, False) is R.Comparison.LEQ
    for cmp, neg in R.COMPARISON_NEGATION.items():  # negation keeps "raises" and swaps 0/1
        assert tuple(-1 if x < 0 else 1 - x for x in COMPARISON_KINDS[cmp]) == COMPARISON_KINDS[neg]


def test_canonicalize_merges_over_unordered_values_into_a_relation() -> None:
    # tokens 1 and "a" cannot be ordered: LEQ and GEQ raises there, so the merge is a relation with '?'
    sel = rasp.SelectorAnd(rasp.Select(rasp.tokens, rasp.tokens, Cmp.LEQ),
                           rasp.Select(rasp.tokens, rasp.tokens, Cmp.GEQ)).named("eq")
    module = _canonical(rasp.SelectorWidth(sel), [1, 2, "a"], 3)
    select = by_label(module, "eq")
    assert isinstance(select.predicate, R.RelationAttr)
    assert (select.predicate.matrix == -1).sum() == 4


def test_canonicalize_merges_a_relation_and_a_comparison_over_none() -> None:
    sometimes = token_or_none()
    eq = rasp.Select(sometimes, sometimes, Cmp.EQ)
    # where EQ is defined the lambda never selects: the merge is EQ itself
    sel = rasp.SelectorOr(eq, rasp.Select(sometimes, sometimes, lambda k, q: k is None)).named("m")
    module = _canonical(rasp.numerical(rasp.Aggregate(sel, rasp.numerical(rasp.Map(float, rasp.tokens)), default=0)),
                        [0, 1, 2], 4)
    assert by_label(module, "m").comparison is R.Comparison.EQ
    # a relation that selects more: '?' wherever EQ raises (a None on either side)
    sel = rasp.SelectorOr(eq, rasp.Select(sometimes, sometimes, lambda k, q: k is None or q == 2)).named("m")
    module = _canonical(rasp.numerical(rasp.Aggregate(sel, rasp.numerical(rasp.Map(float, rasp.tokens)), default=0)),
                        [0, 1, 2], 4)
    select = by_label(module, "m")
    m = select.predicate.matrix
    assert select.predicate.keys == (None, 0, 1, 2) and (m[:, 0] == -1).all() and (m[0, :] == -1).all()
    assert m[1:, 1:].tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]


def test_canonicalize_keeps_selects_over_different_operands() -> None:
    sel = rasp.SelectorOr(rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ), rasp.Select(rasp.indices, rasp.indices, Cmp.LT))
    module = _canonical(rasp.SelectorWidth(sel))
    assert len(ops(module, R.SelectorOrOp)) == 1


# --------------------------------------------------------------------------- combine-selectors


def test_combine_selectors_pushes_not_through_and_or() -> None:
    a = rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)
    b = rasp.Select(rasp.indices, rasp.indices, Cmp.LT)
    c = rasp.Select(rasp.indices, rasp.indices, Cmp.GT)
    sel = rasp.SelectorNot(rasp.SelectorAnd(a, rasp.SelectorOr(b, c))).named("none_of")
    module = check_preserved(rasp.SelectorWidth(sel), "ab", 4, "combine-selectors")
    assert not ops(module, R.SelectorNotOp)
    root = by_label(module, "none_of")
    assert isinstance(root, R.SelectorOrOp) and root.res.name_hint == "none_of"
    comparisons = sorted(op.comparison.name for op in ops(module, R.SelectOp))
    assert comparisons == ["EQ", "NEQ"]  # not(LT or GT) = GEQ and LEQ = EQ on indices


def test_combine_selectors_with_none_keys_and_queries() -> None:
    sometimes, prev = token_or_none(), prev_of(rasp.tokens)
    not_eq = rasp.SelectorNot(rasp.Select(sometimes, sometimes, Cmp.EQ))
    not_rel = rasp.SelectorNot(rasp.Select(prev, rasp.tokens, lambda k, q: k != q))
    for sel in (not_eq, not_rel, rasp.SelectorNot(rasp.SelectorOr(not_eq, not_rel))):
        program = rasp.numerical(rasp.Aggregate(sel, rasp.numerical(rasp.Map(float, rasp.tokens)), default=0))
        module = check_preserved(program, [0, 1, 2], 4, "combine-selectors")
        assert not ops(module, R.SelectorNotOp)


# --------------------------------------------------------------------------- check-causal


def test_check_causal_accepts_a_negated_look_ahead_after_combine_selectors() -> None:
    not_gt = rasp.SelectorNot(rasp.Select(rasp.indices, rasp.indices, Cmp.GT)).named("upto")
    program = rasp.numerical(rasp.Aggregate(not_gt, numerical_one(rasp.tokens), default=0)).named("frac")
    module = check_preserved(program, "ab", 4, "infer-value-sets,combine-selectors,check-causal", causal=True)
    assert by_label(module, "upto").comparison is R.Comparison.LEQ
    check_evaluator(program, module, random_inputs("ab", 4), strict=True, causal=True)
    # the negation is proved even without folding it first
    run(program_to_rasp(program, ["a", "b"], 4, causal=True), "check-causal")


@pytest.mark.parametrize(
    "build,vocab",
    [
        (lambda: lib.make_frac_prevs(numerical_one(rasp.tokens)), "ab"),
        (lambda: lib.shift_by(1, rasp.tokens), "abc"),
        (lambda: lib.make_pair_balance(rasp.tokens, "(", ")"), "()"),
        (lambda: rasp.SelectorWidth(rasp.SelectorAnd(rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ),
                                                     rasp.Select(rasp.indices, rasp.indices, Cmp.LEQ))), "ab"),
        # a relation read at None: the query is None at position 0
        (lambda: rasp.Aggregate(rasp.Select(rasp.indices, rasp.Map(lambda i: None if i == 0 else i - 1, rasp.indices),
                                            lambda k, q: q is not None and k <= q), rasp.tokens), "ab"),
        # a constant key: position-determined, and inputs of another length are outside the domain
        (lambda: rasp.numerical(rasp.Aggregate(rasp.Select(rasp.ConstantSOp([0, 1, 2]), rasp.indices, Cmp.LEQ),
                                               numerical_one(rasp.tokens), default=0)), "ab"),
        # a key that is a map of indices, one that is a sequence map of indices and a constant
        (lambda: rasp.Aggregate(rasp.Select(rasp.Map(lambda i: i + 1, rasp.indices), rasp.indices, Cmp.EQ),
                                rasp.tokens), "ab"),
        (lambda: rasp.Aggregate(rasp.Select(rasp.SequenceMap(lambda i, f: i * f, rasp.indices, rasp.Full(2)),
                                            rasp.indices, Cmp.LEQ), rasp.tokens), "ab"),
    ],
    ids=["frac_prevs", "shift_by", "pair_balance", "and-with-causal-side", "relation-on-none", "constant",
         "map-of-indices", "sequence-map-of-indices"],
)
def test_check_causal_accepts_selectors_masking_cannot_change(build: Callable[[], rasp.SOp], vocab: str) -> None:
    program = build()
    module = check_preserved(program, vocab, 3, RASP_PIPELINE, causal=True)
    check_evaluator(program, module, random_inputs(vocab, 3), strict=False, causal=True)


@pytest.mark.parametrize(
    "build,selector",
    [
        (lambda: lib.make_length(), "all_true_selector"),
        (lambda: lib.make_hist(), "same_tok"),
        (lambda: lib.make_reverse(rasp.tokens), "all_true_selector"),  # its length reads every key
        (lambda: rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1).named("next"),
                                rasp.tokens), "next"),
        (lambda: rasp.SelectorWidth(rasp.SelectorOr(rasp.Select(rasp.indices, rasp.indices, Cmp.LEQ),
                                                    rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)).named("either")),
         "either"),
        (lambda: rasp.Aggregate(rasp.Select(prev_of(rasp.indices), rasp.indices,
                                            lambda k, q: k is not None and k == q).named("none_key"), rasp.tokens),
         "none_key"),
    ],
    ids=["length", "hist", "reverse", "look-ahead", "or", "none-key-relation"],
)
def test_check_causal_refuses_selectors_that_look_ahead(build: Callable[[], rasp.SOp], selector: str) -> None:
    program = build()
    module = program_to_rasp(program, [1, 2, 3], 4, causal=True)
    with pytest.raises(UnsupportedError, match=f"causal=True would change.*selector '{selector}' can select a key "
                                               "after the query"):
        run(module, "infer-value-sets,combine-selectors,check-causal")


def test_check_causal_does_nothing_unless_causal() -> None:
    module = program_to_rasp(lib.make_hist(), ["a", "b"], 4)
    text = str(module)
    run(module, "check-causal")
    assert str(module) == text


def test_refused_causal_selector_really_changes_the_answer() -> None:
    program = rasp.SelectorWidth(rasp.SelectorOr(rasp.Select(rasp.indices, rasp.indices, Cmp.LEQ),
                                                 rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)))
    assert rasp.evaluate(program, ["a", "b", "a"]) != rasp.causal_evaluate(program, ["a", "b", "a"])


# --------------------------------------------------------------------------- product-selectors


def test_product_selectors_packs_two_operands_into_tuples() -> None:
    sel = rasp.SelectorOr(rasp.Select(rasp.indices, rasp.indices, Cmp.LT),
                          rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)).named("either")
    module = check_preserved(rasp.SelectorWidth(sel), "ab", 4, "product-selectors")
    assert not ops(module, (R.SelectorOrOp, R.SelectorAndOp, R.SelectorNotOp))
    select = by_label(module, "either")
    assert isinstance(select.predicate, R.RelationAttr) and select.keys == select.queries
    pack = select.keys.owner
    assert isinstance(pack, R.TupleOp) and pack.label_str == "either.keys"
    assert R.sop_type(pack.res).value_set == tuple((i, t) for i in range(4) for t in "ab")


def test_product_selectors_flattens_three_operands() -> None:
    x = rasp.Map(lambda t: t == "a", rasp.tokens).named("is_a")
    sel = rasp.SelectorOr(rasp.SelectorOr(rasp.Select(rasp.indices, rasp.indices, Cmp.LT),
                                          rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ)),
                          rasp.Select(x, x, Cmp.NEQ)).named("any3")
    module = check_preserved(rasp.SelectorWidth(sel), "abc", 3, "product-selectors")
    key = by_label(module, "any3").keys.owner
    assert isinstance(key, R.TupleOp) and key.label_str == "any3.keys" and len(key.parts) == 3
    assert all(len(v) == 3 for v in R.sop_type(key.res).value_set)


def test_product_selectors_builds_a_shared_root_once() -> None:
    sel = rasp.SelectorNot(rasp.SelectorAnd(rasp.Select(rasp.indices, rasp.indices, Cmp.LT),
                                            rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ))).named("root")
    both = rasp.SequenceMap(lambda w, a: (w, a), rasp.SelectorWidth(sel), rasp.Aggregate(sel, rasp.tokens))
    module = check_preserved(both, "ab", 3, "product-selectors")
    assert len(ops(module, R.SelectOp)) == 1 and len(ops(module, R.TupleOp)) == 1


def test_product_selectors_keeps_conjunctions() -> None:
    sel = rasp.SelectorAnd(rasp.Select(rasp.indices, rasp.indices, Cmp.LT), rasp.Select(rasp.tokens, rasp.tokens, Cmp.EQ))
    module = check_preserved(rasp.SelectorWidth(sel), "ab", 3, "product-selectors")
    assert len(ops(module, R.SelectorAndOp)) == 1


def test_product_selectors_packs_a_none_that_only_makes_comparisons_raise() -> None:
    sometimes = token_or_none()
    sel = rasp.SelectorOr(rasp.Select(rasp.indices, rasp.indices, Cmp.LT), rasp.Select(sometimes, sometimes, Cmp.EQ))
    module = check_preserved(rasp.numerical(rasp.Aggregate(sel, rasp.numerical(rasp.Map(float, rasp.tokens)),
                                                           default=0)), [0, 1, 2], 4, RASP_PIPELINE)
    key = ops(module, R.SelectOp)[-1].keys
    assert any(None in t for t in R.sop_type(key).value_set)  # a None part, kept in the tuple


def test_product_selectors_uses_a_none_operand_it_does_not_pack() -> None:
    prev = prev_of(rasp.tokens)
    sel = rasp.SelectorNot(rasp.SelectorOr(rasp.Select(prev, rasp.tokens, lambda k, q: k != q),
                                           rasp.Select(prev, rasp.tokens, lambda k, q: k is not None and k < q)))
    program = rasp.numerical(rasp.Aggregate(sel, numerical_one(rasp.tokens), default=0))
    check_preserved(program, "abc", 4, "product-selectors")  # one key operand: no tuple, None kept


def test_product_selectors_packs_a_none_a_select_reads() -> None:
    """(None, i) is a tuple of its own: the `or` still sees the None key."""
    prev = prev_of(rasp.tokens)
    sel = rasp.SelectorOr(rasp.Select(prev, rasp.tokens, lambda k, q: k != q),
                          rasp.Select(rasp.indices, rasp.indices, Cmp.LT)).named("mixed")
    module = check_preserved(rasp.numerical(rasp.Aggregate(sel, numerical_one(rasp.tokens), default=0)), "ab", 3,
                             "product-selectors")
    assert (None, 0) in R.sop_type(by_label(module, "mixed").keys).value_set


def test_product_selectors_refuses_numbers_a_leaf_tells_apart() -> None:
    x = rasp.numerical(rasp.Map(lambda t: {"a": 0, "b": 0.0, "c": 1}[t], rasp.tokens)).named("x")
    sel = rasp.SelectorOr(rasp.Select(x, rasp.indices, lambda k, q: type(k) is int),
                          rasp.Select(rasp.tokens, rasp.indices, Cmp.TRUE)).named("by_type")
    module = program_to_rasp(rasp.SelectorWidth(sel), list("abc"), 3)
    with pytest.raises(UnsupportedError, match=r"'x' can be 0 and 0.0, which one number cannot tell apart"):
        run(module, "product-selectors")


def test_product_selectors_packs_equal_numbers_as_one() -> None:
    x = rasp.numerical(rasp.Map(lambda t: {"a": 0, "b": 0.0, "c": 1}[t], rasp.tokens)).named("x")
    sel = rasp.SelectorOr(rasp.Select(x, rasp.indices, Cmp.LT), rasp.Select(rasp.tokens, rasp.indices, Cmp.EQ))
    check_preserved(rasp.SelectorWidth(sel), "abc", 3, RASP_PIPELINE)


def _ten_leaf_tree(operands: list[rasp.SOp]) -> rasp.Selector:
    preds = [Cmp.LT, Cmp.EQ, Cmp.GEQ, Cmp.NEQ, lambda k, q: (k + q) % 3 == 1]
    leaves = [rasp.Select(operands[i % len(operands)], operands[(i * 7 + 1) % len(operands)], preds[i % len(preds)])
              for i in range(10)]
    sel: rasp.Selector = leaves[0]
    for i, leaf in enumerate(leaves[1:]):
        sel = rasp.SelectorOr(sel, leaf) if i % 3 else rasp.SelectorAnd(rasp.SelectorNot(sel), leaf)
    return sel.named("tree")


def test_product_selectors_ten_leaves_over_small_value_sets() -> None:
    """Polynomial: one matrix per leaf, the tree on whole matrices (a slow build would slow the suite)."""
    operands = [rasp.tokens, rasp.indices, rasp.Map(lambda t: (t + 1) % 3, rasp.tokens)]
    module = check_preserved(rasp.SelectorWidth(_ten_leaf_tree(operands)), [0, 1, 2], 5, RASP_PIPELINE, count=100)
    select = by_label(module, "tree")
    assert len(select.predicate.keys) == 3 * 5 * 3


def test_product_selectors_refuses_a_product_past_the_budget_at_once() -> None:
    operands = [rasp.Map(lambda t, i=i: (t + i) % 3 + 10 * i, rasp.tokens).named(f"m{i}") for i in range(10)]
    module = program_to_rasp(rasp.SelectorWidth(_ten_leaf_tree(operands)), [0, 1, 2], 5)
    with pytest.raises(UnsupportedError, match=r"s-op 'tree'.*needs 59049 key tuples \('m0' 3 x 'm1' 3 x .*"
                                               r"bound 5000\).* a 59049 x 59049 relation"):
        run(module, "product-selectors")


def test_product_selectors_random_trees_compile_exactly_or_are_refused() -> None:
    rng = random.Random(7)
    prev = prev_of(rasp.tokens)
    pool = [rasp.tokens, rasp.indices, rasp.Map(lambda t: t * 2 % 3, rasp.tokens), prev,
            rasp.numerical(rasp.Map(lambda t: t / 2, rasp.tokens))]
    preds = list(Cmp) + [lambda k, q: k is not None and q is not None and (k + q) % 2 == 0]
    compiled = refused = 0
    for _ in range(12):
        def tree(depth: int) -> rasp.Selector:
            if depth == 0 or rng.random() < 0.2:
                return rasp.Select(rng.choice(pool[:4]), rng.choice(pool), rng.choice(preds))
            kind = rng.choice(["and", "or", "not"])
            if kind == "not":
                return rasp.SelectorNot(tree(depth - 1))
            cls = rasp.SelectorAnd if kind == "and" else rasp.SelectorOr
            return cls(tree(depth - 1), tree(depth - 1))

        program = rasp.numerical(rasp.Aggregate(tree(4), rasp.numerical(rasp.Map(float, rasp.tokens)), default=0))
        try:
            check_preserved(program, [0, 1, 2], 4, RASP_PIPELINE, count=60, min_answers=0)
            compiled += 1
        except UnsupportedError:
            refused += 1
    assert compiled >= 3


def test_product_selectors_refuses_an_operand_with_no_finite_value_set() -> None:
    module = _unbounded_numerical_reader(lambda big, tok: R.SelectorOrOp(
        R.SelectOp(big, big, R.Comparison.LT, "lt").res, R.SelectOp(tok, tok, R.Comparison.EQ, "eq").res, "or_big"))
    with pytest.raises(UnsupportedError, match="s-op 'or_big'.*'big' is numerical with a value set that is not finite"):
        run(module, "product-selectors")


# --------------------------------------------------------------------------- discretise-numerical-operands


def _unbounded_numerical_reader(make_selector: Callable[[SSAValue, SSAValue], Operation]) -> ModuleOp:
    """A program whose numerical s-op 'big' has no finite value set, read by a selector built by the caller."""
    x = rasp.numerical(rasp.Map(lambda t: t * 1.001, rasp.tokens))
    y = rasp.numerical(rasp.Map(lambda t: t * 1.0001 + 0.5, rasp.tokens))
    module = program_to_rasp(rasp.numerical(rasp.LinearSequenceMap(x, y, 1, 1)).named("big"), list(range(300)), 2)
    program = program_of(module)
    out = program.body.block.last_op
    assert isinstance(out, R.OutputOp)
    big = out.inp
    assert R.sop_type(big).value_set is None
    tokens = next(op.res for op in program.ops if isinstance(op, R.TokensOp))
    sel_root = make_selector(big, tokens)
    new_ops: list[Operation] = []

    def collect(op: Operation) -> None:
        for v in op.operands:
            if v.owner not in new_ops and v.owner.parent is None and isinstance(v.owner, Operation):
                collect(v.owner)
        new_ops.append(op)

    collect(sel_root)
    width = R.SelectorWidthOp(sel_root.results[0], CATEGORICAL, "width")
    program.body.block.insert_ops_before([*new_ops, width], out)
    infer_op(width, program.spec)
    out.operands[0] = width.res
    module.verify()
    return module


def test_discretise_refuses_an_operand_with_no_finite_value_set() -> None:
    module = _unbounded_numerical_reader(lambda big, tok: R.SelectOp(big, tok, R.Comparison.LT, "reads_big"))
    with pytest.raises(UnsupportedError, match="s-op 'reads_big'.*numerical s-op 'big'.*not finite"):
        run(module, "discretise-numerical-operands")


def test_discretise_gives_numerical_operands_one_shared_categorical_copy() -> None:
    x = rasp.numerical(rasp.Map(lambda t: {"a": 0.5, "b": 1.5, "c": 2.5}[t], rasp.tokens)).named("x")
    lt = rasp.Select(x, x, Cmp.LT)
    pair = rasp.SequenceMap(lambda v, t: f"{v}{t}", x, rasp.tokens)
    program = rasp.SequenceMap(lambda w, p: (w, p), rasp.SelectorWidth(lt), pair)
    module = check_preserved(program, "abc", 4, "discretise-numerical-operands")
    copy = by_label(module, "x_cat")
    assert isinstance(copy, R.MapOp) and R.sop_type(copy.res).value_set == (0.5, 1.5, 2.5)
    assert copy.inp.owner is by_label(module, "x") and copy.res.name_hint == "x_cat"
    assert sum(1 for use in copy.res.uses) == 3  # keys and queries of the select, the sequence map


def test_discretise_maps_equal_numbers_read_alike_to_one_value() -> None:
    x = rasp.numerical(rasp.Map(lambda t: {"a": False, "b": 0.0, "c": 1, "d": True}[t], rasp.tokens)).named("x")
    program = rasp.SelectorWidth(rasp.Select(x, rasp.indices, Cmp.LEQ))
    module = check_preserved(program, "abcd", 4, RASP_PIPELINE)
    copy = by_label(module, "x_cat")
    assert [identity(v) for v in R.sop_type(copy.res).value_set] == [identity(False), identity(True)]


@pytest.mark.parametrize(
    "reader",
    [
        lambda x: rasp.SequenceMap(lambda v, t: f"{v!r}{t}", x, rasp.tokens).named("reader"),
        lambda x: rasp.SelectorWidth(rasp.Select(x, rasp.tokens, lambda k, q: type(k) is bool).named("reader")),
    ],
    ids=["sequence_map", "select"],
)
def test_discretise_refuses_a_reader_that_tells_equal_numbers_apart(reader: Callable[[rasp.SOp], rasp.SOp]) -> None:
    x = rasp.numerical(rasp.Map(lambda t: {"a": 1, "b": 1.0, "c": True}[t], rasp.tokens)).named("x")
    module = program_to_rasp(reader(x), list("abc"), 3)
    with pytest.raises(UnsupportedError, match=r"s-op 'reader'.*'x' can be true and (1|1.0), which one number cannot "
                                               r"tell apart, but 'reader' (maps|selects) them differently"):
        run(module, "discretise-numerical-operands")


# --------------------------------------------------------------------------- fuse-maps


def test_fuse_maps_composes_none_and_missing_entries_as_the_evaluator() -> None:
    g = rasp.Map(lambda t: None if t == "a" else t.upper(), rasp.tokens).named("g")
    f = rasp.Map(lambda s: {"B": 1}[s], g, simplify=False).named("f")  # raises on "C": outside the domain
    module = check_preserved(f, "abc", 3, "fuse-maps")
    fused = by_label(module, "f")
    assert fused.inp.owner.name == "rasp.tokens"
    assert fused.fn.get("a") == (True, None) and fused.fn.get("b") == (True, 1) and fused.fn.get("c") == (False, None)
    assert R.sop_type(fused.res).value_set == (None, 1)


def test_fuse_maps_composes_a_map_after_a_sequence_map() -> None:
    s = rasp.SequenceMap(lambda a, b: a + b, rasp.tokens, rasp.indices).named("sum")
    f = rasp.Map(lambda v: v % 2 == 0, s).named("even")
    module = check_preserved(f, [1, 2, 3], 3, "fuse-maps")
    fused = by_label(module, "even")
    assert isinstance(fused, R.SequenceMapOp) and fused.fn.get(1, 1) == (True, True)
    assert not ops(module, R.MapOp)


def test_fuse_maps_fuses_a_map_into_a_sequence_map_within_the_growth_bound() -> None:
    is_ab = rasp.Map(lambda t: t in "ab", rasp.tokens).named("is_ab")  # 4 tokens -> 2 values: growth 2
    program = rasp.SequenceMap(lambda a, i: f"{a}{i}", is_ab, rasp.indices).named("tag")
    module = check_preserved(program, "abcd", 3, "fuse-maps")
    fused = by_label(module, "tag")
    assert fused.fst.owner.name == "rasp.tokens" and fused.fn.get("c", 2) == (True, "False2")
    kept = check_preserved(program, "abcd", 3, "fuse-maps{max-growth=1}")
    assert by_label(kept, "tag").fst.owner is by_label(kept, "is_ab")


def test_fuse_maps_fuses_on_the_second_operand_with_none() -> None:
    prev = prev_of(rasp.tokens)
    up = rasp.Map(lambda t: None if t == "c" else t.upper(), rasp.tokens).named("up")
    program = rasp.SequenceMap(lambda p, u: p + u, prev, up).named("joined")
    module = check_preserved(program, "abc", 4, "fuse-maps")
    fused = by_label(module, "joined")
    assert fused.snd.owner.name == "rasp.tokens" and fused.fn.get("a", "c") == (True, None)


def test_fuse_maps_keeps_an_inner_op_with_two_uses() -> None:
    g = rasp.Map(lambda t: t.upper(), rasp.tokens).named("g")
    program = rasp.SequenceMap(lambda a, b: a + b, rasp.Map(lambda s: s + "!", g, simplify=False).named("bang"), g)
    module = check_preserved(program, "ab", 3, "fuse-maps")
    g_op = by_label(module, "g")
    assert isinstance(g_op, R.MapOp) and g_op.inp.owner.name == "rasp.tokens"  # not fused into two readers
    assert all(not (isinstance(op, R.MapOp) and op.inp.owner.name == "rasp.tokens" and op is not g_op)
               for op in ops(module))
