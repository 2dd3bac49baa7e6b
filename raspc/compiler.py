"""The driver: context, pass registry, default pipeline, IR parsing, and running pipelines.

The default pipeline is just a pipeline string; print it, edit it, insert your own pass anywhere
(register it with `register_pass`) and run it here or with `raspc-opt -p ...`. `compile_module`
is the one driver (used by the API and both CLIs): it runs a pipeline, can stop at a level
(rasp, craft, tensor), verifies the IR after every pass, and with `verify` checks after every
pass that the module still computes what its input did.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import VerifyException

from raspc.dialects.common import container_of, level_of
from raspc.errors import IRError, PipelineError, RaspcError

RASP_PIPELINE = (
    "infer-value-sets,combine-selectors,check-causal,lexicographic-widths,product-selectors,"
    "discretise-numerical-operands,fuse-maps,cse,dce"
)
CRAFT_PIPELINE = "lower-rasp-to-craft,allocate-layers,layout-residual"
TENSOR_PIPELINE = "lower-craft-to-tensor"
DEFAULT_PIPELINE = ",".join([RASP_PIPELINE, CRAFT_PIPELINE, TENSOR_PIPELINE])


def with_residual_reuse(pipeline: str) -> str:
    """`pipeline` with reuse-residual right after layout-residual (directions whose lifetimes do
    not overlap share residual dimensions); PipelineError if it has no layout-residual."""
    passes = [p.strip() for p in pipeline.split(",")]
    if "reuse-residual" in passes:
        return pipeline
    if "layout-residual" not in passes:
        raise PipelineError(f"reuse-residual goes after layout-residual, which the pipeline '{pipeline}' lacks")
    i = passes.index("layout-residual")
    return ",".join([*passes[: i + 1], "reuse-residual", *passes[i + 1 :]])
LEVELS = ("rasp", "craft", "tensor")

_RASPC_PASSES = {
    "infer-value-sets": ("raspc.passes.infer_value_sets", "InferValueSetsPass"),
    "check-causal": ("raspc.passes.check_causal", "CheckCausalPass"),
    "combine-selectors": ("raspc.passes.combine_selectors", "CombineSelectorsPass"),
    "lexicographic-widths": ("raspc.passes.lexicographic_widths", "LexicographicWidthsPass"),
    "product-selectors": ("raspc.passes.product_selectors", "ProductSelectorsPass"),
    "discretise-numerical-operands": ("raspc.passes.discretise_numerical", "DiscretiseNumericalOperandsPass"),
    "fuse-maps": ("raspc.passes.fuse_maps", "FuseMapsPass"),
    "lower-rasp-to-craft": ("raspc.lowering.rasp_to_craft", "LowerRaspToCraftPass"),
    "allocate-layers": ("raspc.passes.allocate_layers", "AllocateLayersPass"),
    "layout-residual": ("raspc.passes.layout_residual", "LayoutResidualPass"),
    "reuse-residual": ("raspc.passes.reuse_residual", "ReuseResidualPass"),
    "expand-residual": ("raspc.passes.expand_residual", "ExpandResidualPass"),
    "lower-craft-to-tensor": ("raspc.lowering.craft_to_tensor", "LowerCraftToTensorPass"),
    "export-onnx": ("raspc.lowering.tensor_to_onnx", "ExportOnnxPass"),
    "export-compact-onnx": ("raspc.lowering.compact_onnx", "ExportCompactOnnxPass"),
}
# raspc's own passes and xDSL's generic ones: tested to leave valid IR (see compile_module)
TRUSTED_PASSES = frozenset([*_RASPC_PASSES, "cse", "dce", "canonicalize"])
_USER_PASSES: dict[str, Callable[[], type[ModulePass]]] = {}


def _lazy(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    return lambda: getattr(importlib.import_module(module), cls)


def register_pass(pass_class: type[ModulePass]) -> type[ModulePass]:
    """Makes a custom ModulePass available to pipelines by its `name` (usable as a decorator)."""
    _USER_PASSES[pass_class.name] = lambda: pass_class
    return pass_class


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Every pass a raspc pipeline can name: xDSL's cse, dce, canonicalize, raspc's, and registered ones."""
    from xdsl.transforms import get_all_passes

    upstream = get_all_passes()
    passes = {name: upstream[name] for name in ("cse", "dce", "canonicalize")}
    passes.update({name: _lazy(*where) for name, where in _RASPC_PASSES.items()})
    passes.update(_USER_PASSES)
    return passes


def dialect_factories() -> dict[str, Callable[[], Any]]:
    return {
        "raspc": lambda: importlib.import_module("raspc.dialects.common").Raspc,
        "rasp": lambda: importlib.import_module("raspc.dialects.rasp").Rasp,
        "craft": lambda: importlib.import_module("raspc.dialects.craft").Craft,
        "tensor": lambda: importlib.import_module("raspc.dialects.tensor").Tensor,
    }


def context() -> Context:
    """A fresh context: builtin loaded, raspc's dialects registered (loaded when IR names them)."""
    return _base_context().clone()


@functools.lru_cache(maxsize=1)
def _base_context() -> Context:
    # loading builtin walks its ~150 ops and attributes: done once, then copied (Context.clone)
    ctx = Context()
    ctx.load_dialect(Builtin)
    for name, factory in dialect_factories().items():
        ctx.register_dialect(name, factory)
    return ctx


def parse_ir(text: str, name: str = "<input>") -> ModuleOp:
    """Parses and verifies IR text at any level; errors become IRError with the location."""
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError

    parser = Parser(context(), text, name)
    try:
        module = parser.parse_module()
    except ParseError as exc:
        raise IRError(f"{exc.span.get_location()}: {' '.join(exc.msg.split())}") from None
    except VerifyException as exc:  # an attribute or type that does not verify, met while parsing
        end = len(text[: parser.pos].rstrip())  # where the attribute just parsed ends
        line = text.count("\n", 0, end) + 1
        col = end - text.rfind("\n", 0, end)
        raise IRError(f"{name}:{line}:{col}: IR does not verify: {' '.join(str(exc).split())}") from None
    try:
        module.verify()
    except VerifyException as exc:
        raise IRError(f"{name}: IR does not verify: {_locate_verify_error(module, text) or exc}") from None
    container_of(module)
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


def build_pipeline(spec: str) -> tuple[ModulePass, ...]:
    """The passes of a pipeline string; a PipelineError names an unknown pass or bad syntax."""
    if not spec.strip():
        return ()
    return _parse_pipeline(spec, tuple(_USER_PASSES.items()))


@functools.lru_cache(maxsize=64)
def _parse_pipeline(spec: str, user_passes: tuple) -> tuple[ModulePass, ...]:
    """Parsed once per spec (passes are frozen dataclasses); a newly registered pass invalidates it."""
    from xdsl.utils.arg_spec import ArgSpecParseError

    del user_passes  # part of the cache key only
    passes = available_passes()
    try:
        return PassPipeline.parse_spec(passes, spec).passes
    except (Exception, ArgSpecParseError) as exc:  # ArgSpecParseError (bad syntax) is a BaseException
        names = ", ".join(sorted(passes))
        raise PipelineError(f"bad pipeline '{spec}': {' '.join(str(exc).split())}. Known passes: {names}") from None


def remaining_pipeline(module: ModuleOp, pipeline: str = DEFAULT_PIPELINE) -> str:
    """The part of `pipeline` a module still needs, judged by its level and its container's properties."""
    from raspc.dialects import craft as C

    names = [p.strip() for p in pipeline.split(",") if p.strip()]
    container = container_of(module)
    if container.LEVEL == "rasp":
        return pipeline
    if container.LEVEL == "tensor":
        return ""
    assert isinstance(container, C.ModelOp)
    done = {"lower-rasp-to-craft", *(["allocate-layers"] if container.layers is not None else []),
            *(["layout-residual"] if container.residual is not None else [])}
    start = names.index("lower-rasp-to-craft") + 1 if "lower-rasp-to-craft" in names else 0
    return ",".join(n for n in names[start:] if n not in done)


def compile_module(
    module: ModuleOp,
    pipeline: str = DEFAULT_PIPELINE,
    *,
    stop_at: str | None = None,
    verifier: Any | None = None,
    on_pass: Callable[[ModulePass, ModuleOp], None] | None = None,
    verify_end: bool = True,
) -> ModuleOp:
    """Runs `pipeline` on `module` pass by pass (in place), verifying the IR.

    The IR is verified after every pass that is not raspc's own (a custom pass, a plugin's) or
    when `verifier` is given, and otherwise once at the end: raspc's passes are tested to keep the
    IR valid, and verifying after each of them was a third of a small compile (after each level
    change, a tenth). A failure names the passes run since the last verification. `verify_end=False`
    leaves the final check to the caller (compile_rasp_to_model: its ONNX export verifies the tensor
    module it reads, so verifying here as well did the same work twice).

    `stop_at` (rasp, craft or tensor) returns the module as it was just before the first pass that
    would take it below that level. `verifier` (a raspc.verification.Verifier) checks every pass's
    answers; `on_pass(pass, module)` is called after each pass."""
    from raspc import progress

    ctx = context()
    passes = build_pipeline(pipeline)
    unverified: list[str] = []  # passes run since the IR was last verified
    with progress.task("pipeline", total=len(passes)) as shown:
        for i, p in enumerate(passes):
            shown.update(i, p.name)
            before = module.clone() if stop_at is not None and level_of(module) == stop_at else None
            try:
                p.apply(ctx, module)
            except RaspcError:
                raise
            except VerifyException as exc:  # the pass built an invalid attribute or op itself
                raise IRError(f"IR after pass '{p.name}' does not verify: {exc}") from None
            unverified.append(p.name)
            try:
                trusted = p.name in TRUSTED_PASSES and p.name not in _USER_PASSES
                if verifier is not None or not trusted or (verify_end and i == len(passes) - 1):
                    module.verify()
                    unverified.clear()
            except RaspcError:
                raise
            except VerifyException as exc:
                which = (f"pass '{p.name}'" if len(unverified) == 1 else
                         "passes " + ", ".join(f"'{n}'" for n in unverified)
                         + " (verified together; verify=True checks each)")
                raise IRError(f"IR after {which} does not verify: {exc}") from None
            if before is not None and level_of(module) != stop_at:
                return before
            if verifier is not None:
                verifier.check(p.name, module)
            if on_pass is not None:
                on_pass(p, module)
        shown.update(len(passes), "")
    return module


def compile_program(
    program: Any,
    vocab: Sequence[Any],
    max_seq_len: int,
    *,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    causal: bool = False,
    pipeline: str = DEFAULT_PIPELINE,
    verify: bool | int | str = False,
    stop_at: str | None = None,
    on_pass: Callable[[ModulePass, ModuleOp], None] | None = None,
    verify_end: bool = True,
) -> tuple[ModuleOp, dict[str, ModuleOp]]:
    """Front end + `pipeline`. Returns the final module and snapshots: "rasp" (the traced program,
    a copy) and the final level (the module itself). A level in between is what `compile_module`
    gives from the traced program with `stop_at` (compilation is deterministic). With `verify`,
    the trace is checked against the evaluator and every pass's output against the trace.
    `verify_end` as for `compile_module`."""
    from raspc.lowering.program_to_rasp import program_to_rasp

    first, _, rest = pipeline.partition(",")
    if first.strip() == "infer-value-sets" and on_pass is None:
        # the front end types every op with this very analysis as it traces: running it again
        # changes nothing (a hook still sees every pass of the pipeline)
        pipeline = rest

    module = program_to_rasp(program, vocab, max_seq_len, compiler_bos, compiler_pad, causal)
    snapshots = {"rasp": module.clone()}
    verifier = None
    if verify:
        from raspc.verification import Verifier

        verifier = Verifier(module, verify, program=program)
        verifier.check_program()

    module = compile_module(module, pipeline, stop_at=stop_at, verifier=verifier, on_pass=on_pass,
                            verify_end=verify_end)
    if level_of(module) != "rasp":
        snapshots[level_of(module)] = module
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


__all__ = [
    "DEFAULT_PIPELINE", "RASP_PIPELINE", "CRAFT_PIPELINE", "TENSOR_PIPELINE", "LEVELS", "register_pass",
    "available_passes", "dialect_factories", "context", "parse_ir", "build_pipeline", "remaining_pipeline",
    "compile_module", "compile_program", "level_of", "elide_dense",
]
