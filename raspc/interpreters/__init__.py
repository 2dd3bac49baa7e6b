"""One interpreter per level, each built on xDSL's interpreter framework (one implementation per op):

- `rasp`: runs the tables, answers exactly like `rasp.evaluate` (and knows the program's domain);
- `craft`: runs the labelled blocks on residual spaces, float32;
- `tensor`: runs the concrete transformer with the exported ONNX graph's semantics.

`run_module(module, inputs)` runs a module at whatever level it is on token sequences (BOS not
included) and returns each input's decoded output; at the rasp level an input outside the
program's domain gets None.
"""

from __future__ import annotations

from typing import Sequence

from xdsl.dialects.builtin import ModuleOp

from raspc.dialects.common import container_of
from raspc.utils.values import Value


def run_module(module: ModuleOp, inputs: Sequence[Sequence[Value]]) -> list[list[Value] | None]:
    level = container_of(module).LEVEL
    if level == "rasp":
        from raspc.interpreters.rasp import RaspInterpreter

        return RaspInterpreter(module).run_batch(inputs)
    if level == "craft":
        from raspc.interpreters.craft import CraftInterpreter

        return list(CraftInterpreter(module).run_batch(inputs))
    from raspc.interpreters.tensor import run_tensor_batch

    return list(run_tensor_batch(module, inputs))


__all__ = ["run_module"]
