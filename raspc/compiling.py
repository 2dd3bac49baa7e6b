"""Tracr's module layout, so `from tracr.compiler import compiling` ports as `from raspc import compiling`."""

from raspc.model import CompiledModel, compile_rasp_to_model

COMPILER_BOS = "compiler_bos"  # Tracr's default names for the special tokens
COMPILER_PAD = "compiler_pad"

__all__ = ["compile_rasp_to_model", "CompiledModel", "COMPILER_BOS", "COMPILER_PAD"]
