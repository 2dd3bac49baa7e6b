"""allocate-layers: put every craft block in the earliest layer its inputs allow.

A layer is an attention sublayer followed by an MLP sublayer. Sublayer slots are numbered
attention 0, MLP 1, attention 2, ...; a block takes the first slot of its kind after every
block it reads from (embeddings sit before slot 0). Independent blocks share a layer (heads
side by side, MLPs concatenated), and the model has as many layers as the longest chain of
alternating dependencies needs: no more (Tracr spends a whole layer per dependency depth).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import craft as C


def _slot_after(slot: int, attention: bool) -> int:
    nxt = slot + 1
    if attention and nxt % 2 == 1:
        nxt += 1
    if not attention and nxt % 2 == 0:
        nxt += 1
    return nxt


@dataclass(frozen=True)
class AllocateLayersPass(ModulePass):
    """Puts every craft block in the earliest layer its inputs allow."""

    name = "allocate-layers"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        slot: dict[SSAValue, int] = {}
        n_layers = 0
        for block in op.ops:
            if isinstance(block, (C.EmbedOp, C.PositionalOp)):
                slot[block.res] = -1
            elif isinstance(block, C.BLOCK_OPS):
                ready = max((slot[v] for v in block.operands), default=-1)
                s = _slot_after(ready, isinstance(block, C.AttentionHeadOp))
                slot[block.res] = s
                block.set_layer(s // 2)
                n_layers = max(n_layers, s // 2 + 1)
        op.attributes["raspc.num_layers"] = IntegerAttr(n_layers, i64)
