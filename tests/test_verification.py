"""Per-pass verification strong enough to catch a pass that breaks a few inputs: exhaustive inputs,
hypothesis-drawn ones shrunk to a minimal failing input, and an IR file as its own reference."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xdsl.passes import ModulePass

from raspc import lib, rasp, register_pass
from raspc.compiler import DEFAULT_PIPELINE, compile_module
from raspc.dialects import rasp as R
from raspc.errors import VerificationError
from raspc.lowering.program_to_rasp import program_to_rasp
from raspc.model import compile_rasp_to_model
from raspc.verification import EXHAUSTIVE_LIMIT, Verifier, all_inputs, edge_inputs, input_space_size


@register_pass
@dataclass(frozen=True)
class BreakRareInputs(ModulePass):
    """Deliberately wrong: the map after `hist` answers 1 where the count is 3 (only inputs with
    three equal tokens show it)."""

    name = "test-break-rare-inputs"

    def apply(self, ctx, op) -> None:  # noqa: ANN001
        for o in op.walk():
            if isinstance(o, R.MapOp) and o.label_str == "shifted":
                entries = [((a,), (1 if out == 3 else out)) for (a,), out in o.fn.data]
                o.properties["fn"] = R.TableAttr.of(entries)


@register_pass
@dataclass(frozen=True)
class BreakEveryB(ModulePass):
    """Deliberately wrong: maps the token "b" to what "a" maps to."""

    name = "test-break-b"

    def apply(self, ctx, op) -> None:  # noqa: ANN001
        for o in op.walk():
            if isinstance(o, R.MapOp) and o.label_str == "code":
                table = dict((a, out) for (a,), out in o.fn.data)
                table["b"] = table["a"]
                o.properties["fn"] = R.TableAttr.of([((k,), v) for k, v in table.items()])


def shifted_hist() -> rasp.SOp:
    return rasp.Map(lambda w: w, lib.make_hist()).named("shifted")


def coded_tokens() -> rasp.SOp:
    return rasp.Map(lambda t: {"a": 1, "b": 2, "c": 3}[t], rasp.tokens).named("code")


def test_inputs_exhaustive_and_edges() -> None:
    module = program_to_rasp(lib.make_hist(), ["a", "b"], 3)
    spec = module.ops.first.spec  # type: ignore[union-attr]
    assert input_space_size(spec) == 2 + 4 + 8 == len(all_inputs(spec))
    assert all_inputs(spec)[0] == ["a"] and all_inputs(spec)[-1] == ["b", "b", "b"]
    assert edge_inputs(spec) == [["a"], ["b"], ["a", "a", "a"], ["b", "b", "b"]]
    assert Verifier(module, "exhaustive").exhaustive
    assert not Verifier(program_to_rasp(lib.make_hist(), list(range(20)), 8), "exhaustive").exhaustive
    assert EXHAUSTIVE_LIMIT == 100_000


def test_exhaustive_catches_a_pass_that_breaks_rare_inputs_and_names_the_smallest() -> None:
    pipeline = "test-break-rare-inputs," + DEFAULT_PIPELINE
    with pytest.raises(VerificationError) as info:
        compile_rasp_to_model(shifted_hist(), ["a", "b", "c"], 4, pipeline=pipeline, verify="exhaustive")
    message = str(info.value)
    assert "after pass 'test-break-rare-inputs'" in message
    assert 'on input ["a", "a", "a"]' in message  # the first failure in (length, token order)


def test_random_inputs_are_shrunk_by_hypothesis_to_a_minimal_one() -> None:
    pipeline = "test-break-b," + DEFAULT_PIPELINE
    with pytest.raises(VerificationError) as info:
        compile_rasp_to_model(coded_tokens(), ["a", "b", "c"], 6, pipeline=pipeline, verify=True)
    assert 'on input ["b"]' in str(info.value), str(info.value)  # every failing input shrinks to ["b"]


def test_a_correct_pipeline_passes_every_mode() -> None:
    for verify in (True, 50, "exhaustive"):
        model = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3], 3, verify=verify)
        assert model.apply(["BOS", 3, 1, 2]).decoded == ["BOS", 1, 2, 3]


def test_an_ir_file_is_its_own_reference() -> None:
    """A rasp-level module alone (no Python program) checks every pass of a pipeline."""
    module = program_to_rasp(coded_tokens(), ["a", "b", "c"], 4)
    verifier = Verifier(module.clone(), "exhaustive")
    compile_module(module.clone(), DEFAULT_PIPELINE, verifier=verifier)
    with pytest.raises(VerificationError, match="test-break-b"):
        compile_module(module, "test-break-b," + DEFAULT_PIPELINE, verifier=verifier)
