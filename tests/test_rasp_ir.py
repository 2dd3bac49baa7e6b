"""The IR as the program's definition, determinism, the interpreters, and typed errors on bad input.

For every library program (at the vocab / max_seq_len of raspc.lib.LIBRARY_EXAMPLE_VOCAB):

* the IR prints, parses and prints again to identical text at the rasp, craft and tensor levels;
  the rest of the pipeline run from the parsed rasp text reproduces the craft and tensor text,
  and the ONNX exported from the parsed tensor text is byte-identical to the model's;
* the rasp-IR interpreter, given only the parsed IR text (as traced, and after the rasp-level
  passes), agrees with `rasp.evaluate` on >= 200 hypothesis-drawn inputs;
* compiling the same program twice gives byte-identical IR and ONNX, also across fresh Python
  processes with different PYTHONHASHSEEDs;
* the tensor interpreter (`run_tensor`) equals onnxruntime.

Then the typed errors of raspc.errors for bad vocabularies, programs, inputs and IR text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import pytest
from hypothesis import assume, given, settings

from raspc import lib, rasp
from helpers import MIN_INPUTS, batches, evaluate_rows, n_batches, same
from raspc.compiler import DEFAULT_PIPELINE, RASP_PIPELINE, compile_module, level_of, parse_ir
from raspc.errors import (
    CompileError,
    InputError,
    IRError,
    PipelineError,
    RaspcError,
    ValueSetError,
    VocabError,
)
from raspc.interpreters.rasp import RaspInterpreter
from raspc.interpreters.tensor import run_tensor
from raspc.lowering.program_to_rasp import program_to_rasp
from raspc.lowering.tensor_to_onnx import tensor_to_onnx
from raspc.model import compile_rasp_to_model

LEVELS = ("rasp", "craft", "tensor")
NAMES = list(lib.LIBRARY)
THIS_FILE = os.path.basename(__file__)


def example(name: str) -> tuple[list[Any], int]:
    vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
    return list(vocab), max_seq_len


def model_for(compiled: Any, name: str) -> Any:
    vocab, max_seq_len = example(name)
    return compiled(name, vocab, max_seq_len)


def distinct(name: str) -> bool:
    """make_sort_unique's precondition: pairwise distinct keys (here the tokens)."""
    return name == "make_sort_unique"


def interpret(interp: RaspInterpreter, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """RaspInterpreter.run_batch per length group (one numpy batch each), back in row order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[len(r)].append(i)
    out: list[Any] = [None] * len(rows)
    for idx in groups.values():
        for i, res in zip(idx, interp.run_batch([rows[i] for i in idx])):
            out[i] = res
    return out


def padded_ids(model: Any, seqs: Sequence[Sequence[Any]]) -> np.ndarray:
    encoded = [model.runtime.encode(s) for s in seqs]
    ids = np.full((len(encoded), max(map(len, encoded))), model.runtime.pad_id, dtype=np.int64)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
    return ids


# --------------------------------------------------------------------------- IR text round trips


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", NAMES)
def test_ir_prints_parses_prints_identically(compiled: Any, name: str, level: str) -> None:
    text = compiled_ir = model_for(compiled, name).ir(level)
    assert text.startswith("builtin.module")
    module = parse_ir(text)
    assert level_of(module) == level
    again = str(module)
    assert again == compiled_ir
    assert str(parse_ir(again)) == again


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_from_rasp_text_reproduces_every_level(compiled: Any, name: str) -> None:
    """The rasp IR text alone defines the program: the pipeline run on the parsed text gives the
    same craft and tensor text, and the ONNX exported from the tensor text has the same bytes."""
    model = model_for(compiled, name)
    seen: dict[str, str] = {}
    module = parse_ir(model.ir("rasp"))
    module = compile_module(module, DEFAULT_PIPELINE, on_pass=lambda _, m: seen.__setitem__(level_of(m), str(m)))
    assert seen["craft"] == model.ir("craft")
    assert seen["tensor"] == model.ir("tensor") == str(module)
    from raspc.report.program_graph import attach_program_graph

    # the same bytes, once the program graph the compiled model keeps for pictures is attached too
    from_text = attach_program_graph(tensor_to_onnx(parse_ir(model.ir("tensor"))), model.program_graph)
    assert from_text.SerializeToString() == model.onnx_model.SerializeToString()


def test_unknown_ir_level_is_a_pipeline_error(compiled: Any) -> None:
    with pytest.raises(PipelineError, match="onnx-text"):
        model_for(compiled, "make_length").ir("onnx-text")


# --------------------------------------------------------------------------- the rasp interpreter


@pytest.mark.parametrize("name", NAMES)
def test_rasp_interpreter_from_text_equals_evaluator(compiled: Any, name: str) -> None:
    model = model_for(compiled, name)
    vocab, max_seq_len = example(name)
    program = model.program
    numerical = rasp.is_numerical(program)
    traced = RaspInterpreter(parse_ir(model.ir("rasp")))
    optimised_module = parse_ir(model.ir("rasp"))
    optimised_module = compile_module(optimised_module, RASP_PIPELINE)
    optimised = RaspInterpreter(parse_ir(str(optimised_module)))
    checked: list[int] = []

    @settings(max_examples=n_batches())
    @given(batches(vocab, max_seq_len, distinct(name)))
    def run(rows: list) -> None:
        cases = evaluate_rows(program, rows)
        assume(cases)
        inputs = [x for x, _ in cases]
        for interp, what in ((traced, "traced"), (optimised, "after rasp passes")):
            for (x, expected), got in zip(cases, interpret(interp, inputs)):
                assert len(got) == len(expected)
                assert all(same(a, e, numerical) for a, e in zip(got, expected)), (
                    f"{what} IR on {x}: {got}, rasp.evaluate {expected}")
        checked.append(len(cases))

    run()
    assert sum(checked) >= MIN_INPUTS


def test_rasp_interpreter_run_single_and_errors(compiled: Any) -> None:
    model = model_for(compiled, "make_hist")
    interp = RaspInterpreter(parse_ir(model.ir("rasp")))
    assert interp.run(["a", "b", "a"]) == [2, 1, 2]
    with pytest.raises(InputError, match="'z'"):
        interp.run(["a", "z"])
    with pytest.raises(InputError, match="max_seq_len"):
        interp.run(["a"] * 6)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", NAMES)
def test_compiling_twice_is_byte_identical(name: str) -> None:
    vocab, max_seq_len = example(name)
    program = lib.LIBRARY[name](max_seq_len=max_seq_len)
    first = compile_rasp_to_model(program, vocab, max_seq_len)
    second = compile_rasp_to_model(program, list(vocab), max_seq_len)
    for level in LEVELS:
        assert first.ir(level) == second.ir(level), level
    assert first.onnx_model.SerializeToString() == second.onnx_model.SerializeToString()
    assert first.residual_labels == second.residual_labels


_DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, json
    from raspc import lib
    from raspc.model import compile_rasp_to_model
    out = {}
    for name in NAMES:
        vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
        model = compile_rasp_to_model(lib.LIBRARY[name](max_seq_len=max_seq_len), vocab, max_seq_len)
        digest = lambda b: hashlib.sha256(b).hexdigest()
        out[name] = {level: digest(model.ir(level).encode()) for level in ("rasp", "craft", "tensor")}
        out[name]["onnx"] = digest(model.onnx_model.SerializeToString())
        reused = compile_rasp_to_model(lib.LIBRARY[name](max_seq_len=max_seq_len), vocab, max_seq_len,
                                       reuse_residual=True)
        out[name]["reuse"] = digest(str(reused.module).encode() + reused.onnx_model.SerializeToString())
    print(json.dumps(out, sort_keys=True))
    """
)


def test_fresh_processes_with_different_hash_seeds_give_identical_bytes() -> None:
    """Two fresh interpreters (PYTHONHASHSEED 0 and 4242) build and compile the same programs:
    every level's IR and the ONNX bytes must agree (no dependence on set/dict hash order), with
    reuse_residual too."""
    names = ["make_shuffle_dyck2", "make_sort_freq", "make_nary_sequencemap"]
    script = f"NAMES = {names!r}\n" + _DIGEST_SCRIPT
    procs = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0] == results[1]
    assert set(results[0]) == set(names)


# --------------------------------------------------------------------------- tensor interpreter vs onnxruntime


@pytest.mark.parametrize("name", NAMES)
def test_run_tensor_equals_onnxruntime(compiled: Any, name: str) -> None:
    import random

    model = model_for(compiled, name)
    vocab, max_seq_len = example(name)
    rng = random.Random(name)
    seqs = []
    for n in (1, max_seq_len, *[rng.randint(1, max_seq_len) for _ in range(4)]):
        row = rng.sample(vocab, min(n, len(vocab))) if distinct(name) else [rng.choice(vocab) for _ in range(n)]
        seqs.append(["BOS", *row])
    ids = padded_ids(model, seqs)
    out_np, res_np = run_tensor(model.module, ids)
    out_ort, res_ort = model.runtime.run_ids(ids)
    assert out_np.shape == out_ort.shape and res_np.shape == res_ort.shape
    real = ids != model.runtime.pad_id
    if model.output_encoding == "categorical":
        np.testing.assert_array_equal(out_np[real], out_ort[real])
    else:
        np.testing.assert_allclose(out_np[real], out_ort[real], atol=1e-5)
    np.testing.assert_allclose(res_np[real], res_ort[real], atol=1e-3, rtol=1e-4)
    # from the tensor IR text alone
    out_text, _ = run_tensor(parse_ir(model.ir("tensor")), ids)
    np.testing.assert_array_equal(out_text, out_np)


# --------------------------------------------------------------------------- bad input: compile time

LENGTH_VOCAB = ["a", "b", "c"]


@pytest.mark.parametrize(
    "vocab,max_seq_len,match",
    [
        pytest.param([], 4, "empty", id="empty-vocab"),
        pytest.param(["a", "b", "a"], 4, "duplicate", id="duplicate-vocab"),
        pytest.param(["a", "BOS"], 4, "BOS", id="bos-in-vocab"),
        pytest.param(["a", "PAD"], 4, "PAD", id="pad-in-vocab"),
        pytest.param(["a", None], 4, "None", id="none-token"),
        pytest.param(["a"], 0, "max_seq_len", id="max-seq-len-0"),
        pytest.param(["a"], -3, "max_seq_len", id="max-seq-len-negative"),
    ],
)
def test_bad_vocabulary_or_length_is_a_vocab_error(vocab: list, max_seq_len: int, match: str) -> None:
    with pytest.raises(VocabError, match=match):
        compile_rasp_to_model(lib.make_length(), vocab, max_seq_len)


def test_bos_equal_to_pad_is_a_vocab_error() -> None:
    with pytest.raises(VocabError):
        compile_rasp_to_model(lib.make_length(), ["a"], 3, compiler_bos="X", compiler_pad="X")


def test_program_without_tokens_is_a_compile_error() -> None:
    program = rasp.Full(1).named("constant_one")
    with pytest.raises(CompileError, match="tokens") as info:
        compile_rasp_to_model(program, LENGTH_VOCAB, 4)
    assert isinstance(info.value, RaspcError)


def test_program_without_tokens_error_names_the_sop() -> None:
    program = rasp.Full(1).named("constant_one")
    with pytest.raises(CompileError) as info:
        compile_rasp_to_model(program, LENGTH_VOCAB, 4)
    assert "constant_one" in str(info.value)
    assert info.value.label == "constant_one"


def test_not_an_sop_is_a_compile_error() -> None:
    with pytest.raises(CompileError):
        compile_rasp_to_model(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), LENGTH_VOCAB, 4)


def test_map_that_raises_on_every_value_names_the_sop_and_its_source_line() -> None:
    line = sys._getframe().f_lineno + 1
    boom = rasp.Map(lambda x: 10 // (x - x), rasp.tokens).named("boom")
    program = rasp.SequenceMap(lambda a, b: a + b, boom, rasp.tokens).named("after_boom")
    with pytest.raises(ValueSetError) as info:
        compile_rasp_to_model(program, [1, 2, 3], 4)
    err = info.value
    assert isinstance(err, CompileError)
    message = str(err)
    assert "'boom'" in message and "after_boom" not in message
    assert f"{THIS_FILE}:{line}" in message
    assert err.label == "boom" and err.source == f"{THIS_FILE}:{line}"
    assert "ZeroDivisionError" in message and "every input value" in message


def test_map_that_raises_on_some_values_leaves_them_outside_the_domain() -> None:
    """12 // (length - indices) raises only where length == index, which never occurs."""
    program = rasp.SequenceMap(lambda n, i: 12 // (n - i), rasp.length, rasp.indices).named("share")
    model = compile_rasp_to_model(program, ["a", "b"], 4)
    for xs in (["a"], ["a", "b", "b"], ["b"] * 4):
        assert model.apply(["BOS", *xs]).decoded[1:] == rasp.evaluate(program, xs)


def test_select_predicate_that_raises_on_every_pair_names_the_selector() -> None:
    line = sys._getframe().f_lineno + 1
    sel = rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: 1 / (k - k) > 0).named("bad_select")
    with pytest.raises(ValueSetError) as info:
        compile_rasp_to_model(rasp.SelectorWidth(sel).named("w"), [1, 2], 3)
    assert "bad_select" in str(info.value) and f"{THIS_FILE}:{line}" in str(info.value)


def test_value_set_growing_past_the_bound_names_the_sop() -> None:
    """Each SequenceMap pairs the previous tuple with the index: 4 * 8^(k+1) values; k = 4 would
    tabulate 16384 x 8 pairs, past the analysis bound (50,000)."""
    x = rasp.tokens
    lines = []
    for k in range(6):
        lines.append(sys._getframe().f_lineno + 1)
        x = rasp.SequenceMap(lambda a, b: (a, b), x, rasp.indices).named(f"pairs{k}")
    with pytest.raises(ValueSetError) as info:
        compile_rasp_to_model(x, ["a", "b", "c", "d"], 8)
    message = str(info.value)
    assert "'pairs4'" in message, message
    assert info.value.label == "pairs4"
    assert THIS_FILE in message
    assert "16384 x 8" in message  # how large it grew


def test_numerical_map_to_strings_is_a_compile_error() -> None:
    bad = rasp.numerical(rasp.Map(lambda t: t.upper(), rasp.tokens)).named("shout")
    with pytest.raises(CompileError, match="shout"):
        compile_rasp_to_model(bad, ["a", "b"], 3)


def test_mixed_encoding_aggregate_is_a_compile_error() -> None:
    sel = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    agg = rasp.numerical(rasp.Aggregate(sel, rasp.tokens, default=0)).named("mixed_mean")
    with pytest.raises(CompileError, match="mixed_mean"):
        compile_rasp_to_model(agg, [1, 2], 3)


def test_constant_selector_is_refused_naming_it() -> None:
    sel = rasp.ConstantSelector([[True, False], [True, True]]).named("fixed_pattern")
    program = rasp.Aggregate(sel, rasp.tokens).named("agg_fixed")
    with pytest.raises(CompileError, match="fixed_pattern"):
        compile_rasp_to_model(program, ["a", "b"], 2)


# --------------------------------------------------------------------------- bad input: run time


@pytest.fixture(scope="module")
def hist_model(compiled: Any) -> Any:
    return model_for(compiled, "make_hist")  # vocab a..d, max_seq_len 5


@pytest.mark.parametrize(
    "seq,match",
    [
        pytest.param(["BOS", "a", "z"], "'z'", id="unknown-token"),
        pytest.param(["BOS", "a", "PAD"], "PAD", id="pad-token"),
        pytest.param(["BOS", "a", "BOS"], "BOS", id="second-bos"),
        pytest.param(["BOS"] + ["a"] * 6, "max_seq_len", id="too-long"),
        pytest.param(["a", "b"], "BOS", id="missing-bos"),
        pytest.param([], "BOS", id="empty"),
        pytest.param(["BOS", ["a"]], "vocabulary", id="unhashable-token"),
    ],
)
def test_bad_sequence_is_an_input_error(hist_model: Any, seq: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        hist_model.apply(seq)
    with pytest.raises(InputError, match=match):
        hist_model.apply_batch([["BOS", "a"], seq])


def test_bos_only_sequence_decodes_to_bos(hist_model: Any) -> None:
    assert hist_model.apply(["BOS"]).decoded == ["BOS"]


# --------------------------------------------------------------------------- bad input: IR text

LOCATION = re.compile(r":(\d+):(\d+)")


def _location(message: str) -> tuple[int, int]:
    m = LOCATION.search(message)
    assert m, f"no line:column in {message!r}"
    return int(m.group(1)), int(m.group(2))


def test_malformed_ir_is_an_ir_error_with_line_and_column(hist_model: Any) -> None:
    text = hist_model.ir("rasp")
    lines = text.splitlines()
    # break the 3rd line: drop its type annotation
    broken_line = lines[2].split(" : ")[0]
    broken = "\n".join([*lines[:2], broken_line, *lines[3:]])
    with pytest.raises(IRError) as info:
        parse_ir(broken)
    line, col = _location(str(info.value))
    assert line in (3, 4)  # xDSL reports where it noticed the missing ':'
    assert col >= 1


@pytest.mark.parametrize(
    "text,line",
    [
        pytest.param("garbage", 1, id="unknown-op"),
        pytest.param('builtin.module {\n  %x = "rasp.bogus"() : () -> ()\n}', 2, id="unregistered-rasp-op"),
        pytest.param("builtin.module {\n  %t = rasp.tokens {label = \"tokens\"} : !rasp.sop<categorical, [\"a\"\n}", 3,
                     id="unterminated-type"),
        pytest.param("builtin.module {\n  %t = rasp.tokens {label = \"tokens\"} : !rasp.nope<1>\n}", 2,
                     id="unknown-type"),
    ],
)
def test_ir_syntax_errors_carry_a_location(text: str, line: int) -> None:
    with pytest.raises(IRError) as info:
        parse_ir(text)
    assert _location(str(info.value))[0] == line


def _unsorted_type(text: str) -> tuple[str, int]:
    """`text` with the first `["a", "b", ...]` type list reversed (a value set must be sorted), and its line."""
    m = re.search(r'!rasp\.sop<categorical, \["a", "b", "c", "d"\]>', text)
    assert m
    bad = text[: m.start()] + '!rasp.sop<categorical, ["d", "c", "b", "a"]>' + text[m.end():]
    return bad, text[: m.start()].count("\n") + 1


def test_ir_that_does_not_verify_is_an_ir_error(compiled: Any) -> None:
    bad, _ = _unsorted_type(model_for(compiled, "shift_by").ir("rasp"))
    with pytest.raises(IRError, match="sorted"):
        parse_ir(bad)


def test_ir_verification_error_names_where(compiled: Any) -> None:
    bad, line = _unsorted_type(model_for(compiled, "shift_by").ir("rasp"))
    with pytest.raises(IRError) as info:
        parse_ir(bad)
    assert _location(str(info.value))[0] == line and "sorted" in str(info.value), str(info.value)


def test_rasp_level_module_from_program_to_rasp_verifies_and_round_trips() -> None:
    module = program_to_rasp(lib.make_reverse(rasp.tokens), ["x", "y"], 3)
    text = str(module)
    assert str(parse_ir(text)) == text
    assert RaspInterpreter(parse_ir(text)).run(["x", "y", "y"]) == ["y", "y", "x"]

