"""MLP constructions: pure functions from labelled directions and tables to an `MlpBlock`.

Every construction is exact on the values it is given, not approximately right:

| construction | computes | hidden units |
|---|---|---|
| `lookup_mlp` | categorical -> categorical: h_c = relu(sum of the input directions mapping to c) | #outputs |
| `categorical_to_numerical_mlp` | relu(positive part) - relu(negative part): negative outputs exact | <= 2 |
| `discretising_mlp` | numerical -> anything: a clamped ramp wherever the output changes between neighbouring values (0/1 outputs: exact in float32) | 2 per change |
| `sequence_map_mlp` | relu(x_a + sum of y_b - 1) per (row value, output) group, or per column | <= |A| x |B| |
| `linear_mlp` | a * x + b * y through relu(+x), relu(-x) | <= 4 |
| `tuple_mlp` | the tuple of k s-ops, None parts included: relu(sum of the parts' indicators - (k - 1)) | #tuples |

`MlpBuilder.finish(bos_content)` switches off, at BOS, every hidden unit that could be positive
there, so an MLP writes exactly 0 at BOS (what later attention heads rely on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from raspc.errors import UnsupportedError

Weights = dict[tuple[str, str], float]

# A float32 transformer computes a value up to about this relative error of the largest value
# its direction takes (rounding in the layers it passed through and attention leak); ramps keep
# a quarter of the gap between neighbouring values as margin, so gaps must exceed 4x this.
RELATIVE_NOISE = 2.0**-20

# A numerical output may be off by this much of itself (at least 1) before its discretisation is
# too imprecise and goes through a one-hot detour instead (well inside the 1e-4 results are held to).
OUTPUT_PRECISION = 2.0**-17
# Past this bound a discretisation is refused: its output could be visibly wrong (a step between
# 2 and 3 has an error of about 64 at 1e9). The bound adds every rounding at its worst; measured
# errors are tens of times smaller, so the many steps of a selector width at length 64 pass.
DISCRETISATION_LIMIT = 2.0**-4


@dataclass
class MlpBlock:
    """One MLP: out = relu(x w_in + b_in) w_out over labelled directions (`hidden` names the units).
    `inputs` are the directions it reads, `one`/`bos` included when it uses them."""

    label: str
    hidden: list[str]
    w_in: Weights
    b_in: dict[str, float]
    w_out: Weights

    @property
    def inputs(self) -> set[str]:
        return {d for d, _ in self.w_in}


@dataclass
class MlpBuilder:
    """Collects hidden units; `finish` adds the BOS gating."""

    label: str
    hidden: list[str] = field(default_factory=list)
    w_in: Weights = field(default_factory=dict)
    b_in: dict[str, float] = field(default_factory=dict)
    w_out: Weights = field(default_factory=dict)
    out_bias: dict[str, float] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set, repr=False)  # `hidden` as a set: a unit is named once

    def neuron(self, tag: str, inputs: Mapping[str, float], bias: float, outputs: Mapping[str, float]) -> None:
        outputs = {k: v for k, v in outputs.items() if v != 0.0}
        if not outputs:
            return
        name = f"{self.label}[{tag}]"
        assert name not in self._names, name
        self._names.add(name)
        self.hidden.append(name)
        for d, w in inputs.items():
            if w != 0.0:
                self.w_in[(d, name)] = self.w_in.get((d, name), 0.0) + w
        if bias:
            self.b_in[name] = bias
        for d, w in outputs.items():
            self.w_out[(name, d)] = w

    def add_output_bias(self, outputs: Mapping[str, float]) -> None:
        for d, v in outputs.items():
            self.out_bias[d] = self.out_bias.get(d, 0.0) + v

    def finish(self, bos_content: Mapping[str, float]) -> MlpBlock:
        """The block, gated so it writes exactly 0 at BOS (`bos_content`: what its inputs hold there)."""
        if any(self.out_bias.values()):
            # A constant output is a unit relu(one - K*bos): 1 on tokens, 0 at BOS.
            self.neuron("bias", {"one": 1.0}, 0.0, self.out_bias)
        at_bos_inputs: dict[str, float] = {}
        content = {**bos_content, "one": 1.0}
        for (d, h), w in self.w_in.items():
            if d in content:
                at_bos_inputs[h] = at_bos_inputs.get(h, 0.0) + w * content[d]
        for h in self.hidden:
            at_bos = self.b_in.get(h, 0.0) + at_bos_inputs.get(h, 0.0)
            if at_bos > 0.0 or h.endswith("[bias]"):
                self.w_in[("bos", h)] = -float(math.ceil(abs(at_bos) + 1.0))
        return MlpBlock(self.label, self.hidden, self.w_in, self.b_in, self.w_out)


def simple_fraction(x: float) -> Fraction:
    """The simple fraction a float came from (1/3 for 0.333...), else the float's exact value."""
    simple = Fraction(x).limit_denominator(1_000_000)
    return simple if abs(float(simple) - x) <= 1e-12 * max(1.0, abs(x)) else Fraction(x)


# --------------------------------------------------------------------------- categorical inputs


def lookup_mlp(label: str, in_dirs: Sequence[str], out_dirs: Sequence[str], table: Sequence[int | None],
               bos_content: Mapping[str, float]) -> MlpBlock:
    """Categorical -> categorical: input direction i maps to output direction table[i] (None: none).
    One unit per output direction: h_c = relu(sum of the input directions that map to c)."""
    mlp = MlpBuilder(label)
    for c, out_dir in enumerate(out_dirs):
        sources = {in_dirs[i]: 1.0 for i, e in enumerate(table) if e == c}
        if sources:
            mlp.neuron(out_dir, sources, 0.0, {out_dir: 1.0})
    return mlp.finish(bos_content)


# Directions of a categorical space are 0 or 1 up to ~1e-6 of float32 noise; an output weight
# larger than this would turn that noise into a visible error, so such outputs read thresholded units.
LARGE_OUTPUT = 16.0


def categorical_to_numerical_mlp(label: str, in_dirs: Sequence[str], out_dir: str, outputs: Sequence[float],
                                 bos_content: Mapping[str, float]) -> MlpBlock:
    """Categorical -> numerical: relu(sum of positive f(v) x_v) - relu(sum of -negative f(v) x_v).
    With an output above LARGE_OUTPUT, one thresholded unit per value instead, f(v) relu(2 x_v - 1):
    exactly 0 for a direction that holds noise, so 1e9 next to 1 stays exact."""
    mlp = MlpBuilder(label)
    if max((abs(v) for v in outputs), default=0.0) > LARGE_OUTPUT:
        for d, v in zip(in_dirs, outputs):
            if v:
                mlp.neuron(d, {d: 2.0}, -1.0, {out_dir: float(v)})
        return mlp.finish(bos_content)
    pos = {in_dirs[i]: float(v) for i, v in enumerate(outputs) if v > 0}
    neg = {in_dirs[i]: -float(v) for i, v in enumerate(outputs) if v < 0}
    if pos:
        mlp.neuron("+", pos, 0.0, {out_dir: 1.0})
    if neg:
        mlp.neuron("-", neg, 0.0, {out_dir: -1.0})
    return mlp.finish(bos_content)


def sequence_map_mlp(label: str, a_dirs: Sequence[str], b_dirs: Sequence[str],
                     outputs: Sequence[Sequence[tuple[str, float] | None]], categorical_out: bool,
                     bos_content: Mapping[str, float]) -> MlpBlock:
    """f(a, b) of two categorical s-ops; `outputs[i][j]` is (direction, weight) written for
    (a_dirs[i], b_dirs[j]), or None. One unit relu(x_a + sum of y_b - 1) per (row value, output),
    or per (column value, output), whichever needs fewer units; with an output weight above
    LARGE_OUTPUT the unit is relu(2 (x_a + sum of y_b) - 3), exactly 0 when one side holds noise."""
    by_row: dict[tuple[int, tuple[str, float]], list[int]] = {}
    by_col: dict[tuple[int, tuple[str, float]], list[int]] = {}
    for i in range(len(a_dirs)):
        for j in range(len(b_dirs)):
            out = outputs[i][j]
            if out is not None:
                by_row.setdefault((i, out), []).append(j)
                by_col.setdefault((j, out), []).append(i)
    mlp = MlpBuilder(label)

    def tag(src: str, d: str, v: float) -> str:
        return f"{src}->{d}" if categorical_out else f"{src}->{v!r}"

    def unit(src: str, others: list[str], d: str, v: float) -> None:
        k, bias = (2.0, -3.0) if abs(v) > LARGE_OUTPUT else (1.0, -1.0)
        mlp.neuron(tag(src, d, v), {src: k, **{o: k for o in others}}, bias, {d: v})

    if len(by_row) <= len(by_col):
        for (i, (d, v)), js in by_row.items():
            unit(a_dirs[i], [b_dirs[j] for j in js], d, v)
    else:
        for (j, (d, v)), is_ in by_col.items():
            unit(b_dirs[j], [a_dirs[i] for i in is_], d, v)
    return mlp.finish(bos_content)


def additive_form(table: Sequence[Sequence[Any]]) -> tuple[list[float], list[float]] | None:
    """(u, v) with table[i][j] == u[i] + v[j] exactly in float64 for every entry (numbers only), or
    None: a function of two s-ops that is a sum of a function of each."""
    try:
        t = np.array([[float(x) for x in row] for row in table], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if t.size == 0 or not np.all(np.isfinite(t)):
        return None
    u = t[:, 0]
    v = t[0, :] - t[0, 0]
    if not np.array_equal(u[:, None] + v[None, :], t):
        return None
    return u.tolist(), v.tolist()


def additive_sequence_map_mlp(label: str, a_dirs: Sequence[str], u: Sequence[float], b_dirs: Sequence[str],
                              v: Sequence[float], outputs: Sequence[Sequence[Mapping[str, float]]],
                              bos_content: Mapping[str, float]) -> MlpBlock:
    """f(a, b) = g(u(a) + v(b)) of two one-hot s-ops (never None): the sum is a linear form of
    their directions, so one discretisation of it (two units per step of g) replaces a unit per
    (value, output) pair. `outputs[i][j]` is what (a_dirs[i], b_dirs[j]) writes; pairs with the
    same sum must write the same. Refused (UnsupportedError) where float32 cannot separate sums
    that map differently; the caller then falls back to sequence_map_mlp."""
    by_sum: dict[float, Mapping[str, float]] = {}
    for i, ui in enumerate(u):
        for j, vj in enumerate(v):
            s_ij = ui + vj
            seen = by_sum.setdefault(s_ij, outputs[i][j])
            if not _same_output(seen, outputs[i][j]):
                raise UnsupportedError(f"'{label}': pairs with the same sum {s_ij!r} map differently")
    xs = sorted(by_sum)
    form = {**{d: w for d, w in zip(a_dirs, u)}, **{d: w for d, w in zip(b_dirs, v)}}
    noise = RELATIVE_NOISE * (max(map(abs, u), default=0.0) + max(map(abs, v), default=0.0))
    mlp = MlpBuilder(label)
    add_discretisation(mlp, f"{label}.sum", xs, [by_sum[x] for x in xs], noise, x_form=form)
    return mlp.finish(bos_content)


def tuple_mlp(label: str, parts: Sequence[tuple[Sequence[str], bool]], tuples: Sequence[Sequence[int | None]],
              out_dirs: Sequence[str], bos_content: Mapping[str, float]) -> MlpBlock:
    """The tuple of k categorical s-ops: one unit per tuple, relu(sum of its parts' indicators - (k - 1)).
    A part's indicator is its value's direction, or for None (`tuples[t][i] is None`, when
    `parts[i][1]` says it can be None) the affine `one - sum of the part's directions`."""
    mlp = MlpBuilder(label)
    k = len(parts)
    for t, out_dir in zip(tuples, out_dirs):
        inputs: dict[str, float] = {}
        for (dirs, _), i in zip(parts, t):
            if i is None:
                inputs["one"] = inputs.get("one", 0.0) + 1.0
                for d in dirs:
                    inputs[d] = inputs.get(d, 0.0) - 1.0
            else:
                inputs[dirs[i]] = inputs.get(dirs[i], 0.0) + 1.0
        mlp.neuron(out_dir, inputs, -(k - 1.0), {out_dir: 1.0})
    return mlp.finish(bos_content)


# --------------------------------------------------------------------------- numerical inputs


Noise = float | Callable[[float, float], float]  # absolute, or per pair of neighbouring values
Gate = tuple[Sequence[str], float]  # directions that sum to exactly 0 or 1, and the gate's strength


def _too_close(mlp: MlpBuilder, x_dir: str, lo: float, hi: float, noise: Noise) -> float:
    """The noise at the gap (lo, hi); refused (UnsupportedError) when a quarter of the gap is not above it."""
    if callable(noise):
        noise = noise(lo, hi)
    if (simple_fraction(hi) - simple_fraction(lo)) / 4 <= noise or hi - lo <= 2.0**-40 * max(abs(lo), abs(hi)):
        raise UnsupportedError(
            f"'{x_dir}' takes values {lo!r} and {hi!r}, which a float32 transformer cannot tell apart "
            f"(its noise there is about {noise:.1e}), but '{mlp.label}' maps them differently"
        )
    return noise


def _step_neurons(mlp: MlpBuilder, x_dir: str, lo: float, hi: float, delta_out: Mapping[str, float], tag: str,
                  noise: Noise, gate: Gate | None = None, falling: bool = False,
                  x_form: Mapping[str, float] | None = None) -> None:
    """Adds delta_out * clamp((x - t0) / (t1 - t0), 0, 1) with t0, t1 a quarter of the gap inside
    [lo, hi]: exactly 0 near lo and exactly delta_out near hi, so noise of up to a quarter gap in x
    never reaches the output. `falling` adds -delta_out * clamp((t1 - x) / (t1 - t0), 0, 1)
    instead: the same step, but 0 right of the gap rather than left of it. With `gate = (gs, M)`
    the ramp is shifted down by M(1 - sum of gs): off unless the gate directions sum to 1. With
    `x_form`, x is not a direction but the linear form sum(w * direction) (x_dir only names it)."""
    _too_close(mlp, x_dir, lo, hi, noise)
    flo, fhi = simple_fraction(lo), simple_fraction(hi)
    t0, t1 = flo + (fhi - flo) / 4, fhi - (fhi - flo) / 4
    _ramp_units(mlp, x_dir, t0, t1, 1 / (t1 - t0), delta_out, tag, gate, falling, x_form)


def _ramp_units(mlp: MlpBuilder, x_dir: str, t0: Fraction | float, t1: Fraction | float, slope: Fraction | float,
                delta_out: Mapping[str, float], tag: str, gate: Gate | None, falling: bool,
                x_form: Mapping[str, float] | None) -> None:
    """The two units of a ramp from t0 to t1 (slope = 1 / (t1 - t0)): relu(slope (x - t0)) minus
    relu(slope (x - t1)), or mirrored when `falling`."""
    form = {x_dir: 1.0} if x_form is None else x_form
    if falling:
        inputs = {d: float(-slope * w) for d, w in form.items()}
        bias0, bias1 = float(t1 * slope), float(t0 * slope)
        delta_out = {k: -v for k, v in delta_out.items()}
    else:
        inputs = {d: float(slope * w) for d, w in form.items()}
        bias0, bias1 = float(-t0 * slope), float(-t1 * slope)
    if gate is not None:
        gs, m = gate
        inputs.update({g: m for g in gs})
        bias0, bias1 = bias0 - m, bias1 - m
    if max(abs(bias0), abs(bias1)) < 2.0**22:
        # The biases differ by exactly 1 in float32 too, as they do in exact arithmetic: round the
        # larger one, derive the other (exact: it is smaller). Both units read the same rounded
        # slope * x, so where both are on (x past the ramp) and their sums round alike, the step is
        # exactly delta_out, not delta_out (1 +- an ulp), which a later head's scale would amplify.
        if abs(bias1) >= abs(bias0):
            b1 = np.float32(bias1)
            bias0, bias1 = float(b1 + np.float32(1.0)), float(b1)
        else:
            b0 = np.float32(bias0)
            bias0, bias1 = float(b0), float(b0 - np.float32(1.0))
    mlp.neuron(f"{tag}>", inputs, bias0, dict(delta_out))
    mlp.neuron(f"{tag}<", inputs, bias1, {k: -v for k, v in delta_out.items()})


def _power_of_two_below(x: float) -> float:
    """The largest power of two <= x (x > 0)."""
    return math.ldexp(1.0, math.frexp(x)[1] - 1)  # x = m * 2**e with m in [0.5, 1)


def _rising_ramp_exact(on: np.ndarray, noise: float, t0: float, r: float) -> bool:
    """Whether the float32 units of a rising ramp from t0 to t1 = t0 + r (t0 a multiple of the
    power of two r, r at least the ulp of every x) differ by exactly 1 at every float32 x within
    `noise` (and a few ulps) of the values `on` (all right of the ramp): big = X - T0 and small = X - T1 with X = x/r
    (exact) and T = t/r (integers), each one rounding of an exact sum, fused or not. They do when
    - T0 >= 0: 0 <= t <= x, so x - t is a multiple of ulp(x) no larger than x: both exact;
    - x <= t0/2 < 0: Sterbenz, both exact;
    - otherwise, when small and small + 1 lie in one binade for every such x (no power of two P with
      small < P <= small + 1): both round to the same grid, on which 1 is an even number of steps."""
    t1 = t0 + r
    if t0 >= 0.0:
        return True
    if t1 > 0.0:
        return False  # a ramp across 0: not placed
    near = np.maximum(noise, 2.0**-22 * np.abs(on))  # a value's own float32 rounding, when noise is 0
    x_lo, x_hi = (on - near) / r, (on + near) / r
    sterbenz = x_hi <= (t0 / r) / 2
    small_lo = (x_lo - t1 / r) * (1 - 2.0**-40)
    small_hi = (x_hi - t1 / r) * (1 + 2.0**-40)
    top = small_hi + 1.0
    # below 2**23 the grid is at most 1/2, so 1 is an even number of steps and ties break alike
    one_binade = (2.0 ** np.floor(np.log2(top)) <= small_lo) & (top < 2.0**23) & (small_lo > 0)
    return bool(np.all(sterbenz | one_binade))


# Candidate placements tried per ramp: widths r, r/2, ... and positions within the gap.
_RAMP_WIDTHS = 4
_RAMP_POSITIONS = 32


def _exact_ramp(lo: float, hi: float, falling: bool, on: np.ndarray, noise: float,
                grid: float) -> tuple[float, float, float] | None:
    """(t0, t1, r) for a ramp inside the gap (lo, hi), a quarter gap from either value, whose two
    float32 units differ by exactly 1 at every x within `noise` of the values `on` that switch it
    on (`_rising_ramp_exact`; a falling ramp is a rising one of -x), or None.

    r is a power of two (at most an eighth of the gap, at least `grid`, the ulp of the largest |x|)
    and t0, t1 are multiples of it, so the slope 1/r and the biases -t/r are exact and x/r is exact
    for every float32 x. Positions are tried from the side of the gap nearer 0."""
    if falling:
        ramp = _exact_ramp(-hi, -lo, False, -on, noise, grid)
        return None if ramp is None else (-ramp[1], -ramp[0], ramp[2])
    gap = hi - lo
    r = _power_of_two_below(gap / 8)
    for _ in range(_RAMP_WIDTHS):
        if not grid <= r or not 2.0**-100 <= r <= 2.0**100:
            return None
        first, last = math.ceil((lo + gap / 4) / r), math.floor((hi - gap / 4) / r) - 1  # t0 / r
        for m in range(first, last + 1)[:_RAMP_POSITIONS]:
            t0 = m * r
            if float(np.float32(t0)) == t0 and float(np.float32(t0 + r)) == t0 + r and \
                    _rising_ramp_exact(on, noise, t0, r):
                return t0, t0 + r, r
        r /= 2
    return None


@dataclass
class _Pair:
    """The two units of one ramp, (t0, t1, r), and what they write once passed."""

    ramp: tuple[float, float, float]
    writes: dict[str, float] = field(default_factory=dict)


def _add_exact_unit_steps(mlp: MlpBuilder, x_dir: str, xs: Sequence[float], outputs: Sequence[Mapping[str, float]],
                          noise: Noise, tag: str) -> bool:
    """The discretisation of outputs that are all 0 or 1 (a categorical copy, a one-hot), exact in
    float32 whatever order a runtime sums a MatMul's inner dimension in. False (nothing added) when
    some ramp cannot be placed so (`_exact_ramp`); the caller then builds the approximate one.

    Each direction is its own constant plus ramps where it changes, chosen so that at any value at
    most one ramp writing it is passed: a direction that changes twice (a run of 1s, or of 0s) is
    its value inside plus a ramp falling at the left change and one rising at the right change;
    one that changes once, a single ramp. The direction's sum is then {constant, +-big, -+small}
    with big - small exactly 1, exact in any order (BLAS and onnxruntime's MLAS sum the inner
    dimension in blocks of a few hundred, each from 0, so two passed ramps writing one direction
    could round). Where the ramp of a bump cannot be placed exactly, the direction's changes are
    made relative to the value nearest 0 instead (ramps left of it fall, right of it rise): exact
    when its units are summed in their order, which blocked kernels do not promise (rare: the
    fuzz programs' far embedded values). A direction that changes more than twice (0 1 0 1)
    cannot have one passed ramp everywhere: not built here (rasp_to_craft detours through a one-hot
    over the runs of equal outputs). Ramps that make the same move at the same step are shared."""
    steps = _steps(outputs)
    if changes_more_than_twice(outputs):
        return False
    noises = [_too_close(mlp, x_dir, float(xs[i]), float(xs[i + 1]), noise) for i, _ in steps]
    x = np.asarray(xs, dtype=np.float64)
    n = max(noises, default=0.0)
    reach = max(abs(x[0]), abs(x[-1])) + n
    grid = float(np.spacing(np.float32(reach))) * 2  # >= the ulp of every float32 within `reach`
    changes: dict[str, list[tuple[int, float]]] = {}
    for i, delta in steps:
        for d, v in delta.items():
            changes.setdefault(d, []).append((i, v))
    pivot = int(np.argmin(np.abs(x)))
    pairs: dict[tuple[int, bool], _Pair] = {}
    constant: dict[str, float] = {}

    def pair(i: int, falling: bool) -> _Pair | None:
        if (i, falling) not in pairs:
            on = x[: i + 1] if falling else x[i + 1:]
            ramp = _exact_ramp(float(x[i]), float(x[i + 1]), falling, on, n, grid)
            if ramp is None:
                return None
            pairs[(i, falling)] = _Pair(ramp)
        return pairs[(i, falling)]

    def place(d: str, moves: list[tuple[int, bool, float]], base: float) -> bool:
        """d = base + sum of the moves (step, falling, weight): False if a ramp cannot be placed."""
        found = [pair(i, falling) for i, falling, _ in moves]
        if any(p is None for p in found):
            return False
        for p, (_, _, w) in zip(found, moves):
            assert p is not None
            p.writes[d] = p.writes.get(d, 0.0) + w
        constant[d] = base
        return True

    for d in sorted(changes):
        ch = changes[d]
        first = outputs[0].get(d, 0.0)
        options: list[tuple[list[tuple[int, bool, float]], float]] = []
        if len(ch) == 1:
            (i, v), = ch
            options = [([(i, False, v)], first), ([(i, True, -v)], first + v)]
            if float(x[i]) < 0.0:  # rising where the ramp can be right of 0, falling where left
                options.reverse()
        elif len(ch) == 2:
            (i, v), (j, w) = ch
            options = [([(i, True, -v), (j, False, w)], first + v)]
        at_pivot = first + sum(v for i, v in ch if i < pivot)
        options.append(([(i, i < pivot, -v if i < pivot else v) for i, v in ch], at_pivot))
        if not any(place(d, moves, base) for moves, base in options):
            return False
    mlp.add_output_bias({d: c for d, c in constant.items() if c})
    mlp.add_output_bias({d: outputs[0][d] for d in outputs[0] if d not in changes})
    for (i, falling), p in sorted(pairs.items()):
        if p.writes:  # _ramp_units takes a falling step's rise: minus what it writes once passed
            t0, t1, r = p.ramp
            rise = {d: -w for d, w in p.writes.items()} if falling else p.writes
            _ramp_units(mlp, x_dir, t0, t1, 1 / r, rise, f"{tag}{i}{'v' if falling else '^'}", None, falling, None)
    return True


def changes_more_than_twice(outputs: Sequence[Mapping[str, float]]) -> bool:
    """Some output direction changes more than twice along the values (0 1 0 1): its exact
    discretisation needs a one-hot over the runs of equal outputs first."""
    changes: dict[str, int] = {}
    for _, delta in _steps(outputs):
        for d in delta:
            changes[d] = changes.get(d, 0) + 1
    return max(changes.values(), default=0) > 2


def _unit_outputs(outputs: Sequence[Mapping[str, float]]) -> bool:
    """Every output is 0 or 1 in every direction (one-hot or None): every step is +-1."""
    return all(v in (0.0, 1.0) for o in outputs for v in o.values())


def _steps(outputs: Sequence[Mapping[str, float]]) -> list[tuple[int, dict[str, float]]]:
    """(i, outputs[i + 1] - outputs[i]) wherever the output changes between neighbouring values."""
    steps = []
    for i, (before, after) in enumerate(zip(outputs, outputs[1:])):
        if _same_output(before, after):
            continue
        delta = {d: after.get(d, 0.0) - before.get(d, 0.0) for d in set(before) | set(after)}
        delta = {d: v for d, v in sorted(delta.items()) if v != 0.0}
        if delta:
            steps.append((i, delta))
    return steps


@dataclass(frozen=True)
class DiscretisationPlan:
    """Where a discretisation takes its constant, and how far float32 may take it from exact.

    The constant is the output at `pivot`; steps left of it fall (0 right of their gap), steps
    right of it rise (0 left of it), so at a value x only the steps between the pivot and x are
    saturated, and each adds float32 rounding of about 4 ulps of slope * (x - t) times its size.
    A pivot at a far value (1e9 beside 2 and 3) keeps the steep small steps away from it."""

    pivot: int
    error: float             # the worst bound, relative to the output (at least 1)
    cancelling_error: float  # the worst bound where the constant and the steps cancel out (1e6 next to -1)


def plan_discretisation(xs: Sequence[float], outputs: Sequence[Mapping[str, float]]) -> DiscretisationPlan:
    """The leftmost value as pivot, unless it would be refused and the rightmost or the one
    nearest 0 halves the error bound."""
    x = np.asarray(xs, dtype=np.float64)
    n = len(x)
    steps = _steps(outputs)
    size = np.zeros(max(n - 1, 0))
    for i, delta in steps:
        size[i] = max(abs(v) for v in delta.values())
    slope = 2.0 / np.diff(x) if n > 1 else size
    reach = np.maximum(np.abs(x[:-1]), np.abs(x[1:]))  # bounds |t| of the step between the two
    through = np.concatenate([[0.0], np.cumsum(size * slope)])  # prefix sums over the steps left of each x
    offset = np.concatenate([[0.0], np.cumsum(size * slope * reach)])
    passed = np.concatenate([[0.0], np.cumsum(size)])
    out = np.array([max((abs(v) for v in o.values()), default=0.0) for o in outputs])
    scale = np.maximum(1.0, out)

    def bound(p: int) -> tuple[float, float]:
        err = 2.0**-22 * (np.abs(through - through[p]) * np.abs(x) + np.abs(offset - offset[p])) / scale
        cancels = out[p] + np.abs(passed - passed[p]) > 2.0 * scale
        return float(err.max(initial=0.0)), float(err[cancels].max(initial=0.0))

    best = 0, *bound(0)
    if best[1] > DISCRETISATION_LIMIT:  # else the leftmost is good enough
        for p in (n - 1, int(np.argmin(np.abs(x)))):
            candidate = p, *bound(p)
            if candidate[1] < best[1] / 2:
                best = candidate
        # Each output direction only adds the ramps of the steps that change it (a categorical
        # output: two per direction), so its rounding is bounded by those ramps alone, wherever
        # the pivot is. For one direction (a number) this is never tighter than the bound above.
        through_d: dict[str, float] = {}
        offset_d: dict[str, float] = {}
        for i, delta in steps:
            for d, v in delta.items():
                through_d[d] = through_d.get(d, 0.0) + abs(v) * slope[i]
                offset_d[d] = offset_d.get(d, 0.0) + abs(v) * slope[i] * reach[i]
        widest = float(np.abs(x).max(initial=0.0))
        per_direction = 2.0**-22 * max((through_d[d] * widest + offset_d[d] for d in through_d), default=0.0)
        best = (best[0], min(best[1], per_direction), best[2])
    return DiscretisationPlan(*best)


def add_discretisation(mlp: MlpBuilder, x_dir: str, xs: Sequence[float], outputs: Sequence[Mapping[str, float]],
                       noise: Noise, tag: str = "", gate: Gate | None = None,
                       x_form: Mapping[str, float] | None = None) -> None:
    """Units equal to outputs[i] at x = xs[i] (xs strictly ascending): the output at the plan's
    pivot as a constant plus a ramp wherever the output changes. Ungated, the constant becomes an
    output bias. Refused when float32 rounding could move the output by more than DISCRETISATION_LIMIT.
    Outputs that are all 0 or 1 (categorical copies, one-hot intervals) get exact ramps instead
    (`_add_exact_unit_steps`): a categorical direction a later head reads with scale 208 must be
    exactly 0 or 1, not 1 - 8e-6."""
    exact = gate is None and x_form is None and _unit_outputs(outputs)
    if exact and _add_exact_unit_steps(mlp, x_dir, xs, outputs, noise, tag):
        return
    plan = DiscretisationPlan(0, 0.0, 0.0) if gate is not None else plan_discretisation(xs, outputs)
    base = outputs[plan.pivot]
    if gate is None:
        mlp.add_output_bias(base)
    elif base:
        mlp.neuron(f"{tag}base", {g: 1.0 for g in gate[0]}, 0.0, base)
    for i, delta in _steps(outputs):
        _step_neurons(mlp, x_dir, float(xs[i]), float(xs[i + 1]), delta, f"{tag}{i}", noise, gate,
                      falling=i < plan.pivot, x_form=x_form)
    if plan.error > DISCRETISATION_LIMIT:
        sizes = sorted({abs(v) for o in outputs for v in o.values() if v}) or [0.0]
        if plan.cancelling_error >= plan.error and sizes[-1] > 2 * sizes[0]:
            why = f"it steps between outputs as large as {sizes[-1]!r} and as small as {sizes[0]!r}"
        else:
            why = (f"'{x_dir}' takes values as far apart as {xs[0]!r} and {xs[-1]!r}, and it changes between "
                   "values much closer together")
        raise UnsupportedError(f"'{mlp.label}' cannot be guaranteed exact in float32: {why}, so rounding could "
                               f"move its output by up to {plan.error:.1e} of itself")


def _same_output(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal outputs, or numbers differing only by float64 rounding (0.3 * 2 - 1 next to
    0.30000000000000004 * 2 - 1): no step is needed, and none could be float32-exact."""
    if a.keys() != b.keys():
        return False
    return all(abs(a[k] - b[k]) <= 2.0**-40 * max(abs(a[k]), abs(b[k])) for k in a)


def noise_of(xs: Sequence[float]) -> float:
    """The absolute noise a float32 model may add to a direction taking the values `xs` when it is
    computed from them (a mean, a sum of units): relative to the largest of them."""
    return RELATIVE_NOISE * max((abs(x) for x in xs), default=0.0)


def exact_value_noise(lo: float, hi: float) -> float:
    """The noise of a direction that holds its value as written (an embedding): float32 rounding of
    the two values themselves."""
    return 2.0**-22 * max(abs(lo), abs(hi))


def discretising_mlp(label: str, x_dir: str, xs: Sequence[float], outputs: Sequence[Mapping[str, float]],
                     bos_content: Mapping[str, float], noise: Noise | None = None) -> MlpBlock:
    """Numerical -> anything: an MLP equal to outputs[i] at x = xs[i] (xs strictly ascending)."""
    mlp = MlpBuilder(label)
    add_discretisation(mlp, x_dir, xs, outputs, noise_of(xs) if noise is None else noise)
    return mlp.finish(bos_content)


def linear_mlp(label: str, factors: Mapping[str, float], signs: Mapping[str, tuple[bool, bool]], out_dir: str,
               bos_content: Mapping[str, float], bias: float = 0.0) -> MlpBlock:
    """bias + sum of factor * x over numerical directions, through relu(+x) and relu(-x) (only the
    signs x takes): exact, with no rounding but the products' own."""
    mlp = MlpBuilder(label)
    if bias:
        mlp.add_output_bias({out_dir: bias})
    for d, fac in factors.items():
        can_pos, can_neg = signs[d]
        if can_pos:
            mlp.neuron(f"+{d}", {d: 1.0}, 0.0, {out_dir: fac})
        if can_neg:
            mlp.neuron(f"-{d}", {d: -1.0}, 0.0, {out_dir: -fac})
    return mlp.finish(bos_content)


def output_runs(ys: Sequence[Mapping[str, float]]) -> list[int]:
    """The run of equal outputs (up to float64 rounding) each point falls in: 0, 0, 1, 2, 2, ..."""
    runs = [0]
    for before, after in zip(ys, ys[1:]):
        runs.append(runs[-1] + (not _same_output(before, after)))
    return runs


def affine_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(a, b) with y = a * x + b at every point (up to float64 rounding), or None."""
    if len(xs) < 2:
        return None
    a = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    b = ys[0] - a * xs[0]
    if all(abs(a * x + b - y) <= 2.0**-40 * max(1.0, abs(y), abs(a * x)) for x, y in zip(xs, ys)):
        return a, b
    return None


def width_mlp(label: str, share_dir: str, widths: Sequence[int], outputs: Sequence[Mapping[str, float]],
              bos_content: Mapping[str, float]) -> MlpBlock:
    """Selector width from BOS's share of attention, 1/(w+1): outputs[i] at width widths[i]."""
    points = sorted(((1.0 / (w + 1), i) for i, w in enumerate(widths)))
    return discretising_mlp(label, share_dir, [p for p, _ in points], [outputs[i] for _, i in points], bos_content,
                            noise=0.0)


def mean_type_mlp(label: str, gates: Sequence[Sequence[str]], share_dir: str, widths: Sequence[int],
                  outputs: Sequence[Sequence[Mapping[str, float]]], bos_content: Mapping[str, float]) -> MlpBlock:
    """A categorical mean whose value depends on how many equal values were averaged (the evaluator's
    mean of 1 and 1 is 1.0): outputs[i][k] is written when the directions gates[i] sum to 1 (the
    selected value is one of them) and the selection width is widths[k], read from BOS's share of
    attention 1/(w+1). Each discretisation is gated by its directions' sum (exactly 0 or 1)."""
    mlp = MlpBuilder(label)
    order = sorted(range(len(widths)), key=lambda k: 1.0 / (widths[k] + 1))
    shares = [1.0 / (widths[k] + 1) for k in order]
    gate_strength = float(math.ceil(4 * (len(widths) + 1) ** 2 + 1))
    for i, dirs in enumerate(gates):
        add_discretisation(mlp, share_dir, shares, [outputs[i][k] for k in order], 0.0, tag=f"{'+'.join(dirs)}:",
                           gate=(dirs, gate_strength))
    return mlp.finish(bos_content)


__all__ = [
    "MlpBlock", "MlpBuilder", "lookup_mlp", "categorical_to_numerical_mlp", "sequence_map_mlp", "discretising_mlp",
    "additive_form", "additive_sequence_map_mlp",
    "add_discretisation", "DiscretisationPlan", "plan_discretisation", "output_runs", "noise_of", "exact_value_noise",
    "changes_more_than_twice",
    "linear_mlp", "affine_fit", "tuple_mlp", "width_mlp", "mean_type_mlp", "simple_fraction", "Weights",
    "RELATIVE_NOISE", "OUTPUT_PRECISION", "DISCRETISATION_LIMIT",
]
