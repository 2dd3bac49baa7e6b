"""`raspc plot` / raspc.plot: labelled PNG heatmaps (needs the `plot` extra: matplotlib)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raspc import compile_rasp_to_model, lib, rasp
from raspc.report import ModelView

matplotlib = pytest.importorskip("matplotlib", reason="the plot extra is not installed: pip install -e '.[plot]'")


@pytest.fixture(scope="module")
def hist_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plot") / "hist.onnx"
    compile_rasp_to_model(lib.make_hist(), ["a", "b", "c"], 5).save_onnx(path)
    return path


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_command_writes_a_readable_png(hist_onnx: Path, tmp_path: Path, capsys) -> None:
    from raspc.cli.main import main

    out = tmp_path / "hist.png"
    main(["plot", str(hist_onnx), "a", "b", "a", "c", "-o", str(out)])
    assert capsys.readouterr().err.splitlines()[-1] == f"raspc: wrote {out}"  # after any progress lines
    width, height = _png_size(out)
    assert 600 < width < 3000 and 400 < height < 3000  # large enough to read, small enough to view
    again = tmp_path / "again.png"
    main(["plot", str(hist_onnx), "a", "b", "a", "c", "-o", str(again), "-q"])
    assert again.read_bytes() == out.read_bytes()  # deterministic


def test_rows_are_the_active_directions_and_large_models_group_them(hist_onnx: Path) -> None:
    from raspc.plot import MAX_ROWS, _residual_rows

    view = ModelView.load(hist_onnx)
    act = view.run(["BOS", "a", "b"])
    labels, groups, values = _residual_rows(view, act, [b.name for b in view.boundaries])
    assert labels == ["one", "bos", "tokens:a", "tokens:b", "hist:1", "hist.bos_share"]
    assert values.shape == (3, len(labels), 3)
    big = compile_rasp_to_model(lib.shift_by(1, rasp.tokens), [f"t{i}" for i in range(100)], 4)
    view = ModelView(big.onnx_model, "shift")
    act = view.run(["BOS", *[f"t{i}" for i in range(4)]])
    active = sum(1 for d in range(len(view.labels)) if abs(act.residuals["final"][:, d]).max() > 0)
    labels, groups, values = _residual_rows(view, act, [b.name for b in view.boundaries])
    if active > MAX_ROWS:
        assert labels == [f"{g} ({len(d)})" for g, d in view.groups if g in groups]
    else:
        assert len(labels) == active


def test_attention_only(hist_onnx: Path, tmp_path: Path) -> None:
    from raspc.plot import plot_model

    out = tmp_path / "attn.png"
    assert plot_model(ModelView.load(hist_onnx), str(out), ["BOS", "a", "a"], what="attention") == [str(out)]
    assert _png_size(out)[0] > 300


def test_without_matplotlib_the_command_says_what_to_install(hist_onnx: Path, monkeypatch, capsys) -> None:
    from raspc.cli.main import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "raspc.plot", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(hist_onnx), "a"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("raspc: error: raspc plot needs matplotlib: pip install 'raspc[plot]'")
