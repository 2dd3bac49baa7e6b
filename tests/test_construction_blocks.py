"""Each construction of raspc.constructions alone, as Tracr's craft/chamber tests do: the block is
built from plain labels and tables (no IR, no compiler) and evaluated with numpy on every input
it is exact for, BOS included."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pytest

from raspc.constructions import attention as A
from raspc.constructions import mlp as M
from raspc.errors import UnsupportedError


def run_mlp(block: M.MlpBlock, x: Mapping[str, float]) -> dict[str, float]:
    """The block's output on one position whose directions hold `x` (absent: 0)."""
    pre = {h: block.b_in.get(h, 0.0) for h in block.hidden}
    for (d, h), w in block.w_in.items():
        pre[h] += w * x.get(d, 0.0)
    out: dict[str, float] = {}
    for (h, d), w in block.w_out.items():
        out[d] = out.get(d, 0.0) + w * max(pre[h], 0.0)
    return {d: v for d, v in out.items() if abs(v) > 1e-12}


def at_token(x: Mapping[str, float]) -> dict[str, float]:
    return {"one": 1.0, **x}


def test_lookup_mlp_is_the_table_and_zero_at_bos() -> None:
    block = M.lookup_mlp("f", ["x:a", "x:b", "x:c"], ["f:1", "f:2"], [1, 0, None], {})
    assert run_mlp(block, at_token({"x:a": 1})) == {"f:2": 1.0}
    assert run_mlp(block, at_token({"x:b": 1})) == {"f:1": 1.0}
    assert run_mlp(block, at_token({"x:c": 1})) == {}
    assert run_mlp(block, at_token({})) == {}  # None in, None out
    assert run_mlp(block, {"one": 1.0, "bos": 1.0}) == {}


def test_categorical_to_numerical_keeps_negative_outputs() -> None:
    block = M.categorical_to_numerical_mlp("f", ["x:a", "x:b", "x:c"], "f", [2.5, -3.0, 0.0], {})
    assert run_mlp(block, at_token({"x:a": 1})) == {"f": 2.5}
    assert run_mlp(block, at_token({"x:b": 1})) == {"f": -3.0}
    assert run_mlp(block, at_token({"x:c": 1})) == {}
    assert len(block.hidden) == 2


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_discretising_mlp_exact_within_a_quarter_gap(noise: float) -> None:
    xs = [-1.0, 0.0, 0.5, 2.0]
    outputs = [{"y": 1.0}, {"y": 1.0}, {"z": 1.0}, {"y": -4.0}]
    block = M.discretising_mlp("g", "x", xs, outputs, {})
    for x, want in zip(xs, outputs):
        for shift in (-noise * 0.5 / 4, 0.0, noise * 0.5 / 4):
            got = run_mlp(block, at_token({"x": x + shift}))
            assert got.keys() == want.keys() and all(math.isclose(got[k], v) for k, v in want.items()), (x, got)
    # only two changes of output -> 2 ramps of 2 units, plus the constant
    assert len(block.hidden) == 5
    assert run_mlp(block, {"one": 1.0, "bos": 1.0}) == {}  # x holds 0 at BOS, as declared


def test_discretising_mlp_refuses_values_float32_cannot_separate() -> None:
    with pytest.raises(UnsupportedError, match="cannot tell apart"):
        M.discretising_mlp("g", "x", [0.0, 1.1e-16, 3.0], [{"y": 1.0}, {}, {}], {})


def test_discretising_mlp_gap_is_relative() -> None:
    block = M.discretising_mlp("g", "x", [1e-6, 1.125e-6], [{"y": 1.0}, {"y": 2.0}], {})
    assert run_mlp(block, at_token({"x": 1e-6})) == pytest.approx({"y": 1.0})
    assert run_mlp(block, at_token({"x": 1.125e-6})) == pytest.approx({"y": 2.0})


def run_mlp_float32(block: M.MlpBlock, x_dir: str, xs: Sequence[float], out_dir: str) -> np.ndarray:
    """The block's output direction at each x, computed the way the model does: float32 matrices."""
    dirs, hidden = ["one", x_dir], list(block.hidden)
    w_in, w_out = np.zeros((2, len(hidden)), np.float32), np.zeros((len(hidden), 1), np.float32)
    for (d, h), w in block.w_in.items():
        if d in dirs:
            w_in[dirs.index(d), hidden.index(h)] = w
    for (h, d), w in block.w_out.items():
        if d == out_dir:
            w_out[hidden.index(h), 0] = w
    b_in = np.array([block.b_in.get(h, 0.0) for h in hidden], np.float32)
    resid = np.stack([np.ones(len(xs)), np.asarray(xs)], axis=1).astype(np.float32)
    out = np.maximum(resid @ w_in + b_in, 0) @ w_out
    return out[:, 0].astype(np.float64)


def rising_steps(xs: Sequence[float], ys: Sequence[float]) -> M.MlpBlock:
    """A discretisation with the leftmost output as the constant and every step rising, unchecked."""
    mlp = M.MlpBuilder("f")
    mlp.add_output_bias({"f": ys[0]})
    for i in range(len(xs) - 1):
        if ys[i + 1] != ys[i]:
            M._step_neurons(mlp, "x", xs[i], xs[i + 1], {"f": ys[i + 1] - ys[i]}, str(i), 0.0)
    return mlp.finish({})


def test_the_error_bound_covers_the_float32_error_of_cancelling_steps() -> None:
    xs = [k / 16 for k in range(17)]
    ys = [1e6 if 0.4 < x < 0.6 else -1.0 for x in xs]
    err = np.abs(run_mlp_float32(rising_steps(xs, ys), "x", xs, "f") - ys) / np.maximum(1.0, np.abs(ys))
    plan = M.plan_discretisation(xs, [{"f": y} for y in ys])
    assert M.OUTPUT_PRECISION < err.max() <= plan.cancelling_error
    with pytest.raises(UnsupportedError, match="steps between outputs as large as 1000000.0 and as small as 1.0"):
        M.discretising_mlp("f", "x", xs, [{"f": y} for y in ys], {})
    # a single step cancels nothing: its error is unavoidable and not counted
    assert M.plan_discretisation(xs, [{"f": 1e6 if x > 0.5 else 0.0} for x in xs]).cancelling_error == 0.0
    assert M.output_runs([{"f": 1.0}, {"f": 1.0}, {}, {"f": 1.0}]) == [0, 0, 1, 2]


def test_a_far_value_becomes_the_pivot_so_small_steps_stay_exact() -> None:
    xs = [-1.0, 2.0, 3.0, 1e9]
    ys = [0.0, 1.0, 2.0, 5.0]
    plan = M.plan_discretisation(xs, [{"f": y} for y in ys])
    assert plan.pivot == 3 and plan.error < M.OUTPUT_PRECISION
    block = M.discretising_mlp("f", "x", xs, [{"f": y} for y in ys], {}, noise=M.exact_value_noise)
    assert list(run_mlp_float32(block, "x", xs, "f")) == ys
    # with the leftmost value as the constant, rounding at 1e9 is far from exact
    assert abs(run_mlp_float32(rising_steps(xs, ys), "x", xs, "f")[3] - 5.0) > 1


def test_far_values_on_both_sides_of_small_steps_are_refused() -> None:
    with pytest.raises(UnsupportedError, match=r"as far apart as -1000000000.0 and 1000000000.0, and it changes"):
        M.discretising_mlp("f", "x", [-1e9, 2.0, 3.0, 1e9], [{"f": 0.0}, {"f": 1.0}, {"f": 2.0}, {"f": 2.0}], {},
                           noise=M.exact_value_noise)


def test_sequence_map_mlp_every_pair() -> None:
    a, b = ["a:0", "a:1", "a:2"], ["b:0", "b:1"]
    table = [[("f:s", 1.0) if (i + j) % 2 else ("f:t", 1.0) for j in range(2)] for i in range(3)]
    block = M.sequence_map_mlp("f", a, b, table, True, {})
    for i in range(3):
        for j in range(2):
            assert run_mlp(block, at_token({a[i]: 1, b[j]: 1})) == {table[i][j][0]: 1.0}


@pytest.mark.parametrize("n", [40, 128])
def test_additive_sequence_map_one_discretisation_of_the_sum(n: int) -> None:
    """length - index - 1 at max_seq_len n: a unit per step of the sum, not per pair; every pair
    exact in float32, and 0 at BOS. (At 128 the 255 steps pass because each output direction only
    adds its own two ramps: the error bound is per direction.)"""
    a = [f"length:{k}" for k in range(1, n + 1)]
    b = [f"indices:{k}" for k in range(n)]
    table = [[k - i - 1 for i in range(n)] for k in range(1, n + 1)]
    u, v = M.additive_form(table)
    outs = sorted({x for row in table for x in row})
    written = [[{f"opp:{x}": 1.0} for x in row] for row in table]
    block = M.additive_sequence_map_mlp("opp", a, u, b, v, written, {"bos": 1.0})
    assert len(block.hidden) <= 2 * len(outs) + 1 < n * n // 4
    dirs = ["one", "bos", *a, *b]
    out_dirs = [f"opp:{x}" for x in outs]
    w_in = np.zeros((len(dirs), len(block.hidden)), np.float32)
    w_out = np.zeros((len(block.hidden), len(out_dirs)), np.float32)
    for (d, h), w in block.w_in.items():
        w_in[dirs.index(d), block.hidden.index(h)] = w
    for (h, d), w in block.w_out.items():
        w_out[block.hidden.index(h), out_dirs.index(d)] = w
    b_in = np.array([block.b_in.get(h, 0.0) for h in block.hidden], np.float32)
    resid = np.zeros((n * n + 1, len(dirs)), np.float32)
    resid[:, 0] = 1.0
    for i in range(n):
        for j in range(n):
            resid[i * n + j, [2 + i, 2 + n + j]] = 1.0
    resid[-1, 1] = 1.0  # BOS: `one` and `bos`, nothing else
    y = np.maximum(resid @ w_in + b_in, 0) @ w_out
    expected = np.zeros_like(y)
    for i in range(n):
        for j in range(n):
            expected[i * n + j, outs.index(table[i][j])] = 1.0
    np.testing.assert_array_equal(y, expected)
    assert M.additive_form([[0, 1], [1, 3]]) is None  # not a sum of a function of each


def test_linear_mlp_both_signs() -> None:
    block = M.linear_mlp("l", {"x": 2.0, "y": -0.5}, {"x": (True, True), "y": (True, False)}, "l", {})
    for x, y in [(1.0, 3.0), (-2.0, 0.5), (0.25, 0.0)]:
        assert run_mlp(block, at_token({"x": x, "y": y})).get("l", 0.0) == pytest.approx(2 * x - 0.5 * y)


@pytest.mark.parametrize("n", [4, 12, 40])
def test_width_mlp_inverts_the_bos_share_exactly(n: int) -> None:
    widths = list(range(0, n + 1))
    block = M.width_mlp("w", "share", widths, [{f"w:{w}": 1.0} for w in widths], {"share": 1.0})
    for w in widths:
        assert run_mlp(block, at_token({"share": 1.0 / (w + 1)})) == pytest.approx({f"w:{w}": 1.0})
    assert run_mlp(block, {"one": 1.0, "bos": 1.0, "share": 1.0}) == {}


def test_mean_type_mlp_turns_ints_into_floats_past_one_selected() -> None:
    widths = [0, 1, 2, 3]
    outputs = [[{}, {"m:1": 1.0}, {"m:1.0": 1.0}, {"m:1.0": 1.0}],
               [{"m:none": 1.0}, {"m:2": 1.0}, {"m:2.0": 1.0}, {"m:2.0": 1.0}]]
    block = M.mean_type_mlp("m", [["s:1"], ["s:2"]], "share", widths, outputs, {})
    for i, d in enumerate(["s:1", "s:2"]):
        for k, w in enumerate(widths):
            got = run_mlp(block, at_token({d: 1.0, "share": 1.0 / (w + 1)}))
            assert got == pytest.approx(outputs[i][k]), (d, w, got)
    assert run_mlp(block, at_token({"share": 0.25})) == {}


def test_mean_type_mlp_gates_twins_by_their_sum() -> None:
    # 4 and 4.0 selected together average to 4.0, as do two 4s; one 4 stays 4
    widths = [1, 2, 3]
    outputs = [[{"m:4": 1.0}, {}, {}], [{"m:4.0": 1.0}, {}, {}], [{}, {"m:4.0": 1.0}, {"m:4.0": 1.0}]]
    block = M.mean_type_mlp("m", [["s:4"], ["s:4.0"], ["s:4", "s:4.0"]], "share", widths, outputs, {})
    assert run_mlp(block, at_token({"s:4": 1.0, "share": 0.5})) == pytest.approx({"m:4": 1.0})
    assert run_mlp(block, at_token({"s:4": 1.0, "share": 1 / 3})) == pytest.approx({"m:4.0": 1.0})
    assert run_mlp(block, at_token({"s:4": 0.5, "s:4.0": 0.5, "share": 1 / 3})) == pytest.approx({"m:4.0": 1.0})
    assert run_mlp(block, at_token({"s:4": 2 / 3, "s:4.0": 1 / 3, "share": 0.25})) == pytest.approx({"m:4.0": 1.0})


# --------------------------------------------------------------------------- attention


def run_head(head: A.HeadBlock, queries: Sequence[Mapping[str, float]], keys: Sequence[Mapping[str, float]],
             values: Sequence[Mapping[str, float]], bos_only_self: bool = True) -> list[dict[str, float]]:
    """Position 0 is BOS (attends only to itself)."""
    scores = np.array([[sum(w * q.get(qd, 0.0) * k.get(kd, 0.0) for (qd, kd), w in head.w_qk.to_dict().items())
                        for k in keys] for q in queries]) * head.scale
    if bos_only_self:
        scores[0, 1:] = -1e9
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    outs = []
    for qi in range(len(queries)):
        out: dict[str, float] = {}
        for ki, v in enumerate(values):
            for (vd, od), w in head.w_ov.to_dict().items():
                out[od] = out.get(od, 0.0) + p[qi, ki] * w * v.get(vd, 0.0)
        outs.append({d: x for d, x in out.items() if abs(x) > 1e-6})
    return outs


def test_none_key_selects_through_the_affine_indicator() -> None:
    # keys k in {None, "a"}, queries q in {"a", "b"}; predicate: k != q (None != q is True)
    table = np.array([[1, 0], [1, 1]])  # rows: q = a, b; columns: k = None, a
    scores = A.conjunction_scores([A.Leaf(["q:a", "q:b"], ["k:a"], table, q_none=False, k_none=True)])
    bos = {"one": 1.0, "bos": 1.0}
    tok = lambda d: {"one": 1.0, **d}  # noqa: E731
    key_positions = [bos, tok({}), tok({"k:a": 1.0})]  # BOS, a None key, key "a"
    head = A.selection_head("h", scores, 1, 0.5, {"one": 1.0}, {("v", "out"): 1.0}, {}, {}, 40.0)
    values = [{}, {"v": 10.0}, {"v": 20.0}]
    q_a = run_head(head, [bos, tok({"q:a": 1.0})], key_positions, values)[1]
    q_b = run_head(head, [bos, tok({"q:b": 1.0})], key_positions, values)[1]
    assert q_a == pytest.approx({"out": 10.0})  # only the None key: a != a is False
    assert q_b == pytest.approx({"out": 15.0})  # both


def test_empty_selection_attends_to_bos_value() -> None:
    scores = A.conjunction_scores([A.Leaf(["q:x"], ["k:x", "k:y"], np.array([[0, 1]]))])
    head = A.selection_head("h", scores, 1, 0.5, {}, {("v", "out"): 1.0}, {}, {"out": 7.0}, 40.0)
    bos = {"one": 1.0, "bos": 1.0}
    keys = [bos, {"one": 1.0, "k:x": 1.0}]  # no key "y": nothing selected
    outs = run_head(head, [bos, {"one": 1.0, "q:x": 1.0}], keys, [{"bos": 1.0}, {"v": 3.0}])
    assert outs[1] == pytest.approx({"out": 7.0})
    assert outs[0] == pytest.approx({"out": 7.0})  # BOS writes its bos_value


def test_no_weight_leaks_so_large_defaults_stay_out_of_selected_positions() -> None:
    scale = A.head_scale(8, 1e-9)
    assert scale / 2 >= A.FLOAT32_EXP_UNDERFLOW
    scores = A.conjunction_scores([A.Leaf(["q:x"], ["k:x"], np.array([[1]]))])
    head = A.selection_head("h", scores, 1, 0.5, {}, {("v", "out"): 1.0}, {}, {"out": 1e9}, scale)
    bos = {"one": 1.0, "bos": 1.0}
    keys = [bos] + [{"one": 1.0, "k:x": 1.0}] * 8
    out = run_head(head, [bos, {"one": 1.0, "q:x": 1.0}], keys, [{"bos": 1.0}] + [{"v": 1.0}] * 8)[1]
    assert out["out"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_factor_bilinear_is_exact_and_as_small_as_the_distinct_rows_or_columns(seed: int) -> None:
    from raspc.dialects import craft as C
    from raspc.lowering.craft_to_tensor import factor_bilinear

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 3, (6, 7)).astype(float)  # a few distinct rows, repeated
    w = rows[rng.integers(0, 6, 9)]
    w[rng.integers(0, 9)] = 0.0  # an all-zero row takes no class
    row_labels, col_labels = [f"q:{i}" for i in range(9)], [f"k:{j}" for j in range(7)]
    attr = C.SparseMatrixAttr.from_dict({(row_labels[i], col_labels[j]): w[i, j]
                                         for i in range(9) for j in range(7) if w[i, j]})
    index = {label: i for i, label in enumerate(reversed(row_labels + col_labels))}  # any residual order
    a, b = factor_bilinear(attr, index, len(index))
    dense = np.zeros((len(index), len(index)))
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            dense[index[r], index[c]] = w[i, j]
    np.testing.assert_array_equal(a.astype(np.float64) @ b.T.astype(np.float64), dense)
    distinct = lambda m: len({tuple(x) for x in m if x.any()})  # noqa: E731
    assert a.shape[1] == min(distinct(w), distinct(w.T))
