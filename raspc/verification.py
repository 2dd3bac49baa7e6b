"""Per-pass verification: after every pass, the module still computes the program's function.

Each level has a reference executor: the rasp interpreter (tables only), the craft level through
its standard lowering on a clone (allocate-layers, layout-residual, lower-craft-to-tensor), and the
tensor interpreter. After each pass the module runs on the same random inputs and is compared with
`rasp.evaluate`; the first pass after which an answer differs is named in the error.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from raspc import rasp
from raspc.errors import RaspcError


class VerificationError(RaspcError):
    """A pass changed what the program computes (a compiler bug: please report it with the program)."""


def random_inputs(vocab: Sequence[Any], max_seq_len: int, n: int, seed: int = 0) -> list[list[Any]]:
    rng = random.Random(seed)
    return [[rng.choice(list(vocab)) for _ in range(rng.randint(1, max_seq_len))] for _ in range(n)]


def _same(expected: Sequence[Any], got: Sequence[Any], tol: float = 1e-4) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got):
        if e is None or g is None:
            if e is not g and not (e is None and g is None):
                return False
        elif isinstance(e, (int, float)) and isinstance(g, (int, float)) and not isinstance(e, bool):
            if abs(float(e) - float(g)) > tol:
                return False
        elif e != g:
            return False
    return True


def run_module(module: ModuleOp, inputs: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Runs a module at any level on token sequences (without BOS); decoded values per position."""
    from raspc.compiler import level_of, run_pipeline

    level = level_of(module)
    if level == "rasp":
        from raspc.interpreters.rasp import RaspInterpreter

        return RaspInterpreter(module).run_batch(inputs)
    if level == "craft":
        clone = module.clone()
        run_pipeline(clone, "allocate-layers,layout-residual,lower-craft-to-tensor", verify_each=False)
        module = clone
    from raspc.dialects import tensor as T
    from raspc.interpreters.tensor import run_tensor

    attrs = T.model_attributes(module)
    vocab = list(attrs.vocab)
    readout = next(op for op in module.ops if isinstance(op, T.ReadoutOp))
    out: list[list[Any]] = []
    for xs in inputs:
        ids = np.array([[attrs.bos_id] + [vocab.index(x) for x in xs]], dtype=np.int64)
        output, _ = run_tensor(module, ids)
        row = output[0, 1:]
        if readout.encoding_str == "categorical":
            values = readout.values_tuple
            out.append([None if i < 0 else values[i] for i in row.tolist()])
        else:
            out.append([float(v) for v in row])
    return out


def make_checker(
    program: rasp.SOp, vocab: Sequence[Any], max_seq_len: int, n_inputs: int = 32, seed: int = 0
) -> Callable[[str, ModuleOp], None]:
    """An `on_pass(name, module)` callback for run_pipeline that raises VerificationError on a divergence."""
    inputs, expected = [], []
    for xs in random_inputs(vocab, max_seq_len, n_inputs * 2, seed):
        try:
            expected.append(rasp.evaluate(program, xs))
        except Exception:  # noqa: BLE001 - inputs the evaluator rejects say nothing about the model
            continue
        inputs.append(xs)
        if len(inputs) == n_inputs:
            break

    def check(pass_name: str, module: ModuleOp) -> None:
        got = run_module(module, inputs)
        for xs, e, g in zip(inputs, expected, got):
            if not _same(e, g):
                raise VerificationError(
                    f"after pass '{pass_name}' the module answers {g} on input {xs}; the program gives {e}"
                )

    return check
