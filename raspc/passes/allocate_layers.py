"""allocate-layers: put every craft block in the earliest layer its inputs allow.

A layer is an attention sublayer followed by an MLP sublayer. Sublayer slots are numbered
attention 0, MLP 1, attention 2, ...; a block takes the first slot of its kind after every
block it reads from (embeddings sit before slot 0). Independent blocks share a layer (heads
side by side, MLPs concatenated), and the model has as many layers as the longest chain of
alternating dependencies needs: no more (Tracr spends a whole layer per dependency depth).
The number of layers is recorded on the `craft.model` (`layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import craft as C
from raspc.dialects.common import container_of
from raspc.errors import IRError


def slot_after(slot: int, attention: bool) -> int:
    """The first attention (even) or MLP (odd) slot after `slot`."""
    nxt = slot + 1
    if attention != (nxt % 2 == 0):
        nxt += 1
    return nxt


def craft_model(module: ModuleOp, pass_name: str) -> C.ModelOp:
    """The module's craft.model, or an IRError naming the pass that needs one."""
    model = container_of(module)
    if not isinstance(model, C.ModelOp):
        raise IRError(f"pass '{pass_name}' works at the craft level, but the module holds a {model.name}")
    return model


@dataclass(frozen=True)
class AllocateLayersPass(ModulePass):
    """Puts every craft block in the earliest layer its inputs allow."""

    name = "allocate-layers"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = craft_model(op, self.name)
        slot: dict[SSAValue, int] = {}
        n_layers = 0
        for block in model.ops:
            if isinstance(block, (C.EmbedOp, C.PositionalOp)):
                slot[block.res] = -1
            elif isinstance(block, C.BLOCK_OPS):
                ready = max((slot[v] for v in block.operands), default=-1)
                s = slot_after(ready, isinstance(block, C.AttentionHeadOp))
                slot[block.res] = s
                block.set_layer(s // 2)
                n_layers = max(n_layers, s // 2 + 1)
        model.set_layers(n_layers)
