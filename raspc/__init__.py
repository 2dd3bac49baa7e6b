"""raspc: compile RASP programs into transformer weights through a multi-level xDSL IR.

    from raspc import rasp, lib, compile_rasp_to_model
    model = compile_rasp_to_model(lib.make_hist(), vocab={"a", "b", "c"}, max_seq_len=5)
    model.apply(["BOS", "a", "b", "a"]).decoded   # ['BOS', 2, 1, 2]
"""

from raspc import rasp
from raspc.errors import (
    CompileError,
    InputError,
    IRError,
    PipelineError,
    RaspcError,
    UnsupportedError,
    ValueSetError,
    VerificationError,
    VocabError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy parts (xDSL, onnx, onnxruntime) load on first use, so `from raspc import rasp` stays fast.
    if name in ("compile_rasp_to_model", "CompiledModel", "ModelOutput"):
        from raspc import model

        return getattr(model, name)
    if name in ("lib", "compiling"):
        import importlib

        return importlib.import_module(f"raspc.{name}")
    if name in ("DEFAULT_PIPELINE", "register_pass", "compile_program", "compile_module", "parse_ir"):
        from raspc import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'raspc' has no attribute '{name}'")


__all__ = [
    "rasp", "lib", "compiling", "compile_rasp_to_model", "CompiledModel", "ModelOutput", "DEFAULT_PIPELINE", "register_pass",
    "compile_program", "compile_module", "parse_ir", "RaspcError", "CompileError", "UnsupportedError",
    "ValueSetError", "VocabError", "InputError", "IRError", "PipelineError", "VerificationError",
]
