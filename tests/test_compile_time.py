"""Work a compile no longer does (issue 11, compile time), and that the answers stayed the same:
the program graph is read on first use, the traced module's value sets are not inferred twice, a
trusted pipeline is verified once, Tracr's per-layer activations run when first read, and a
compile-and-answer in a new process does not import the report package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp

from raspc import compile_rasp_to_model, lib, rasp
from raspc.compiler import DEFAULT_PIPELINE, compile_module, compile_program
from raspc.report.program_graph import ProgramGraphRecorder

CASES = {
    "hist": (lambda: lib.make_hist(), list("abc"), 5),
    "sort_unique": (lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3, 4], 5),
    "frac_prevs": (lambda: lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens))),
                   list("ab"), 6),
    "sort_freq": (lambda: lib.make_sort_freq(max_seq_len=5), list("abc"), 5),
}


@pytest.mark.parametrize("name", CASES)
def test_the_program_graph_read_on_first_use_is_the_one_recorded_after_the_rasp_passes(name: str) -> None:
    make, vocab, n = CASES[name]
    program = make()  # one program: its unnamed s-ops' labels come from a global counter
    recorder = ProgramGraphRecorder()
    compile_program(program, vocab, n, on_pass=recorder)
    model = compile_rasp_to_model(program, vocab, n)
    assert model._program_graph_built is False  # compiling did not build it
    assert recorder.graph is not None and model.program_graph == recorder.graph


@pytest.mark.parametrize("name", CASES)
def test_skipping_the_traced_modules_second_inference_changes_no_byte(name: str) -> None:
    make, vocab, n = CASES[name]
    program = make()
    skipped, _ = compile_program(program, vocab, n)  # the leading infer-value-sets is skipped
    every_pass, _ = compile_program(program, vocab, n, on_pass=lambda p, m: None)  # a hook sees every pass
    assert str(skipped) == str(every_pass)


def test_a_trusted_pipeline_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from raspc.lowering.program_to_rasp import program_to_rasp

    module = program_to_rasp(lib.make_hist(), list("abc"), 5)
    calls = []
    verify = ModuleOp.verify
    monkeypatch.setattr(ModuleOp, "verify", lambda self, *a, **k: (calls.append(1), verify(self, *a, **k))[1])
    compile_module(module, DEFAULT_PIPELINE)
    assert len(calls) == 1
    module = program_to_rasp(lib.make_hist(), list("abc"), 5)  # the front end verifies what it traced
    calls.clear()
    compile_module(module, DEFAULT_PIPELINE, verify_end=False)  # the caller verifies the end
    assert calls == []


def test_compile_rasp_to_model_still_verifies_the_tensor_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # compile_module leaves the end check to the export (verify_end=False): the export must make it
    from raspc.dialects.common import level_of

    levels = []
    verify = ModuleOp.verify
    monkeypatch.setattr(ModuleOp, "verify", lambda self, *a, **k: (levels.append(level_of(self)), verify(self, *a, **k))[1])
    compile_rasp_to_model(lib.make_hist(), list("abc"), 5)
    assert levels == ["rasp", "tensor"]  # the traced program, and the tensor module the export reads


def test_tracr_activations_run_when_first_read_and_equal_the_hooked_graph() -> None:
    model = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3], 4)
    out = model.apply(["BOS", 3, 1, 2])
    assert out.decoded == ["BOS", 1, 2, 3]
    assert getattr(model, "_hooked_runtime", None) is None  # the answer alone ran the compact graph only
    residuals = out.residuals
    assert model._hooked_runtime is not None
    eager = model._trace(["BOS", 3, 1, 2])
    for mine, theirs in zip(residuals, eager["residuals"]):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(out.input_embeddings, eager["input_embeddings"])
    assert len(out.layer_outputs) == len(eager["layer_outputs"]) and len(out.attn_logits) == len(eager["attn_logits"])
    np.testing.assert_allclose(out.residuals[-1][0], out.residual, atol=1e-5)


def test_a_new_process_compiles_and_answers_without_the_report_package() -> None:
    script = (
        "import sys\n"
        "from raspc import compile_rasp_to_model, lib\n"
        "m = compile_rasp_to_model(lib.make_length(), vocab={'a', 'b'}, max_seq_len=4)\n"
        "print(m.apply(['BOS', 'a', 'b']).decoded)\n"
        "print(sorted(n for n in sys.modules if n.startswith(('raspc.report', 'raspc.interpreters', 'raspc.verification'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.splitlines() == ["['BOS', 2, 2]", "[]"]
