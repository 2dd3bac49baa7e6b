"""The public, Tracr-compatible API: `compile_rasp_to_model` and `CompiledModel`."""

from __future__ import annotations

import os
from typing import Any, Sequence

import onnx
from xdsl.dialects.builtin import ModuleOp

from raspc import rasp
from raspc.compiler import DEFAULT_PIPELINE, compile_program
from raspc.errors import PipelineError
from raspc.runtime import ModelOutput, OnnxModel  # ModelOutput: what both models' apply answer


class CompiledModel:
    """A compiled RASP program: its IR at every level, the ONNX model, and an onnxruntime session."""

    def __init__(self, module: ModuleOp, snapshots: dict[str, ModuleOp], program: rasp.SOp | None = None,
                 pipeline: str = DEFAULT_PIPELINE):
        from raspc.lowering.compact_onnx import tensor_to_compact_onnx

        self.module = module
        self.pipeline = pipeline
        self._snapshots = snapshots
        self._ir: dict[str, str] = {}
        self.program = program
        self._onnx_model: onnx.ModelProto | None = None
        # the session runs the compact graph (same answers, cost follows the non-zero weights)
        self.compact_onnx_model: onnx.ModelProto = tensor_to_compact_onnx(module)
        self.runtime = OnnxModel.load(self.compact_onnx_model.SerializeToString())

    # The program as the rasp passes left it (raspc.report.program_graph), stored in the ONNX metadata.
    program_graph: dict[str, Any] | None = None

    @property
    def onnx_model(self) -> onnx.ModelProto:
        """The transformer-shaped ONNX graph: full residual, named per-head intermediates and
        weights (what circuit analysis, hooks and TransformerLens read); built on first use."""
        if self._onnx_model is None:
            from raspc.lowering.tensor_to_onnx import tensor_to_onnx

            from raspc.report.program_graph import attach_program_graph

            self._onnx_model = attach_program_graph(tensor_to_onnx(self.module), self.program_graph)
        return self._onnx_model

    # -- inspection ------------------------------------------------------
    def ir(self, level: str = "tensor") -> str:
        """IR text at `level`: "rasp" (as traced), "craft" (blocks, layers, layout) or "tensor"."""
        if level not in self._ir:
            self._ir[level] = str(self.module_at(level))
        return self._ir[level]

    def module_at(self, level: str) -> ModuleOp:
        """The module at `level` (an intermediate level is recompiled from the traced program, once:
        compilation is deterministic, so it is the module the pipeline went through)."""
        from raspc.compiler import LEVELS, compile_module, level_of

        if level not in self._snapshots:
            if level not in LEVELS or "rasp" not in self._snapshots:
                raise PipelineError(f"no IR at level '{level}'; levels: {', '.join(LEVELS)}")
            module = compile_module(self._snapshots["rasp"].clone(), self.pipeline, stop_at=level)
            if level_of(module) != level:
                raise PipelineError(f"the pipeline never reaches the {level} level: '{self.pipeline}'")
            self._snapshots[level] = module
        return self._snapshots[level]

    @property
    def residual_labels(self) -> list[str]:
        return list(self.runtime.residual_labels)

    @property
    def vocab(self) -> tuple[Any, ...]:
        return self.runtime.input_vocab

    @property
    def max_seq_len(self) -> int:
        return self.runtime.max_seq_len

    @property
    def output_values(self) -> tuple[Any, ...]:
        return self.runtime.output_values

    @property
    def output_encoding(self) -> str:
        return self.runtime.output_encoding

    # -- running ---------------------------------------------------------
    def apply(self, seq: Sequence[Any]) -> ModelOutput:
        """Runs one sequence that starts with the BOS token, e.g. ["BOS", "a", "b"]."""
        return self.runtime.apply(seq)

    def apply_batch(self, seqs: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Runs sequences of mixed lengths in one padded, masked batch; returns decoded lists."""
        return self.runtime.apply_batch(seqs)

    def report(self, path: str | os.PathLike[str], tokens: Sequence[Any] | None = None) -> str:
        """Writes the HTML report (raspc.report) of this model run on `tokens` (BOS first; default:
        an example input) to `path`; returns the path."""
        from raspc.report import ModelView, write_report

        return write_report(ModelView(self.onnx_model, os.path.basename(os.fspath(path))), os.fspath(path), tokens)

    def save_onnx(self, path: str | os.PathLike[str], *, compact: bool = False) -> None:
        """Writes the transformer-shaped graph, or with `compact` the faster deployment graph (same
        inputs, outputs, metadata and answers; not readable by `raspc circuits`)."""
        model = self.compact_onnx_model if compact else self.onnx_model
        with open(path, "wb") as f:
            f.write(model.SerializeToString())


def compile_rasp_to_model(
    program: rasp.SOp,
    vocab: Sequence[Any] | set[Any],
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    mlp_exactness: int | None = None,
    *,
    pipeline: str = DEFAULT_PIPELINE,
    verify: bool | int | str = False,
) -> CompiledModel:
    """Compiles a RASP program to a transformer (Tracr's signature; `mlp_exactness` is accepted and
    ignored: raspc's MLPs are exact by construction). A set vocabulary is sorted for determinism.
    `verify` checks after every pass that the IR still computes the program: `True` on 32 random
    inputs (hypothesis, shrunk to a minimal failing one), an int on that many, `"exhaustive"` on
    every input up to max_seq_len when there are at most 100,000 (see raspc.verification)."""
    del mlp_exactness
    if isinstance(vocab, (set, frozenset)):
        from raspc.utils.values import sorted_values

        vocab = list(sorted_values(vocab))
    from raspc.compiler import level_of
    from raspc.errors import IRError

    from raspc.report.program_graph import ProgramGraphRecorder

    recorder = ProgramGraphRecorder()
    module, snapshots = compile_program(
        program, vocab, max_seq_len, compiler_bos=compiler_bos, compiler_pad=compiler_pad, causal=causal,
        pipeline=pipeline, verify=verify, on_pass=recorder,
    )
    if level_of(module) != "tensor":
        raise IRError(
            f"the pipeline ends at the {level_of(module)} level; a model needs it to reach tensor "
            f"(end with ...,lower-craft-to-tensor). Pipeline: '{pipeline}'"
        )
    model = CompiledModel(module, snapshots, program, pipeline)
    model.program_graph = recorder.graph
    return model
