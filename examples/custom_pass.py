"""A custom pass, registered without forking raspc.

Run it from Python:

    python examples/custom_pass.py

or load it into raspc-opt:

    raspc compile lib:make_hist --vocab a,b,c --max-seq-len 5 --emit rasp -o hist.mlir
    raspc-opt hist.mlir --load-pass-plugin examples/custom_pass.py \
        -p 'lower-rasp-to-craft,sharpen-attention{factor=2.0},allocate-layers,layout-residual'
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp, f64
from xdsl.passes import ModulePass

from raspc import compile_rasp_to_model, lib, register_pass
from raspc.compiler import DEFAULT_PIPELINE
from raspc.dialects import craft


@register_pass
@dataclass(frozen=True)
class SharpenAttentionPass(ModulePass):
    """Multiplies every craft attention head's softmax scale by `factor` (harder attention)."""

    name = "sharpen-attention"
    factor: float = 2.0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for head in op.walk():
            if isinstance(head, craft.AttentionHeadOp):
                head.properties["scale"] = FloatAttr(head.scale.value.data * self.factor, f64)


if __name__ == "__main__":
    pipeline = DEFAULT_PIPELINE.replace("lower-rasp-to-craft", "lower-rasp-to-craft,sharpen-attention{factor=3.0}")
    model = compile_rasp_to_model(lib.make_hist(), ["a", "b", "c"], 5, pipeline=pipeline, verify=True)
    print("pipeline:", pipeline)
    print(model.apply(["BOS", "a", "b", "a", "c"]).decoded)
