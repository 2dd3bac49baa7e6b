"""The `raspc` and `raspc-opt` command lines, run as subprocesses (`python -m raspc.cli.main / .opt`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
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
    # one answer per line: the empty line is the empty input, so answers line up with input lines
    assert out.splitlines() == ["[2, 1, 2]", "[1]", "[]", "[5, 5, 5, 5, 5]"]


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
    # the same model; `raspc compile` also stores the program graph (raspc.program) for pictures
    import onnx

    compiled = onnx.load(tmp_path / "r2.onnx")
    assert any(p.key == "raspc.program" for p in compiled.metadata_props)
    kept = [p for p in compiled.metadata_props if p.key != "raspc.program"]
    del compiled.metadata_props[:]
    compiled.metadata_props.extend(kept)
    assert compiled.SerializeToString() == out.read_bytes()


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


# --------------------------------------------------------------------------- rough edges a new user hit (issue 9)
# In-process (`main([...])`), so they cost no interpreter start-up; each failed before its fix.


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `raspc ARGS` run in this process."""
    from raspc.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(capsys: pytest.CaptureFixture[str], *args: Any) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 1, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("raspc: error: "), err
    assert "internal error" not in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def quiet_progress() -> Any:
    """Progress reporting as the CLI sets it, restored afterwards (main() turns it on)."""
    from raspc import progress

    saved = progress.configure()
    yield progress
    progress.restore(saved)


def test_test_vectors_ship_inside_tests() -> None:
    """A fresh clone has the Tracr vectors: the tests read tests/data, not a file beside the repository."""
    here = Path(__file__).resolve().parent
    assert json.loads((here / "data" / "tracr-lib-vectors.json").read_text())["cases"]
    for name in ("test_lib_eval.py", "test_e2e_library.py"):
        text = (here / name).read_text()
        assert '"data" / "tracr-lib-vectors.json"' in text and '"shared" / "tracr-lib-vectors.json"' not in text


def test_mlir_without_max_seq_len_is_a_one_line_error(capsys, tmp_path: Path, quiet_progress) -> None:
    assert cli(capsys, "compile", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "3", "-o",
               tmp_path / "h.mlir")[0] == 0
    text = (tmp_path / "h.mlir").read_text().replace("max_seq_len = 3, ", "")
    (tmp_path / "bad.mlir").write_text(text)
    assert "max_seq_len" in cli_error(capsys, "compile", tmp_path / "bad.mlir", "-o", tmp_path / "x.onnx")


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX file raspc did not write (no raspc.* metadata)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 11
    path = tmp_path_factory.mktemp("foreign") / "foreign.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("command", [["circuits"], ["run", "a"], ["report"], ["plot"]])
def test_foreign_onnx_is_a_one_line_error(capsys, foreign_onnx: Path, command: list[str], quiet_progress) -> None:
    line = cli_error(capsys, command[0], foreign_onnx, *command[1:])
    assert "not a raspc model" in line and "KeyError" not in line


def test_garbage_file_is_a_one_line_error(capsys, tmp_path: Path, quiet_progress) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    for command in ("circuits", "report"):
        assert "junk.onnx" in cli_error(capsys, command, tmp_path / "junk.onnx")


def test_lib_sources_take_arguments(capsys, tmp_path: Path, quiet_progress) -> None:
    out = tmp_path / "count.onnx"
    assert cli(capsys, "compile", "lib:make_count?token=x", "--vocab", "x,y", "--max-seq-len", "4", "-o", out)[0] == 0
    assert cli(capsys, "run", out, "x", "y", "x")[1].strip() == "[2, 2, 2]"
    pattern = tmp_path / "pattern.onnx"
    assert cli(capsys, "compile", "lib:detect_pattern?pattern=ba", "--vocab", "a,b", "--max-seq-len", "4",
               "-o", pattern)[0] == 0
    assert cli(capsys, "run", pattern, "b", "a", "b", "a")[1].strip() == "[None, True, False, True]"


def test_lib_default_token_outside_the_vocabulary_is_refused(capsys, quiet_progress) -> None:
    line = cli_error(capsys, "compile", "lib:make_count", "--vocab", "x,y", "--max-seq-len", "3")
    assert "token defaults to 'a'" in line and "lib:make_count?token=x" in line
    line = cli_error(capsys, "compile", "lib:make_count?token=z", "--vocab", "x,y", "--max-seq-len", "3")
    assert "token is given 'z'" in line
    assert "no argument 'tok'" in cli_error(capsys, "compile", "lib:make_count?tok=x", "--vocab", "x,y",
                                            "--max-seq-len", "3")
    assert "takes: none" in cli_error(capsys, "compile", "lib:make_hist?n=1", "--vocab", "x,y", "--max-seq-len", "3")


def test_lib_listing_is_pasteable(capsys, tmp_path: Path, quiet_progress) -> None:
    import shlex

    code, out, _ = cli(capsys, "lib")
    assert code == 0
    line = next(l for l in out.splitlines() if "lib:make_pair_balance" in l and "e.g." in l)
    argv = shlex.split(line.split("e.g. ", 1)[1])
    assert argv[:3] == ["raspc", "compile", "lib:make_pair_balance"] and argv[argv.index("--vocab") + 1] == "(,),a"
    assert "--vocab '(,),a'" in line
    argv[argv.index("-o") + 1] = str(tmp_path / "pb.onnx")
    assert cli(capsys, *argv[1:])[0] == 0
    assert "?token=VALUE" in out  # the arguments each program takes


def test_negative_numbers_in_vocab(capsys, tmp_path: Path, quiet_progress) -> None:
    out = tmp_path / "neg.onnx"
    assert cli(capsys, "compile", "lib:make_hist", "--vocab", "-2,-1,0", "--max-seq-len", "3", "-o", out)[0] == 0
    assert cli(capsys, "run", out, "-1", "-2", "-1")[1].strip() == "[2, 1, 2]"


def test_empty_and_duplicate_vocab_tokens_are_named(capsys, quiet_progress) -> None:
    assert "empty token at position 2" in cli_error(capsys, "compile", "lib:make_hist", "--vocab", "a,,b",
                                                     "--max-seq-len", "3")
    assert "'a' more than once" in cli_error(capsys, "compile", "lib:make_hist", "--vocab", "a,b,a",
                                              "--max-seq-len", "3")
    from raspc import VocabError, compile_rasp_to_model, lib

    with pytest.raises(VocabError, match="duplicate tokens: 'b'"):
        compile_rasp_to_model(lib.make_hist(), ["a", "b", "b"], 3)


def test_batch_answers_line_up_with_input_lines(capsys, built: Path, tmp_path: Path, quiet_progress) -> None:
    batch = tmp_path / "batch.txt"
    batch.write_text("a b\n\nb\n")
    assert cli(capsys, "run", built / "hist.onnx", "--batch", batch)[1].splitlines() == ["[1, 1]", "[]", "[1]"]
    batch.write_text("a\nz\n")
    assert f"{batch}:2:" in cli_error(capsys, "run", built / "hist.onnx", "--batch", batch)


def test_emit_ir_into_an_onnx_file_is_refused(capsys, tmp_path: Path, quiet_progress) -> None:
    line = cli_error(capsys, "compile", "lib:make_hist", *VOCAB, "--emit", "tensor", "-o", tmp_path / "x.onnx")
    assert "writes IR text" in line and "x.mlir" in line
    assert not (tmp_path / "x.onnx").exists()


def test_version(capsys) -> None:
    from raspc import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"raspc {__version__}"


def test_onnx_model_from_a_path_answers_like_compiled_model(built: Path) -> None:
    from raspc import InputError, compile_rasp_to_model, lib
    from raspc.runtime import ModelOutput, OnnxModel

    from_path = OnnxModel(str(built / "hist.onnx"))
    loaded = OnnxModel.load(built / "hist.onnx")
    compiled = compile_rasp_to_model(lib.make_hist(), ["a", "b", "c", "d"], 5)
    seq = ["BOS", "a", "b", "a"]
    answers = [from_path.apply(seq), loaded.apply(seq), compiled.apply(seq)]
    assert all(isinstance(a, ModelOutput) for a in answers)  # CompiledModel adds Tracr's fields
    assert [a.decoded for a in answers] == [["BOS", 2, 1, 2]] * 3
    np.testing.assert_array_equal(answers[0].residual, answers[2].residual)
    with pytest.raises(InputError, match="does not exist"):
        OnnxModel("no-such-model.onnx")
    with pytest.raises(InputError, match="takes a file path"):
        OnnxModel(3)  # type: ignore[arg-type]


def test_builtin_sops_say_they_have_no_source(capsys, quiet_progress) -> None:
    from raspc import rasp

    from raspc import CompileError, ValueSetError, compile_rasp_to_model

    assert rasp.tokens.source is None and rasp.indices.source is None and rasp.length.source is None
    assert str(ValueSetError("value set grows to 10000 values", label="indices")) == (
        "built-in s-op 'indices' (raspc defines it: no source line): value set grows to 10000 values")
    assert str(CompileError("x", label="hist", source="lib.py:1")) == "s-op 'hist' (lib.py:1): x"
    ir = compile_rasp_to_model(rasp.Map(lambda n: n + 1, rasp.length), ["a"], 3).ir("rasp")
    assert "frozen" not in ir and "importlib" not in ir  # length's ops carried an importlib frame as src
    line = cli_error(capsys, "compile", "lib:make_reverse", "--vocab", "a,b", "--max-seq-len", "10000")
    assert "frozen" not in line and "importlib" not in line


def test_run_json_and_residual_filter(capsys, built: Path, quiet_progress) -> None:
    code, out, _ = cli(capsys, "run", built / "hist.onnx", "a", "b", "a", "--json")
    assert code == 0 and json.loads(out) == {"input": ["a", "b", "a"], "output": [2, 1, 2]}
    code, out, _ = cli(capsys, "run", built / "hist.onnx", "a", "b", "--residual", "hist", "--json")
    rows = json.loads(out)["residual"]["rows"]
    assert set(rows) == {"hist:1", "hist:2", "hist:3", "hist:4", "hist:5", "hist.bos_share"}
    assert rows["hist:1"] == [0.0, 1.0, 1.0]
    table = cli(capsys, "run", built / "hist.onnx", "a", "b", "--residual=^tokens:[ab]$")[1].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["tokens:a", "tokens:b"]
    table = cli(capsys, "run", built / "hist.onnx", "a", "--residual", "one,bos")[1].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["one", "bos"]
    assert "matches no residual direction" in cli_error(capsys, "run", built / "hist.onnx", "a", "--residual", "zzz")
    assert "reads a token as the filter" in cli_error(capsys, "run", built / "hist.onnx", "b", "--residual", "a")
    code, _, err = cli(capsys, "run", built / "hist.onnx", "--residual", "a")
    assert code == 2 and "--residual took 'a' as its filter" in err
    (built / "json_batch.txt").write_text("a b a\n\n")
    code, out, _ = cli(capsys, "run", built / "hist.onnx", "--batch", built / "json_batch.txt", "--json")
    assert json.loads(out) == [{"input": ["a", "b", "a"], "output": [2, 1, 2]}, {"input": [], "output": []}]


def test_progress_and_what_was_written(capsys, tmp_path: Path, quiet_progress) -> None:
    quiet_progress.configure(delay=0.0)  # report at once, not after a second
    out = tmp_path / "hist.onnx"
    code, _, err = cli(capsys, "compile", "lib:make_hist", *VOCAB, "-o", out, "--verify")
    assert code == 0
    lines = err.splitlines()
    assert any(l.startswith("raspc: compiling lib:make_hist > pipeline [") for l in lines), err
    assert any("verifying lower-craft-to-tensor" in l for l in lines), err
    assert "raspc: compiling lib:make_hist: done in" in err
    assert lines[-1] == f"raspc: wrote {out}: 1 layer, 12 dims, 675 params"
    code, _, err = cli(capsys, "compile", "lib:make_hist", *VOCAB, "-o", out, "--verify", "-q")
    assert code == 0 and err == ""


def test_progress_is_silent_for_short_work_and_shows_long_work() -> None:
    import io
    import time

    from raspc import progress

    stream = io.StringIO()
    saved = progress.configure(enabled=True, delay=60.0, interval=0.0, stream=stream)
    try:
        with progress.task("quick", total=3) as t:
            t.step("a")
        assert stream.getvalue() == ""  # under the delay: nothing at all
        progress.configure(delay=0.05)
        with progress.task("slow") as t:
            time.sleep(0.3)  # never steps: the timer still says it is running
        text = stream.getvalue()
        assert text.splitlines()[0] == "raspc: slow" and text.splitlines()[-1].startswith("raspc: slow: done in")
    finally:
        progress.restore(saved)
