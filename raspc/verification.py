"""Per-pass semantic verification: after every pass, the module still computes what its input did.

The reference is the rasp-level interpreter of the pipeline's *input* IR (so an IR file alone can
be verified), and, when the Python program is known, `rasp.evaluate` for the front end's own
trace. After each pass the module runs in its own level's interpreter (rasp, craft or tensor) on
the same inputs; the first pass after which an answer differs is named in a VerificationError,
together with the smallest input showing it.

Inputs (`verify=`):
- `True` (or an int n): n random inputs (32 for True), drawn with hypothesis: a divergence is
  shrunk by hypothesis to a minimal failing input;
- `"exhaustive"`: every input up to max_seq_len when there are at most 100,000 of them (the
  first failure in (length, token order) is the smallest), else 2,000 random inputs;
- always, the edge cases: every single-token input, every all-equal input of max_seq_len.
Inputs outside the program's domain (where the evaluator raises) are skipped.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from raspc.dialects.common import InputSpec, container_of
from raspc.errors import VerificationError
from raspc.utils.values import Value, format_value, same_results

EXHAUSTIVE_LIMIT = 100_000
EXHAUSTIVE_SAMPLE = 2_000
DEFAULT_SAMPLE = 32
HYPOTHESIS_BATCH = 100
Answers = Callable[[Sequence[Sequence[Value]]], list[list[Value] | None]]


def input_space_size(spec: InputSpec) -> int:
    v = len(spec.vocab)
    return sum(v**n for n in range(1, spec.max_seq_len + 1))


def all_inputs(spec: InputSpec) -> list[list[Value]]:
    """Every input up to max_seq_len, shortest first, in vocabulary order."""
    return [list(x) for n in range(1, spec.max_seq_len + 1) for x in itertools.product(spec.vocab, repeat=n)]


def edge_inputs(spec: InputSpec) -> list[list[Value]]:
    """Every single-token input and every all-equal input of max_seq_len."""
    return [[t] for t in spec.vocab] + [[t] * spec.max_seq_len for t in spec.vocab]


def _show(xs: Sequence[Value]) -> str:
    return "[" + ", ".join(format_value(x) for x in xs) + "]"


class Verifier:
    """Checks modules against a reference on a fixed policy of inputs; use `check(pass, module)`
    or `callback` (for xDSL's PassPipeline)."""

    def __init__(self, reference: ModuleOp, verify: bool | int | str = True, *,
                 program: Any | None = None, numerical: bool | None = None):
        from raspc.analysis.value_sets import infer_program
        from raspc.dialects.rasp import ProgramOp
        from raspc.interpreters.rasp import RaspInterpreter

        reference = reference.clone()
        container = container_of(reference)
        if not isinstance(container, ProgramOp):
            raise VerificationError(f"the reference of a verification is a rasp.program, not a {container.name}")
        infer_program(container)  # a hand-written program may come without value sets
        self.spec = container.spec
        self.reference = RaspInterpreter(reference)
        self.program = program
        out_type = container.body.block.last_op.operands[0].type  # type: ignore[union-attr]
        self.numerical = not out_type.is_categorical if numerical is None else numerical  # type: ignore[attr-defined]
        self._expected: dict[tuple, list[Value] | None] = {}
        self.exhaustive = verify == "exhaustive" and input_space_size(self.spec) <= EXHAUSTIVE_LIMIT
        if verify == "exhaustive" and not self.exhaustive:
            self.sample = EXHAUSTIVE_SAMPLE
        elif isinstance(verify, int) and not isinstance(verify, bool):
            self.sample = verify
        else:
            self.sample = DEFAULT_SAMPLE
        self.fixed = all_inputs(self.spec) if self.exhaustive else edge_inputs(self.spec)

    # -- the reference ----------------------------------------------------
    def expected(self, inputs: Sequence[Sequence[Value]]) -> list[list[Value] | None]:
        missing = [list(x) for x in inputs if tuple(x) not in self._expected]
        if missing:
            for x, out in zip(missing, self.reference.run_batch(missing)):
                self._expected[tuple(x)] = out
        return [self._expected[tuple(x)] for x in inputs]

    def evaluator(self, inputs: Sequence[Sequence[Value]]) -> list[list[Value] | None]:
        """The Python program's answers (None where the evaluator raises)."""
        from raspc import rasp

        evaluate = rasp.causal_evaluate if self.spec.causal else rasp.evaluate
        out: list[list[Value] | None] = []
        for x in inputs:
            try:
                out.append(evaluate(self.program, list(x)))
            except Exception:  # noqa: BLE001 - outside the program's domain
                out.append(None)
        return out

    def diverging(self, candidate: Answers, reference: Answers, inputs: Sequence[Sequence[Value]]) -> list[tuple]:
        """(input, got, expected) for every input in the domain where `candidate` answers differently."""
        kept = [(list(x), e) for x, e in zip(inputs, reference(inputs)) if e is not None]
        if not kept:
            return []
        got = candidate([x for x, _ in kept])
        return [(x, g, e) for (x, e), g in zip(kept, got) if g is None or not same_results(e, g, self.numerical)]

    # -- checking ---------------------------------------------------------
    def check(self, pass_name: str, module: ModuleOp) -> None:
        """Raises VerificationError when `module` (at any level) answers differently from the reference."""
        from raspc.interpreters import run_module

        self._verify(pass_name, lambda xs: run_module(module, xs), self.expected)

    def check_program(self) -> None:
        """The traced rasp IR against the Python program's evaluator (the front end's own check)."""
        if self.program is not None:
            self._verify("program-to-rasp", self.expected, self.evaluator)

    def _verify(self, name: str, candidate: Answers, reference: Answers) -> None:
        from raspc import progress

        total = len(self.fixed) + (0 if self.exhaustive else self.sample)
        with progress.task(f"verifying {name}", total=total) as shown:
            self._verify_inputs(name, candidate, reference, shown)

    def _verify_inputs(self, name: str, candidate: Answers, reference: Answers, shown: Any) -> None:
        for start in range(0, len(self.fixed), 5_000):
            bad = self.diverging(candidate, reference, self.fixed[start: start + 5_000])
            if bad:
                raise self._error(name, bad[0])
            shown.update(min(start + 5_000, len(self.fixed)), "inputs")
        if self.exhaustive:
            return
        # `self.sample` random inputs drawn by hypothesis (the same ones every time); a failing batch
        # is shrunk by hypothesis, so the input reported is a minimal one.
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st

        size = min(self.sample, HYPOTHESIS_BATCH)
        rounds = -(-self.sample // size)
        one_input = st.lists(st.sampled_from(list(self.spec.vocab)), min_size=1, max_size=self.spec.max_seq_len)

        @settings(max_examples=rounds, derandomize=True, database=None, deadline=None, print_blob=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(st.lists(one_input, min_size=size, max_size=size))
        def run(batch: list[list[Value]]) -> None:
            bad = self.diverging(candidate, reference, batch)
            if bad:
                raise self._error(name, bad[0])
            shown.step("inputs", len(batch))

        run()

    def _error(self, pass_name: str, case: tuple) -> VerificationError:
        x, got, expected = case
        return VerificationError(
            f"after pass '{pass_name}' the module answers {got} on input {_show(x)}; the program gives {expected}"
        )

    def callback(self) -> Callable[[ModulePass | None, ModuleOp, ModulePass | None], None]:
        def after(prev: ModulePass | None, module: ModuleOp, nxt: ModulePass | None) -> None:
            if prev is not None:
                self.check(prev.name, module)

        return after


__all__ = ["Verifier", "VerificationError", "all_inputs", "edge_inputs", "input_space_size"]
