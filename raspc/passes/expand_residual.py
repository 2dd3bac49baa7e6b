"""expand-residual: a model whose directions share residual dimensions (reuse-residual), back to one
dimension per direction, without what only erases.

In the labelled basis nothing reads an erased direction again, so the erasing heads, the erasing
MLP units and the position directions only those heads key on are dead: dropped, the model is the
one compiled without reuse-residual (same blocks, same weights, directions in layout order). The
compact ONNX graph of a reused model is built from it, so reuse costs the deployed forward pass
nothing. A tensor-level pass; a model without shared dimensions is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from raspc.analysis.weights import ModelWeights
from raspc.dialects import tensor as T
from raspc.dialects.common import InputSpec
from raspc.utils.naming import ssa_name


def tensor_model_op(weights: ModelWeights, spec: InputSpec, name: str | None) -> T.ModelOp:
    """A `tensor.model` holding `weights`: embed, then per layer its heads and its MLP, then the readout."""
    def named(op: Operation, hint: str) -> Operation:
        op.results[0].name_hint = hint  # as lower-craft-to-tensor names them
        return op

    ops: list[Operation] = [named(T.EmbedOp(weights.token_embedding, weights.position_embedding), "resid0")]
    x: SSAValue = ops[0].results[0]
    for layer in range(weights.n_layers):
        heads = [named(T.AttentionHeadOp(x, h.label, layer, h.w_q, h.w_k, h.w_v, h.w_o, h.scale),
                       f"L{layer}_{ssa_name(h.label)}") for h in weights.heads_in(layer)]
        mlp = weights.mlp_in(layer)
        if heads:
            ops += [*heads, add := named(T.AddOp([x, *heads]), f"resid{layer}_attn")]
            x = add.results[0]
        if mlp is not None:
            block = T.MlpOp(x, mlp.label, layer, mlp.w_in, mlp.b_in, mlp.w_out, mlp.b_out)
            ops += [named(block, f"L{layer}_mlp"), add := named(T.AddOp([x, block]), f"resid{layer}_mlp")]
            x = add.results[0]
    ops.append(T.ReadoutOp(x, weights.readout_dims, weights.output_encoding, weights.output_values))
    return T.ModelOp(spec, weights.labels, ops, name=name)


def expand_residual(module: ModuleOp) -> ModuleOp:
    """`module` itself when its directions do not share dimensions, else an expanded copy."""
    if T.model_op(module).dims is None:
        return module
    copy = module.clone()
    ExpandResidualPass().apply(Context(), copy)
    return copy


@dataclass(frozen=True)
class ExpandResidualPass(ModulePass):
    """One residual dimension per direction again, erasures dropped (see the module docstring)."""

    name = "expand-residual"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        view = T.tensor_model(op)
        if view.layout is None:
            return
        container = T.model_op(op)
        expanded = tensor_model_op(ModelWeights.from_tensor_model(view, erasures=False), view.spec, view.name)
        op.body.block.insert_op_before(expanded, container)
        container.detach()
        container.erase()


__all__ = ["ExpandResidualPass", "expand_residual", "tensor_model_op"]
