"""The package's shape: imports flow one way with the pipeline, and nothing reads string-keyed
module attributes.

Every module is given a level; a module may import only modules at its own level or below
(lazy imports inside functions included), and the import graph has no cycle:

    0  errors, utils, progress          shared helpers
    1  dialects.common                  what every level shares
    2  tensor: dialect, interpreter, ONNX export, runtime, circuits
    3  craft: dialect, interpreter, constructions, craft passes, craft -> tensor
    4  rasp: dialect, analyses, interpreter, rasp passes, rasp -> craft
    5  the RASP language, the library, the front end (program -> rasp)
    6  drivers: compiler, verification, model, CLI, plugin, random programs, datasets
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "raspc"

LEVELS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("raspc.errors", "raspc.utils", "raspc.progress")),
    (1, ("raspc.dialects.common",)),
    (2, ("raspc.dialects.tensor", "raspc.interpreters.tensor", "raspc.lowering.tensor_to_onnx", "raspc.runtime",
         "raspc.analysis.circuits",
         # issue 8: weights as numpy, the ground-truth circuit graph, composition, TransformerLens export
         "raspc.analysis.weights", "raspc.analysis.circuit_graph", "raspc.analysis.composition", "raspc.export")),
    (3, ("raspc.dialects.craft", "raspc.interpreters.craft", "raspc.constructions", "raspc.passes.allocate_layers",
         "raspc.passes.layout_residual", "raspc.lowering.craft_to_tensor")),
    (4, ("raspc.dialects.rasp", "raspc.analysis", "raspc.interpreters.rasp", "raspc.passes",
         "raspc.lowering.rasp_to_craft")),
    (5, ("raspc.rasp", "raspc.lib", "raspc.lowering.program_to_rasp")),
    (6, ("raspc.compiler", "raspc.verification", "raspc.interpreters", "raspc.model", "raspc.compiling",
         "raspc.cli", "raspc.universe", "raspc", "raspc.random_programs", "raspc.datasets",
         # issue 9: pictures (HTML report, PNG plots) read ONNX files through raspc.runtime
         "raspc.report", "raspc.plot")),
]


def level(module: str) -> int:
    """The level of the most specific prefix that names `module`."""
    best = (-1, -1)
    for lvl, prefixes in LEVELS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best[0]:
                best = (len(p), lvl)
    assert best[1] >= 0, f"{module} has no level"
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """raspc modules imported anywhere in the file (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("raspc"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raspc"):
            for a in node.names:  # `from raspc.dialects import rasp` imports raspc.dialects.rasp
                candidate = f"{node.module}.{a.name}"
                is_module = (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    ROOT.parent / Path(*candidate.split("."))).is_dir()
                out.add(candidate if is_module else node.module)
    return out


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_level(name: str) -> None:
    mine = level(name)
    higher = sorted(m for m in imports(MODULES[name]) if level(m) > mine)
    assert not higher, f"{name} (level {mine}) imports higher levels: {higher}"


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    for name in graph:
        # a package's __init__ re-exporting its children is not a cycle through the children; and a
        # dialect's canonicalization trait names its patterns lazily, as xDSL's dialects do (the
        # patterns import the dialect, not the other way round)
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")
                       and not (name.startswith("raspc.dialects.") and ".canonicalization_patterns." in m)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_string_keyed_module_attributes_are_read() -> None:
    """Compile facts live in typed container ops; `raspc.*` keys remain only in ONNX metadata."""
    offenders = []
    for name, path in MODULES.items():
        text = path.read_text()
        if "attributes[\"raspc." in text or "attributes.get(\"raspc." in text:
            offenders.append(name)
    assert not offenders, offenders


def test_every_pass_has_a_filecheck_test() -> None:
    from raspc.compiler import _RASPC_PASSES

    texts = [p.read_text() for p in (ROOT.parent / "tests" / "filecheck").glob("*.mlir")]
    runs = [line for t in texts for line in t.splitlines() if "RUN:" in line]
    missing = [name for name in _RASPC_PASSES if not name.startswith("export-") and not any(name in r for r in runs)]
    assert not missing, f"passes without a FileCheck test: {missing}"
