"""product-selectors: turn a selector tree that attention cannot score additively into one select.

An and-tree of selects is scored additively by one attention head (see lower-rasp-to-craft).
Any other tree read by an aggregate or a selector width (one with an `or`, or a `not` left over a
composite by combine-selectors) becomes a single `rasp.select` whose keys and queries are tuples
of the leaves' keys and queries, packed with one `rasp.tuple` each

    keys = rasp.tuple k1, k2, k3        // (k1, k2, k3) at every position, None parts kept

(an operand set of one is used as it is), and whose predicate is a relation: the tree evaluated on
every (query tuple, key tuple). Exact, at the price of one MLP sublayer for the tuples.

The relation is built in polynomial time: each leaf's predicate matrix is computed once over its
operands' values, spread over the tuple grid with numpy index arithmetic, and the tree is evaluated
on whole matrices (a pair where any leaf raises is outside the domain: `?`). Each root selector is
built once, and each tuple of operands packed once, however many ops read them. Before anything is
built, the tuple value sets and the matrix size are estimated from the operands' value sets; past
the budget (MAX_DIRECTIONS tuple values, MAX_PRODUCT_ENTRIES matrix entries) the selector
is refused at once, naming it and the size.

A numerical operand is packed through a categorical copy that maps numerically equal values
(0 and 0.0, one number in the model) to one representative; where a leaf tells such values
apart, the selector is refused.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from math import prod
from typing import Any, Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import Rewriter

from raspc.analysis.selectors import is_conjunction, select_matrix, selector_leaves
from raspc.analysis.value_sets import MAX_DIRECTIONS, infer_op, infer_program
from raspc.dialects import rasp as R
from raspc.dialects.common import InputSpec
from raspc.errors import UnsupportedError
from raspc.passes.infer_value_sets import rasp_program
from raspc.utils.naming import ssa_name
from raspc.utils.values import Value, format_value

MAX_PRODUCT_ENTRIES = 25_000_000  # query tuples x key tuples of one product select


def label_of(value: SSAValue) -> str:
    owner = value.owner
    return owner.label_str if isinstance(owner, R.RaspOp) else "input"


def numeric_groups(values: Sequence[Value]) -> np.ndarray:
    """For each value, the index of the first value numerically equal to it (0, 0.0 and False are
    one number in a numerical s-op)."""
    first: dict[float, int] = {}
    return np.array([first.setdefault(float(v), i) for i, v in enumerate(values)], dtype=np.int64)


@dataclass
class Axis:
    """One leaf operand as an axis of the tuple grid."""

    value: SSAValue
    values: tuple[Value, ...]  # the operand's value set
    grid: tuple[Value, ...]  # the values the axis enumerates (one per number, no None, when packed)
    to_grid: np.ndarray  # per value of `values`, its index in `grid` (-1: None, not on a packed axis)


@dataclass
class Plan:
    """What a product select is built from: the tree's leaves and its key and query axes."""

    leaves: list[R.SelectOp]
    keys: list[Axis]
    queries: list[Axis]


class ProductBuilder:
    """Plans (checks, estimates) and builds, for a selector tree, the pack ops and one select over
    tuples equal to the tree."""

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self.plans: dict[SSAValue, Plan] = {}
        self.packs: dict[tuple[SSAValue, ...], SSAValue] = {}

    # -- checks and estimates, before anything is built ----------------------------------------
    def axis(self, v: SSAValue, packed: bool, role: str, readers: list[R.SelectOp], root: R.RaspOp) -> Axis:
        t = R.sop_type(v)
        vals = t.value_set
        if vals is None:
            raise self.fail(root, f"its {role} '{label_of(v)}' is numerical with a value set that is not "
                                  "finite, so it cannot be read through a table")
        if not packed:
            return Axis(v, vals, vals, np.arange(len(vals), dtype=np.int64))
        first = np.arange(len(vals), dtype=np.int64)
        if not t.is_categorical:
            first = numeric_groups(vals)
            self.check_numbers_alike(v, vals, first, role, readers, root)
        grid_pos = [i for i in range(len(vals)) if first[i] == i]
        where = {p: j for j, p in enumerate(grid_pos)}
        to_grid = np.array([where[int(first[i])] for i in range(len(vals))], dtype=np.int64)
        return Axis(v, vals, tuple(vals[p] for p in grid_pos), to_grid)

    def reader_matrix(self, leaf: R.SelectOp, role: str) -> np.ndarray:
        """The leaf's predicate over its operands' value sets, with `role`'s values along axis 1."""
        keys = R.sop_type(leaf.keys).value_set or ()
        queries = R.sop_type(leaf.queries).value_set or ()
        m = select_matrix(leaf, keys, queries)
        return m if role == "key" else m.T

    def check_numbers_alike(self, v: SSAValue, vals: Sequence[Value], first: np.ndarray, role: str,
                            readers: list[R.SelectOp], root: R.RaspOp) -> None:
        for leaf in readers:
            m = self.reader_matrix(leaf, role)
            differ = np.nonzero((m != m[:, first]).any(axis=0))[0]
            if differ.size:
                i = int(differ[0])
                raise self.fail(
                    root,
                    f"'{label_of(v)}' can be {format_value(vals[int(first[i])])} and "
                    f"{format_value(vals[i])}, "
                    f"which one number cannot tell apart, but '{leaf.label_str}' selects them differently",
                )

    @staticmethod
    def fail(root: R.RaspOp, message: str) -> UnsupportedError:
        return UnsupportedError(message, label=root.label_str, source=root.src_str)

    # -- planning: every check and estimate, before anything is built ---------------------------
    def plan(self, root: SSAValue) -> "Plan":
        """The leaves and tuple axes of the product for `root` (memoised), or a typed refusal."""
        if root in self.plans:
            return self.plans[root]
        owner = root.owner
        assert isinstance(owner, R.RaspOp)
        leaves = selector_leaves(root)
        key_values = _unique([leaf.keys for leaf in leaves])
        query_values = _unique([leaf.queries for leaf in leaves])
        keys = [self.axis(v, len(key_values) > 1, "key", [x for x in leaves if x.keys == v], owner)
                for v in key_values]
        queries = [self.axis(v, len(query_values) > 1, "query", [x for x in leaves if x.queries == v], owner)
                   for v in query_values]
        n_keys, n_queries = prod(len(a.grid) for a in keys), prod(len(a.grid) for a in queries)
        too_many = [f"{n} {role} tuples ({_sizes(axes)}; bound {MAX_DIRECTIONS})"
                    for n, axes, role in ((n_keys, keys, "key"), (n_queries, queries, "query"))
                    if len(axes) > 1 and n > MAX_DIRECTIONS]
        if n_keys * n_queries > MAX_PRODUCT_ENTRIES:
            too_many.append(f"a {n_queries} x {n_keys} relation (bound {MAX_PRODUCT_ENTRIES:,} entries)")
        if too_many:
            raise self.fail(owner, f"this selector is not a conjunction, so it would become one select over "
                                   f"tuples of its {len(leaves)} selects' keys and queries, which needs "
                                   f"{' and '.join(too_many)}; split it into selectors over shared keys and "
                                   "queries")
        self.plans[root] = Plan(leaves, keys, queries)
        return self.plans[root]

    # -- building ------------------------------------------------------------------------------
    def build(self, root: SSAValue, rewriter: PatternRewriter) -> SSAValue:
        owner = root.owner
        assert isinstance(owner, R.RaspOp)
        plan = self.plan(root)
        matrix = self.relation_matrix(root, plan.leaves, plan.keys, plan.queries)
        key = self.pack(plan.keys, "keys", owner, rewriter)
        query = self.pack(plan.queries, "queries", owner, rewriter)
        relation = R.RelationAttr.of(_grid_values(plan.keys), _grid_values(plan.queries), matrix)
        select = R.SelectOp(key, query, relation, owner.label_str, owner.src_str)
        select.res.name_hint = root.name_hint
        rewriter.insert(select)
        return select.res

    def relation_matrix(self, root: SSAValue, leaves: list[R.SelectOp], keys: list[Axis],
                        queries: list[Axis]) -> np.ndarray:
        """int8 [query tuple, key tuple]: the tree on every pair, -1 where any leaf raises."""
        k_digits, q_digits = _digits(keys), _digits(queries)
        undefined: np.ndarray | None = None
        truth: dict[SSAValue, np.ndarray] = {}
        for leaf in leaves:
            a = next(i for i, ax in enumerate(keys) if ax.value == leaf.keys)
            b = next(i for i, ax in enumerate(queries) if ax.value == leaf.queries)
            m = select_matrix(leaf, keys[a].grid, queries[b].grid)  # [query grid, key grid]
            if (m < 0).any():
                raises = np.take((m < 0)[q_digits[b]], k_digits[a], axis=1)
                undefined = raises if undefined is None else (undefined | raises)
            truth[leaf.res] = np.take((m > 0)[q_digits[b]], k_digits[a], axis=1)

        def evaluate(value: SSAValue) -> np.ndarray:
            if value in truth:
                return truth[value]
            op = value.owner
            if isinstance(op, R.SelectorNotOp):
                out = ~evaluate(op.inner)
            elif isinstance(op, R.SelectorAndOp):
                out = evaluate(op.fst) & evaluate(op.snd)
            else:
                assert isinstance(op, R.SelectorOrOp)
                out = evaluate(op.fst) | evaluate(op.snd)
            truth[value] = out
            return out

        out = evaluate(root).astype(np.int8)
        if undefined is not None:
            out[undefined] = -1
        return out

    def pack(self, axes: list[Axis], role: str, root: R.RaspOp, rewriter: PatternRewriter) -> SSAValue:
        """One s-op holding the tuple of the axes' values (the operand itself for one axis)."""
        if len(axes) == 1:
            return axes[0].value
        memo_key = tuple(a.value for a in axes)
        if memo_key in self.packs:
            return self.packs[memo_key]
        parts = []
        for i, ax in enumerate(axes):
            part = ax.value
            if not R.sop_type(part).is_categorical:  # one representative per number, one-hot
                label = f"{root.label_str}.{role}{i}"
                table = R.TableAttr.of([((x,), ax.grid[g]) for x, g in zip(ax.values, ax.to_grid)])
                copy = R.MapOp(part, R.CATEGORICAL, table, label, root.src_str)
                copy.res.name_hint = ssa_name(label)
                rewriter.insert(copy)
                infer_op(copy, self.spec)
                part = copy.res
            parts.append(part)
        label = f"{root.label_str}.{role}"
        op = R.TupleOp(parts, label, root.src_str)
        op.res.name_hint = ssa_name(label)
        rewriter.insert(op)
        infer_op(op, self.spec)
        self.packs[memo_key] = op.res
        return op.res


def _unique(values: list[SSAValue]) -> list[SSAValue]:
    out: list[SSAValue] = []
    for v in values:
        if all(v != u for u in out):
            out.append(v)
    return out


def _digits(axes: list[Axis]) -> list[np.ndarray]:
    """Per axis, its grid index at every tuple of the grid (tuples in itertools.product order)."""
    sizes = [len(a.grid) for a in axes]
    total = prod(sizes)
    out, stride = [], total
    for s in sizes:
        stride //= max(s, 1)
        out.append((np.arange(total, dtype=np.int64) // max(stride, 1)) % max(s, 1))
    return out


def _sizes(axes: list[Axis]) -> str:
    """'a' 3 x 'b' 4 x ... : the value counts whose product is a tuple value set."""
    parts = [f"'{label_of(a.value)}' {len(a.grid)}" for a in axes]
    return " x ".join(parts if len(parts) <= 6 else [*parts[:5], "..."])


def _grid_values(axes: list[Axis]) -> list[Value]:
    if len(axes) == 1:
        return list(axes[0].grid)
    return [tuple(t) for t in itertools.product(*(a.grid for a in axes))]


@dataclass
class ProductOfNonConjunctiveSelector(RewritePattern):
    """The selector of an aggregate / selector_width, when not a conjunction, becomes one product select."""

    builder: ProductBuilder
    done: dict[SSAValue, SSAValue] = field(default_factory=dict)

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: R.AggregateOp | R.SelectorWidthOp, rewriter: PatternRewriter) -> None:
        root = op.selector
        if is_conjunction(root):
            return
        if root not in self.done:
            self.done[root] = self.builder.build(root, rewriter)
        new = self.done[root]
        rewriter.replace_uses_with_if(root, new, lambda use: use.operation is op)


def erase_dead_selectors(program: R.ProgramOp) -> None:
    """Erases selector ops nothing reads any more (the trees replaced by product selects)."""
    for op in reversed(list(program.ops)):
        if isinstance(op, R.SelectorOp) and op.res.first_use is None:
            Rewriter.erase_op(op)


@dataclass(frozen=True)
class ProductSelectorsPass(ModulePass):
    """Turns selector trees that are not conjunctions into one select over tuple-valued keys and queries."""

    name = "product-selectors"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = rasp_program(op, self.name, inferred=True)
        builder = ProductBuilder(program.spec)
        # Refusals first, outside the rewrite walker (which would attach the whole module to them).
        for user in program.ops:
            if isinstance(user, (R.AggregateOp, R.SelectorWidthOp)) and not is_conjunction(user.selector):
                builder.plan(user.selector)
        pattern = ProductOfNonConjunctiveSelector(builder)
        walker = PatternRewriteWalker(GreedyRewritePatternApplier([pattern]), apply_recursively=False)
        if walker.rewrite_module(op):
            erase_dead_selectors(program)
            infer_program(program)


__all__ = [
    "ProductSelectorsPass", "ProductBuilder", "Plan", "MAX_PRODUCT_ENTRIES", "numeric_groups",
    "erase_dead_selectors",
]
