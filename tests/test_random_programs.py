"""Random well-typed RASP programs: the compiled ONNX model equals `rasp.evaluate`, or compilation
refuses with a CompileError.

The generator (tests/strategies.py) covers every primitive in both encodings, depth up to 6,
vocabularies of 2-4 strings, ints or floats, max_seq_len 2-6 and causal compiles, and what the
"exact on every input" issue is about: None keys and queries with predicates that accept None,
1 / 1.0 / True as different values, numpy scalars, means feeding comparisons, large defaults,
linear maps of means, functions that raise on some inputs, deep selector trees. For each program,
~20 random inputs run in one `apply_batch` call; inputs the evaluator rejects (it raises, or a
categorical Aggregate averages different values) are skipped. Any other exception from the
compiler, or any differing output (raspc.utils.values.same_result), is a compiler bug. Bugs already
known are recognised by their exact symptom (`KNOWN_BUGS`) and each has its own reproducer test
below, which fails loudly once the bug is fixed (then move it to REGRESSIONS).

Settings: 60 hypothesis examples, derandomized (deterministic CI), no deadline, plus 40 seeded
programs of the fuzz script's distribution (max_seq_len 2-10). With HYPOTHESIS_PROFILE set (a
profile loaded by conftest.py), the profile's max_examples / derandomize apply instead;
RASPC_RANDOM_PROGRAMS=N overrides the number of examples. The long run is
benchmarks/fuzz_random_programs.py.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import strategies as S  # noqa: E402
from raspc import rasp  # noqa: E402

N_INPUTS = 20
DEFAULT_EXAMPLES = 60


def _settings() -> settings:
    kw: dict = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    }
    if not os.environ.get("HYPOTHESIS_PROFILE"):
        # no profile chosen: the deterministic CI default
        kw.update(max_examples=DEFAULT_EXAMPLES, derandomize=True, database=None)
    examples = os.environ.get("RASPC_RANDOM_PROGRAMS")
    if examples:
        kw["max_examples"] = int(examples)
    return settings(**kw)


@_settings()
@given(gp=S.programs(max_depth=6), seed=st.integers(0, 2**32 - 1))
def test_compiled_model_equals_evaluator_or_compile_refuses(gp: S.GeneratedProgram, seed: int) -> None:
    inputs = S.random_inputs(gp, random.Random(seed), N_INPUTS)
    outcome = S.check_program(gp, inputs)
    event(f"outcome: {outcome.status}")
    if outcome.status == "refused":
        event(f"refused: {outcome.error_class}: {outcome.reason}")
        return
    if outcome.status == "ok":
        return
    bug = S.known_bug(gp, outcome)
    if bug is not None:
        event(f"known bug: {bug.id}")
        return
    note(S.describe(gp, outcome))
    _check_or_known_bug(gp, outcome)


def _check_or_known_bug(gp: S.GeneratedProgram, outcome: S.Outcome) -> None:
    if outcome.status in ("ok", "refused") or S.known_bug(gp, outcome) is not None:
        return
    if outcome.status == "crashed":
        assert outcome.error is not None
        raise AssertionError(
            f"compilation raised {S.crash_signature(outcome.error)} (not a CompileError):\n{S.describe(gp, outcome)}"
        ) from outcome.error
    raise AssertionError("the compiled model differs from rasp.evaluate:\n" + S.describe(gp, outcome))


SEEDED_PROGRAMS = 40


@pytest.mark.parametrize("chunk", range(4))
def test_seeded_random_programs(chunk: int) -> None:
    """The fuzz script's distribution (bigger programs than hypothesis draws, max_seq_len 2-10):
    programs 'test:0' .. 'test:39' (in 4 chunks, for xdist)."""
    for i in range(chunk, SEEDED_PROGRAMS, 4):
        gp = S.generate_program(random.Random(f"test:{i}"), max_depth=6, max_seq_len=(2, 10))
        outcome = S.check_program(gp, S.random_inputs(gp, random.Random(f"test:{i}:inputs"), N_INPUTS))
        _check_or_known_bug(gp, outcome)


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("bug", S.KNOWN_BUGS, ids=[b.id for b in S.KNOWN_BUGS])
def test_known_bug_reproducer(bug: S.KnownBug) -> None:
    """XFAIL while the bug exists (and its recorded symptom still matches); FAIL once it is fixed."""
    gp = bug.reproducer()
    outcome = S.check_program(gp, [*bug.inputs, *S.random_inputs(gp, random.Random(0), 10)])
    if outcome.status in ("ok", "refused"):
        pytest.fail(f"known bug '{bug.id}' no longer reproduces ({outcome.status}): move it from KNOWN_BUGS to "
                    "REGRESSIONS in tests/strategies.py so the property test checks these programs again")
    assert bug.matches(gp, outcome), (
        f"the reproducer of '{bug.id}' now fails differently; update KNOWN_BUGS:\n{S.describe(gp, outcome)}"
    )
    pytest.xfail(f"{bug.id}: {bug.summary}")


@pytest.mark.parametrize("reg", S.REGRESSIONS, ids=[r.name for r in S.REGRESSIONS])
def test_fixed_bug_stays_fixed(reg: S.Regression) -> None:
    """Programs that once broke the compiler: now exact, or refused with a CompileError (those of the
    "exact on every input" issue must compile, and answer their listed inputs as the evaluator does)."""
    gp = reg.make()
    inputs = [list(xs) for xs in reg.inputs] + S.random_inputs(gp, random.Random(0), 10)
    outcome = S.check_program(gp, inputs)
    allowed = ("ok",) if reg.must_compile else ("ok", "refused")
    assert outcome.status in allowed, S.describe(gp, outcome)
    for xs, want in zip(reg.inputs, reg.expected):
        assert rasp.evaluate(gp.program, list(xs)) == list(want)  # the evaluator's answer, as the issue states
    if reg.inputs and outcome.status == "ok":
        kept, _, _ = S.expected_outputs(gp, [list(xs) for xs in reg.inputs])
        assert len(kept) == len(reg.inputs), "every listed input is inside the evaluator's domain"


# --------------------------------------------------------------------------- the generator and the checker


def test_generator_covers_every_primitive_and_stays_small() -> None:
    seen: set[str] = set()
    for i in range(300):
        gp = S.generate_program(random.Random(i), max_depth=6)
        seen |= S.features(gp)
        assert 2 <= len(gp.vocab) <= 4 and 2 <= gp.max_seq_len <= 6
        assert gp.depth <= 7  # max_depth, +1 when the program had to be made to read tokens
        assert any(isinstance(e, (rasp.TokensType, rasp.LengthType)) for e in S._sub_exprs(gp.program))
    assert S.ALL_FEATURES - seen == set()


def test_max_depth_bounds_the_programs() -> None:
    for i in range(100):
        assert S.generate_program(random.Random(i), max_depth=2).depth <= 3


def test_max_seq_len_range() -> None:
    lens = {S.generate_program(random.Random(i), max_depth=2, max_seq_len=(4, 24)).max_seq_len for i in range(200)}
    assert min(lens) >= 4 and max(lens) <= 24 and len(lens) > 10
    assert S.generate_program(random.Random(0), max_seq_len=9, min_seq_len=9).max_seq_len == 9


def test_same_seed_same_program() -> None:
    for i in range(20):
        a, b = (S.generate_program(random.Random(i), max_seq_len=(4, 24)) for _ in range(2))
        assert a.source() == b.source() and a.vocab == b.vocab and a.causal == b.causal


def _rebuilt(source: str) -> rasp.SOp:
    env: dict = {}
    exec("from raspc import rasp\n" + S.SCRIPT_IMPORT + "\n" + source, env)
    return env["program"]


def _same_evaluation(a: rasp.SOp, b: rasp.SOp, xs: list) -> None:
    try:
        want = rasp.evaluate(a, xs)
    except Exception as err:  # noqa: BLE001
        with pytest.raises(type(err)):
            rasp.evaluate(b, xs)
        return
    got = rasp.evaluate(b, xs)
    assert [S._key(v) for v in got] == [S._key(v) for v in want]  # same values, same types


def test_source_is_an_executable_reproducer() -> None:
    """The repr hypothesis prints re-builds a program that evaluates identically (types included)."""
    for i in range(40):
        gp = S.generate_program(random.Random(1000 + i), max_seq_len=(2, 10))
        rebuilt = _rebuilt(gp.source())
        assert rasp.get_encoding(rebuilt) == rasp.get_encoding(gp.program)
        for xs in S.random_inputs(gp, random.Random(i), 8):
            _same_evaluation(gp.program, rebuilt, xs)
        again = S.GeneratedProgram.from_source(gp.source(), gp.vocab, gp.max_seq_len, gp.causal)
        assert again.source() == gp.source()


def test_script_runs() -> None:
    """GeneratedProgram.script() is a complete program: it compiles the program and prints answers."""
    import contextlib
    import io
    import os

    gp = S.REGRESSIONS[0].make()
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[1])
    try:
        with contextlib.redirect_stdout(out):
            exec(gp.script(), {})
    finally:
        os.chdir(cwd)
    assert out.getvalue().count("\n") == 4


def test_new_callables_behave_as_documented() -> None:
    import numpy as np

    assert S.NoneAware("EQ", query_none=True)(3, None) is True and S.NoneAware("EQ")(None, 3) is False
    assert S.NoneAware("LT", key_none=True)(None, 3) is True and S.NoneAware("LT")(1, 3) is True
    assert S.Raw("NEQ")(None, "a") is True
    with pytest.raises(TypeError):
        S.Raw("LT")(None, 1)
    with pytest.raises(ValueError):
        S.Pred([(1, 1)])(None, 1)
    assert S.Pred([(None, 1)], none_ok=True)(None, 1) and not S.Pred([(None, 1)], none_ok=True)(1, None)
    assert S.Shift(1)(2, 3) and not S.Shift(1)(3, 3)
    with pytest.raises(KeyError):
        S.Partial({1: "a"})(2)
    with pytest.raises(ZeroDivisionError):
        S.FloorDiv(12)(3, 3)
    assert S.FloorDiv(12)(5, 2) == 4
    assert type(S.Np(S.Table({}, default=True))(0)) is np.bool_
    assert type(S.Np(S.Table({}, default=1))(0)) is np.int64
    assert type(S.Np(S.Table({}, default=0.5))(0)) is np.float64
    assert S.Str()(1.0) == "1.0" and S.TypeName()(True) == "bool"
    for f in S.CALLABLES.values():  # every repr is in the script's import line
        assert f.__name__ in S.SCRIPT_IMPORT


def test_strategy_reprs_the_program_source() -> None:
    @settings(max_examples=5, derandomize=True, database=None, deadline=None)
    @given(S.programs(max_depth=3))
    def check(gp: S.GeneratedProgram) -> None:
        assert repr(gp).startswith("# vocab=") and repr(gp).rstrip().splitlines()[-1].startswith("program = ")

    check()


def test_checker_reports_a_wrong_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property can fail: a model of another program is caught, None is not 0, and tolerance is 1e-4."""
    from raspc.model import compile_rasp_to_model

    gp = S.GeneratedProgram.of(rasp.Map(S.Table({"a": "b"}, default=None), rasp.tokens), ["a", "b"], 3)
    wrong = rasp.Map(S.Table({"a": "b", "b": "a"}, default=None), rasp.tokens)
    monkeypatch.setattr(S, "compile_program", lambda g, **kw: compile_rasp_to_model(wrong, g.vocab, g.max_seq_len))
    outcome = S.check_program(gp, [["a"], ["b", "a"]])
    assert outcome.status == "mismatch"
    assert [m.input for m in outcome.mismatches] == [["b", "a"]]
    assert outcome.mismatches[0].expected == [None, "b"] and outcome.mismatches[0].got == ["a", "b"]


def test_result_equality_is_raspcs() -> None:
    """Categorical outputs compare by identity (1, 1.0 and True differ), numerical ones within 1e-4."""
    import numpy as np

    same = S.same_output
    assert same(None, None, False) and not same(None, 0, False) and not same(0.0, None, True)
    assert not same(True, 1, False) and not same(1, 1.0, False) and same(1, 1.0, True)
    assert same(np.float64(0.5), 0.5, False) and same(np.int64(1), 1, False) and same(np.bool_(True), True, False)
    assert same(0.5, 0.50001, True) and not same(0.5, 0.5002, True) and not same(2, 3, True)
    assert same((1, "a"), (1, "a"), False) and not same((1, "a"), (1.0, "a"), False)
    assert same(1e9, 1e9 + 50, True) and not same(1e9, 1e9 + 1e6, True)  # relative above 1


def test_categorical_means_of_equal_values_are_checked() -> None:
    """A categorical mean of equal values (the same type too) is in the domain: 1 and 1 give 1.0."""
    prog = rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), rasp.tokens)
    assert S.categorical_means_ok(prog, [1, 1])
    assert not S.categorical_means_ok(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE),
                                                     rasp.tokens), [1, 2])
    mixed = rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE),
                           rasp.SequenceMap(lambda t, i: True if i == 0 else 1, rasp.tokens, rasp.indices))
    assert not S.categorical_means_ok(mixed, ["a", "a"])  # True and 1 are different values


def test_refusals_are_compile_errors_and_counted() -> None:
    from raspc.errors import CompileError

    gp = S.GeneratedProgram.of(rasp.numerical(rasp.tokens), ["a"], 2)
    outcome = S.check_program(gp, [["a"]])
    assert outcome.status == "refused" and isinstance(outcome.error, CompileError)
    assert outcome.reason == "tokens must be categorical"


@_settings()
@given(gp=S.programs(max_depth=6))
def test_random_program_ir_round_trips_at_every_level(gp: S.GeneratedProgram) -> None:
    """print -> parse -> print is the identity for random programs at the rasp, craft and tensor levels."""
    from raspc.compiler import parse_ir
    from raspc.errors import CompileError
    from raspc.model import compile_rasp_to_model

    try:
        model = compile_rasp_to_model(gp.program, gp.vocab, gp.max_seq_len, causal=gp.causal)
    except CompileError:
        return
    for level in ("rasp", "craft", "tensor"):
        text = model.ir(level)
        assert str(parse_ir(text)) == text, level
