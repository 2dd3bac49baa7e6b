"""A notebook-free walkthrough: one program through every level, then the model and its circuits.

    python examples/walkthrough.py
"""

from raspc import compile_rasp_to_model, lib, rasp
from raspc.analysis.circuits import Circuits
from raspc.compiler import DEFAULT_PIPELINE, elide_dense

# 1. A RASP program, written with Tracr's names: sort the tokens (they are unique).
program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
print("evaluator:", rasp.evaluate(program, [3, 1, 2]))

# 2. Compile it; `verify=True` re-checks the program's answers after every pass.
model = compile_rasp_to_model(program, vocab=[1, 2, 3, 4], max_seq_len=4, verify=True)
print("pipeline:", DEFAULT_PIPELINE)

# 3. The IR at each level: the program as tables, the labelled blocks, the dense transformer.
for level in ("rasp", "craft"):
    print(f"\n--- {level} ---\n{model.ir(level)}")
print(f"\n--- tensor (weights elided) ---\n{elide_dense(model.ir('tensor'))}")

# 4. Run the model (onnxruntime under the hood); a batch may mix lengths.
print("\nmodel:", model.apply(["BOS", 3, 1, 2]).decoded)
print("batch:", model.apply_batch([["BOS", 4, 1], ["BOS", 2, 4, 3, 1]]))
print("residual directions:", model.residual_labels)

# 5. Read the mechanism back in the labelled bases.
print("\n--- circuits ---")
print(Circuits.from_module(model.module).report())

model.save_onnx("sort_unique.onnx")
print("\nwrote sort_unique.onnx; try: raspc run sort_unique.onnx 3 1 2")
