"""raspc's xDSL plugin: lets the stock `xdsl-opt` find raspc's dialects and passes.

Registered in pyproject.toml under the `xdsl.universe` entry-point group, so

    xdsl-opt prog.mlir -p lower-rasp-to-craft,allocate-layers,layout-residual

works without raspc's own driver. xDSL merges every installed Universe and raises
"Duplicate definition of ..." on any name clash (which would break *every* xdsl-opt run,
raspc-opt's included), so this universe holds only names upstream does not define:

* dialects `rasp` and `craft`. raspc's `tensor` dialect is left OUT: upstream xDSL already
  defines a dialect named "tensor" and a Universe cannot replace it. Tensor-level raspc IR
  therefore needs `raspc-opt`, which swaps upstream's tensor dialect for raspc's.
* raspc's own passes (lowerings, rasp optimisations, export-onnx). `cse`, `dce` and
  `canonicalize` are upstream's and already in xdsl-opt, so they are skipped here.

The module stays cheap to import: dialects and passes load only when a pipeline or the
parser asks for them.
"""

from __future__ import annotations

from typing import Any, Callable

from xdsl.universe import Universe

# Names xDSL itself defines; a Universe may not redefine them.
_UPSTREAM_DIALECT_CLASH = {"tensor"}


def _dialects() -> dict[str, Callable[[], Any]]:
    from raspc.compiler import dialect_factories

    return {name: f for name, f in dialect_factories().items() if name not in _UPSTREAM_DIALECT_CLASH}


def _passes() -> dict[str, Callable[[], Any]]:
    from xdsl.transforms import get_all_passes

    from raspc.compiler import available_passes

    upstream = get_all_passes()
    return {name: f for name, f in available_passes().items() if name not in upstream}


RASPC_UNIVERSE = Universe(all_dialects=_dialects(), all_passes=_passes())

__all__ = ["RASPC_UNIVERSE"]
