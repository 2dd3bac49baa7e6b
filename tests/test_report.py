"""The HTML report: its data read from the ONNX file alone, and the page in a real headless Chromium.

The browser tests drive Debian's `chromium` over the DevTools pipe (raspc.report.browser); they skip
with a reason where no Chromium is installed (.ci/run installs it). They check that the page renders
without console errors, find the program graph, the residual heatmap and the head panels, click a
node and read its details, and save a screenshot; one runs a 4,000-dimension model.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from raspc import compile_rasp_to_model, lib, rasp
from raspc.report import ModelView, build_report, write_report
from raspc.report.browser import Browser, find_chromium
from raspc.report.html import report_data

SORT_INPUT = ["BOS", 3, 1, 4, 2]
needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no headless Chromium on PATH (Debian package `chromium`; .ci/run installs it when run as root)",
)


@pytest.fixture(scope="module")
def sort_compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """make_sort_unique compiled by the CLI (so the file carries the program graph), and what the CLI
    said it wrote."""
    import contextlib
    import io

    from raspc import progress
    from raspc.cli.main import main

    path = tmp_path_factory.mktemp("report") / "sort.onnx"
    err = io.StringIO()
    saved = progress.configure()
    try:
        with contextlib.redirect_stderr(err):
            main(["compile", "lib:make_sort_unique", "--vocab", "1,2,3,4", "--max-seq-len", "5", "-o", str(path)])
    finally:
        progress.restore(saved)
    return path, err.getvalue().splitlines()[-1]


@pytest.fixture(scope="module")
def sort_onnx(sort_compiled: tuple[Path, str]) -> Path:
    return sort_compiled[0]


@pytest.fixture(scope="module")
def sort_view(sort_onnx: Path) -> ModelView:
    return ModelView.load(sort_onnx)


@pytest.fixture(scope="module")
def sort_page(sort_view: ModelView, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_report(sort_view, str(tmp_path_factory.mktemp("page") / "sort.html"), SORT_INPUT))


def test_the_file_alone_gives_program_blocks_and_boundaries(sort_view: ModelView, sort_compiled) -> None:
    program = sort_view.program
    assert program is not None and program["output"] == "sort"
    nodes = {n["label"]: n for n in program["nodes"]}
    assert nodes["sort"]["op"] == "aggregate" and nodes["sort"]["src"].startswith("lib.py:")
    assert nodes["smaller"]["kind"] == "selector" and nodes["smaller"]["detail"] == "predicate LT"
    assert nodes["tokens"]["values"] == ["1", "2", "3", "4"] and nodes["tokens"]["src"] is None
    heads = [b for b in sort_view.blocks if b.kind == "head"]
    assert heads and {s for b in sort_view.blocks for s in b.sops} <= set(nodes)
    assert any("sort" in b.sops for b in heads)
    # one boundary after the embedding and after every sublayer that has blocks, in order
    sublayers = sorted({(b.layer, b.kind == "mlp") for b in sort_view.blocks})
    assert [b.name for b in sort_view.boundaries] == ["embedding"] + [
        f"L{layer} {'MLP' if mlp else 'attention'}" for layer, mlp in sublayers]
    assert sort_compiled[1].endswith(f"{len(sort_view.labels)} dims, {sort_view.params:,} params")


def test_residuals_and_patterns_are_the_models(sort_view: ModelView) -> None:
    act = sort_view.run(SORT_INPUT)
    assert act.decoded == ["BOS", 1, 2, 3, 4]
    final = sort_view.runtime.apply(SORT_INPUT).residual
    np.testing.assert_array_equal(act.residuals[sort_view.boundaries[-1].name], final)
    np.testing.assert_array_equal(act.residuals["final"], final)
    labels = sort_view.labels
    emb = act.residuals["embedding"]
    assert emb[1, labels.index("tokens:3")] == 1 and emb[1, labels.index("indices:0")] == 1
    assert set(act.patterns) == {b.name for b in sort_view.blocks if b.kind == "head"}
    for p in act.patterns.values():
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)
    # the head that moves the values takes token 1 (at position 2) to output position 1
    mover = next(b.name for b in sort_view.blocks if b.kind == "head" and b.label == "sort")
    assert act.patterns[mover][1, 2] == pytest.approx(1)


def test_report_data_is_labelled_and_deterministic(sort_view: ModelView) -> None:
    data = report_data(sort_view, sort_view.run(SORT_INPUT))
    assert data["input"] == {"tokens": ["BOS", "3", "1", "4", "2"], "decoded": ["BOS", "1", "2", "3", "4"]}
    assert [g["name"] for g in data["groups"]][:4] == ["one", "bos", "tokens", "indices"]
    assert sum(len(g["dims"]) for g in data["groups"]) == len(data["labels"])
    head = next(h for h in data["heads"] if h["label"] == "sort")
    ov = {(data["labels"][r], data["labels"][c]): v for r, c, v in head["ov"]["entries"]}
    # copies the token it attends to into the sort group's direction for that value
    assert sorted((k, c.split(":")[-1], v) for (k, c), v in ov.items()) == [
        (f"tokens:{t}", str(t), 1.0) for t in (1, 2, 3, 4)]
    assert all(c.startswith("sort") for _, c in ov)
    qk = {(data["labels"][r], data["labels"][c]): v for r, c, v in head["qk"]["entries"]}
    assert {q for q, _ in qk} >= {f"indices:{i}" for i in range(5)} and max(qk.values()) == pytest.approx(208)
    edges = {(e["from"], e["to"], e["via"]) for e in data["circuit"]["edges"]}
    # the token values come from the embedding, the keys from an earlier block
    assert any(to == head["name"] and via == "V" and src.startswith("embed") for src, to, via in edges)
    assert any(to == head["name"] and via == "K" and not src.startswith("embed") for src, to, via in edges)
    names = {n["name"] for n in data["circuit"]["nodes"]}
    assert all(e["from"] in names and e["to"] in names for e in data["circuit"]["edges"])
    page = build_report(sort_view, SORT_INPUT)
    assert page == build_report(sort_view, SORT_INPUT)


def test_page_is_self_contained(sort_page: Path) -> None:
    text = sort_page.read_text()
    assert "<link" not in text and not re.search(r"<script[^>]+src=", text) and "@import" not in text
    urls = set(re.findall(r"https?://[^\s\"')]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # an XML namespace name, never fetched


def test_composition_scores_equal_the_analysis(tmp_path: Path) -> None:
    """Two heads in a row (shift of a shift): the report's sparse scores are the analysis's."""
    from raspc.analysis.circuits import Circuits
    from raspc.report.html import _HeadCircuits, composition_scores

    model = compile_rasp_to_model(lib.shift_by(1, lib.shift_by(1, rasp.tokens)), ["a", "b", "c"], 5)
    view = ModelView(model.onnx_model, "shift2")
    heads = {b.name: _HeadCircuits(view, b) for b in view.blocks if b.kind == "head"}
    mine = {(k, a, b): s for k, a, b, s in composition_scores(view, heads)}
    theirs = {(k, a, b): s for k, a, b, s in Circuits.from_onnx(model.onnx_model).composition_scores()}
    assert mine and set(mine) == set(theirs)
    for key, score in theirs.items():
        assert mine[key] == pytest.approx(score, abs=1e-5)


def test_without_program_graph_the_report_still_builds(sort_onnx: Path) -> None:
    model = onnx.load(sort_onnx)
    kept = [p for p in model.metadata_props if p.key != "raspc.program"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    view = ModelView(model, "bare.onnx")
    data = report_data(view, view.run(SORT_INPUT))
    assert data["program"] is None and [g["name"] for g in data["groups"]][:3] == ["one", "bos", "tokens"]
    assert "sort" in {b["sop"] for b in data["blocks"]}  # blocks still named by the residual groups


def test_compiled_model_report(tmp_path: Path) -> None:
    model = compile_rasp_to_model(lib.make_hist(), ["a", "b", "c"], 4)
    path = model.report(tmp_path / "hist.html", ["BOS", "a", "b", "a"])
    data = _embedded_data(Path(path))
    assert data["input"]["decoded"] == ["BOS", "2", "1", "2"] and data["program"]["output"] == "hist"
    assert model.report(tmp_path / "example.html")  # an example input when none is given


def _embedded_data(page: Path) -> dict[str, Any]:
    text = page.read_text()
    block = text.split('<script type="application/json" id="raspc-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(block)


# --------------------------------------------------------------------------- in the browser


@needs_chromium
def test_page_in_headless_chromium(sort_view: ModelView, sort_page: Path, tmp_path: Path) -> None:
    data = _embedded_data(sort_page)
    heads = [b for b in sort_view.blocks if b.kind == "head"]
    sort_dims = next(len(g["dims"]) for g in data["groups"] if g["name"] == "sort")
    with Browser() as browser:
        page = browser.open(sort_page)
        assert page.evaluate("document.body.dataset.rendered") == "true"
        count = "document.querySelectorAll({!r}).length".format
        assert page.evaluate(count("#program-svg .node")) == len(data["program"]["nodes"])
        assert page.evaluate(count("#residual-table tr.group")) == len(data["groups"])
        assert page.evaluate(count("details.head-panel")) == len(heads)
        assert page.evaluate(count("details.head-panel table.pattern")) == len(heads)
        assert page.evaluate(count("#circuit-svg .node")) == len(data["circuit"]["nodes"])
        assert page.evaluate(count("#circuit-svg .edge")) == len(data["circuit"]["edges"])
        page.click('#program-svg .node[data-label="sort"]')
        details = page.evaluate("document.getElementById('node-details').innerText")
        assert "sort (output)" in details and "aggregate" in details and "lib.py:" in details
        assert f"{heads[-1].name}" in details and f"{sort_dims} dims" in details
        page.click("#node-details button")  # "show in the residual stream": opens the sort group
        assert page.evaluate(count("#residual-table tr.dir")) == sort_dims
        page.click("#boundary-tabs button")  # the first tab: the embedding
        assert page.evaluate("document.querySelector('#boundary-tabs button.active').textContent") == "embedding"
        shot = tmp_path / "report.png"
        page.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        assert page.errors == []


@needs_chromium
def test_4000_dimensions_stay_usable(tmp_path: Path) -> None:
    """shift_by over 2,000 tokens: a 4,007-dim residual; groups start collapsed and the page answers at once."""
    vocab = [f"t{i}" for i in range(2000)]
    model = compile_rasp_to_model(lib.shift_by(1, rasp.tokens), vocab, 5)
    assert len(model.residual_labels) > 4000
    page_path = model.report(tmp_path / "big.html", ["BOS", "t1", "t2", "t1", "t3"])
    assert Path(page_path).stat().st_size < 2_000_000
    with Browser() as browser:
        start = time.monotonic()
        page = browser.open(page_path)
        assert page.evaluate("document.body.dataset.rendered") == "true"
        assert time.monotonic() - start < 10
        rows = page.evaluate("document.querySelectorAll('#residual-table tr').length")
        assert rows < 20  # one row per s-op, zero ones hidden
        page.click('#hide-zero')  # show every direction, then open the 2,000 tokens
        page.click('#residual-table tr.group[data-group="tokens"] th')
        shown = page.evaluate("document.querySelectorAll('#residual-table tr.dir').length")
        assert shown == 256  # drawn in pages of 256, with a button for more
        page.click('#residual-table tr.more button')
        assert page.evaluate("document.querySelectorAll('#residual-table tr.dir').length") == 512
        page.click("details.head-panel summary")  # drawn when opened (a circuit too large to draw is listed)
        assert page.wait_until("document.querySelectorAll('details.head-panel table').length >= 2")
        assert "attention pattern" in page.evaluate("document.querySelector('details.head-panel').innerText")
        assert page.errors == []


def test_circuit_graph_from_the_weights_when_the_file_has_none(sort_onnx: Path) -> None:
    """Without the stored ground-truth graph, the same wiring is read off the weights."""
    model = onnx.load(sort_onnx)
    kept = [p for p in model.metadata_props if p.key != "raspc.circuit_graph"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    graph = ModelView(model, "bare.onnx").circuit_graph()
    assert [n["name"] for n in graph["nodes"]][0] == "embed"
    mover = next(n["name"] for n in graph["nodes"] if n.get("label") == "sort")
    assert ("embed", mover, "V") in {(e["from"], e["to"], e["via"]) for e in graph["edges"]}


def test_compact_file_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """A --compact export has no per-layer tensors: report and plot say so instead of failing later."""
    from raspc.cli.main import main

    path = tmp_path / "compact.onnx"
    main(["compile", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--compact", "-o", str(path), "-q"])
    capsys.readouterr()
    for command in ("report", "plot"):
        with pytest.raises(SystemExit) as exc:
            main([command, str(path), "a"])
        err = capsys.readouterr().err
        assert exc.value.code == 1 and err.startswith("raspc: error: ") and "compact export" in err
        assert len(err.splitlines()) == 1
