"""PNG plots of a compiled model run on one input (matplotlib: `pip install 'raspc[plot]'`).

    raspc plot sort.onnx 3 1 2 -o sort.png
    plot_model(ModelView.load("sort.onnx"), "sort.png", ["BOS", 3, 1, 2])

One figure: the residual stream at every layer boundary (rows: named directions grouped by s-op,
each row coloured relative to its own largest value; columns: positions and their tokens), then every head's
attention pattern (query rows, key columns, both labelled with the tokens). Directions that are
zero at every boundary on this input are left out, so a 4,000-dim model shows what is active;
past `MAX_ROWS` rows each s-op becomes one row holding its strongest direction.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from raspc.report.model_view import Activations, ModelView

MAX_ROWS = 120  # directions drawn one per row; above this, one row per s-op
HEADS_PER_ROW = 4


def _matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _token(v: Any) -> str:
    return "None" if v is None else str(v)


def _residual_rows(view: ModelView, act: Activations, names: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, group of each row, values [boundary, row, position]) of the rows to draw."""
    stack = np.stack([act.residuals[n] for n in names])  # [B, seq, d]
    active = np.flatnonzero(np.abs(stack).max(axis=(0, 1)) > 1e-6)
    group_of = {d: name for name, dims in view.groups for d in dims}
    if len(active) <= MAX_ROWS:
        labels = [view.labels[d] for d in active]
        return labels, [group_of[d] for d in active], stack[:, :, active].transpose(0, 2, 1)
    # one row per s-op: the value of its strongest direction at each position (label shows which)
    rows, groups, values = [], [], []
    for name, dims in view.groups:
        dims_a = [d for d in dims if d in set(active.tolist())]
        if not dims_a:
            continue
        block = stack[:, :, dims_a]  # [B, seq, k]
        strongest = np.abs(block).argmax(axis=2)
        values.append(np.take_along_axis(block, strongest[..., None], axis=2)[..., 0])
        rows.append(f"{name} ({len(dims)})")
        groups.append(name)
    return rows, groups, np.stack(values, axis=1)


def plot_model(view: ModelView, path: str, tokens: Sequence[Any] | None = None, what: str = "all",
               dpi: int = 110) -> list[str]:
    """Draws the residual stream per layer boundary and/or every head's attention pattern into
    `path` (PNG); returns the paths written."""
    plt = _matplotlib()
    seq = list(tokens) if tokens is not None else view.example_input()
    act = view.run(seq)
    positions = [f"{i}:{_token(t)}" for i, t in enumerate(act.tokens)]
    names = [b.name for b in view.boundaries] or ["final"]
    heads = [b.name for b in view.blocks if b.kind == "head" and b.name in act.patterns]
    show_residual = what in ("all", "residual")
    show_heads = what in ("all", "attention") and heads

    labels, groups, values = _residual_rows(view, act, names) if show_residual else ([], [], np.zeros((0, 0, 0)))
    n_pos = len(positions)
    panel_w = max(2.4, 0.42 * n_pos + 0.6)
    res_h = max(2.5, 0.19 * len(labels) + 1.4) if show_residual else 0.0
    head_rows = -(-len(heads) // HEADS_PER_ROW) if show_heads else 0
    head_h = max(2.6, 0.36 * n_pos + 1.3)
    label_w = 0.075 * max((len(lab) for lab in labels), default=8) + 0.8
    width = max(label_w + panel_w * len(names) + 0.4 * len(names), min(HEADS_PER_ROW, len(heads) or 1) * (head_h + 0.6))
    height = res_h + head_h * head_rows + 1.5
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    title = f"{view.title}: input {' '.join(_token(t) for t in act.tokens[1:])} -> output " \
            f"{' '.join(_token(v) for v in act.decoded[1:])}" + \
            ("   (residual rows: blue positive, red negative, each row scaled to its largest value)"
             if show_residual else "")
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.15 / height, ha="left", va="top")
    outer = fig.add_gridspec(2, 1, height_ratios=[max(res_h, 1e-3), max(head_h * head_rows, 1e-3)], hspace=0.35,
                             top=1 - 0.75 / height, bottom=0.75 / height, left=label_w / width, right=0.99)

    if show_residual and len(labels):
        # each row scaled to its own largest magnitude: a one-hot 1 stays as dark as a count of 4
        row_scale = np.abs(values).max(axis=(0, 2))
        scaled = values / np.where(row_scale > 0, row_scale, 1.0)[None, :, None]
        grid = outer[0].subgridspec(1, len(names), wspace=0.08)
        for i, name in enumerate(names):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(scaled[i], cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.set_xticks(range(n_pos), positions, rotation=90, fontsize=7.5)
            ax.set_yticks(range(len(labels)), labels if i == 0 else [], fontsize=7.5)
            for r in range(1, len(groups)):  # a line between s-ops
                if groups[r] != groups[r - 1]:
                    ax.axhline(r - 0.5, color="#444", linewidth=0.6)
            ax.tick_params(length=0)
    elif show_residual:
        ax = fig.add_subplot(outer[0])
        ax.text(0.5, 0.5, "the residual stream is zero on this input", ha="center")
        ax.axis("off")

    if show_heads:
        grid = outer[1].subgridspec(head_rows, HEADS_PER_ROW, wspace=0.35, hspace=0.55)
        for i, head in enumerate(heads):
            ax = fig.add_subplot(grid[i // HEADS_PER_ROW, i % HEADS_PER_ROW])
            pattern = act.patterns[head]
            ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"attention {head}", fontsize=9)
            ax.set_xticks(range(n_pos), positions, rotation=90, fontsize=7.5)
            ax.set_yticks(range(n_pos), positions, fontsize=7.5)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
            for q in range(n_pos):
                for k in range(n_pos):
                    if pattern[q, k] > 0.005 and n_pos <= 16:
                        ax.text(k, q, f"{pattern[q, k]:.2f}".rstrip("0").rstrip("."), ha="center", va="center",
                                fontsize=6.5, color="white" if pattern[q, k] > 0.6 else "#1d232b")
            ax.tick_params(length=0)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return [path]


__all__ = ["plot_model", "MAX_ROWS"]
