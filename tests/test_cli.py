"""The `raspc` and `raspc-opt` command lines, run as subprocesses (`python -m raspc.cli.main / .opt`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VOCAB = ["--vocab", "a,b,c,d", "--max-seq-len", "5"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RASPC_DEBUG", None)
    return env


def raspc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raspc.cli.main", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=_env(), timeout=120,
    )


def raspc_opt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raspc.cli.opt", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=_env(), timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], prefix: str = "raspc: error:") -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hist.mlir (rasp IR) and hist.onnx for make_hist, compiled once for the whole module."""
    d = tmp_path_factory.mktemp("cli")
    ok(raspc("compile", "lib:make_hist", *VOCAB, "-o", d / "hist.mlir"))
    ok(raspc("compile", "lib:make_hist", *VOCAB, "-o", d / "hist.onnx"))
    return d


# --------------------------------------------------------------------------- raspc compile / run


def test_compile_emits_each_ir_level():
    rasp_ir = ok(raspc("compile", "lib:make_hist", *VOCAB))
    assert "rasp.selector_width" in rasp_ir and "craft." not in rasp_ir
    craft_ir = ok(raspc("compile", "lib:make_hist", *VOCAB, "--emit", "craft"))
    assert "craft.attention_head" in craft_ir and "tensor." not in craft_ir
    assert "residual = [" in craft_ir and "layers = " in craft_ir  # the whole craft part of the pipeline has run
    tensor_ir = ok(raspc("compile", "lib:make_hist", *VOCAB, "--emit", "tensor"))
    assert "tensor.attention_head" in tensor_ir and "craft." not in tensor_ir


def test_rasp_file_is_the_stdout_dump(built: Path):
    assert (built / "hist.mlir").read_text() == ok(raspc("compile", "lib:make_hist", *VOCAB))


def test_run_onnx(built: Path):
    assert ok(raspc("run", built / "hist.onnx", "a", "b", "a")).strip() == "[2, 1, 2]"
    assert ok(raspc("run", built / "hist.onnx", "BOS", "a", "b", "a")).strip() == "[2, 1, 2]"  # BOS given


def test_run_residual_table(built: Path):
    out = ok(raspc("run", built / "hist.onnx", "a", "b", "a", "--residual")).splitlines()
    assert out[0] == "[2, 1, 2]"
    assert out[1].split() == ["label", "0:BOS", "1:a", "2:b", "3:a"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert rows["one"] == ["1.000"] * 4
    assert rows["hist:2"] == ["0.000", "1.000", "0.000", "1.000"]


def test_run_batch(built: Path):
    batch = built / "batch.txt"
    batch.write_text("a b a\nc\n\nd d d d d\n")
    out = ok(raspc("run", built / "hist.onnx", "--batch", batch))
    assert out.splitlines() == ["[2, 1, 2]", "[1]", "[5, 5, 5, 5, 5]"]


def test_python_source(tmp_path: Path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        from raspc import rasp

        def plus_len(max_seq_len=1):
            return rasp.Map(lambda x: x + max_seq_len, rasp.tokens).named("plus_len")
    """))
    ok(raspc("compile", "prog.py:plus_len", "--vocab", "1,2,3", "--max-seq-len", "4", "-o", "p.onnx",
             cwd=tmp_path))
    # tokens read as ints; plus_len got max_seq_len=4
    assert ok(raspc("run", "p.onnx", "3", "1", cwd=tmp_path)).strip() == "[7, 5]"


def test_compile_rasp_mlir_to_onnx(built: Path):
    ok(raspc("compile", built / "hist.mlir", "-o", built / "from_ir.onnx"))  # vocab etc. from the module
    assert ok(raspc("run", built / "from_ir.onnx", "c", "c", "b")).strip() == "[2, 2, 1]"


def test_compile_craft_mlir_runs_the_rest(built: Path):
    ok(raspc_opt(built / "hist.mlir", "-p", "lower-rasp-to-craft", "-o", built / "craft0.mlir"))
    ok(raspc("compile", built / "craft0.mlir", "-o", built / "from_craft.onnx"))
    assert ok(raspc("run", built / "from_craft.onnx", "a", "a", "a", "d")).strip() == "[3, 3, 3, 1]"


# --------------------------------------------------------------------------- raspc-opt


def test_opt_round_trips(built: Path):
    assert ok(raspc_opt(built / "hist.mlir")) == (built / "hist.mlir").read_text()


def test_opt_pipeline(built: Path):
    out = ok(raspc_opt(built / "hist.mlir", "-p", "lower-rasp-to-craft,allocate-layers,layout-residual"))
    assert "craft.mlp" in out and "residual = [" in out and "rasp.select" not in out


def test_opt_print_ir_after_all(built: Path):
    r = raspc_opt(built / "hist.mlir", "-p", "lower-rasp-to-craft,allocate-layers,layout-residual",
                  "--print-ir-after-all")
    out = ok(r)
    headers = [line for line in r.stderr.splitlines() if line.startswith("// -----// IR Dump After")]
    assert headers == [f"// -----// IR Dump After {p} //----- //"
                       for p in ("lower-rasp-to-craft", "allocate-layers", "layout-residual")]
    assert out.strip() in r.stderr  # the last dump is the final module


def test_opt_default_pipeline_and_export(built: Path):
    from raspc.compiler import DEFAULT_PIPELINE

    out = built / "opt.onnx"
    ok(raspc_opt(built / "hist.mlir", "-p", f'{DEFAULT_PIPELINE},export-onnx{{output="{out}"}}'))
    assert ok(raspc("run", out, "b", "b")).strip() == "[2, 2]"


# --------------------------------------------------------------------------- listings


def test_passes_and_lib_listings():
    passes = ok(raspc("passes"))
    assert "lower-rasp-to-craft" in passes and "default pipeline:" in passes
    assert "make_hist" in ok(raspc("lib"))


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bad_ir(built: Path) -> Path:
    text = (built / "hist.mlir").read_text().replace("rasp.selector_width", "rasp.selector_widthx")
    path = built / "bad.mlir"
    path.write_text(text)
    return path


def test_error_unknown_lib_program():
    assert "make_nope" in one_line_error(raspc("compile", "lib:make_nope", *VOCAB))


def test_error_unknown_token_at_run(built: Path):
    assert "'z'" in one_line_error(raspc("run", built / "hist.onnx", "a", "z"))


def test_error_sequence_too_long(built: Path):
    assert "max_seq_len" in one_line_error(raspc("run", built / "hist.onnx", *"aaaaaa"))


def test_error_empty_vocab():
    assert "empty" in one_line_error(raspc("compile", "lib:make_hist", "--vocab", "", "--max-seq-len", "3"))


def test_error_bos_in_vocab():
    r = raspc("compile", "lib:make_hist", "--vocab", "a,BOS", "--max-seq-len", "3")
    assert "BOS" in one_line_error(r)


def test_error_program_file_missing(tmp_path: Path):
    assert "nothere.py" in one_line_error(raspc("compile", "nothere.py:f", *VOCAB, cwd=tmp_path))


def test_error_bad_python_programs(tmp_path: Path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('kaboom')\n")
    (tmp_path / "prog.py").write_text("def three():\n    return 3\n")
    assert "kaboom" in one_line_error(raspc("compile", "broken.py:f", *VOCAB, cwd=tmp_path))
    assert "missing" in one_line_error(raspc("compile", "prog.py:missing", *VOCAB, cwd=tmp_path))
    assert "s-op" in one_line_error(raspc("compile", "prog.py:three", *VOCAB, cwd=tmp_path))


def test_error_malformed_ir(bad_ir: Path):
    line = one_line_error(raspc("compile", bad_ir, "-o", bad_ir.with_suffix(".onnx")))
    assert f"{bad_ir}:5:" in line and "selector_widthx" in line


def test_error_unknown_pass():
    r = raspc("compile", "lib:make_hist", *VOCAB, "--emit", "tensor", "-p", "bogus")
    assert "bogus" in one_line_error(r)


def test_error_onnx_needs_output():
    assert "-o" in one_line_error(raspc("compile", "lib:make_hist", *VOCAB, "--emit", "onnx"))


def test_opt_error_malformed_ir(bad_ir: Path):
    r = raspc_opt(bad_ir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad_ir}:5:" in r.stderr and "^" in r.stderr
    assert "rasp.selector_widthx is not registered" in r.stderr


def test_opt_error_unknown_pass(built: Path):
    line = one_line_error(raspc_opt(built / "hist.mlir", "-p", "cse,bogus"), prefix="raspc-opt: error:")
    assert "'bogus'" in line and "lower-rasp-to-craft" in line  # names it, lists known passes


# --------------------------------------------------------------------------- circuits, --verify, --elide


def test_circuits_of_an_exported_model(built: Path):
    out = ok(raspc("circuits", built / "hist.onnx"))
    assert "head L0.hist.attn" in out and "QK circuit" in out and "OV circuit" in out
    assert "bos -> hist.bos_share" in out
    one = ok(raspc("circuits", built / "hist.onnx", "--head", "hist.attn"))
    assert "tokens:a -> tokens:a" in one
    assert "no head 'nope'" in one_line_error(raspc("circuits", built / "hist.onnx", "--head", "nope"))


def test_verify_checks_every_pass_against_the_program_or_the_input_ir(built: Path, tmp_path: Path):
    ok(raspc("compile", "lib:make_sort_freq", *VOCAB, "--verify", "-o", tmp_path / "s.onnx"))
    ok(raspc("compile", "lib:make_hist", *VOCAB, "--verify=exhaustive", "-o", tmp_path / "e.onnx"))
    ok(raspc("compile", built / "hist.mlir", "--verify=50", "-o", tmp_path / "h.onnx"))  # the IR is the reference
    craft = tmp_path / "hist_craft.mlir"
    ok(raspc("compile", "lib:make_hist", *VOCAB, "--emit", "craft", "-o", craft))
    assert "rasp-level" in one_line_error(raspc("compile", craft, "--verify", "-o", tmp_path / "c.onnx"))
    assert "exhaustive" in one_line_error(raspc("compile", "lib:make_hist", *VOCAB, "--verify=all", "-o",
                                                tmp_path / "x.onnx"))


def test_elide_shortens_weights():
    out = ok(raspc("compile", "lib:make_hist", *VOCAB, "--emit", "tensor", "--elide"))
    assert "dense<...> : tensor<" in out and '"0x' not in out


@pytest.mark.parametrize("script", ["walkthrough.py", "custom_pass.py"])
def test_examples_run(script: str, tmp_path: Path):
    path = Path(__file__).resolve().parents[1] / "examples" / script
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- IR files alone

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_hand_written_rasp_file_without_value_sets_compiles_to_onnx(tmp_path: Path):
    """examples/reverse.mlir has no value sets in its types: raspc-opt runs the default pipeline
    (infer-value-sets first) and exports an ONNX model that answers like the program."""
    from raspc.compiler import DEFAULT_PIPELINE

    out = tmp_path / "reverse.onnx"
    ok(raspc_opt(EXAMPLES / "reverse.mlir", "-p", f'{DEFAULT_PIPELINE},export-onnx{{output="{out}"}}',
                 "--verify-each=exhaustive"))
    assert ok(raspc("run", out, "a", "b", "b")).strip() == "['b', 'b', 'a']"
    ok(raspc("compile", EXAMPLES / "reverse.mlir", "-o", tmp_path / "r2.onnx"))
    assert (tmp_path / "r2.onnx").read_bytes() == out.read_bytes()


def test_verify_each_names_a_pass_that_changes_the_answers(tmp_path: Path):
    plugin = tmp_path / "bad_pass.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from xdsl.passes import ModulePass\n"
        "import raspc\n"
        "from raspc.dialects import rasp as R\n"
        "@raspc.register_pass\n"
        "@dataclass(frozen=True)\n"
        "class SwapTable(ModulePass):\n"
        "    name = 'swap-table'\n"
        "    def apply(self, ctx, op):\n"
        "        for o in op.walk():\n"
        "            if isinstance(o, R.SequenceMapOp):\n"
        "                (a, x), (b, y), *rest = o.fn.data\n"
        "                o.properties['fn'] = R.TableAttr.of([(a, y), (b, x), *rest])\n"
    )
    r = raspc_opt(EXAMPLES / "reverse.mlir", "-p", "infer-value-sets,swap-table", "--load-pass-plugin", plugin,
                  "--verify-each")
    line = one_line_error(r, prefix="raspc-opt: error:")
    assert "after pass 'swap-table'" in line and "on input [" in line
