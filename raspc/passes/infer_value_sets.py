"""infer-value-sets: give every s-op of a rasp.program the value set the evaluator can produce.

The front end infers value sets while it traces a Python program, but a program read from a
file may leave them out (`!rasp.sop<categorical>`), and a pass that rewrites ops may make an
existing set too wide. This pass runs the value-set analysis (`raspc.analysis.value_sets`) over
the program in order and rewrites every result type with what it finds: each later pass, the
interpreter and the lowering read their tables through these sets.

It also provides `rasp_program`, which every rasp-level pass uses to find its program.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from raspc.analysis.value_sets import infer_program
from raspc.dialects import rasp as R
from raspc.dialects.common import container_of
from raspc.errors import IRError


def rasp_program(module: ModuleOp, pass_name: str, *, inferred: bool = False) -> R.ProgramOp:
    """The module's `rasp.program`, or an IRError saying the pass works at the rasp level.

    With `inferred`, a program whose value sets are not all inferred yet (hand-written IR run
    without infer-value-sets first) gets them inferred: the pass reads them."""
    container = container_of(module)
    if not isinstance(container, R.ProgramOp):
        raise IRError(f"pass '{pass_name}' works at the rasp level, but the module holds a {container.name}")
    if inferred and any(isinstance(op, R.SOpOp) and not op.result_type.is_inferred for op in container.ops):
        infer_program(container)
    return container


@dataclass(frozen=True)
class InferValueSetsPass(ModulePass):
    """Writes every s-op's inferred value set into its result type."""

    name = "infer-value-sets"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        infer_program(rasp_program(op, self.name))
