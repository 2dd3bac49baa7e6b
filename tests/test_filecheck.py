"""FileCheck tests of the passes, in the conventions of MLIR/xDSL (`tests/filecheck/*.mlir`).

Each file's `// RUN:` line is run through the shell with `%s` = the file, `raspc-opt` = this
Python's `raspc.cli.opt` and `filecheck` = the `filecheck` package (a Python port of LLVM's),
exactly as lit would; the CHECK lines in the file say what the pass must produce.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("filecheck")

FILES = sorted((Path(__file__).parent / "filecheck").glob("*.mlir"))


def _command(path: Path) -> str:
    runs = [line.split("RUN:", 1)[1].strip() for line in path.read_text().splitlines() if "RUN:" in line]
    assert len(runs) == 1, f"{path.name}: expected one RUN line"
    py = shlex.quote(sys.executable)
    tools = {"raspc-opt": f"{py} -m raspc.cli.opt", "filecheck": f"{py} -m filecheck", "%s": shlex.quote(str(path))}
    return " ".join(tools.get(word, word) for word in runs[0].split())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_filecheck(path: Path) -> None:
    result = subprocess.run(_command(path), shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{path.name}:\n{result.stdout}\n{result.stderr}"
