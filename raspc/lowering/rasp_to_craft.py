"""lower-rasp-to-craft: every rasp op becomes residual blocks with exact, labelled weights.

One rewrite pattern per rasp op (`MapToLookupMlp`, `SelectAggregateToAttentionHead`,
`SelectorWidthToAttentionAndMlp`, ...), applied in one forward walk so every op's operands are
already craft spaces; the constructions live in `CraftLowering`.

Constructions (each exact on the value sets in the IR, not approximately right):

- tokens / indices        -> `craft.embed`; full / constant -> `craft.positional`.
- categorical map         -> lookup MLP, one hidden neuron per *output* value:
                             h_c = relu(sum of the input directions that map to c).
- categorical -> numerical map -> two neurons (positive and negative part): negative outputs stay exact.
- numerical map           -> discretising MLP: a clamped ramp between each pair of neighbouring input
                             values where the output changes (2 neurons each); exact on the value set.
- sequence_map            -> one neuron per (first value, output) group: relu(x_a + sum_b y_b - 1).
- linear_sequence_map     -> relu(+x), relu(-x), ... recombined linearly.
- select + aggregate      -> attention head. Scores are `scale * (number of true leaf predicates)`,
                             BOS scores half a step below a full match, so an empty selection
                             attends to BOS, whose value carries the default.
- select + selector_width -> attention head with BOS level with a match (BOS gets 1/(w+1)),
                             then a discretising MLP from 1/(w+1) to w. Exact for every width.

BOS invariants the constructions rely on: position 0 (BOS) attends only to itself (the tensor
level masks it); every MLP writes exactly 0 at BOS (hidden units are switched off by the `bos`
direction when their pre-activation could be positive there); an attention head writes its BOS
value there, which is tracked (`bos_content`) and compensated in later heads' keys and values.

Softmax sharpness is per head: with margin `scale/2` between the selected keys and the rest,
the weight that leaks to at most max_seq_len+1 other keys is below `leak` (default 1e-9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from raspc.dialects import craft as C
from raspc.dialects import rasp as R
from raspc.dialects.rasp import table_values
from raspc.errors import UnsupportedError
from raspc.passes.product_selectors import is_conjunction, selector_leaves
from raspc.values import simple_fraction

Weights = dict[tuple[str, str], float]


def craft_type(label: str, t: R.SOpType) -> Attribute:
    if t.is_categorical:
        return C.CategoricalSpaceType(label, t.value_set or ())
    return C.NumericalSpaceType(label)


def head_scale(max_seq_len: int, leak: float) -> float:
    """Inverse temperature so that keys half a step below the best get < `leak` weight in total."""
    return 2.0 * (math.log(max_seq_len + 1) + math.log(1.0 / leak))


# --------------------------------------------------------------------------- MLP construction


@dataclass
class MlpBuilder:
    """Collects neurons; `finish` adds BOS gating so the block writes exactly 0 at BOS."""

    label: str
    hidden: list[str] = field(default_factory=list)
    w_in: Weights = field(default_factory=dict)
    b_in: dict[str, float] = field(default_factory=dict)
    w_out: Weights = field(default_factory=dict)
    out_bias: dict[str, float] = field(default_factory=dict)

    def neuron(self, tag: str, inputs: dict[str, float], bias: float, outputs: dict[str, float]) -> None:
        outputs = {k: v for k, v in outputs.items() if v != 0.0}
        if not outputs:
            return
        name = f"{self.label}[{tag}]"
        assert name not in self.hidden, name
        self.hidden.append(name)
        for d, w in inputs.items():
            if w != 0.0:
                self.w_in[(d, name)] = self.w_in.get((d, name), 0.0) + w
        if bias:
            self.b_in[name] = bias
        for d, w in outputs.items():
            self.w_out[(name, d)] = w

    def add_output_bias(self, outputs: dict[str, float]) -> None:
        for d, v in outputs.items():
            self.out_bias[d] = self.out_bias.get(d, 0.0) + v

    def finish(self, bos_content: dict[str, float]) -> tuple[list[str], Weights, dict[str, float], Weights, bool]:
        """(hidden, w_in, b_in, w_out, reads_one_and_bos)."""
        uses_gate = False
        if any(self.out_bias.values()):
            # A constant output is a neuron relu(one - K*bos): 1 on tokens, 0 at BOS.
            self.neuron("bias", {"one": 1.0}, 0.0, self.out_bias)
            uses_gate = True
        # Largest pre-activation any neuron can reach at BOS; gate those that can be positive.
        from_inputs: dict[str, float] = {}
        for (d, h), w in self.w_in.items():
            if d in bos_content:
                from_inputs[h] = from_inputs.get(h, 0.0) + w * bos_content[d]
        for h in self.hidden:
            at_bos = self.b_in.get(h, 0.0) + from_inputs.get(h, 0.0)
            if at_bos > 0.0 or h.endswith("[bias]"):
                gate = math.ceil(abs(at_bos) + 1.0)
                self.w_in[("bos", h)] = -float(gate)
                uses_gate = True
        return self.hidden, self.w_in, self.b_in, self.w_out, uses_gate


# Neighbouring values closer than this (relative) cannot be told apart by a float32 ramp.
MIN_RELATIVE_GAP = 1e-5


def _step_neurons(mlp: MlpBuilder, x_dir: str, lo: Fraction, hi: Fraction, delta_out: dict[str, float], tag: str) -> None:
    """Adds delta_out * clamp((x - t0) / (t1 - t0), 0, 1) with t0, t1 a quarter of the gap inside [lo, hi]:
    exactly 0 near lo and exactly delta_out near hi, so noise of up to a quarter gap in x (from float
    rounding in earlier layers, amplified by attention) never reaches the output."""
    if hi - lo <= MIN_RELATIVE_GAP * max(1, abs(lo), abs(hi)):
        raise UnsupportedError(
            f"'{x_dir}' takes values {float(lo)!r} and {float(hi)!r}, which a float32 transformer cannot tell "
            f"apart, but '{mlp.label}' maps them differently"
        )
    t0, t1 = lo + (hi - lo) / 4, hi - (hi - lo) / 4
    slope = 1 / (t1 - t0)
    mlp.neuron(f"{tag}>", {x_dir: float(slope)}, float(-t0 * slope), dict(delta_out))
    mlp.neuron(f"{tag}<", {x_dir: float(slope)}, float(-t1 * slope), {k: -v for k, v in delta_out.items()})


def discretising_mlp(
    mlp: MlpBuilder, x_dir: str, xs: Sequence[float], outputs: Sequence[dict[str, float]]
) -> None:
    """An MLP equal to outputs[i] at x = xs[i] (xs ascending): base + a ramp wherever the output changes."""
    mlp.add_output_bias(outputs[0])
    for i in range(len(xs) - 1):
        before, after = outputs[i], outputs[i + 1]
        if before == after:
            continue
        delta = {d: after.get(d, 0.0) - before.get(d, 0.0) for d in set(before) | set(after)}
        delta = {d: v for d, v in sorted(delta.items()) if v != 0.0}
        if delta:
            _step_neurons(mlp, x_dir, simple_fraction(float(xs[i])), simple_fraction(float(xs[i + 1])), delta, f"{i}")


# --------------------------------------------------------------------------- the lowering


class CraftLowering:
    """What the rewrite patterns share: the `one`/`bos` spaces, each space's content at BOS, the
    rasp type (value set) of every value already rewritten, and the ops built for the current op."""

    def __init__(self, module: ModuleOp, leak: float):
        self.max_seq_len = module.attributes["raspc.max_seq_len"].value.data  # type: ignore[union-attr]
        self.scale = head_scale(self.max_seq_len, leak)
        self.rasp_types: dict[SSAValue, R.SOpType] = {}
        self.bos_content: dict[SSAValue, dict[str, float]] = {}
        self.pending: list[Operation] = []
        one = C.EmbedOp("one", C.NumericalSpaceType("one"))
        bos = C.EmbedOp("bos", C.NumericalSpaceType("bos"))
        one.res.name_hint, bos.res.name_hint = "one", "bos"
        self.embeddings = [one, bos]
        self.one, self.bos = one.res, bos.res
        self.bos_content[self.one] = {"one": 1.0}
        self.bos_content[self.bos] = {"bos": 1.0}

    # -- helpers ---------------------------------------------------------
    def fail(self, op: R.RaspOp, message: str) -> UnsupportedError:
        return UnsupportedError(message, label=op.label_str, source=op.src_str)

    def sop_type(self, value: SSAValue) -> R.SOpType:
        """The rasp type of a value, also after its producer was rewritten to craft."""
        return self.rasp_types[value] if value in self.rasp_types else R.sop_type(value)

    def emit(self, op: Operation, rasp_result: SSAValue | None = None, bos: dict[str, float] | None = None) -> SSAValue:
        self.pending.append(op)
        res = op.results[0]
        if rasp_result is not None:
            res.name_hint = rasp_result.name_hint
            self.rasp_types[res] = R.sop_type(rasp_result)
        self.bos_content[res] = bos or {}
        return res

    def bos_of(self, spaces: Sequence[SSAValue]) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in spaces:
            out.update(self.bos_content.get(s, {}))
        return out

    def mlp(self, builder: MlpBuilder, inputs: list[SSAValue], out_t: Attribute, rasp_result: SSAValue) -> SSAValue:
        hidden, w_in, b_in, w_out, gated = builder.finish({**self.bos_of(inputs), "one": 1.0})
        if gated:
            inputs = [*inputs, *[s for s in (self.one, self.bos) if s not in inputs]]
        used = {d for d, _ in w_in}
        inputs = [s for s in inputs if used & set(C.space_labels(s))]
        op = C.MlpOp(inputs, out_t, builder.label, hidden, w_in, b_in, w_out)
        return self.emit(op, rasp_result)

    @staticmethod
    def dirs(value: SSAValue) -> list[str]:
        return C.space_labels(value)

    # -- constructions (each returns the craft value replacing the rasp result) --
    def positional(self, op: R.FullOp | R.ConstantOp, values: list[Any]) -> SSAValue:
        t = R.sop_type(op.res)
        if not t.is_categorical:
            values = [0 if v is None else v for v in values]
        return self.emit(C.PositionalOp(op.label_str, values, craft_type(op.label_str, t)), op.res)

    def lower_map(self, op: R.MapOp) -> SSAValue:
        return self.lookup_mlp(op, op.inp, self.sop_type(op.inp), table_values(op.table))

    def lookup_mlp(self, op: R.RaspOp, inp: SSAValue, in_t: R.SOpType, table: Sequence[int]) -> SSAValue:
        """The MLP of an elementwise function given as a table over the input's values."""
        out_t = R.sop_type(op.results[0])
        x = inp
        out_space = craft_type(op.label_str, out_t)
        out_dirs = out_space.labels
        in_vals, out_vals = in_t.value_set or (), out_t.value_set or ()
        mlp = MlpBuilder(op.label_str)
        if in_t.is_categorical:
            in_dirs = self.dirs(x)
            if out_t.is_categorical:
                for c, out_dir in enumerate(out_dirs):
                    sources = {in_dirs[i]: 1.0 for i, e in enumerate(table) if e == c}
                    if sources:
                        mlp.neuron(out_dir, sources, 0.0, {out_dir: 1.0})
            else:
                pos = {in_dirs[i]: float(out_vals[e]) for i, e in enumerate(table) if out_vals[e] > 0}
                neg = {in_dirs[i]: -float(out_vals[e]) for i, e in enumerate(table) if out_vals[e] < 0}
                if pos:
                    mlp.neuron("+", pos, 0.0, {out_dirs[0]: 1.0})
                if neg:
                    mlp.neuron("-", neg, 0.0, {out_dirs[0]: -1.0})
        else:
            if not in_vals:
                raise self.fail(op, "numerical input has no finite value set to discretise")
            x_dir = self.dirs(x)[0]
            if out_t.is_categorical:
                outputs = [{} if e < 0 else {out_dirs[e]: 1.0} for e in table]
            else:
                outputs = [{out_dirs[0]: float(out_vals[e])} for e in table]
            discretising_mlp(mlp, x_dir, [float(v) for v in in_vals], outputs)
        return self.mlp(mlp, [x], out_space, op.results[0])

    def lower_sequence_map(self, op: R.SequenceMapOp) -> SSAValue:
        a_t, b_t, out_t = self.sop_type(op.fst), self.sop_type(op.snd), R.sop_type(op.res)
        if not (a_t.is_categorical and b_t.is_categorical):
            raise self.fail(op, "sequence_map operands must be categorical (run discretise-numerical-operands)")
        if op.fst == op.snd:  # f(x, x): a lookup on the diagonal
            n = len(a_t.value_set or ())
            return self.lookup_mlp(op, op.fst, a_t, [table_values(op.table)[i * n + i] for i in range(n)])
        x, y = op.fst, op.snd
        a_dirs, b_dirs = self.dirs(x), self.dirs(y)
        out_space = craft_type(op.label_str, out_t)
        out_dirs = out_space.labels
        out_vals = out_t.value_set or ()
        table = table_values(op.table)
        na, nb = len(a_dirs), len(b_dirs)

        def output_of(e: int) -> tuple[str, float] | None:
            if e < 0:
                return None
            if out_t.is_categorical:
                return (out_dirs[e], 1.0)
            v = float(out_vals[e])
            return None if v == 0.0 else (out_dirs[0], v)

        # Group by (row value, output) or (column value, output), whichever needs fewer neurons.
        by_row: dict[tuple[int, tuple[str, float]], list[int]] = {}
        by_col: dict[tuple[int, tuple[str, float]], list[int]] = {}
        for i in range(na):
            for j in range(nb):
                out = output_of(table[i * nb + j])
                if out is not None:
                    by_row.setdefault((i, out), []).append(j)
                    by_col.setdefault((j, out), []).append(i)
        mlp = MlpBuilder(op.label_str)
        def tag(src: str, d: str, v: float) -> str:
            return f"{src}->{d}" if out_t.is_categorical else f"{src}->{v!r}"

        if len(by_row) <= len(by_col):
            for (i, (d, v)), js in by_row.items():
                mlp.neuron(tag(a_dirs[i], d, v), {a_dirs[i]: 1.0, **{b_dirs[j]: 1.0 for j in js}}, -1.0, {d: v})
        else:
            for (j, (d, v)), is_ in by_col.items():
                mlp.neuron(tag(b_dirs[j], d, v), {b_dirs[j]: 1.0, **{a_dirs[i]: 1.0 for i in is_}}, -1.0, {d: v})
        return self.mlp(mlp, [x, y], out_space, op.res)

    def lower_linear_sequence_map(self, op: R.LinearSequenceMapOp) -> SSAValue:
        x, y = op.fst, op.snd
        out_space = craft_type(op.label_str, R.sop_type(op.res))
        out_dir = out_space.labels[0]
        factors: dict[str, float] = {}
        signs: dict[str, tuple[bool, bool]] = {}
        for value, fac in ((op.fst, op.fst_fac.value.data), (op.snd, op.snd_fac.value.data)):
            d = self.dirs(value)[0]
            factors[d] = factors.get(d, 0.0) + fac
            vals = self.sop_type(value).value_set
            signs[d] = (vals is None or any(v > 0 for v in vals), vals is None or any(v < 0 for v in vals))
        mlp = MlpBuilder(op.label_str)
        for d, fac in factors.items():
            can_pos, can_neg = signs[d]
            if can_pos:
                mlp.neuron(f"+{d}", {d: 1.0}, 0.0, {out_dir: fac})
            if can_neg:
                mlp.neuron(f"-{d}", {d: -1.0}, 0.0, {out_dir: -fac})
        return self.mlp(mlp, [x] if x is y else [x, y], out_space, op.res)

    # -- attention -------------------------------------------------------
    def selector_scores(
        self, user: R.RaspOp, selector: SSAValue
    ) -> tuple[Weights, list[SSAValue], list[SSAValue], int]:
        """w_qk in units of 'one true predicate', the query/key spaces it reads, and the number of
        conjuncts (a full match scores that many units)."""
        if not is_conjunction(selector):
            raise self.fail(user, "selector is not a conjunction of selects (run product-selectors first)")
        w_qk: Weights = {}
        queries: list[SSAValue] = []
        keys: list[SSAValue] = []
        leaves = selector_leaves(selector)
        for leaf in leaves:
            q, k = leaf.queries, leaf.keys
            q_dirs, k_dirs = self.dirs(q), self.dirs(k)
            t = table_values(leaf.table)
            nk = len(k_dirs)
            for qi, qd in enumerate(q_dirs):
                for ki, kd in enumerate(k_dirs):
                    if t[qi * nk + ki]:
                        w_qk[(qd, kd)] = w_qk.get((qd, kd), 0.0) + 1.0
            queries += [q] if q not in queries else []
            keys += [k] if k not in keys else []
        return w_qk, queries, keys, len(leaves)

    def attention(
        self, user: R.RaspOp, selector: SSAValue, bos_below_match: float, values: list[SSAValue],
        w_ov: Weights, bos_value: dict[str, float], out_t: Attribute, label: str, rasp_result: SSAValue | None,
    ) -> SSAValue:
        """A head for `selector`; BOS scores `bos_below_match` units below a full match."""
        w_qk, queries, keys, n_conjuncts = self.selector_scores(user, selector)
        bos_level = n_conjuncts - bos_below_match
        # Keys at BOS may hold a head's default: cancel what they add to the BOS score.
        key_bos = self.bos_of(keys)
        if key_bos:
            extra: dict[str, float] = {}
            for (qd, kd), w in w_qk.items():
                if kd in key_bos:
                    extra[qd] = extra.get(qd, 0.0) + w * key_bos[kd]
            for qd, e in sorted(extra.items()):
                if e:
                    w_qk[(qd, "bos")] = w_qk.get((qd, "bos"), 0.0) - e
        w_qk[("one", "bos")] = w_qk.get(("one", "bos"), 0.0) + bos_level
        # The BOS value must be exactly `bos_value`: cancel what the value spaces hold at BOS.
        val_bos = self.bos_of(values)
        w_ov = dict(w_ov)
        out_at_bos: dict[str, float] = {}
        for (vd, od), w in w_ov.items():
            out_at_bos[od] = out_at_bos.get(od, 0.0) + w * val_bos.get(vd, 0.0)
        for od in set(out_at_bos) | set(bos_value):
            fix = bos_value.get(od, 0.0) - out_at_bos.get(od, 0.0)
            if fix:
                w_ov[("bos", od)] = w_ov.get(("bos", od), 0.0) + fix
        qs = queries + ([self.one] if self.one not in queries else [])
        ks = keys + ([self.bos] if self.bos not in keys else [])
        vs = list(values)
        if any(vd == "bos" for vd, _ in w_ov) and self.bos not in vs:
            vs.append(self.bos)
        head = C.AttentionHeadOp(qs, ks, vs, out_t, label, w_qk, w_ov, self.scale)
        return self.emit(head, rasp_result, {k: v for k, v in bos_value.items() if v})

    def lower_aggregate(self, op: R.AggregateOp) -> SSAValue:
        res_t = R.sop_type(op.res)
        src = op.sop
        out_space = craft_type(op.label_str, res_t)
        out_dirs = out_space.labels
        default = op.default.data
        if res_t.is_categorical:
            res_index = {v: i for i, v in enumerate(res_t.value_set or ())}
            src_vals = self.sop_type(op.sop).value_set or ()
            src_dirs = self.dirs(src)
            w_ov = {(src_dirs[i], out_dirs[res_index[v]]): 1.0 for i, v in enumerate(src_vals)}
            bos_value = {} if default is None else {out_dirs[res_index[default]]: 1.0}
        else:
            w_ov = {(self.dirs(src)[0], out_dirs[0]): 1.0}
            bos_value = {out_dirs[0]: float(default)} if default else {}
        return self.attention(op, op.selector, 0.5, [src], w_ov, bos_value, out_space, op.label_str, op.res)

    def lower_selector_width(self, op: R.SelectorWidthOp) -> SSAValue:
        res_t = R.sop_type(op.res)
        widths = [int(w) for w in (res_t.value_set or range(self.max_seq_len + 1))]
        share_label = f"{op.label_str}.bos_share"
        share_t = C.NumericalSpaceType(share_label)
        share = self.attention(op, op.selector, 0.0, [self.bos], {("bos", share_label): 1.0},
                               {share_label: 1.0}, share_t, op.label_str + ".attn", None)
        share.name_hint = (op.res.name_hint or "width") + "_share"
        out_space = craft_type(op.label_str, res_t)
        out_dirs = out_space.labels
        # BOS gets 1/(w+1) of the attention; ascending shares are descending widths.
        points = sorted(((1.0 / (w + 1), w) for w in widths))
        if res_t.is_categorical:
            index = {v: i for i, v in enumerate(res_t.value_set or ())}
            outputs = [{out_dirs[index[w]]: 1.0} for _, w in points]
        else:
            outputs = [{out_dirs[0]: float(w)} for _, w in points]
        mlp = MlpBuilder(op.label_str)
        discretising_mlp(mlp, share_label, [p for p, _ in points], outputs)
        return self.mlp(mlp, [share], out_space, op.res)


# --------------------------------------------------------------------------- rewrite patterns


@dataclass
class _CraftPattern(RewritePattern):
    """Replaces one rasp op by the craft ops a construction of `CraftLowering` builds."""

    lowering: CraftLowering

    def replace(self, op: Operation, rewriter: PatternRewriter, result: SSAValue | None) -> None:
        ops, self.lowering.pending = self.lowering.pending, []
        rewriter.replace(op, ops, [result] if op.results else [])


class TokensIndicesToEmbedding(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.TokensOp | R.IndicesOp, rewriter: PatternRewriter) -> None:
        source, name = ("tokens", "tokens") if isinstance(op, R.TokensOp) else ("indices", op.label_str)
        res = self.lowering.emit(C.EmbedOp(source, craft_type(name, R.sop_type(op.res))), op.res)
        self.replace(op, rewriter, res)


class ConstantsToPositional(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.FullOp | R.ConstantOp, rewriter: PatternRewriter) -> None:
        n = self.lowering.max_seq_len
        values = [op.fill.data] * n if isinstance(op, R.FullOp) else [*op.value.data, *[None] * n][:n]
        self.replace(op, rewriter, self.lowering.positional(op, values))


class MapToLookupMlp(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.MapOp, rewriter: PatternRewriter) -> None:
        self.replace(op, rewriter, self.lowering.lower_map(op))


class SequenceMapToMlp(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        self.replace(op, rewriter, self.lowering.lower_sequence_map(op))


class LinearSequenceMapToMlp(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.LinearSequenceMapOp, rewriter: PatternRewriter) -> None:
        self.replace(op, rewriter, self.lowering.lower_linear_sequence_map(op))


class SelectAggregateToAttentionHead(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.AggregateOp, rewriter: PatternRewriter) -> None:
        self.replace(op, rewriter, self.lowering.lower_aggregate(op))


class SelectorWidthToAttentionAndMlp(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorWidthOp, rewriter: PatternRewriter) -> None:
        self.replace(op, rewriter, self.lowering.lower_selector_width(op))


class OutputToCraftOutput(_CraftPattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.OutputOp, rewriter: PatternRewriter) -> None:
        rewriter.replace(op, [C.OutputOp(op.inp)], [])


@dataclass(frozen=True)
class LowerRaspToCraftPass(ModulePass):
    """Lowers every rasp op to craft blocks with exact, labelled weights (constructions: module docstring)."""

    name = "lower-rasp-to-craft"
    leak: float = 1e-9

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        output_values = _output_values(list(op.ops))
        lowering = CraftLowering(op, self.leak)
        block = op.body.block
        if block.first_op is not None:
            block.insert_ops_before(lowering.embeddings, block.first_op)
        patterns: list[RewritePattern] = [
            cls(lowering)
            for cls in (
                TokensIndicesToEmbedding, ConstantsToPositional, MapToLookupMlp, SequenceMapToMlp,
                LinearSequenceMapToMlp, SelectAggregateToAttentionHead, SelectorWidthToAttentionAndMlp,
                OutputToCraftOutput,
            )
        ]
        # One forward walk: producers are rewritten before their users read them. No DCE during
        # the walk: `one` and `bos` have no users until the blocks that read them are built.
        PatternRewriteWalker(
            GreedyRewritePatternApplier(patterns, dce_enabled=False), apply_recursively=False
        ).rewrite_module(op)
        # Selects were read by the heads that replaced their users; now they are dead.
        for dead in reversed([o for o in op.ops if o.name.startswith("rasp.")]):
            if any(r.uses for r in dead.results):
                raise UnsupportedError(f"lower-rasp-to-craft does not handle {dead.name}")
            dead.detach()
            dead.erase()
        op.attributes["raspc.output_values"] = output_values


def _output_values(old_ops: list[Operation]) -> Attribute:
    out = next(o for o in old_ops if isinstance(o, R.OutputOp))
    t = R.sop_type(out.inp)
    return R.ValuesAttr(t.value_set or ())
