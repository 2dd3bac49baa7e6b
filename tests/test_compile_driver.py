"""compile_module verifies the IR where it matters: after every pass that is not raspc's own and
at the end; a failure names the pass (or the passes since the last check)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from raspc import lib, rasp, register_pass
from raspc.compiler import DEFAULT_PIPELINE, RASP_PIPELINE, compile_module
from raspc.dialects import rasp as R
from raspc.errors import IRError
from raspc.lowering.program_to_rasp import program_to_rasp


@dataclass(frozen=True)
class BreakIR(ModulePass):
    """Breaks the IR: adds a linear_sequence_map of the categorical `tokens` (its verifier refuses it)."""

    name = "test-break-ir"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        tokens = next(o for o in op.walk() if isinstance(o, R.TokensOp))
        tokens.parent_block().insert_op_after(R.LinearSequenceMapOp(tokens.res, tokens.res, 1, 1, "bad"), tokens)


register_pass(BreakIR)


def _module() -> ModuleOp:
    return program_to_rasp(lib.make_hist(), ["a", "b", "c"], 4)


def test_a_custom_pass_is_verified_at_once_and_named() -> None:
    with pytest.raises(IRError, match=r"IR after pass 'test-break-ir' does not verify: .*numerical"):
        compile_module(_module(), f"test-break-ir,{DEFAULT_PIPELINE}")


def test_passes_verified_together_are_all_named() -> None:
    # raspc's own passes before it are checked with it (the custom pass is verified at once)
    with pytest.raises(IRError, match=r"IR after passes 'infer-value-sets', 'combine-selectors', "
                                      r"'test-break-ir' \(verified together; verify=True checks each\)"):
        compile_module(_module(), f"infer-value-sets,combine-selectors,test-break-ir,{DEFAULT_PIPELINE}")


def test_the_pipeline_ends_verified_and_compiles() -> None:
    module = compile_module(_module(), RASP_PIPELINE)
    module.verify()
    assert isinstance(next(iter(module.ops)), R.ProgramOp)


def test_a_select_predicate_over_too_many_pairs_is_refused_at_once() -> None:
    """Fuzz seed 11, #2011 ran for minutes: a select comparing two inexact means (10,125 x 2,789
    values) tabulated its predicate on every pair. Now the tabulation budget refuses it first."""
    from raspc import compile_rasp_to_model
    from raspc.errors import ValueSetError

    mean_a = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.GT),
                                           rasp.numerical(rasp.ConstantSOp([1, -2, 0, 1, 3, -1, 3, 1, -2, 0, 3, 0.5,
                                                                            0.2, 1, -2, 0.5])), default=-1))
    mean_b = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ),
                                           rasp.numerical(rasp.ConstantSOp([0.2, 3, 0.1, -7, 0.3, 5])), default=0))
    program = rasp.SelectorWidth(rasp.Select(mean_a, mean_b, rasp.Comparison.LT).named("compare_means"))
    with pytest.raises(ValueSetError, match=r"'compare_means'.* value sets \d+ x \d+ are too large to tabulate"):
        compile_rasp_to_model(program, [0, 1], 28)
