"""`raspc compile-many` / `raspc.datasets.compile_many`: program sets in, a dataset out that loads
without raspc; resumable, deterministic (same bytes whatever the workers or backend), guarded (a
timeout or an exhausted memory guard is a row, not a crash). The Ray test uses one local Ray
instance for the module and is skipped when Ray is not installed."""

from __future__ import annotations

import hashlib
import json
import random
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from raspc import rasp
from raspc.cli.main import main
from raspc.datasets import COLUMNS, DatasetError, compile_many, parse_source, read_index
from raspc.errors import RaspcError

RANDOM = "random:seed=3,n=14,max_seq_len=4-8"


def _files(out: Path) -> dict[str, bytes]:
    """Every file that must be byte-identical between runs (timings and the journal vary)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("timings.jsonl", "journal.jsonl")
    }


@pytest.fixture(scope="module")
def random_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("ds") / "random"
    # a generous budget: datasets are compared byte for byte, and a loaded machine must not turn a
    # compile into a timeout in one of them
    summary = compile_many(RANDOM, str(out), workers=2, progress=False, time_budget=120.0)
    return out, summary


def test_random_dataset_rows_and_files(random_ds) -> None:
    out, summary = random_ds
    rows = read_index(out)
    assert [r["id"] for r in rows] == [f"random-3-{i:06d}" for i in range(14)]
    assert list(rows[0]) == [c for c, _, _ in COLUMNS]
    assert summary.programs == 14 and sum(summary.counts.values()) == 14
    compiled = [r for r in rows if r["status"] == "compiled"]
    assert len(compiled) >= 7 and summary.counts["compiled"] == len(compiled)
    for r in rows:
        assert r["source"] and "program = " in r["source"]
        assert 4 <= r["max_seq_len"] <= 8 and json.loads(r["vocab"])
        if r["status"] == "compiled":
            data = (out / r["onnx_file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == r["onnx_sha256"] and len(data) == r["onnx_bytes"]
            # the ground-truth circuit graph: the model's own, when its export stores one
            meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
            assert r["circuit_graph"] == meta.get("raspc.circuit_graph")
            if r["circuit_graph"] is not None:
                assert {"nodes", "edges"} <= set(json.loads(r["circuit_graph"]))
            assert r["layers"] >= 1 and r["residual_width"] > 0 and r["params"] >= r["nonzero_params"] > 0
            assert r["rasp_ir"].startswith("builtin.module")
        else:
            assert r["status"] == "refused" and r["error_class"].endswith("Error") and r["reason"]
            assert r["onnx_file"] is None
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(f"{r['id']}.onnx" for r in compiled)
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert [t["id"] for t in timings] == [r["id"] for r in rows]
    assert all(t["compile_seconds"] >= 0 and t["peak_rss_mb"] > 0 for t in timings)


def test_models_answer_like_the_stored_source(random_ds) -> None:
    """A row is self-contained: its source rebuilds the program, its ONNX file runs it (raspc.runtime
    only needs onnxruntime and the model's metadata)."""
    from raspc.runtime import OnnxModel
    from raspc.utils.values import same_result

    out, _ = random_ds
    checked = 0
    for r in read_index(out):
        if r["status"] != "compiled":
            continue
        env: dict = {}
        exec(r["source"], env)  # noqa: S102 - the dataset's own source column
        model = OnnxModel.load(str(out / r["onnx_file"]))
        rng = random.Random(r["id"])
        for _ in range(5):
            xs = [rng.choice(env["vocab"]) for _ in range(rng.randint(1, env["max_seq_len"]))]
            try:
                want = rasp.evaluate(env["program"], xs)
            except Exception:  # noqa: BLE001 - outside the program's domain
                continue
            got = model.apply_batch([[model.bos, *xs]])[0][1:]
            numerical = r["output_encoding"] == "numerical"
            if all(w is not None or g is None for w, g in zip(want, got)):
                checked += all(same_result(w, g, numerical) for w, g in zip(want, got)) or pytest.fail(
                    f"{r['id']} on {xs}: {got} != {want}"
                )
    assert checked >= 5


def test_index_loads_with_pyarrow_and_pandas(random_ds) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="index.parquet needs the [datasets] extra (pyarrow)")
    out, _ = random_ds
    table = pq.read_table(out / "index.parquet")
    assert table.column_names == [c for c, _, _ in COLUMNS]
    assert table.to_pylist() == read_index(out)
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    df = pd.read_json(out / "index.jsonl", lines=True)
    assert list(df["id"]) == [r["id"] for r in read_index(out)]
    assert (pd.read_parquet(out / "index.parquet")["status"] == df["status"]).all()


def test_rerun_is_a_no_op(random_ds) -> None:
    out, _ = random_ds
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    summary = compile_many(RANDOM, str(out), workers=2, progress=False)
    assert summary.compiled_now == 0 and summary.skipped == 14
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_same_source_same_bytes_with_any_number_of_workers(random_ds, tmp_path: Path) -> None:
    out, _ = random_ds
    compile_many(RANDOM, str(tmp_path / "one"), workers=1, progress=False, time_budget=120.0)
    assert _files(tmp_path / "one") == _files(out)


def test_resumes_after_an_interrupted_run(random_ds, tmp_path: Path) -> None:
    """A run killed part-way (its journal cut, one line half-written, no index) compiles only the rest."""
    out, _ = random_ds
    copy = tmp_path / "cut"
    copy.mkdir()
    (copy / "dataset.json").write_bytes((out / "dataset.json").read_bytes())
    lines = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    (copy / "journal.jsonl").write_text("".join(lines[:5]) + lines[5][:40])
    (copy / "models").mkdir()
    for line in lines[:5]:
        rec = json.loads(line)["record"]
        if rec["onnx_file"]:
            (copy / rec["onnx_file"]).write_bytes((out / rec["onnx_file"]).read_bytes())
    summary = compile_many(RANDOM, str(copy), workers=2, progress=False, time_budget=120.0)
    assert summary.compiled_now == 9 and summary.skipped == 5
    assert _files(copy) == _files(out)


def test_a_larger_n_extends_the_dataset(tmp_path: Path) -> None:
    first = compile_many("random:seed=4,n=3,max_seq_len=2-5", str(tmp_path), progress=False)
    more = compile_many("random:seed=4,n=5,max_seq_len=2-5", str(tmp_path), progress=False)
    assert first.compiled_now == 3 and more.compiled_now == 2
    assert len(read_index(tmp_path)) == 5


def test_another_source_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    compile_many("random:seed=4,n=2,max_seq_len=2-5", str(tmp_path), progress=False)
    with pytest.raises(DatasetError, match="different program set"):
        compile_many("random:seed=5,n=2,max_seq_len=2-5", str(tmp_path), progress=False)
    with pytest.raises(DatasetError, match="different set of options"):
        compile_many("random:seed=4,n=2,max_seq_len=2-5", str(tmp_path), progress=False, weights=True)


# --------------------------------------------------------------------------- program sets


def test_library_set_with_weights(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    summary = compile_many("lib:make_hist+make_sort", str(tmp_path), weights=True, progress=False)
    assert summary.counts == {"compiled": 2}
    rows = read_index(tmp_path)
    assert [r["source_ref"] for r in rows] == ["lib:make_hist", "lib:make_sort"]
    env: dict = {}
    exec(rows[0]["source"], env)  # noqa: S102
    assert rasp.evaluate(env["program"], ["a", "b", "a"]) == [2, 1, 2]
    st = pytest.importorskip("safetensors.numpy", reason="reading safetensors needs the [datasets] extra")
    weights = st.load_file(str(tmp_path / rows[1]["weights_file"]))
    inits = {
        i.name: numpy_helper.to_array(i)
        for i in onnx.load(str(tmp_path / rows[1]["onnx_file"])).graph.initializer
    }
    assert (weights["embed.token"] == inits["token_embedding"]).all()
    heads = [k for k in weights if k.endswith(".W_Q")]
    assert len(heads) == rows[1]["heads"]
    assert sum(w.size for k, w in weights.items() if not k.endswith(".scale")) == rows[1]["params"]


PROGRAM_FILE = """
from raspc import rasp

vocab = ["a", "b"]
max_seq_len = 4

PROGRAMS = {
    "copy": rasp.Map(lambda x: x, rasp.tokens),
    "count": (rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)), [1, 2, 3], 5),
    "causal_prev": {"program": rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices,
                    rasp.Comparison.LEQ), rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens)),
                    default=0)), "causal": True},
    "ignores_input": rasp.Map(lambda x: 1, rasp.indices),
}
"""


def test_python_files_mlir_and_directories(tmp_path: Path) -> None:
    from raspc.random_programs import random_program

    src = tmp_path / "src"
    src.mkdir()
    (src / "many.py").write_text(PROGRAM_FILE)
    (src / "gen.py").write_text(
        textwrap.dedent("""
        from raspc import rasp
        def programs():
            for n in (3, 5):
                yield f"len{n}", (rasp.length, ["x"], n)
    """)
    )
    (src / "one.py").write_text(random_program(0, 1).module_source())
    (src / "traced.mlir").write_text(random_program(0, 0).rasp_ir())
    summary = compile_many(str(src), str(tmp_path / "out"), progress=False)
    rows = {r["id"]: r for r in read_index(tmp_path / "out")}
    assert list(rows) == [
        "gen-len3",
        "gen-len5",
        "many-copy",
        "many-count",
        "many-causal_prev",
        "many-ignores_input",
        "one",
        "traced",
    ]
    assert rows["many-count"]["max_seq_len"] == 5 and json.loads(rows["many-count"]["vocab"]) == [1, 2, 3]
    assert rows["many-causal_prev"]["causal"] is True and rows["many-causal_prev"]["status"] == "compiled"
    assert rows["many-ignores_input"]["status"] == "refused"
    assert (
        rows["traced"]["status"] == "compiled"
        and rows["traced"]["rasp_ir"] == (src / "traced.mlir").read_text()
    )
    assert rows["one"]["source"] == (src / "one.py").read_text() and rows["one"]["status"] in (
        "compiled",
        "refused",
    )
    assert summary.counts["compiled"] == sum(r["status"] == "compiled" for r in rows.values()) >= 6
    only = compile_many(f"{src / 'gen.py'}:programs", str(tmp_path / "gen"), progress=False)
    assert only.programs == 2


@pytest.mark.parametrize(
    "source, message",
    [
        ("random:seed=0", "number of programs"),
        ("random:seed=0,n=3,depth=x", "depth must be an integer"),
        ("random:n=3,colour=red", "unknown key 'colour'"),
        ("random:n=3,ops=map+loop", "unknown ops 'loop'"),
        ("lib:make_nothing", "unknown library program"),
        ("nothing.py", "does not exist"),
        ("nothing.txt", "cannot read SOURCE"),
    ],
)
def test_bad_sources_are_typed_errors(source: str, message: str) -> None:
    with pytest.raises(RaspcError, match=message):
        parse_source(source)


SLOW_FILE = """
import signal
import time
from raspc import rasp

vocab = ["a", "b"]
max_seq_len = 3


def sleepy(x):
    time.sleep(30)
    return x


def stubborn(x):  # blocks the alarm: only the driver's deadline stops it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(30)
    return x


def hog(x):  # 400 MiB, touched at once and held a moment: past a small memory guard within the budget
    block = bytearray(400 * 2**20)
    time.sleep(0.2)
    return x if block else None


PROGRAMS = {
    "fast": rasp.Map(lambda x: x, rasp.tokens),
    "sleepy": rasp.Map(sleepy, rasp.tokens),
    "stubborn": rasp.Map(stubborn, rasp.tokens),
    "big": rasp.Map(hog, rasp.tokens),
}
"""


def test_time_budget_and_memory_guard(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_FILE)
    summary = compile_many(
        # a budget the fast program keeps even on a loaded machine; the slow ones sleep 30 s
        str(tmp_path / "slow.py"), str(tmp_path / "out"), time_budget=5.0, memory_limit_mb=60, progress=False
    )
    status = {r["id"]: r["status"] for r in read_index(tmp_path / "out")}
    assert status == {
        "slow-fast": "compiled",
        "slow-sleepy": "timeout",
        "slow-stubborn": "timeout",
        "slow-big": "memory",
    }
    assert summary.seconds < 20
    again = compile_many(
        str(tmp_path / "slow.py"),
        str(tmp_path / "out"),
        time_budget=10,
        memory_limit_mb=0,
        retry=("memory",),
        progress=False,
    )
    assert again.compiled_now == 1 and again.counts["compiled"] == 2


# --------------------------------------------------------------------------- CLI


def test_cli_progress_summary_and_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "ds")
    main(["compile-many", "random:seed=9,n=6,max_seq_len=2-6", "-o", out, "--workers", "2"])
    captured = capsys.readouterr()
    assert "6/6 100%" in captured.err and "programs/s" in captured.err and "ETA" in captured.err
    assert captured.out.startswith("6 programs: ") and "index: " in captured.out
    main(["compile-many", "random:seed=9,n=6,max_seq_len=2-6", "-o", out])
    captured = capsys.readouterr()
    assert "this run: 0 programs" in captured.out and "6 already done" in captured.out and captured.err == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compile-many", "random:seed=0", "-o", "X"], "raspc: error: random: give the number of programs"),
        (["compile-many", "lib:*", "-o", "X", "--time-budget", "-1"], "raspc: error: the time budget"),
        (["compile-many", "lib:*", "-o", "X", "--backend", "ray"], "raspc: error: the ray backend needs Ray"),
    ],
)
def test_cli_errors_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.startswith(message) and err.count("\n") == 1


# --------------------------------------------------------------------------- Ray


def test_ray_backend_gives_the_same_dataset_under_the_same_guards(random_ds, tmp_path: Path) -> None:
    """One local Ray instance (one test, so one pytest-xdist worker starts it): the same index and
    the same ONNX bytes as local processes, and the same time budget and memory guard."""
    ray = pytest.importorskip(
        "ray", reason="the Ray backend needs the [ray] extra (pip install 'raspc[ray]')"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out, _ = random_ds
        summary = compile_many(RANDOM, str(tmp_path / "ray"), backend="ray", progress=False, time_budget=120.0)
        assert summary.backend == "ray" and summary.workers == 2
        assert _files(tmp_path / "ray") == _files(out)
        assert ray.is_initialized()  # a Ray instance the caller started is left running

        (tmp_path / "slow.py").write_text(
            SLOW_FILE.replace('"stubborn": rasp.Map(stubborn, rasp.tokens),', "")
        )
        compile_many(
            str(tmp_path / "slow.py"),
            str(tmp_path / "slow"),
            backend="ray",
            time_budget=5.0,  # kept by the fast program even on a loaded machine
            memory_limit_mb=60,
            progress=False,
        )
        status = {r["id"]: r["status"] for r in read_index(tmp_path / "slow")}
        assert status == {"slow-fast": "compiled", "slow-sleepy": "timeout", "slow-big": "memory"}
    finally:
        ray.shutdown()
