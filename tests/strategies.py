"""Random well-typed RASP programs for the property tests (hypothesis) and the fuzz run, and the
property they check.

The generator itself is the package's (`raspc.random_programs`: `GeneratedProgram`, the random
functions `Table`, `Pred`, `NoneAware`..., `Knobs`, `generate_program`, `random_inputs`); this module
re-exports it and adds what only testing needs:

- `programs()`, the hypothesis strategy: the same generator with a chooser that draws from
  hypothesis (so failures shrink); `generate_program(random.Random(s))` is its seeded twin for
  `benchmarks/fuzz_random_programs.py`;
- `check_program`, the property itself, shared by the test and the fuzz script: compiling either
  raises a CompileError or gives a model whose answers equal the evaluator's (`same_output`, i.e.
  raspc.utils.values.same_result) on every input the evaluator accepts;
- `features(gp)`, what a program contains (`ALL_FEATURES` is the full list), for coverage;
- `KNOWN_BUGS`, the compiler bugs found and not yet fixed (recognised by their exact symptom), and
  `REGRESSIONS`, the reproducers of those already fixed (and the examples of the "exact on every
  input" issue).

The generator's coverage (None-aware predicates, 1 / 1.0 / True as different values, numpy scalars,
means feeding comparisons, large defaults, functions raising on some inputs, deep selector trees,
causal programs) is described in raspc/random_programs.py.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from raspc import rasp
from raspc.random_programs import *  # noqa: F403 - the generator, re-exported for the tests and the fuzzer
from raspc.random_programs import (  # noqa: F401 - helpers the tests and the fuzzer use by name
    CALLABLES,
    CAT,
    NUM,
    SCRIPT_IMPORT,
    Chooser,
    GeneratedProgram,
    Knobs,
    Node,
    NoneAware,
    Pred,
    RandomChooser,
    Raw,
    Shift,
    _Generator,
    _key,
    _seq_len_range,
    _sub_exprs,
    generate_program,
    random_inputs,
)

try:  # hypothesis is a dependency of raspc, but the fuzz script must not need it to import
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None  # type: ignore[assignment]


class DrawChooser(Chooser):
    def __init__(self, draw: Callable[[Any], Any]):
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        if lo == hi:
            return lo
        return self.draw(st.integers(lo, hi))


def programs(max_depth: int = 6, max_seq_len: int | tuple[int, int] = 6, min_seq_len: Optional[int] = None):
    """Hypothesis strategy of `GeneratedProgram`s (readable repr: the program's source)."""
    lo, hi = _seq_len_range(max_seq_len, min_seq_len)
    knobs = Knobs(max_depth=max(1, max_depth), seq_len=(max(1, min(lo, hi)), max(2, hi)))

    @st.composite
    def _programs(draw):
        return _Generator(DrawChooser(draw), knobs).generate()

    return _programs()


# --------------------------------------------------------------------------- the property


@dataclass
class Mismatch:
    input: list
    expected: list
    got: list

    def __str__(self) -> str:
        return f"input {self.input!r}: expected {self.expected!r}, got {self.got!r}"


@dataclass
class Outcome:
    status: str  # "ok" | "refused" | "crashed" | "mismatch" (the fuzz script adds "timeout")
    error: Optional[BaseException] = None
    checked: int = 0  # inputs compared
    skipped: int = 0  # inputs outside the evaluator's semantics (it raised, or a categorical mean)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def error_class(self) -> str:
        return type(self.error).__name__ if self.error is not None else ""

    @property
    def reason(self) -> str:
        return normalise_reason(self.error) if self.error is not None else ""


_PREFIX = re.compile(r"^s-op '[^']*'(?: \([^)]*\))?: ")


def normalise_reason(err: BaseException) -> str:
    """The error message with the culprit's label and all values abstracted away (for counting)."""
    text = str(err).split("\n")[0]
    text = _PREFIX.sub("", text)
    text = re.sub(r"(?<!\w)'[^']*'", "'…'", text)  # not a possessive (selects' keys)
    text = re.sub(r'"[^"]*"', "'…'", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    text = re.sub(r"\((?:[^()]|\([^()]*\))*\)", "(…)", text)
    text = re.sub(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "N", text)
    return text[:140]


def same_output(expected: Any, got: Any, numerical: bool, tol: float = 1e-4) -> bool:
    """raspc's one result equality (raspc.utils.values.same_result): categorical by identity (1, 1.0
    and True differ), numerical within `tol`, None only equals None, numpy scalars normalised."""
    from raspc.utils.values import same_result

    return same_result(expected, got, numerical, tol)



def _evaluate_all(program: rasp.RASPExpr, xs: Sequence[Any]) -> tuple[Any, dict[int, Any]]:
    """The program's output and every sub-expression's value (one evaluation, shared sub-s-ops once)."""
    ev = rasp.DefaultRASPEvaluator()
    ev._memo = {}  # keep the memo: each expression's value by id
    out = ev._evaluate(program, list(xs))
    return out, {k: v for k, (_, v) in ev._memo.items()}


def _categorical_means_ok(program: rasp.SOp, values: dict[int, Any]) -> bool:
    for e in _sub_exprs(program):
        if isinstance(e, rasp.Aggregate) and rasp.is_categorical(e):
            sel, vals = values[id(e.selector)], values[id(e.sop)]
            for row in sel:
                chosen = [v for s, v in zip(row, vals) if s]
                if len(chosen) > 1 and (any(v is None for v in chosen) or any(_key(v) != _key(chosen[0]) for v in chosen)):
                    return False
    return True


def categorical_means_ok(program: rasp.SOp, xs: Sequence[Any]) -> bool:
    """False when a categorical Aggregate averages different values on `xs` (or averages None): the
    evaluator's mean is then not a value of the s-op and no categorical model can produce it. Values
    are different by identity (1 and True are; 1 and 1 average to 1.0, which the model must give)."""
    return _categorical_means_ok(program, _evaluate_all(program, xs)[1])


def expected_outputs(gp: GeneratedProgram, inputs: Sequence[Sequence[Any]]) -> tuple[list[list], list[list], int]:
    """(inputs kept, their evaluator outputs, number skipped)."""
    kept, outs, skipped = [], [], 0
    for xs in inputs:
        try:
            out, values = _evaluate_all(gp.program, xs)
            ok = len(out) == len(xs) and _categorical_means_ok(gp.program, values)
        except Exception:  # noqa: BLE001 - outside the evaluator's semantics: skip this input
            ok = False
        if ok:
            kept.append(list(xs))
            outs.append(out)
        else:
            skipped += 1
    return kept, outs, skipped


def compile_program(gp: GeneratedProgram, **kw: Any):
    from raspc.model import compile_rasp_to_model

    return compile_rasp_to_model(gp.program, gp.vocab, gp.max_seq_len, causal=gp.causal, **kw)


def check_program(gp: GeneratedProgram, inputs: Sequence[Sequence[Any]], tol: float = 1e-4, **compile_kw: Any) -> Outcome:
    """The property: compiling either raises a CompileError (a documented refusal) or gives a model
    equal to `rasp.evaluate` on every input the evaluator accepts (`same_output`). All inputs run in
    one batch. `compile_kw` go to compile_rasp_to_model (e.g. reuse_residual=True)."""
    from raspc.errors import CompileError

    try:
        model = compile_program(gp, **compile_kw)
    except CompileError as err:
        return Outcome("refused", err)
    except Exception as err:  # noqa: BLE001 - anything else is a compiler bug
        return Outcome("crashed", err)
    kept, expected, skipped = expected_outputs(gp, inputs)
    outcome = Outcome("ok", skipped=skipped, checked=len(kept))
    if not kept:
        return outcome
    if compile_kw.get("reuse_residual"):
        # shared dimensions live in the transformer-shaped graph (the compact one is the default model's)
        from raspc.runtime import OnnxModel

        model = OnnxModel(model.onnx_model.SerializeToString())
    try:
        got = model.apply_batch([["BOS", *xs] for xs in kept])
    except Exception as err:  # noqa: BLE001
        return Outcome("crashed", err, skipped=skipped)
    numerical = rasp.is_numerical(gp.program)
    for xs, exp, g in zip(kept, expected, got):
        if (len(g) != len(xs) + 1 or g[0] != "BOS"
                or not all(same_output(e, v, numerical, tol) for e, v in zip(exp, g[1:]))):
            outcome.mismatches.append(Mismatch(xs, exp, g[1:]))
    if outcome.mismatches:
        outcome.status = "mismatch"
    return outcome


# --------------------------------------------------------------------------- coverage


def _enc(e: rasp.SOp) -> str:
    return "num" if rasp.is_numerical(e) else "cat"


def features(gp: GeneratedProgram) -> set[str]:
    """The primitives (with encodings) the program really contains, after rasp's own simplifications
    (Map fusion, merged selects), plus the generator's tags of the nodes it is built from (None-aware
    predicates, mixed number types, numpy scalars, means feeding comparisons, ...)."""
    out: set[str] = {"causal"} if gp.causal else set()
    if any(isinstance(v, float) for v in gp.vocab):
        out.add("float tokens")
    for n in gp.reachable():
        out |= gp.nodes[n].tags
    for e in _sub_exprs(gp.program):
        if isinstance(e, (rasp.TokensType, rasp.LengthType)):
            out.add(e.label)
        elif isinstance(e, (rasp.IndicesType, rasp.Full, rasp.ConstantSOp)):
            out.add(f"{rasp.default_name(e)} {_enc(e)}")
        elif isinstance(e, rasp.Map):
            out.add(f"map {_enc(e.inner)}->{_enc(e)}")
        elif isinstance(e, rasp.LinearSequenceMap):
            out.add(f"linear_sequence_map {_enc(e)}")
        elif isinstance(e, rasp.SequenceMap):
            out.add(f"sequence_map ->{_enc(e)}")
            if e.fst is e.snd:
                out.add("sequence_map same operand")
            if _enc(e.fst) == "num" or _enc(e.snd) == "num":
                out.add("sequence_map numerical operand")
        elif isinstance(e, rasp.Select):
            p = e.predicate
            out.add(f"select {p.name}" if isinstance(p, rasp.Comparison) else
                    "select table" if isinstance(p, Pred) else
                    "select none-aware" if isinstance(p, (NoneAware, Raw)) else
                    "select shift" if isinstance(p, Shift) else "select merged/negated")
            if _enc(e.keys) == "num" or _enc(e.queries) == "num":
                out.add("select numerical operand")
        elif isinstance(e, (rasp.SelectorAnd, rasp.SelectorOr, rasp.SelectorNot)):
            out.add(rasp.default_name(e))
        elif isinstance(e, rasp.Aggregate):
            out.add(f"aggregate {_enc(e)}")
        elif isinstance(e, rasp.SelectorWidth):
            out.add(f"selector_width {_enc(e)}")
    return out


# The generator's tags (Node.tags) and vocabulary features.
TAG_FEATURES = frozenset({
    "float tokens", "select over maybe-None", "predicate accepts None", "selector tree over maybe-None",
    "selector tree height>=3", "map over maybe-None", "mixed number types", "numpy scalars", "str/type of values",
    "mean -> select", "mean -> map", "mean -> comparison", "mean -> linear_sequence_map", "large default",
    "linear_sequence_map of means", "function raises on some inputs", "shifted aggregate",
})

ALL_FEATURES = frozenset({
    "tokens", "length", "indices cat", "indices num", "full cat", "full num", "constant_sop cat", "constant_sop num",
    "map cat->cat", "map cat->num", "map num->num", "map num->cat", "sequence_map ->cat", "sequence_map ->num",
    "sequence_map same operand", "sequence_map numerical operand", "linear_sequence_map num",
    "linear_sequence_map cat", *(f"select {c.name}" for c in rasp.Comparison), "select table",
    "select merged/negated", "select none-aware", "select shift", "select numerical operand", "selector_and",
    "selector_or", "selector_not", "aggregate cat", "aggregate num", "selector_width cat", "selector_width num",
    "causal", *TAG_FEATURES,
})


# --------------------------------------------------------------------------- known compiler bugs


@dataclass(frozen=True)
class KnownBug:
    """A compiler bug the random programs find, recognised by its exact symptom so the property
    test stays honest about everything else. Once fixed, move its reproducer to REGRESSIONS (its
    test in tests/test_random_programs.py fails until then, saying so).

    A crash is recognised by exception class, message and a traceback frame ("file.py:function");
    a mismatch by `explains(gp, mismatch)`, which must hold for every mismatching input."""

    id: str
    summary: str
    reproducer: Callable[[], GeneratedProgram]
    error: str = ""  # regex matching the exception's class name (crashes)
    message: str = ""  # regex searched in str(error)
    frame: str = ""  # regex that some traceback frame's "file.py:function" must match
    causal_only: bool = False
    explains: Optional[Callable[[GeneratedProgram, "Mismatch"], bool]] = None  # (mismatches)
    inputs: tuple = ()  # inputs that show it, when random ones rarely do

    def matches(self, gp: GeneratedProgram, outcome: "Outcome") -> bool:
        import traceback

        if self.causal_only and not gp.causal:
            return False
        if outcome.status == "mismatch":
            return self.explains is not None and all(self.explains(gp, m) for m in outcome.mismatches)
        err = outcome.error
        if outcome.status != "crashed" or err is None or not self.error:
            return False
        if not re.fullmatch(self.error, type(err).__name__) or not re.search(self.message, str(err)):
            return False
        frames = traceback.extract_tb(err.__traceback__)
        return any(re.search(self.frame, f"{f.filename.replace(chr(92), '/').rsplit('/', 1)[-1]}:{f.name}")
                   for f in frames)


def _repro_width_precision() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.Map(Table({5: 3}, default=0), "
               "rasp.SelectorWidth(rasp.Select(rasp.length, rasp.length, rasp.Comparison.EQ))))", ["a"], 6)


def _repro_causal_empty_select() -> GeneratedProgram:
    return _gp("rasp.Aggregate(rasp.Select(rasp.indices, rasp.Map(Table({}, default=None), rasp.tokens), "
               "rasp.Comparison.EQ), rasp.tokens, default='a')", ["a", "b"], 3, causal=True)


def _repro_none_through_lsm() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.Map(Table({0: 0, 1: 0}, default=0), rasp.LinearSequenceMap("
               "rasp.Map(Table({0: 0}, default=None), rasp.tokens), rasp.tokens, 1, 1)))", [0, 1], 2)


def _repro_lost_default() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT), "
               "rasp.numerical(rasp.Map(Table({'y': 2}, default=1e9), rasp.tokens)), default=5))", ["y", "z"], 3)


def _repro_empty_readout() -> GeneratedProgram:
    return _gp("rasp.Aggregate(rasp.SelectorNot(rasp.SelectorNot(rasp.Select(rasp.tokens, rasp.tokens, "
               "rasp.Comparison.FALSE))), rasp.tokens)", ["b"], 2)


def _repro_numpy_downstream() -> GeneratedProgram:
    return _gp("rasp.SequenceMap(FloorDiv(12), rasp.Map(Np(Table({'a': 1, 'b': 2}, default=0)), rasp.tokens), "
               "rasp.Map(Table({}, default=1), rasp.tokens))", ["a", "b"], 3)


def _repro_large_output_leak() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.Map(Table({'b': 1e9}, default=-2), rasp.Aggregate(rasp.Select(rasp.tokens, "
               "rasp.tokens, rasp.Comparison.LT), rasp.tokens, default='c'), simplify=False))", ["a", "b"], 3)


def _repro_dense_map() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.Map(Affine(3, 3), rasp.numerical(rasp.LinearSequenceMap(rasp.numerical("
               "rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, Raw('NEQ')), rasp.numerical(rasp.indices), "
               "default=0)), rasp.numerical(rasp.indices), 1, -4.5)), simplify=False))", ["x", "y"], 10)


def _repro_numpy_in_tuples() -> GeneratedProgram:
    return _gp("rasp.Map(Str(), rasp.SequenceMap(Pair(), rasp.tokens, rasp.Map(Np(Table({}, default=True)), "
               "rasp.tokens)), simplify=False)", ["w"], 2)


def _repro_large_table_outputs() -> GeneratedProgram:
    return _gp("rasp.numerical(rasp.SequenceMap(Table2({(2, 'b'): -1e6}, default=1), "
               "rasp.numerical(rasp.ConstantSOp([0.2, False, 0.5, 2, 0.5])), rasp.tokens))", ["b", "c"], 5)


def _repro_mean_through_categorical_copy() -> GeneratedProgram:
    # fuzz seed 7, #5044: a numerical mean (1.6667) copied to categorical by discretisation came out
    # 1 - 8e-6 in float32 (two ramp units rounding in different binades); the next head's scale (208)
    # turned that into unequal attention weights, so a numerical mean over the selection was off by
    # ~2e-4. Fixed by exact ramps for 0/1 outputs (raspc.constructions.mlp._exact_ramp)
    return _gp("rasp.numerical(rasp.Aggregate(rasp.Select(rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, "
               "rasp.tokens, rasp.Comparison.NEQ), rasp.numerical(rasp.indices), default=0)), rasp.indices, "
               "rasp.Comparison.NEQ), rasp.numerical(rasp.indices), default=0))", [0, 1], 11)


KNOWN_BUGS: tuple[KnownBug, ...] = ()  # none open: fixed ones move to REGRESSIONS


@dataclass(frozen=True)
class Regression:
    """A program that once broke the compiler. It must now compile exactly or be refused; with
    `must_compile` it must compile, and `inputs` (with `expected`, the evaluator's answers, when
    given) are checked besides the random ones."""

    name: str
    make: Callable[[], GeneratedProgram]
    inputs: tuple = ()
    expected: tuple = ()
    must_compile: bool = False


_PREV = "rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - 1), rasp.tokens)"

# Bugs the random programs (and the "exact on every input" issue) found, now fixed.
REGRESSIONS: tuple[Regression, ...] = (
    Regression("indices-both-encodings", lambda: _gp(
        "rasp.SequenceMap(Pair(), rasp.tokens, rasp.SequenceMap(Pair(), rasp.indices, rasp.numerical(rasp.indices)))",
        ["a"], 2)),
    Regression("indices-both-encodings-aggregate", lambda: _gp(
        "rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.tokens, Pred([(0, 'x'), (1, 'x'), (3, 'x'), "
        "(0, 'y'), (1, 'y'), (2, 'y')])), rasp.numerical(rasp.indices), default=-1))", ["x", "y"], 4)),
    Regression("numerical-sequence-map-neuron-name", lambda: _gp(
        "rasp.numerical(rasp.SequenceMap(Table2({('a', 0): 1, ('a', 1): 2}, default=0), rasp.tokens, rasp.indices))",
        ["a"], 2)),
    Regression("numerical-map-fused-onto-sequence-map", lambda: _gp(
        "rasp.numerical(rasp.Map(Table({2: 1, 1: -1, 0: 0.5, -1: -1, -2: 1, -3: -1, 4: 0.5, 3: 0.5, 6: -2, 5: 3}, "
        "default=-2), rasp.LinearSequenceMap(rasp.tokens, rasp.indices, 2, -1)))", [1, 2, 3], 6)),
    Regression("causal-probe-constant-length", lambda: _gp(
        "rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ), "
        "rasp.SequenceMap(Pair(), rasp.tokens, rasp.ConstantSOp([1])))", ["a"], 2, causal=True)),
    Regression("causal-probe-categorical-mean", lambda: _gp(
        "rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), "
        "rasp.Map(Table({0: 'x'}, default='y'), rasp.indices))", ["a"], 2, causal=True)),
    Regression("empty-output-value-set", lambda: _gp("rasp.Map(Table({}, default=None), rasp.tokens)", ["a"], 2)),
    Regression("causal-probe-empty-sequence-map", lambda: _gp(
        "rasp.SequenceMap(Pair(), rasp.Map(Table({}, default=None), rasp.tokens), rasp.tokens)", ["a"], 2,
        causal=True)),
    Regression("discretise-rational-collapse", lambda: _gp(
        "rasp.SequenceMap(Pair(), rasp.Map(Above(0.3), rasp.numerical(rasp.ConstantSOp([0.1 + 0.2, 0.3]))), "
        "rasp.tokens)", ["a"], 2)),
    Regression("causal-probe-empty-select", _repro_causal_empty_select),
    Regression("none-through-categorical-linear-sequence-map", _repro_none_through_lsm),
    Regression("selector-width-inexact-one-hot", _repro_width_precision),
    # the issue "exact on every input": each compiles, and answers like the evaluator
    Regression("none-key-custom-predicate", lambda: _gp(
        f"rasp.SelectorWidth(rasp.Select({_PREV}, rasp.tokens, lambda k, q: k != q))", ["a", "b"], 4),
        inputs=(["a"], ["a", "b", "a"]), expected=([1], [2, 2, 2]), must_compile=True),
    Regression("categorical-mean-of-equal-ints-is-float", lambda: _gp(
        "rasp.Map(str, rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), rasp.tokens))",
        [1, 2], 4), inputs=([1, 1], [2]), expected=(["1.0", "1.0"], ["2"]), must_compile=True),
    Regression("bool-and-int-are-different-values", lambda: _gp(
        "rasp.Map(lambda v: type(v).__name__, rasp.SequenceMap(lambda a, b: True if a == 'a' else 1, "
        "rasp.tokens, rasp.indices))", ["a", "b"], 4), inputs=(["a", "b"],), expected=(["bool", "int"],),
        must_compile=True),
    Regression("large-numerical-default", lambda: _gp(
        "rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), "
        "rasp.numerical(rasp.Map(lambda t: 1, rasp.tokens)), default=1e9))", [1, 2], 4),
        inputs=([1, 2, 1],), expected=([1, 1, 1],), must_compile=True),
    Regression("function-raising-outside-the-domain", lambda: _gp(
        "rasp.SequenceMap(lambda n, i: 12 // (n - i), rasp.length, rasp.indices)", ["a"], 5),
        inputs=(["a"], ["a", "a", "a", "a", "a"]), expected=([12], [2, 3, 4, 6, 12]), must_compile=True),
    Regression("none-aware-select-or-negated", lambda: _gp(
        f"rasp.numerical(rasp.Aggregate(~rasp.Select({_PREV}, rasp.tokens, NoneAware('EQ', query_none=True)) "
        f"| rasp.Select({_PREV}, rasp.tokens, lambda k, q: k is None), "
        "rasp.numerical(rasp.Map(Table({'a': 1}, default=0), rasp.tokens)), default=0))", ["a", "b"], 5),
        must_compile=True),
    Regression("linear-sequence-map-of-means-float-noise", lambda: _gp(
        "rasp.numerical(rasp.LinearSequenceMap(*[rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, "
        "rasp.indices, rasp.Comparison.LEQ), rasp.numerical(rasp.Map(Table({'a': 1}, default=0), rasp.tokens)), "
        "default=0))] * 2, 3, -1))", ["a", "b"], 6), must_compile=True),
    Regression("numpy-scalars-from-maps", lambda: _gp(
        "rasp.SequenceMap(Pair(), rasp.Map(Np(Table({'a': 1, 'b': 0.5}, default=True)), rasp.tokens), "
        "rasp.numerical(rasp.Map(Np(Table({'a': 2.5}, default=1)), rasp.tokens)))", ["a", "b", "c"], 4)),
    # found by the extended generator, fixed in 44a427a
    Regression("numpy-scalars-normalised-too-early", _repro_numpy_downstream),
    Regression("numerical-aggregate-loses-default", _repro_lost_default, must_compile=True),
    Regression("large-values-amplify-leaks", _repro_large_output_leak, must_compile=True),
    Regression("numerical-map-of-dense-values-inexact", _repro_dense_map, must_compile=True),
    Regression("empty-selector-readout", _repro_empty_readout),
    Regression("large-table-outputs-inexact", _repro_large_table_outputs, must_compile=True),
    Regression("numpy-scalars-in-tuples-normalised", _repro_numpy_in_tuples),
    # found by the fuzz run on 81f72e7: a far embedded value (1e9) blurred the steps between small ones
    Regression("far-value-blurs-select-key", lambda: _gp(
        "rasp.numerical(rasp.Aggregate(rasp.Select(rasp.numerical(rasp.ConstantSOp([2, -1, 3, 1e9, 2])), "
        "rasp.Full(-1), Pred([(-1, -1)])), rasp.numerical(rasp.Map(Table({4: 1}, default=2), rasp.tokens)), "
        "default=0))", [3, 4], 5), must_compile=True),
    Regression("far-value-blurs-sequence-map-operand", lambda: _gp(
        "rasp.SequenceMap(Table2({(1, -1): 'z'}, default=None), rasp.tokens, rasp.numerical(rasp.ConstantSOp("
        "[2, 3, 0, 2, 0, 1, 2, 1, 1e9, 1, 0.2, -1, 0.5, 1, 1, 0.5])))", [1], 16), must_compile=True),
    Regression("far-value-blurs-numerical-map", lambda: _gp(
        "rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.GT), rasp.numerical("
        "rasp.Map(Table({2: 0.5}, default=0), rasp.numerical(rasp.ConstantSOp([2, -1, 1, 1e9, 1])))), default=0))",
        ["y", "z"], 5), must_compile=True),
    Regression("float-tokens-categorical-mean", lambda: _gp(
        "rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), rasp.tokens)",
        [0.1, 0.2, 0.7, 1.0], 6), inputs=([0.1, 0.1, 0.1], [0.7, 0.2, 0.7]), must_compile=True),
    # found by the fuzz run on 1351cd3 (seed 7): a categorical copy of a mean was 1 - 8e-6, not 1
    Regression("mean-through-categorical-copy", _repro_mean_through_categorical_copy,
               inputs=([0, 1, 0, 0],), expected=([1.5, 1, 1.5, 1.5],), must_compile=True),
    # fuzz seed 7, #5627: an MLP reading only constant directions (a linear map of two maps that
    # cancel) had nothing to tabulate in the compact graph (StopIteration)
    Regression("compact-mlp-of-constants-only", lambda: _gp(
        "rasp.numerical(rasp.LinearSequenceMap(rasp.numerical(rasp.LinearSequenceMap(rasp.numerical(rasp.indices), "
        "rasp.numerical(rasp.indices), 1, -1)), rasp.numerical(rasp.Map(Table({}, default=-2), rasp.tokens)), 2, 0))",
        [4], 2), inputs=([4], [4, 4]), expected=([0], [0, 0]), must_compile=True),
)


def _gp(source: str, vocab: Sequence[Any], max_seq_len: int, causal: bool = False) -> GeneratedProgram:
    """A GeneratedProgram from one expression written with rasp, this module's functions and lambdas."""
    env = {"rasp": rasp, "np": np, **CALLABLES}
    return GeneratedProgram.of(eval(source, env), vocab, max_seq_len, causal, source)  # noqa: S307 - our own text


def known_bug(gp: GeneratedProgram, outcome: "Outcome") -> Optional[KnownBug]:
    return next((b for b in KNOWN_BUGS if b.matches(gp, outcome)), None)


def crash_signature(err: BaseException) -> str:
    """Class, innermost raspc function and normalised message of an unexpected exception."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    inner = next((f for f in reversed(frames) if "/raspc/" in f.filename.replace("\\", "/")), frames[-1] if frames else None)
    where = f"{inner.filename.rsplit('/', 1)[-1]}:{inner.name}" if inner else "?"
    return f"{type(err).__name__} in {where}: {normalise_reason(err)}"


def describe(gp: GeneratedProgram, outcome: Outcome, limit: int = 3) -> str:
    lines = [gp.source()]
    if outcome.error is not None:
        lines.append(f"{outcome.status}: {type(outcome.error).__name__}: {outcome.error}")
    for m in outcome.mismatches[:limit]:
        lines.append(str(m))
    return "\n".join(lines)


__all__ = [
    *CALLABLES, "GeneratedProgram", "Node", "Outcome", "Mismatch", "Chooser", "RandomChooser", "DrawChooser",
    "programs", "generate_program", "random_inputs", "check_program", "expected_outputs", "categorical_means_ok",
    "same_output", "normalise_reason", "describe", "compile_program", "features", "ALL_FEATURES", "TAG_FEATURES",
    "KnownBug", "KNOWN_BUGS", "Regression", "REGRESSIONS", "known_bug", "crash_signature", "SCRIPT_IMPORT",
]

if __name__ == "__main__":  # a quick look: python tests/strategies.py [seed]
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    g = generate_program(random.Random(seed))
    print(g.source())
