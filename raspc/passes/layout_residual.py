"""layout-residual: give every residual direction a stable, sorted offset.

Order: `one`, `bos`, `tokens:*`, `indices:*`, then every other space sorted by its label, each
space's directions in value order. The result is the `residual` of the `craft.model`; the
tensor lowering reads offsets from it, so a custom layout pass can reorder the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from raspc.dialects import craft as C
from raspc.errors import IRError
from raspc.passes.allocate_layers import craft_model

_FIRST = {"one": 0, "bos": 1, "tokens": 2, "indices": 3}


@dataclass(frozen=True)
class LayoutResidualPass(ModulePass):
    """Assigns every residual direction a stable, sorted offset (the craft.model's `residual`)."""

    name = "layout-residual"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = craft_model(op, self.name)
        spaces: dict[str, C.CategoricalSpaceType | C.NumericalSpaceType] = {}
        for o in model.ops:
            for r in o.results:
                if isinstance(r.type, (C.CategoricalSpaceType, C.NumericalSpaceType)):
                    spaces[r.type.space.data] = r.type
        order = sorted(spaces, key=lambda name: (_FIRST.get(name, len(_FIRST)), name))
        labels = [label for name in order for label in spaces[name].labels]
        if len(set(labels)) != len(labels):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            raise IRError(f"residual directions are not unique: {dup[:5]}")
        model.set_residual(labels)
