"""The driver: context, pass registry, default pipeline, and `compile_rasp_to_model`.

The default pipeline is just a pipeline string; print it, edit it, insert your own pass anywhere
(register it with `register_pass`) and run it here or with `raspc-opt -p ...`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import VerifyException

from raspc import rasp
from raspc.errors import IRError, PipelineError, RaspcError

RASP_PIPELINE = "check-causal,combine-selectors,product-selectors,discretise-numerical-operands,fuse-maps,cse,dce"
CRAFT_PIPELINE = "lower-rasp-to-craft,allocate-layers,layout-residual"
TENSOR_PIPELINE = "lower-craft-to-tensor"
DEFAULT_PIPELINE = ",".join([RASP_PIPELINE, CRAFT_PIPELINE, TENSOR_PIPELINE])
LEVELS = ("rasp", "craft", "tensor", "onnx")


def _rasp_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    def lazy(module: str, cls: str) -> Callable[[], type[ModulePass]]:
        def load() -> type[ModulePass]:
            import importlib

            return getattr(importlib.import_module(module), cls)

        return load

    return {
        "check-causal": lazy("raspc.passes.check_causal", "CheckCausalPass"),
        "combine-selectors": lazy("raspc.passes.combine_selectors", "CombineSelectorsPass"),
        "product-selectors": lazy("raspc.passes.product_selectors", "ProductSelectorsPass"),
        "discretise-numerical-operands": lazy("raspc.passes.discretise_numerical", "DiscretiseNumericalOperandsPass"),
        "fuse-maps": lazy("raspc.passes.fuse_maps", "FuseMapsPass"),
        "lower-rasp-to-craft": lazy("raspc.lowering.rasp_to_craft", "LowerRaspToCraftPass"),
        "allocate-layers": lazy("raspc.passes.allocate_layers", "AllocateLayersPass"),
        "layout-residual": lazy("raspc.passes.layout_residual", "LayoutResidualPass"),
        "lower-craft-to-tensor": lazy("raspc.lowering.craft_to_tensor", "LowerCraftToTensorPass"),
        "export-onnx": lazy("raspc.lowering.tensor_to_onnx", "ExportOnnxPass"),
    }


_USER_PASSES: dict[str, Callable[[], type[ModulePass]]] = {}


def register_pass(pass_class: type[ModulePass]) -> type[ModulePass]:
    """Makes a custom ModulePass available to pipelines by its `name` (usable as a decorator)."""
    _USER_PASSES[pass_class.name] = lambda: pass_class
    return pass_class


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    from xdsl.transforms import get_all_passes

    upstream = get_all_passes()
    passes = {name: upstream[name] for name in ("cse", "dce", "canonicalize")}
    passes.update(_rasp_passes())
    passes.update(_USER_PASSES)
    return passes


def dialect_factories() -> dict[str, Callable[[], Any]]:
    def rasp_d():
        from raspc.dialects.rasp import Rasp

        return Rasp

    def craft_d():
        from raspc.dialects.craft import Craft

        return Craft

    def tensor_d():
        from raspc.dialects.tensor import Tensor

        return Tensor

    return {"rasp": rasp_d, "craft": craft_d, "tensor": tensor_d}


def context() -> Context:
    ctx = Context()
    ctx.load_dialect(Builtin)
    for name, factory in dialect_factories().items():
        ctx.register_dialect(name, factory)
    return ctx


def parse_ir(text: str, ctx: Context | None = None) -> ModuleOp:
    """Parses and verifies IR text at any level; errors become IRError with the location."""
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError

    ctx = ctx or context()
    try:
        module = Parser(ctx, text).parse_module()
        module.verify()
    except ParseError as exc:
        raise IRError(str(exc).strip()) from None
    except VerifyException as exc:
        raise IRError(f"IR does not verify: {_locate_verify_error(module, text) or exc}") from None
    return module


def _locate_verify_error(module: ModuleOp, text: str) -> str | None:
    """'line N: rasp.select %x: <reason>' for the first op that fails to verify (parsed IR keeps no locations)."""
    for op in module.walk():
        if op is module:
            continue
        try:
            op.verify(verify_nested_ops=False)
        except VerifyException as exc:
            names = [f"%{r.name_hint}" for r in op.results if r.name_hint]
            where = ""
            for n, line in enumerate(text.splitlines(), start=1):
                if (names and line.lstrip().startswith(names[0] + " ")) or (not names and op.name in line):
                    where = f"line {n}: "
                    break
            return f"{where}{op.name} {' '.join(names)}: {exc}".replace("  ", " ")
    return None


def build_pipeline(
    spec: str, callback: Callable[[ModulePass | None, ModuleOp, ModulePass | None], None] | None = None
) -> PassPipeline:
    passes = available_passes()
    from xdsl.utils.exceptions import ArgSpecParseError

    try:
        return PassPipeline.parse_spec(passes, spec, callback)
    except (Exception, ArgSpecParseError) as exc:  # ArgSpecParseError (bad syntax) is a BaseException
        names = ", ".join(sorted(passes))
        raise PipelineError(f"bad pipeline '{spec}': {exc}. Known passes: {names}") from None


def level_of(module: ModuleOp) -> str:
    """rasp, craft or tensor: the dialect of the module's ops."""
    for op in module.ops:
        return op.name.split(".")[0]
    return "rasp"


def run_pipeline(
    module: ModuleOp,
    spec: str,
    *,
    verify_each: bool = True,
    on_pass: Callable[[str, ModuleOp], None] | None = None,
) -> ModuleOp:
    """Runs `spec` on `module` in place, verifying after each pass; `on_pass(name, module)` after each."""
    pipeline = build_pipeline(spec)
    ctx = context()
    for p in pipeline.passes:
        try:
            p.apply(ctx, module)
            if verify_each:
                module.verify()
        except RaspcError:
            raise
        except VerifyException as exc:
            raise IRError(f"IR after pass '{p.name}' does not verify: {exc}") from None
        if on_pass is not None:
            on_pass(p.name, module)
    return module


def compile_program(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    *,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    causal: bool = False,
    pipeline: str = DEFAULT_PIPELINE,
    verify: bool = False,
) -> tuple[ModuleOp, dict[str, ModuleOp]]:
    """Front end + `pipeline`. Returns the final module and a snapshot per level it passed:
    "rasp" is the traced program, "craft" and "tensor" the last module seen at those levels
    (clones share their attributes, so snapshots are cheap; print them when needed).
    With `verify`, every pass's output is run on random inputs and compared with the evaluator."""
    from raspc.lowering.program_to_rasp import program_to_rasp

    module = program_to_rasp(program, vocab, max_seq_len, compiler_bos, compiler_pad, causal)
    snapshots = {"rasp": module.clone()}
    check = None
    if verify:
        from raspc.verification import make_checker

        check = make_checker(program, list(vocab), max_seq_len)
        check("program-to-rasp", module)

    def record(name: str, mod: ModuleOp) -> None:
        level = level_of(mod)
        if level != "rasp":
            snapshots[level] = mod.clone()
        if check is not None:
            check(name, mod)

    run_pipeline(module, pipeline, on_pass=record)
    return module, snapshots


def elide_dense(text: str, max_chars: int = 64) -> str:
    """For reading only (like mlir-opt's --mlir-elide-elementsattrs-if-larger): long `dense<...>`
    literals become `dense<...>` with their size kept in the type. The result does not parse."""
    out, i = [], 0
    while True:
        j = text.find("dense<", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        depth, k = 0, j + len("dense")
        while k < len(text):
            depth += {"<": 1, ">": -1}.get(text[k], 0)
            k += 1
            if depth == 0:
                break
        literal = text[j:k]
        out.append(text[i:j])
        out.append(literal if len(literal) <= max_chars else "dense<...>")
        i = k
