"""The pictures in README.md: a report of make_sort, its screenshot in headless Chromium, and a PNG plot.

    python examples/pictures.py docs/images      # writes sort.html, report.png, report_heads.png, plot.png

Needs the `plot` extra (matplotlib) for the PNG plot and Debian's `chromium` for the screenshots.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raspc import compile_rasp_to_model, lib, rasp
from raspc.report import ModelView
from raspc.report.browser import Browser, find_chromium

out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out.mkdir(parents=True, exist_ok=True)
model = compile_rasp_to_model(lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1), [1, 2, 3, 4], 5)
tokens = ["BOS", 3, 1, 4, 2]
page = model.report(out / "sort.html", tokens)

try:
    from raspc.plot import plot_model

    plot_model(ModelView(model.onnx_model, "sort.onnx"), str(out / "plot.png"), tokens)
except ImportError:
    print("matplotlib is not installed: no plot.png (pip install 'raspc[plot]')")

if find_chromium() is None:
    print("no chromium on PATH: no screenshots")
else:
    with Browser() as browser:
        shot = browser.open(page, width=1280, height=900)
        shot.click('#program-svg .node[data-label="sort"]')
        shot.evaluate("window.scrollTo(0, 0); document.getElementById('program-graph').scrollTop = 0")
        shot.screenshot(out / "report.png")
        shot.evaluate("document.getElementById('sec-residual').scrollIntoView()")
        shot.screenshot(out / "report_heads.png")
        assert not shot.errors, shot.errors
print(f"wrote pictures to {out}/")
