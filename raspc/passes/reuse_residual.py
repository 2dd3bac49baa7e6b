"""reuse-residual: directions whose lifetimes do not overlap share a residual dimension.

A space is needed from the block that writes it until its last reader. After that its dimensions
can carry a later space once something zeroes them, exactly (`craft.erase`):

- in the MLP sublayer of the last reader's layer (relu(x) - relu(-x), written back negated), so
  the dimensions are free from the next layer on;
- or, when the last reader is a head, by a head of the same attention sublayer that attends to
  its own position and writes minus the space, so the same layer's MLP can take the dimensions
  (the common case: a head reads tokens, the MLP after it writes the output). Such a head keys on
  `indices` where that one-hot is in the residual anyway, else on two numerical directions the
  pass adds, the position p and p^2 (score 2pq - q^2 peaks at q = p, every other key at least
  one unit lower; exact in float32 up to max_seq_len 200).

Dimensions are assigned greedily in slot order, each space taking the lowest dimensions free
before its writer runs (for intervals this uses as many dimensions as the most directions alive at
once, the least possible). The pass tries erasing by MLP only, by heads keyed on `indices`, and by
heads keyed on the added positions, and keeps the narrowest residual (ties: fewer heads). A space
is erased only when a later space takes one of its dimensions, so a model whose every space lives
to the end is unchanged.

Runs after allocate-layers and layout-residual (it keeps their layers and direction order, adds
the position directions after the others when it uses them, and sets `dims` on the `craft.model`);
the tensor lowering places each direction at its dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from raspc.dialects import craft as C
from raspc.errors import IRError
from raspc.passes.allocate_layers import craft_model

POSITION, POSITION_SQ = "positions", "positions_sq"
# the position head's scores (up to 2 max_seq_len^2, times the scale 208) stay exact float32 integers
MAX_POSITION_KEYED_LEN = 200


def _mlp_erase_slot(written: int, last_read: int | None) -> int:
    """The first MLP slot that can zero a space: the last reader's if it is an MLP (the eraser
    reads the same residual as the reader), else the MLP of the reader's layer; for a space nobody
    reads, the first MLP after its writer."""
    slot = written + 1 if last_read is None else last_read
    return slot if slot % 2 == 1 else slot + 1


@dataclass
class _Plan:
    """An assignment of dimensions: how many, each label's, and how each reused space is erased
    (slot, by a head keyed on these positions or by the MLP: ())."""

    n_dims: int = 0
    dim_of: dict[str, int] = field(default_factory=dict)
    erase: dict[SSAValue, tuple[int, tuple[SSAValue, ...]]] = field(default_factory=dict)

    @property
    def heads(self) -> int:
        return len({slot for slot, keys in self.erase.values() if keys})


def _assign(writers: list, last_read: dict[SSAValue, int], keep: SSAValue,
            keys_at: dict[int, tuple[SSAValue, ...]]) -> _Plan:
    """Greedy assignment in slot order. `keys_at[slot]`: what a head erasing in that attention
    slot keys on (absent: erase by MLP only)."""
    plan = _Plan()
    free: dict[int, tuple[int, int, SSAValue]] = {}  # dim -> (ready by MLP, ready by a head, holder)
    for op in sorted(writers, key=lambda w: C.block_slot(w)):  # stable: IR order within a slot
        space, start = op.res, C.block_slot(op)
        width = len(C.space_labels(space))
        usable = sorted((ready_mlp > start, d) for d, (ready_mlp, ready_head, _) in free.items()
                        if min(ready_mlp, ready_head) <= start)
        taken = [d for _, d in usable[:width]]
        for d in taken:
            ready_mlp, _, holder = free.pop(d)
            mlp_slot = ready_mlp - 1
            by_head = ready_mlp > start
            slot, keys = plan.erase.get(holder, (mlp_slot, ()))
            if by_head:
                slot = last_read[holder]
                keys = keys_at[slot]
            plan.erase[holder] = (slot, keys)
        dims = taken + list(range(plan.n_dims, plan.n_dims + width - len(taken)))
        plan.n_dims += width - len(taken)
        for label, d in zip(C.space_labels(space), dims):
            plan.dim_of[label] = d
        if space is not keep:  # the readout reads the output after the last layer
            read = last_read.get(space)
            mlp_slot = _mlp_erase_slot(start, read)
            head_ready = read + 1 if read is not None and read in keys_at else mlp_slot + 1
            for d in dims:
                free[d] = (mlp_slot + 1, head_ready, space)
    return plan


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
        embedded = {w.source.data: w.res for w in writers if isinstance(w, C.EmbedOp)}
        head_slots = sorted({s for s in last_read.values() if s % 2 == 0})

        # erasing by MLP only; by heads keyed on indices where it is alive anyway
        plans = [_assign(writers, last_read, output.inp, {})]
        indices = embedded.get("indices")
        if isinstance(indices, SSAValue) and isinstance(indices.type, C.CategoricalSpaceType):
            alive = [s for s in head_slots if s <= last_read.get(indices, C.EMBED_SLOT)]
            plans.append(_assign(writers, last_read, output.inp, {s: (indices,) for s in alive}))
        # by heads keyed on added position directions (p, p^2), alive until the last such head
        positions, keyed_on_positions = None, None
        one = embedded.get("one")
        if (one is not None and head_slots and model.spec.max_seq_len <= MAX_POSITION_KEYED_LEN
                and not {POSITION, POSITION_SQ} & set(labels)):
            n = model.spec.max_seq_len
            positions = (C.PositionalOp(POSITION, [p + 1 for p in range(n)], C.NumericalSpaceType(POSITION)),
                         C.PositionalOp(POSITION_SQ, [(p + 1) ** 2 for p in range(n)], C.NumericalSpaceType(POSITION_SQ)))
            for p in positions:
                p.res.name_hint = p.label.data
            keys = (positions[0].res, positions[1].res, one)
            plan = _assign([*positions, *writers], {**last_read, **{p.res: head_slots[-1] for p in positions},
                                                   one: max(last_read.get(one, -1), head_slots[-1])},
                           output.inp, {s: keys for s in head_slots})
            used = [slot for slot, by in plan.erase.values() if by]
            if used:  # positions live only until the last head that keys on them
                until = max(used)
                plan = _assign([*positions, *writers], {**last_read, **{p.res: until for p in positions},
                                                       one: max(last_read.get(one, -1), until)},
                               output.inp, {s: keys for s in head_slots if s <= until})
                keyed_on_positions = len(plans)
                plans.append(plan)
        best = min(range(len(plans)), key=lambda i: (plans[i].n_dims, plans[i].heads, i))
        plan = plans[best]

        block = model.body.block
        if positions is not None and best == keyed_on_positions:
            first = block.first_op
            assert first is not None
            for p in positions:
                block.insert_op_before(p, first)
            labels = [*labels, POSITION, POSITION_SQ]
            model.set_residual(labels)
        position_in_block = {o: i for i, o in enumerate(block.ops)}
        for space, (slot, by) in sorted(plan.erase.items(), key=lambda kv: kv[1][0]):
            # after the space's last reader (or writer) and whatever the erasing head keys on
            anchor = max([last_reader.get(space, space.owner), *(k.owner for k in by)], key=position_in_block.get)
            block.insert_op_after(C.EraseOp(space, slot // 2, by), anchor)
        model.set_dims([plan.dim_of[label] for label in labels])


__all__ = ["ReuseResidualPass"]
