"""lower-rasp-to-craft: every rasp op becomes residual blocks with exact, labelled weights.

One rewrite pattern per rasp op, in MLIR's partial-conversion style: a pattern fires once its
operands are lowered, builds the craft ops with a construction from `raspc.constructions`
(pure functions, tested alone), and leaves a `builtin.unrealized_conversion_cast` from the new
craft space back to the rasp type for the rasp ops that still read it. Patterns read everything
from the op, its operands' types and the craft ops they were lowered to (what a space holds at
BOS is part of the craft IR), so they can fire in any order; the walker repeats until every op
is lowered, the selects (absorbed into the heads that read them) are dead, and the casts are
removed. Finally the `rasp.program` becomes a `craft.model` around the same block.

| rasp op | craft |
|---|---|
| tokens, indices | `craft.embed` |
| full, constant | `craft.positional` |
| map | lookup MLP (categorical input), discretising MLP (numerical input; two MLPs through a one-hot over the runs of equal outputs when one MLP cannot be exact) |
| sequence_map, linear_sequence_map, tuple | sequence-map MLP, linear MLP, tuple MLP |
| aggregate of a conjunction of selects | one attention head (+ a width head and an MLP where the mean's type depends on the width) |
| selector_width | attention head (BOS's share) + discretising MLP |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnrealizedConversionCastOp
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from raspc import progress
from raspc.analysis.selectors import is_conjunction, operand_matrix, selector_leaves, width_bounds
from raspc.analysis.value_sets import MAX_DIRECTIONS
from raspc.constructions import attention as A
from raspc.constructions import mlp as M
from raspc.constructions.sparse import Sparse
from raspc.dialects import craft as C
from raspc.dialects import rasp as R
from raspc.dialects.common import container_of
from raspc.errors import IRError, UnsupportedError
from raspc.utils.values import ValueIndex, Value, evaluator_mean, format_value, identity, is_number


def craft_type(label: str, t: R.SOpType) -> Attribute:
    """The space of an s-op: one direction per non-None value, or one number."""
    if t.is_categorical:
        return C.CategoricalSpaceType(label, t.non_none_values)
    return C.NumericalSpaceType(label)


def lowered(value: SSAValue) -> SSAValue | None:
    """The craft space a rasp value was lowered to (None while its producer is still rasp)."""
    op = value.owner
    if isinstance(op, UnrealizedConversionCastOp) and isinstance(
        op.inputs[0].type, (C.CategoricalSpaceType, C.NumericalSpaceType)
    ):
        return op.inputs[0]
    return None


def _fail(op: R.RaspOp, message: str) -> UnsupportedError:
    return UnsupportedError(message, label=op.label_str, source=op.src_str)


def _program(op: Operation) -> R.ProgramOp:
    parent = op.parent_op()
    assert isinstance(parent, R.ProgramOp), parent
    return parent


def embedding(block: Block, source: str) -> SSAValue:
    """The block's `one` or `bos` space (created at the start of the block, `one` first, when missing)."""
    for o in block.ops:
        if isinstance(o, C.EmbedOp) and o.source.data == source:
            return o.res
    op = C.EmbedOp(source, C.NumericalSpaceType(source))
    op.res.name_hint = source
    first = block.first_op
    if source == "bos" and isinstance(first, C.EmbedOp) and first.source.data == "one":
        first = first.next_op
    if first is None:
        block.add_op(op)
    else:
        block.insert_op_before(op, first)
    return op.res


def _bos_of(spaces: Sequence[SSAValue]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in spaces:
        out.update(C.bos_content(s))
    return out


@dataclass
class _Lowering(RewritePattern):
    """Shared by the patterns: the leak bound of the heads, and how a lowered op is replaced."""

    leak: float

    def replace(self, rewriter: PatternRewriter, op: R.SOpOp, new_ops: Sequence[Operation], result: SSAValue) -> None:
        progress.note(f"lower-rasp-to-craft: built '{op.label_str}'")  # long compiles say where they are
        result.name_hint = op.res.name_hint
        cast = UnrealizedConversionCastOp(operands=(result,), result_types=(op.res.type,))
        cast.results[0].name_hint = op.res.name_hint
        rewriter.replace(op, [*new_ops, cast], [cast.results[0]])

    def mlp_op(self, block: M.MlpBlock, inputs: Sequence[SSAValue], out_t: Attribute, anchor: Operation) -> C.MlpOp:
        """The craft.mlp of a block, reading the inputs it uses (plus `one` and `bos` for its gates)."""
        used = block.inputs
        body = anchor.parent_block()
        assert body is not None
        spaces = [*inputs, *[embedding(body, s) for s in ("one", "bos") if s in used]]
        spaces = [s for i, s in enumerate(spaces) if s not in spaces[:i] and used & set(C.space_labels(s))]
        return C.MlpOp(spaces, out_t, block.label, block.hidden, block.w_in, block.b_in, block.w_out)


# --------------------------------------------------------------------------- embeddings and constants


class TokensIndicesToEmbedding(_Lowering):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.TokensOp | R.IndicesOp, rewriter: PatternRewriter) -> None:
        source, name = ("tokens", "tokens") if isinstance(op, R.TokensOp) else ("indices", op.label_str)
        embed = C.EmbedOp(source, craft_type(name, op.result_type))
        self.replace(rewriter, op, [embed], embed.res)


class ConstantsToPositional(_Lowering):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.FullOp | R.ConstantOp, rewriter: PatternRewriter) -> None:
        n = _program(op).spec.max_seq_len
        values = [op.fill.data] * n if isinstance(op, R.FullOp) else [*op.value.data, *[None] * n][:n]
        t = op.result_type
        if not t.is_categorical:
            values = [0 if v is None else v for v in values]
        pos = C.PositionalOp(op.label_str, values, craft_type(op.label_str, t))
        self.replace(rewriter, op, [pos], pos.res)


# --------------------------------------------------------------------------- elementwise ops


_MISSING = object()  # a table entry outside the program's domain


def _numerical_points(op: R.RaspOp, xs: Sequence[Value], outputs: Sequence[Any]) -> tuple[list[float], list[Any]]:
    """Ascending distinct numbers with their outputs. Numerically equal inputs of different types
    (0 and 0.0) are one number in the model, so they must map alike. A missing output (outside the
    domain) takes its neighbour's, which needs no extra unit."""
    points: dict[float, Any] = {}
    for x, out in sorted(zip(xs, outputs), key=lambda p: float(p[0])):
        key = float(x)
        seen = points.get(key, _MISSING)
        if seen is not _MISSING and out is not _MISSING and seen != out:
            raise _fail(op, f"its input can be {format_value(x)} and another value equal to it as a number, which "
                            "one number in the model cannot tell apart, but the function maps them differently")
        if seen is _MISSING:
            points[key] = out
    keys = sorted(points)
    outs = [points[k] for k in keys]
    last = next((o for o in outs if o is not _MISSING), {})
    filled = []
    for o in outs:
        last = last if o is _MISSING else o
        filled.append(last)
    return keys, filled


def _categorical_lookup(op: R.RaspOp, in_dirs: Sequence[str], results: Sequence[tuple[bool, Value]],
                        out_t: R.SOpType, out_dirs: Sequence[str], bos: Mapping[str, float]) -> M.MlpBlock:
    """The MLP of a function of one categorical input, given (found, f(v)) per input direction
    (a missing entry is outside the domain: no output)."""
    if out_t.is_categorical:
        out_index = ValueIndex(out_t.non_none_values)
        table = [out_index.get(out) if found and out is not None else None for found, out in results]
        return M.lookup_mlp(op.label_str, in_dirs, out_dirs, table, bos)
    outputs = [float(out) if found else 0.0 for found, out in results]
    return M.categorical_to_numerical_mlp(op.label_str, in_dirs, out_dirs[0], outputs, bos)


class MapToMlp(_Lowering):
    """map -> lookup MLP (categorical input) or discretising MLP (numerical input)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.MapOp, rewriter: PatternRewriter) -> None:
        x = lowered(op.inp)
        if x is None:
            return
        in_t, out_t = R.sop_type(op.inp), op.result_type
        out_space = craft_type(op.label_str, out_t)
        out_dirs = out_space.labels
        out_index = ValueIndex(out_t.non_none_values)
        bos = _bos_of([x])
        if in_t.is_categorical:
            results = [op.fn.get(v) for v in in_t.non_none_values]
            block = _categorical_lookup(op, C.space_labels(x), results, out_t, out_dirs, bos)
        else:
            if in_t.value_set is None:
                raise _fail(op, "its numerical input has no finite value set to discretise")
            xs = in_t.non_none_values
            outputs: list[Any] = []
            for v in xs:
                found, out = op.fn.get(v)
                if not found:
                    outputs.append(_MISSING)
                elif out_t.is_categorical:
                    outputs.append({} if out is None else {out_dirs[out_index[out]]: 1.0})
                else:
                    outputs.append({out_dirs[0]: float(out)})
            points, outs = _numerical_points(op, xs, outputs)
            x_dir = C.space_labels(x)[0]
            # a value written by the embedding is exact; one computed (a mean, an MLP) is noisy
            # relative to the largest value it is computed from
            exact = isinstance(x.owner, (C.EmbedOp, C.PositionalOp))
            noise = M.exact_value_noise if exact else M.noise_of(points)
            ys = None if out_t.is_categorical else [o[out_dirs[0]] if o else 0.0 for o in outs]
            fit = None if ys is None else M.affine_fit(points, ys)
            if fit is not None:  # a * x + b on the whole value set: linear, exact, however close the values
                signs = {x_dir: (any(p > 0 for p in points), any(p < 0 for p in points))}
                block = M.linear_mlp(op.label_str, {x_dir: fit[0]}, signs, out_dirs[0], bos, bias=fit[1])
            elif ((ys is not None and M.plan_discretisation(points, outs).cancelling_error > M.OUTPUT_PRECISION)
                  or (ys is None and M.changes_more_than_twice(outs))):
                # outputs too large next to small ones for ramps that cancel, or a categorical output
                # that comes back (0 1 0 1, no exact single MLP): first one-hot over the runs of
                # equal outputs, then a lookup (one more MLP, exact)
                self.replace(rewriter, op, *self._via_one_hot(op, x, x_dir, points, outs, noise, out_space, bos))
                return
            else:
                block = M.discretising_mlp(op.label_str, x_dir, points, outs, bos, noise=noise)
        mlp = self.mlp_op(block, [x], out_space, op)
        self.replace(rewriter, op, [mlp], mlp.res)


    def _via_one_hot(self, op: R.MapOp, x: SSAValue, x_dir: str, points: list[float], outs: list[Mapping[str, float]],
                     noise: Any, out_space: Attribute, bos: Mapping[str, float]) -> tuple[list[Operation], SSAValue]:
        runs = M.output_runs(outs)
        interval = C.CategoricalSpaceType(f"{op.label_str}.interval", list(range(runs[-1] + 1)))
        one_hot = M.discretising_mlp(interval.space.data, x_dir, points, [{interval.labels[r]: 1.0} for r in runs], bos,
                                     noise=noise)
        first = self.mlp_op(one_hot, [x], interval, op)
        first.res.name_hint = f"{op.res.name_hint or 'map'}_interval"
        at_run = dict(zip(runs, outs))
        if op.result_type.is_categorical:  # one-hot outputs: each run's direction, or None
            position = {d: i for i, d in enumerate(out_space.labels)}
            table = [next((position[d] for d in at_run[r]), None) for r in sorted(at_run)]
            lookup = M.lookup_mlp(op.label_str, interval.labels, out_space.labels, table, {})
        else:
            out_dir = out_space.labels[0]
            ys = [at_run[r].get(out_dir, 0.0) for r in sorted(at_run)]
            lookup = M.categorical_to_numerical_mlp(op.label_str, interval.labels, out_dir, ys, {})
        second = self.mlp_op(lookup, [first.res], out_space, op)
        return [first, second], second.res


class SequenceMapToMlp(_Lowering):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SequenceMapOp, rewriter: PatternRewriter) -> None:
        x, y = lowered(op.fst), lowered(op.snd)
        if x is None or y is None:
            return
        a_t, b_t, out_t = R.sop_type(op.fst), R.sop_type(op.snd), op.result_type
        if not (a_t.is_categorical and b_t.is_categorical):
            raise _fail(op, "sequence_map operands must be categorical (run discretise-numerical-operands)")
        out_space = craft_type(op.label_str, out_t)
        out_dirs = out_space.labels
        out_index = ValueIndex(out_t.non_none_values)
        bos = _bos_of([x, y])
        a_vals, b_vals = a_t.non_none_values, b_t.non_none_values
        if op.fst == op.snd:  # f(x, x): a lookup on the diagonal
            results = [op.fn.get(v, v) for v in a_vals]
            block = _categorical_lookup(op, C.space_labels(x), results, out_t, out_dirs, bos)
            mlp = self.mlp_op(block, [x], out_space, op)
            self.replace(rewriter, op, [mlp], mlp.res)
            return

        def output(found: bool, out: Value) -> tuple[str, float] | None:
            if not found or out is None:
                return None
            if out_t.is_categorical:
                return (out_dirs[out_index[out]], 1.0)
            return None if float(out) == 0.0 else (out_dirs[0], float(out))

        table = [[op.fn.get(a, b) for b in b_vals] for a in a_vals]
        outputs = [[output(*entry) for entry in row] for row in table]
        block = self._additive(op, x, y, table, outputs, bos)
        if block is None:
            block = M.sequence_map_mlp(op.label_str, C.space_labels(x), C.space_labels(y), outputs,
                                       out_t.is_categorical, bos)
        mlp = self.mlp_op(block, [x, y], out_space, op)
        self.replace(rewriter, op, [mlp], mlp.res)

    @staticmethod
    def _additive(op: R.SequenceMapOp, x: SSAValue, y: SSAValue, table: list[list[tuple[bool, Value]]],
                  outputs: list[list[tuple[str, float] | None]], bos: dict[str, float]) -> M.MlpBlock | None:
        """f(a, b) = g(u(a) + v(b)) (x + y - 1, length - index...) as one discretisation of the
        sum, when that takes far fewer units than one per pair (|a| x |b| at scale), and neither
        operand can be None (a None operand has no direction, so the sum would be wrong)."""
        if R.sop_type(op.fst).may_be_none or R.sop_type(op.snd).may_be_none:
            return None
        if any(not found or out is None or not is_number(out) for row in table for found, out in row):
            return None
        form = M.additive_form([[out for _, out in row] for row in table])
        if form is None:
            return None
        u, v = form
        n_sums = len({ui + vj for ui in u for vj in v})
        if 4 * n_sums > len(u) * len(v):  # the pairwise units are about as few: keep them
            return None
        written = [[{} if o is None else {o[0]: o[1]} for o in row] for row in outputs]
        try:
            return M.additive_sequence_map_mlp(op.label_str, C.space_labels(x), u, C.space_labels(y), v, written, bos)
        except UnsupportedError:  # sums float32 cannot separate: the pairwise units are exact
            return None


class LinearSequenceMapToMlp(_Lowering):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.LinearSequenceMapOp, rewriter: PatternRewriter) -> None:
        x, y = lowered(op.fst), lowered(op.snd)
        if x is None or y is None:
            return
        out_space = craft_type(op.label_str, op.result_type)
        factors: dict[str, float] = {}
        signs: dict[str, tuple[bool, bool]] = {}
        for value, space, fac in ((op.fst, x, op.factors[0]), (op.snd, y, op.factors[1])):
            d = C.space_labels(space)[0]
            factors[d] = factors.get(d, 0.0) + float(fac)
            vals = R.sop_type(value).value_set
            signs[d] = (vals is None or any(v > 0 for v in vals), vals is None or any(v < 0 for v in vals))
        block = M.linear_mlp(op.label_str, factors, signs, out_space.labels[0], _bos_of([x, y]))
        mlp = self.mlp_op(block, [x] if x == y else [x, y], out_space, op)
        self.replace(rewriter, op, [mlp], mlp.res)


class TupleToMlp(_Lowering):
    """tuple -> one unit per tuple value (a None part through the affine indicator `one - sum`)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.TupleOp, rewriter: PatternRewriter) -> None:
        spaces = [lowered(p) for p in op.parts]
        if any(s is None for s in spaces):
            return
        part_types = [R.sop_type(p) for p in op.parts]
        indexes = [ValueIndex(t.non_none_values) for t in part_types]
        out_t = op.result_type
        tuples = [tuple(None if v is None else idx[v] for v, idx in zip(t, indexes)) for t in out_t.non_none_values]
        out_space = craft_type(op.label_str, out_t)
        parts = [(C.space_labels(s), t.may_be_none) for s, t in zip(spaces, part_types)]
        block = M.tuple_mlp(op.label_str, parts, tuples, out_space.labels, _bos_of(spaces))
        mlp = self.mlp_op(block, spaces, out_space, op)
        self.replace(rewriter, op, [mlp], mlp.res)


# --------------------------------------------------------------------------- attention


@dataclass
class _Selection:
    """A conjunction of selects, lowered: its scores and the spaces they read."""

    scores: Sparse
    n_conjuncts: int
    queries: list[SSAValue]
    keys: list[SSAValue]


def _selection(user: R.RaspOp, selector: SSAValue) -> _Selection | None:
    """The selector's leaves as head scores (None while a leaf operand is not lowered yet)."""
    if not is_conjunction(selector):
        raise _fail(user, "selector is not a conjunction of selects (run product-selectors first)")
    leaves = selector_leaves(selector)
    queries: list[SSAValue] = []
    keys: list[SSAValue] = []
    parts: list[A.Leaf] = []
    for leaf in leaves:
        q, k = lowered(leaf.queries), lowered(leaf.keys)
        if q is None or k is None:
            return None
        q_t, k_t = R.sop_type(leaf.queries), R.sop_type(leaf.keys)
        if not (q_t.is_categorical and k_t.is_categorical):
            raise _fail(user, "select operands must be categorical (run discretise-numerical-operands)")
        table = operand_matrix(leaf)
        parts.append(A.Leaf(C.space_labels(q), C.space_labels(k), table, q_t.may_be_none, k_t.may_be_none))
        queries += [q] if q not in queries else []
        keys += [k] if k not in keys else []
    return _Selection(A.conjunction_scores(parts), len(leaves), queries, keys)


def _head_op(head: A.HeadBlock, sel: _Selection, values: Sequence[SSAValue], out_t: Attribute,
             anchor: Operation) -> C.AttentionHeadOp:
    body = anchor.parent_block()
    assert body is not None
    one, bos = embedding(body, "one"), embedding(body, "bos")
    queries = sel.queries + ([one] if one not in sel.queries else [])
    keys = sel.keys + [s for s in (bos, one) if s not in sel.keys and set(C.space_labels(s)) & head.key_dirs]
    values = list(values)
    if "bos" in head.value_dirs and bos not in values:
        values.append(bos)
    return C.AttentionHeadOp(queries, keys, values, out_t, head.label, _weights(head.w_qk), _weights(head.w_ov),
                             head.scale, head.bos_value)


def _weights(m: Sparse) -> C.SparseMatrixAttr:
    return C.SparseMatrixAttr.from_arrays(m.rows, m.cols, m.r, m.c, m.v)


def _share_head(op: R.RaspOp, sel: _Selection, label: str, scale: float) -> C.AttentionHeadOp:
    """A head in which BOS scores level with a match: it writes BOS's share of attention, 1/(w+1)."""
    share = f"{label}.bos_share"
    key_bos = _bos_of(sel.keys)
    head = A.selection_head(f"{label}.attn", sel.scores, sel.n_conjuncts, 0.0, {**key_bos, "one": 1.0},
                            {("bos", share): 1.0}, {"bos": 1.0}, {share: 1.0}, scale)
    return _head_op(head, sel, [], C.NumericalSpaceType(share), op)


class SelectAggregateToAttentionHead(_Lowering):
    """aggregate(conjunction of selects, s) -> one head (plus a width head and an MLP when a mean of
    equal numbers changes type with the width)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.AggregateOp, rewriter: PatternRewriter) -> None:
        src = lowered(op.sop)
        sel = _selection(op, op.selector)
        if src is None or sel is None:
            return
        spec = _program(op).spec
        res_t, src_t = op.result_type, R.sop_type(op.sop)
        out_space = craft_type(op.label_str, res_t)
        default = op.default.data
        never_empty = width_bounds(op.selector, spec.max_seq_len)[0] >= 1
        key_bos = {**_bos_of(sel.keys), "one": 1.0}
        if not res_t.is_categorical:
            if default is None or never_empty:
                default = 0  # BOS's value is never read
            scale = A.head_scale(spec.max_seq_len, self.leak)
            out_dir = out_space.labels[0]
            head = A.selection_head(op.label_str, sel.scores, sel.n_conjuncts, 0.5, key_bos,
                                    {(C.space_labels(src)[0], out_dir): 1.0}, _bos_of([src]),
                                    {out_dir: float(default)} if default else {}, scale)
            head_op = _head_op(head, sel, [src], out_space, op)
            self.replace(rewriter, op, [head_op], head_op.res)
            return
        scale = A.head_scale(spec.max_seq_len, self.leak)
        res_index = ValueIndex(res_t.non_none_values)
        src_vals = [v for v in src_t.non_none_values if v in res_index]  # others are never selected
        if never_empty:
            default = None  # BOS's value is never read
        plain = ValueIndex([*src_vals, *([] if default is None else [default])])
        # where the inferred result holds the float of an int or bool (1 -> 1.0), two or more selected
        # equal values change type, even when that float is also a value of the source
        retyped = any(is_number(v) and identity(evaluator_mean([v, v])) != identity(v)
                      and evaluator_mean([v, v]) in res_index for v in src_vals)
        if not retyped and all(v in plain for v in res_t.non_none_values):
            out_dirs = out_space.labels
            w_ov = {(d, out_dirs[res_index[v]]): 1.0 for d, v in zip(C.space_labels(src), src_t.non_none_values)
                    if v in res_index}
            bos_value = {} if default is None else {out_dirs[res_index[default]]: 1.0}
            head = A.selection_head(op.label_str, sel.scores, sel.n_conjuncts, 0.5, key_bos, w_ov, _bos_of([src]),
                                    bos_value, scale)
            head_op = _head_op(head, sel, [src], out_space, op)
            self.replace(rewriter, op, [head_op], head_op.res)
            return
        self.replace(rewriter, op, *self._width_typed_mean(op, sel, src, scale))

    def _width_typed_mean(self, op: R.AggregateOp, sel: _Selection, src: SSAValue,
                          scale: float) -> tuple[list[Operation], SSAValue]:
        """The evaluator's mean of k equal numbers v is `sum([v] * k) / k`: v itself for k = 1, a float
        (1 -> 1.0) for more. One head selects v, one measures the width, an MLP writes the typed mean."""

        spec = _program(op).spec
        res_t, src_t = op.result_type, R.sop_type(op.sop)
        default = op.default.data
        if width_bounds(op.selector, spec.max_seq_len)[0] >= 1:
            default = None  # never empty: BOS's value is never read
        selected_vals = list(src_t.non_none_values)
        if default is not None and default not in ValueIndex(selected_vals):
            selected_vals.append(default)
        selected_t = C.CategoricalSpaceType(f"{op.label_str}.selected", selected_vals)
        sel_dirs = selected_t.labels
        sel_index = ValueIndex(selected_vals)
        w_ov = {(d, sel_dirs[sel_index[v]]): 1.0 for d, v in zip(C.space_labels(src), src_t.non_none_values)}
        key_bos = {**_bos_of(sel.keys), "one": 1.0}
        bos_value = {} if default is None else {sel_dirs[sel_index[default]]: 1.0}
        pick = A.selection_head(op.label_str, sel.scores, sel.n_conjuncts, 0.5, key_bos, w_ov,
                                _bos_of([src]), bos_value, scale)
        pick_op = _head_op(pick, sel, [src], selected_t, op)
        pick_op.res.name_hint = f"{op.res.name_hint or 'aggregate'}_selected"
        share_op = _share_head(op, sel, op.label_str, scale)
        share_op.res.name_hint = f"{op.res.name_hint or 'aggregate'}_share"
        lo, hi = width_bounds(op.selector, spec.max_seq_len)
        widths = list(range(lo, hi + 1))
        out_space = craft_type(op.label_str, res_t)
        out_index = ValueIndex(res_t.non_none_values)
        out_dirs = out_space.labels

        from_src = ValueIndex(src_t.non_none_values)

        def written(v: Value, w: int) -> dict[str, float]:
            """What value v of the selected space becomes when w keys are selected."""
            if w == 0:  # only the default is active: BOS's value
                value = default if identity(v) == identity(default) else None
            elif v not in from_src:
                value = None  # never selected
            elif w == 1 or is_number(v):
                value = evaluator_mean([v] * w)
            else:
                value = None  # the evaluator refuses to average non-numbers: outside the domain
            return {} if value is None or value not in out_index else {out_dirs[out_index[value]]: 1.0}

        # numerically equal values of different types (4 and 4.0, 1 and True) average to the float
        # whichever of them are selected: past width 1 their sum gates the mean, not each alone
        twins: dict[float, list[Value]] = {}
        for v in selected_vals:
            if v in from_src and is_number(v):
                twins.setdefault(float(v), []).append(v)
        in_group = {identity(v) for group in twins.values() if len(group) > 1 for v in group}
        gates: list[list[str]] = []
        outputs: list[list[dict[str, float]]] = []
        for v in selected_vals:
            gates.append([sel_dirs[sel_index[v]]])
            outputs.append([written(v, w) if w <= 1 or identity(v) not in in_group else {} for w in widths])
        for group in twins.values():
            if len(group) > 1:
                gates.append([sel_dirs[sel_index[v]] for v in group])
                outputs.append([written(group[0], w) if w > 1 else {} for w in widths])
        block = M.mean_type_mlp(op.label_str, gates, share_op.res.type.labels[0], widths, outputs,
                                _bos_of([pick_op.res, share_op.res]))
        mlp = self.mlp_op(block, [pick_op.res, share_op.res], out_space, op)
        return [pick_op, share_op, mlp], mlp.res


class SelectorWidthToAttentionAndMlp(_Lowering):
    """selector_width -> a head writing BOS's share 1/(w+1), and an MLP mapping it back to w exactly."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.SelectorWidthOp, rewriter: PatternRewriter) -> None:
        sel = _selection(op, op.selector)
        if sel is None:
            return
        spec = _program(op).spec
        share_op = _share_head(op, sel, op.label_str, A.head_scale(spec.max_seq_len, self.leak))
        share_op.res.name_hint = (op.res.name_hint or "width") + "_share"
        res_t = op.result_type
        out_space = craft_type(op.label_str, res_t)
        out_dirs = out_space.labels
        widths = [int(w) for w in res_t.non_none_values]
        if res_t.is_categorical:
            index = ValueIndex(res_t.non_none_values)
            outputs = [{out_dirs[index[w]]: 1.0} for w in widths]
        else:
            outputs = [{out_dirs[0]: float(w)} for w in widths]
        block = M.width_mlp(op.label_str, share_op.res.type.labels[0], widths, outputs, _bos_of([share_op.res]))
        mlp = self.mlp_op(block, [share_op.res], out_space, op)
        self.replace(rewriter, op, [share_op, mlp], mlp.res)


class OutputToCraftOutput(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.OutputOp, rewriter: PatternRewriter) -> None:
        x = lowered(op.inp)
        if x is None:
            return
        t = R.sop_type(op.inp)
        values = None if t.is_categorical else t.value_set or ()
        rewriter.replace(op, C.OutputOp(x, values), [])


PATTERNS = (
    TokensIndicesToEmbedding, ConstantsToPositional, MapToMlp, SequenceMapToMlp, LinearSequenceMapToMlp, TupleToMlp,
    SelectAggregateToAttentionHead, SelectorWidthToAttentionAndMlp,
)


def check_direction_budget(program: R.ProgramOp) -> None:
    """Refuses, before building anything, a categorical s-op that would take more residual
    directions (one per value) than the model's size budget."""
    for o in program.ops:
        if isinstance(o, R.SOpOp) and o.result_type.is_categorical:
            n = len(o.result_type.non_none_values)
            if n > MAX_DIRECTIONS:
                raise _fail(o, f"this categorical s-op has {n:,} values, so the model would give it {n:,} residual "
                               f"directions (budget {MAX_DIRECTIONS:,} per s-op); make it numerical, or compute "
                               "it from smaller s-ops")


@dataclass(frozen=True)
class LowerRaspToCraftPass(ModulePass):
    """Lowers every rasp op to craft blocks with exact, labelled weights (constructions: module docstring)."""

    name = "lower-rasp-to-craft"
    leak: float = 1e-9

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = container_of(op)
        if not isinstance(program, R.ProgramOp):
            raise IRError(f"pass '{self.name}' works at the rasp level, but the module holds a {program.name}")
        block = program.body.block
        check_direction_budget(program)
        patterns = [cls(self.leak) for cls in PATTERNS] + [OutputToCraftOutput()]
        # The block is in dependency order, so one walk in order lowers every op once its operands
        # are (a fraction of the greedy walker's cost, which revisits every new op with every
        # pattern); the walker then finishes whatever a pattern left for later, in any order.
        for o in list(block.ops):
            if o.parent is None or not o.name.startswith("rasp."):  # erased by a pattern, or lowered
                continue
            for pattern in patterns:
                rewriter = PatternRewriter(o)
                pattern.match_and_rewrite(o, rewriter)
                if rewriter.has_done_action:
                    break
        for o in reversed(list(block.ops)):  # selectors, once every reader is lowered
            if o.name.startswith("rasp.") and not any(r.uses for r in o.results):
                o.detach()
                o.erase()
        if any(o.name.startswith("rasp.") for o in block.ops):
            PatternRewriteWalker(GreedyRewritePatternApplier(patterns)).rewrite_module(op)
        for o in reversed(list(block.ops)):
            if isinstance(o, UnrealizedConversionCastOp) and not o.results[0].uses:
                o.detach()
                o.erase()
        # every model has `one` and `bos` directions (the embedding writes them), used or not
        embedding(block, "one")
        embedding(block, "bos")
        left = [o for o in block.ops if not isinstance(o, (C.EmbedOp, C.PositionalOp, *C.BLOCK_OPS, C.OutputOp))]
        if left:
            raise UnsupportedError(f"lower-rasp-to-craft does not handle {left[0].name}")
        region = program.detach_region(program.body)
        model = C.ModelOp.create(properties={"input": program.input}, regions=[region])
        program_parent = program.parent_block()
        assert program_parent is not None
        program_parent.insert_op_before(model, program)
        program.detach()
        program.erase()


__all__ = ["LowerRaspToCraftPass", "craft_type", "lowered", "embedding", "PATTERNS"]
