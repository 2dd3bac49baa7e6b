"""reuse-residual: directions whose lifetimes do not overlap share a residual dimension.

A space is needed from the block that writes it until its last reader. After that its dimensions
can carry a later space, once something zeroes them: a `craft.erase` in the MLP sublayer of the
last reader's layer (relu(x) - relu(-x), written back negated: exact at every position). The
dimensions are assigned greedily in slot order, each space taking the lowest dimensions free
before its writer runs; for intervals this uses as many dimensions as the most directions alive at
once, which is the least possible. A space is erased only when a later space takes one of its
dimensions, so a model whose every space lives to the end is unchanged.

Runs after allocate-layers and layout-residual (it keeps their layers and direction order, and adds
`dims` to the `craft.model`); the tensor lowering places each direction at its dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import craft as C
from raspc.errors import IRError
from raspc.passes.allocate_layers import craft_model


def _erase_slot(written: int, last_read: int | None) -> int:
    """The first MLP slot that can zero a space: the last reader's if it is an MLP (the eraser
    reads the same residual as the reader), else the MLP of the reader's layer; for a space nobody
    reads, the first MLP after its writer."""
    slot = written + 1 if last_read is None else last_read
    return slot if slot % 2 == 1 else slot + 1


@dataclass(frozen=True)
class ReuseResidualPass(ModulePass):
    """Lets directions with disjoint lifetimes share residual dimensions, erasing the earlier ones."""

    name = "reuse-residual"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = craft_model(op, self.name)
        labels = model.residual_labels
        if labels is None or model.layers is None:
            raise IRError("reuse-residual needs layers and the residual layout: run allocate-layers and "
                          "layout-residual first")
        if model.residual_dims is not None or any(isinstance(o, C.EraseOp) for o in model.ops):
            raise IRError("reuse-residual runs once: this model already shares residual dimensions")
        output = model.body.block.last_op
        assert isinstance(output, C.OutputOp)

        writers = [o for o in model.ops if isinstance(o, (C.EmbedOp, C.PositionalOp, *C.BLOCK_OPS))]
        last_read: dict[SSAValue, int] = {}
        last_reader: dict[SSAValue, C.MlpOp | C.AttentionHeadOp] = {}
        for block in model.ops:
            if isinstance(block, C.BLOCK_OPS):
                for value in block.operands:
                    slot = C.block_slot(block)
                    if slot >= last_read.get(value, C.EMBED_SLOT):
                        last_read[value], last_reader[value] = slot, block
        start_of = {w.res: C.block_slot(w) for w in writers}
        erase_slot = {space: _erase_slot(start, last_read.get(space)) for space, start in start_of.items()}

        # free dimensions as (first slot a writer may use them, dim); a space takes the lowest ones
        free: list[tuple[int, int]] = []
        n_dims = 0
        dim_of: dict[str, int] = {}
        owner: dict[int, SSAValue] = {}  # dim -> the space that last held it
        erase: dict[SSAValue, int] = {}  # space -> the slot of its eraser
        order = sorted(range(len(writers)), key=lambda i: (C.block_slot(writers[i]), i))
        for i in order:
            space = writers[i].res
            start = start_of[space]
            width = len(C.space_labels(space))
            available = sorted(d for ready, d in free if ready <= start)[:width]
            if available:
                taken = set(available)
                free = [(r, d) for r, d in free if d not in taken]
                for d in available:
                    erase[owner[d]] = erase_slot[owner[d]]
            dims = available + list(range(n_dims, n_dims + width - len(available)))
            n_dims += width - len(available)
            for label, d in zip(C.space_labels(space), dims):
                dim_of[label] = d
                owner[d] = space
            if space is not output.inp:  # the readout reads the output after the last layer
                # the eraser runs in slot e: a writer may use the dims from slot e + 1
                free.extend((erase_slot[space] + 1, d) for d in dims)

        for space, slot in sorted(erase.items(), key=lambda kv: kv[1]):
            eraser = C.EraseOp(space, slot // 2)
            anchor = last_reader.get(space, space.owner)
            model.body.block.insert_op_after(eraser, anchor)
        model.set_dims([dim_of[label] for label in labels])


__all__ = ["ReuseResidualPass"]
