"""Random well-typed RASP programs: seeded, reproducible, printable as Python and as rasp IR.

    from raspc.random_programs import Knobs, random_program
    rp = random_program(seed=0, index=17, knobs=Knobs(seq_len=(4, 16)))
    print(rp.module_source())     # a Python module that builds `program` (and vocab, max_seq_len, causal)
    print(rp.rasp_ir())           # the traced program as rasp IR
    model = rp.compile()          # compile_rasp_to_model(rp.program, rp.vocab, rp.max_seq_len, causal=rp.causal)

Program `index` of a seed depends on (seed, index, knobs) only, so a set of programs can be made
in any order, by any number of processes, and a rerun makes the same ones.

The generator asks a `Chooser` for every decision (`RandomChooser` wraps a `random.Random`; the
test suite's hypothesis strategy draws them from hypothesis so failures shrink). A program is a
`GeneratedProgram`: the rasp s-op, its vocabulary, max_seq_len, a causal flag, and its source as
Python built from `rasp` and this module's random functions (`CALLABLES`: `Table`, `Table2`,
`Partial`, `FloorDiv`, `Str`, `TypeName`, `Np`, `Pred`, `Raw`, `NoneAware`, `Shift`, `Above`,
`Affine`, `Pair`), each a small picklable object with a readable repr, never a lambda. Programs are
DAGs (sub-s-ops are reused) of depth at most `max_depth` (one more when the program had to be made
to read tokens; a tree of selector and/or/not counts as one level), built top-down under a node
budget so value sets, and so models, stay small.

Coverage with the default `Knobs` (every choice below can be narrowed by a knob):

- leaves: tokens, indices, length, Full, ConstantSOp (check_length=True, so only inputs of its
  length evaluate; `random_inputs` favours those lengths), numerical indices / Full / ConstantSOp;
  vocabularies of 2-4 strings, ints or floats ([0.1, 0.2, 0.7, 1.0], [0.5, 1.5, -2.0], ints and
  floats mixed);
- Map: categorical -> categorical (random table, outputs from int/str/bool/float pools and a
  mixed pool where 1, 1.0 and True are different values, sometimes None; sometimes simplify=False
  so maps are not fused), `Str()` / `TypeName()` (which tell 1, 1.0 and True apart), categorical ->
  numerical (negative, boolean, large: 1e9, -1e6, inexact: 0.1), numerical -> numerical (affine or
  table), numerical -> categorical (threshold or table, often of a mean); any table function may
  return numpy scalars (`Np`); `Partial` tables raise on some inputs (outside the domain);
- SequenceMap: random tables over the operands' value sets (categorical or numerical result,
  numerical operands too, sometimes the same operand twice), tuple-valued pairs, `FloorDiv`
  (`12 // (x - y)`, raising where x == y); LinearSequenceMap on numerical operands (and on
  categorical numbers), and of two means (often over one selector);
- Select with every Comparison (ordering ones only where keys and queries are comparable), a
  random predicate table, `Shift(d)` (k == q - d); over keys or queries that can be None, with
  predicates that accept None (`NoneAware`, `Raw`, `Pred(..., none_ok=True)`) or raise on it;
  numerical means as keys or queries; selector trees of and / or / not (functions, classes and
  the `&`, `|`, `~` operators), several levels deep;
- Aggregate: categorical (mostly through "at most one position" selectors) and numerical (mean,
  default 0, another number, 1e9, -1e6, rarely None); SelectorWidth, categorical and numerical;
- causal=True for a share of the programs (15% by default).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence

import numpy as np

from raspc import rasp
from raspc.errors import RaspcError

CAT, NUM = "categorical", "numerical"

# --------------------------------------------------------------------------- value pools

INT_VOCABS = ([0, 1, 2, 3], [1, 2, 3, 4], [-1, 0, 1, 5])
STR_VOCABS = (["a", "b", "c", "d"], ["x", "y", "z", "w"])
FLOAT_VOCABS = ([0.1, 0.2, 0.7, 1.0], [0.5, 1.5, -2.0], [0, 0.5, 1, 2.5])  # the last mixes ints and floats
INT_POOL = (0, 1, 2, 3, -1)
STR_POOL = ("x", "y", "z")
BOOL_POOL = (False, True)
MIXED_POOL = (True, 1, 1.0, 0, False, 2.5)  # 1, 1.0 and True are three different values
FLOAT_POOL = (0.5, 0.1, -1.5, 0.2, 1e9)
NUM_POOL = (0, 1, -1, 2, 0.5, -2, 3)
EXTRA_NUM_POOL = (1e9, -1e6, 0.1, 0.2, True, False)  # large, inexact and boolean numbers (drawn rarely)
FACTORS = (1, -1, 2, 0.5, 0, -0.5, 3)
MEAN_FACTORS = (3, -1, 1, 2, 0.5, -0.5)
NUM_DEFAULTS = ((0, 8), (1, 1), (-1, 1), (0.5, 1), (None, 1), (1e9, 1), (-1e6, 1))
COMPARISONS = tuple(rasp.Comparison)  # EQ first: shrinks to the simplest
EQUALITY_COMPARISONS = (rasp.Comparison.EQ, rasp.Comparison.NEQ, rasp.Comparison.TRUE, rasp.Comparison.FALSE)

MAX_TRACKED_VALUES = 400  # past this the generator forgets a numerical value set (and avoids tables on it)
MAX_TABLE_INPUTS = 48  # a random table is drawn over at most this many input values (pairs for Table2)


# --------------------------------------------------------------------------- random functions


def _fmt_mapping(mapping: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in mapping.items()) + "}"


class Table:
    """f(x) = mapping[x] where given, else `default` (a total, deterministic function)."""

    def __init__(self, mapping: dict, default: Any = None):
        self.mapping = dict(mapping)
        self.default = default

    def __call__(self, x: Any) -> Any:
        return self.mapping.get(x, self.default)

    def __repr__(self) -> str:
        return f"Table({_fmt_mapping(self.mapping)}, default={self.default!r})"


class Table2:
    """f(x, y) = mapping[(x, y)] where given, else `default`."""

    def __init__(self, mapping: dict, default: Any = None):
        self.mapping = dict(mapping)
        self.default = default

    def __call__(self, x: Any, y: Any) -> Any:
        return self.mapping.get((x, y), self.default)

    def __repr__(self) -> str:
        return f"Table2({_fmt_mapping(self.mapping)}, default={self.default!r})"


class Partial:
    """f(x) = mapping[x]; raises KeyError on every other input (None included): a function defined on
    some of its input values only."""

    def __init__(self, mapping: dict):
        self.mapping = dict(mapping)

    def __call__(self, x: Any) -> Any:
        return self.mapping[x]

    def __repr__(self) -> str:
        return f"Partial({_fmt_mapping(self.mapping)})"


class FloorDiv:
    """c // (x - y): raises ZeroDivisionError where x == y (`12 // (n - i)`)."""

    def __init__(self, c: int):
        self.c = c

    def __call__(self, x: Any, y: Any) -> Any:
        with np.errstate(divide="ignore"):  # numpy scalars give 0 there (and warn), Python numbers raise
            return self.c // (x - y)

    def __repr__(self) -> str:
        return f"FloorDiv({self.c!r})"


class Str:
    """str(x) (tells 1, 1.0 and True apart)."""

    def __call__(self, x: Any) -> str:
        return str(x)

    def __repr__(self) -> str:
        return "Str()"


class TypeName:
    """type(x).__name__ (tells 1, 1.0 and True apart)."""

    def __call__(self, x: Any) -> str:
        return type(x).__name__

    def __repr__(self) -> str:
        return "TypeName()"


class Np:
    """f's result as a numpy scalar (np.bool_ / np.int64 / np.float64), as Maps written with numpy
    return; other results pass through."""

    def __init__(self, f: Callable[..., Any]):
        self.f = f

    def __call__(self, *args: Any) -> Any:
        v = self.f(*args)
        if isinstance(v, bool):
            return np.bool_(v)
        if isinstance(v, int):
            return np.int64(v)
        if isinstance(v, float):
            return np.float64(v)
        return v

    def __repr__(self) -> str:
        return f"Np({self.f!r})"


class Pred:
    """A Select predicate: true exactly on the listed (key, query) pairs. It raises on None like
    Comparison, unless `none_ok` (then None is a value like any other, and pairs may hold it)."""

    def __init__(self, pairs: Sequence[tuple[Any, Any]], none_ok: bool = False):
        self.pairs = tuple(pairs)
        self.none_ok = none_ok
        self._set = frozenset(self.pairs)

    def __call__(self, key: Any, query: Any) -> bool:
        if not self.none_ok and (key is None or query is None):
            raise ValueError("Pred: key or query is None")
        return (key, query) in self._set

    def __repr__(self) -> str:
        return f"Pred({list(self.pairs)!r}" + (", none_ok=True)" if self.none_ok else ")")


_PLAIN = {  # the comparisons as plain Python (no None check)
    "EQ": lambda k, q: k == q, "NEQ": lambda k, q: k != q, "LT": lambda k, q: k < q, "LEQ": lambda k, q: k <= q,
    "GT": lambda k, q: k > q, "GEQ": lambda k, q: k >= q, "TRUE": lambda k, q: True, "FALSE": lambda k, q: False,
}


class Raw:
    """A comparison as a plain Python predicate, called on None too: `Raw('NEQ')` is
    `lambda k, q: k != q` (None != 'a'); the ordering ones raise on None (outside the domain)."""

    def __init__(self, cmp: str):
        self.cmp = cmp

    def __call__(self, key: Any, query: Any) -> bool:
        return _PLAIN[self.cmp](key, query)

    def __repr__(self) -> str:
        return f"Raw({self.cmp!r})"


class NoneAware:
    """A predicate that accepts None: `query_none` where the query is None, else `key_none` where the
    key is None, else the comparison. `NoneAware('EQ', query_none=True)` is
    `lambda k, q: q is None or k == q`."""

    def __init__(self, cmp: str, key_none: bool = False, query_none: bool = False):
        self.cmp, self.key_none, self.query_none = cmp, key_none, query_none

    def __call__(self, key: Any, query: Any) -> bool:
        if query is None:
            return self.query_none
        if key is None:
            return self.key_none
        return _PLAIN[self.cmp](key, query)

    def __repr__(self) -> str:
        return f"NoneAware({self.cmp!r}, key_none={self.key_none!r}, query_none={self.query_none!r})"


class Shift:
    """k == q - d: Select(indices, indices, Shift(1)) selects the previous position (none at 0)."""

    def __init__(self, d: int):
        self.d = d

    def __call__(self, key: Any, query: Any) -> bool:
        return key == query - self.d

    def __repr__(self) -> str:
        return f"Shift({self.d!r})"


class Above:
    """x > threshold (numerical -> categorical bool)."""

    def __init__(self, threshold: Any):
        self.threshold = threshold

    def __call__(self, x: Any) -> bool:
        return x > self.threshold

    def __repr__(self) -> str:
        return f"Above({self.threshold!r})"


class Affine:
    """a * x + b."""

    def __init__(self, a: Any, b: Any):
        self.a, self.b = a, b

    def __call__(self, x: Any) -> Any:
        return self.a * x + self.b

    def __repr__(self) -> str:
        return f"Affine({self.a!r}, {self.b!r})"


class Pair:
    """(x, y): a tuple-valued SequenceMap."""

    def __call__(self, x: Any, y: Any) -> tuple:
        return (x, y)

    def __repr__(self) -> str:
        return "Pair()"


# The names a printed program uses (GeneratedProgram.script imports them from this module).
CALLABLES: dict[str, Any] = {c.__name__: c for c in (
    Table, Table2, Partial, FloorDiv, Str, TypeName, Np, Pred, Raw, NoneAware, Shift, Above, Affine, Pair)}


# --------------------------------------------------------------------------- choosers


class Chooser:
    """Every random decision of the generator. Options are listed simplest first (hypothesis
    shrinks towards index 0)."""

    def integer(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def weighted(self, options: Sequence[tuple[Any, int]]) -> Any:
        """One of `options` ((value, weight) pairs)."""
        total = sum(w for _, w in options)
        r = self.integer(0, total - 1)
        for v, w in options:
            if r < w:
                return v
            r -= w
        raise AssertionError("unreachable")

    def chance(self, percent: int) -> bool:
        """True with probability percent/100 (False is the shrunk value)."""
        return self.integer(0, 99) >= 100 - percent


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


# --------------------------------------------------------------------------- the generated program


@dataclass
class Node:
    name: str
    expr: rasp.RASPExpr
    code: str  # the right-hand side that builds it
    children: tuple[str, ...]
    is_selector: bool
    enc: str = CAT
    values: Optional[tuple] = ()  # non-None values it can take (None: unknown / too many)
    maybe_none: bool = False
    depth: int = 0
    reads_tokens: bool = False
    tags: frozenset = frozenset()  # generator features this node exercises (see features())
    sel_height: int = 0  # selectors: 1 for a Select, 1 + the highest operand for and/or/not


_LEAF_NAMES = {"rasp.tokens", "rasp.indices", "rasp.length"}


@dataclass
class GeneratedProgram:
    program: rasp.SOp
    vocab: list
    max_seq_len: int
    causal: bool
    root: str
    nodes: dict[str, Node] = field(repr=False)
    constant_lengths: tuple[int, ...] = ()

    def reachable(self, root: Optional[str] = None) -> list[str]:
        """Names the root depends on, dependencies first."""
        out: list[str] = []
        seen: set[str] = set()

        def visit(n: str) -> None:
            if n in seen:
                return
            seen.add(n)
            for c in self.nodes[n].children:
                visit(c)
            out.append(n)

        visit(root or self.root)
        return out

    @property
    def size(self) -> int:
        return sum(1 for n in self.reachable() if n not in _LEAF_NAMES)

    @property
    def depth(self) -> int:
        return self.nodes[self.root].depth

    def source(self) -> str:
        """The program as Python, its variables renumbered in definition order (s: categorical s-op,
        n: numerical s-op, sel: selector)."""
        order = [n for n in self.reachable() if n not in _LEAF_NAMES]
        rename = {n: f"{re.match(r'[a-z]+', n).group(0)}{i}" for i, n in enumerate(order, 1)}  # type: ignore[union-attr]
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, order)) + r")\b") if order else None

        def sub(code: str) -> str:
            return pattern.sub(lambda m: rename[m.group(1)], code) if pattern else code

        lines = [f"# vocab={self.vocab!r}, max_seq_len={self.max_seq_len}, causal={self.causal}"]
        lines += [f"{rename[n]} = {sub(self.nodes[n].code)}" for n in order]
        lines.append(f"program = {rename.get(self.root, self.root)}")
        return "\n".join(lines)

    def script(self) -> str:
        """An executable reproducer (run from the repository root): compiles the program and
        compares the model with the evaluator on a few inputs."""
        return "\n".join([
            "from raspc import rasp, compile_rasp_to_model",
            SCRIPT_IMPORT,
            self.source(),
            f"model = compile_rasp_to_model(program, {self.vocab!r}, {self.max_seq_len}, causal={self.causal})",
            f"for xs in {[list(x) for x in self.example_inputs()]!r}:",
            "    try:",
            "        expected = rasp.evaluate(program, xs)",
            "    except Exception as e:  # outside the program's domain",
            "        print(xs, 'the evaluator raises', repr(e))",
            "        continue",
            "    print(xs, expected, model.apply(['BOS', *xs]).decoded[1:])",
        ])

    def module_source(self, header: str = "") -> str:
        """A Python module that builds the program: imports, `vocab`, `max_seq_len`, `causal`, then
        `program` (what a dataset stores; `exec` it, or import it, to get the program back)."""
        body = self.source().split("\n", 1)[1]  # without the vocab comment: the variables say it
        used = [name for name in CALLABLES if re.search(rf"\b{name}\(", body)]
        lines = [f'"""{header}"""'] if header else []
        lines.append("from raspc import rasp")
        if used:
            lines.append("from raspc.random_programs import " + ", ".join(used))
        if re.search(r"\bnp\.", body):
            lines.append("import numpy as np")
        lines += ["", f"vocab = {self.vocab!r}", f"max_seq_len = {self.max_seq_len!r}", f"causal = {self.causal!r}", "",
                  body, ""]
        return "\n".join(lines)

    def rebuilt(self, filename: str = "program.py", header: str = "") -> rasp.SOp:
        """The program built anew by running `module_source(header)` as the file `filename`: each
        s-op's `src` (which the IR carries) then points into that text."""
        env: dict[str, Any] = {"__name__": filename.rsplit(".", 1)[0]}
        exec(compile(self.module_source(header), filename, "exec"), env)  # noqa: S102 - our own text
        return env["program"]

    def rasp_ir(self, filename: str = "program.py", header: str = "") -> str:
        """The traced program as rasp IR text, labels numbered within this program and `src` locations
        in `module_source(header)` saved as `filename`. Raises the CompileError of a program the front
        end refuses (value-set inference runs while tracing)."""
        from raspc.compiler import context
        from raspc.lowering.program_to_rasp import program_to_rasp

        program = stable_labels(self.rebuilt(filename, header))
        module = program_to_rasp(program, self.vocab, self.max_seq_len, "BOS", "PAD", self.causal)
        return ir_text(module, context())

    def compile(self, **kwargs: Any) -> Any:
        """`compile_rasp_to_model(program, vocab, max_seq_len, causal=causal, **kwargs)`."""
        from raspc.model import compile_rasp_to_model

        return compile_rasp_to_model(stable_labels(self.program), self.vocab, self.max_seq_len, causal=self.causal,
                                     **kwargs)

    def example_inputs(self) -> list[list]:
        return random_inputs(self, random.Random(0), 4)

    def with_root(self, name: str) -> "GeneratedProgram":
        """The sub-program computing s-op `name` (same vocabulary and settings)."""
        node = self.nodes[name]
        assert not node.is_selector
        consts = tuple(sorted({
            len(self.nodes[n].expr.value)  # type: ignore[attr-defined]
            for n in self.reachable(name) if isinstance(self.nodes[n].expr, rasp.ConstantSOp)
        }))
        return GeneratedProgram(node.expr, self.vocab, self.max_seq_len, self.causal, name, self.nodes, consts)

    @classmethod
    def of(cls, program: rasp.SOp, vocab: Sequence[Any], max_seq_len: int, causal: bool = False,
           source: str = "<hand-written>") -> "GeneratedProgram":
        """Wraps a hand-written program (its `source` is shown as the program's code)."""
        node = Node("p1", program, source, (), False, CAT if rasp.is_categorical(program) else NUM)
        consts = tuple(sorted({len(e.value) for e in _sub_exprs(program) if isinstance(e, rasp.ConstantSOp)}))
        return cls(program, list(vocab), max_seq_len, causal, "p1", {"p1": node}, consts)

    @classmethod
    def from_source(cls, text: str, vocab: Sequence[Any], max_seq_len: int, causal: bool = False) -> "GeneratedProgram":
        """Re-builds a program from `source()`'s text (`name = code` lines, then `program = name`):
        what the fuzz script's shrinker edits."""
        env: dict[str, Any] = {"rasp": rasp, "np": np, **CALLABLES}
        nodes = {n: Node(n, env_expr, n, (), False, CAT, (), False, 0, n != "rasp.indices")
                 for n, env_expr in (("rasp.tokens", rasp.tokens), ("rasp.indices", rasp.indices),
                                     ("rasp.length", rasp.length))}
        root = None
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, code = line.partition(" = ")
            if name == "program":
                root = code.strip()
                continue
            expr = eval(code, env)  # noqa: S307 - our own text
            env[name] = expr
            refs = [m for m in re.findall(r"\b[a-z]+\d+\b", code) if m in nodes]
            refs += [leaf for leaf in _LEAF_NAMES if leaf in code]
            kids = tuple(dict.fromkeys(refs))
            is_sel = isinstance(expr, rasp.Selector)
            enc = CAT if is_sel or rasp.is_categorical(expr) else NUM
            depth = 1 + max((nodes[k].depth for k in kids), default=-1)
            reads = any(nodes[k].reads_tokens for k in kids)
            nodes[name] = Node(name, expr, code, kids, is_sel, enc, None, False, depth, reads)
        if root is None:
            raise ValueError("no 'program = ...' line")
        if root not in nodes:  # program = rasp.tokens (or another expression)
            nodes["p0"] = Node("p0", eval(root, env), root, (), False, CAT)  # noqa: S307
            root = "p0"
        expr = nodes[root].expr
        consts = tuple(sorted({len(e.value) for e in _sub_exprs(expr) if isinstance(e, rasp.ConstantSOp)}))
        return cls(expr, list(vocab), max_seq_len, causal, root, nodes, consts)

    def __repr__(self) -> str:
        return self.source()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # hypothesis prints falsifying examples with this
        p.text(self.source())


SCRIPT_IMPORT = "from raspc.random_programs import " + ", ".join(CALLABLES)



# --------------------------------------------------------------------------- value-set helpers


def _key(v: Any) -> Any:
    """A value's identity (1, 1.0 and True differ; numpy scalars count as the Python value they hold)."""
    from raspc.utils.values import UnsupportedValue, identity, normalize

    try:
        return identity(normalize(v))
    except (UnsupportedValue, TypeError):
        return ("?", repr(v))


def _dedup(values) -> tuple:
    """The distinct non-None values, by identity, as plain Python values."""
    from raspc.utils.values import UnsupportedValue, normalize

    seen: dict[Any, Any] = {}
    for v in values:
        if v is not None:
            try:
                v = normalize(v)
            except UnsupportedValue:
                pass
            seen.setdefault(_key(v), v)
    return tuple(seen.values())


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number, np.bool_))  # bools are ints


def _all_numbers(values: Sequence[Any]) -> bool:
    return all(_is_num(v) for v in values)


def _all_ints(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)


def _comparable(a: Sequence[Any], b: Sequence[Any]) -> bool:
    both = list(a) + list(b)
    return _all_numbers(both) or all(isinstance(v, str) for v in both)


def _number_types(values: Sequence[Any]) -> set[str]:
    return {type(v).__name__ for v in values if isinstance(v, (bool, int, float))}


def _possible_means(values: Sequence[Any], max_width: int, bound: int) -> Optional[tuple]:
    fracs = sorted({Fraction(float(v)) if isinstance(v, float) else Fraction(int(v)) for v in values})
    sums = {Fraction(0)}
    means: set[Fraction] = set()
    for n in range(1, max_width + 1):
        sums = {s + v for s in sums for v in fracs}
        means.update(s / n for s in sums)
        if len(means) > bound or len(sums) > bound:
            return None
    return tuple(float(m) if m.denominator != 1 else int(m) for m in sorted(means))


def _equal_means(values: Sequence[Any], max_width: int) -> list:
    """What a categorical mean of k >= 2 equal numbers gives (the evaluator's sum / k: 1 -> 1.0, and
    0.1 * 3 / 3 is not 0.1)."""
    out = []
    for v in values:
        if isinstance(v, (bool, int, float)):
            out += [sum([v] * k) / k for k in range(2, max_width + 1)]
    return out


def _apply(f: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, f(*args)
    except Exception:  # noqa: BLE001 - outside the function's domain
        return False, None


# --------------------------------------------------------------------------- the generator


class _Generator:
    """Builds one program top-down. A knob that narrows a choice filters the options before the draw,
    so the default knobs draw exactly what the generator always drew (same seed, same program)."""

    def __init__(self, c: Chooser, knobs: "Knobs"):
        self.c = c
        self.knobs = knobs
        self.max_depth = max(1, knobs.max_depth)
        self.max_len_bound = max(1, knobs.seq_len[1])
        self.min_len_bound = max(1, min(knobs.seq_len[0], self.max_len_bound))
        # "numerical" stands for the numerical s-ops some categorical choices are built from
        self.ops = frozenset(knobs.ops) | ({"numerical"} if NUM in knobs.encodings else set())
        self.encodings = tuple(knobs.encodings)
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self.counter = 0
        self.constant_lengths: set[int] = set()
        self.name_of: dict[int, str] = {}

    # -- bookkeeping -----------------------------------------------------------
    def add(self, prefix: str, expr: rasp.RASPExpr, code: str, children: Sequence[str], *, selector: bool = False,
            enc: str = CAT, values: Optional[Sequence[Any]] = (), maybe_none: bool = False,
            tags: Sequence[str] = ()) -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        kids = tuple(children)
        depth = 1 + max((self.nodes[k].depth for k in kids), default=-1)
        if selector and kids and all(self.nodes[k].is_selector for k in kids):
            depth -= 1  # and/or/not: a selector tree is one level of the program, however tall
        reads = any(self.nodes[k].reads_tokens for k in kids)
        if values is not None:
            values = _dedup(values)
            if len(values) > MAX_TRACKED_VALUES:
                values = None
        tagset = set(tags)
        kid_nodes = [self.nodes[k] for k in kids]
        height = 0
        if selector:
            sel_kids = [k for k in kid_nodes if k.is_selector]
            height = 1 + max((k.sel_height for k in sel_kids), default=0)
            if not sel_kids and any(k.maybe_none for k in kid_nodes):
                tagset.add("select over maybe-None")
            if any("select over maybe-None" in k.tags or "selector tree over maybe-None" in k.tags
                   for k in sel_kids):
                tagset.add("selector tree over maybe-None")
            if height >= 3:
                tagset.add("selector tree height>=3")
            if not sel_kids and any(self.is_mean(k.name) for k in kid_nodes):
                tagset.add("mean -> select")
        elif isinstance(expr, (rasp.Map, rasp.SequenceMap)) and any(self.is_mean(k.name) for k in kid_nodes):
            tagset.add("mean -> linear_sequence_map" if isinstance(expr, rasp.LinearSequenceMap) else "mean -> map")
        self.nodes[name] = Node(name, expr, code, kids, selector, enc, values, maybe_none, depth, reads,
                                frozenset(tagset), height)
        self.name_of[id(expr)] = name
        self.order.append(name)
        return name

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def expr(self, name: str) -> Any:
        return self.nodes[name].expr

    def is_mean(self, name: str) -> bool:
        e = self.nodes[name].expr
        return isinstance(e, rasp.Aggregate) and rasp.is_numerical(e)

    def finite(self, name: str, limit: int = MAX_TABLE_INPUTS) -> bool:
        vals = self.nodes[name].values
        return vals is not None and 0 < len(vals) <= limit

    def allows(self, *ops: str) -> bool:
        return all(op in self.ops for op in ops)

    def pick(self, options: Sequence[tuple[Any, int]]) -> Any:
        """`weighted` over the options whose ops (_NEEDS) the knobs allow; None when none is."""
        kept = [(v, w) for v, w in options if self.allows(*_NEEDS.get(getattr(v, "__name__", v), ()))]
        if not any(w for _, w in kept):
            return None
        return self.c.weighted(kept)

    def encoding(self) -> str:
        return self.c.weighted([(e, w) for e, w in ((CAT, 3), (NUM, 2)) if e in self.encodings])

    # -- setup -----------------------------------------------------------------
    def setup(self) -> None:
        c, knobs = self.c, self.knobs
        kind = c.weighted([(k, w) for k, w in (("str", 4), ("int", 4), ("float", 2)) if k in knobs.vocab_kinds])
        if knobs.vocab_size is None:
            pool = {"str": STR_VOCABS, "int": INT_VOCABS, "float": FLOAT_VOCABS}[kind]
            base = c.choice(pool)
            n = c.integer(2, len(base))
            self.vocab = list(base[:n])
        else:
            self.vocab = _plain_vocab(kind, c.integer(*knobs.vocab_size))
        self.max_seq_len = c.integer(self.min_len_bound, self.max_len_bound)
        self.causal = c.chance(knobs.causal_percent)
        L = self.max_seq_len
        self.nodes["rasp.tokens"] = Node("rasp.tokens", rasp.tokens, "rasp.tokens", (), False, CAT,
                                         tuple(self.vocab), False, 0, True)
        self.nodes["rasp.indices"] = Node("rasp.indices", rasp.indices, "rasp.indices", (), False, CAT,
                                          tuple(range(L)), False, 0, False)
        self.nodes["rasp.length"] = Node("rasp.length", rasp.length, "rasp.length", (), False, CAT,
                                         tuple(range(1, L + 1)), False, 0, True)
        for n in _LEAF_NAMES:
            self.name_of[id(self.nodes[n].expr)] = n

    # -- pools ---------------------------------------------------------------
    def cat_pool(self) -> tuple:
        return self.c.weighted([(INT_POOL, 4), (STR_POOL, 3), (BOOL_POOL, 2), (MIXED_POOL, 2), (FLOAT_POOL, 1),
                                (INT_POOL[:3] + STR_POOL[:2], 1)])

    def cat_value(self, pool: Sequence[Any], none_percent: int) -> Any:
        if self.c.chance(none_percent):
            return None
        return self.c.choice(pool)

    def num_value(self) -> Any:
        return self.c.choice(EXTRA_NUM_POOL) if self.c.chance(6) else self.c.choice(NUM_POOL)

    def maybe_np(self, f: Any, tags: list[str]) -> Any:
        """Sometimes the function returns numpy scalars instead."""
        if self.c.chance(10):
            tags.append("numpy scalars")
            return Np(f)
        return f

    # -- s-ops ------------------------------------------------------------------
    def reuse(self, depth: int, enc: Optional[str]) -> Optional[str]:
        """Maybe an existing s-op of at most `depth` (a DAG, as real RASP programs are)."""
        cands = [n for n in self.order if not self.nodes[n].is_selector and self.nodes[n].depth <= depth
                 and (enc is None or self.nodes[n].enc == enc)]
        if cands and self.c.chance(25):
            return self.c.choice(cands[::-1])  # most recent first
        return None

    def sop(self, depth: int, enc: Optional[str] = None) -> str:
        """An s-op of depth at most `depth` (exactly `depth` unless the budget ran out), encoding `enc`."""
        if enc is None:
            enc = self.encoding()
        if depth <= 0 or self.budget <= 0:
            return self.leaf(enc, depth)
        reused = self.reuse(depth - 1, enc)
        if reused is not None:
            return reused
        self.budget -= 1
        if enc == CAT:
            kinds = [(self.map_cat, 5), (self.map_num_to_cat, 2), (self.sequence_map, 4), (self.aggregate_cat, 4),
                     (self.selector_width, 2), (self.linear_sequence_map_cat, 1), (self.shifted, 2)]
        else:
            kinds = [(self.map_cat_to_num, 4), (self.map_num_to_num, 2), (self.sequence_map, 2),
                     (self.linear_sequence_map, 3), (self.aggregate_num, 4), (self.selector_width, 1),
                     (self.linear_sequence_map_of_means, 2)]
        for _ in range(4):
            make = self.pick(kinds)
            if make is None:
                break
            out = make(depth, enc)
            if out is not None:
                return out
        return self.leaf(enc, depth)

    def num_operand(self, depth: int) -> str:
        """A numerical s-op for a map, comparison or select: often a mean."""
        if depth >= 2 and self.budget > 0 and self.allows("aggregate") and self.c.chance(30):
            self.budget -= 1
            out = self.aggregate_num(depth, NUM)
            if out is not None:
                return out
        return self.sop(depth, NUM)

    def child_depth(self, depth: int) -> int:
        """The first child has depth-1 (so the tree reaches `depth`); others may be shallower."""
        return depth - 1 if self.c.chance(60) else self.c.integer(0, depth - 1)

    def leaf(self, enc: str, depth: int = 0) -> str:
        """A primitive s-op; a numerical one may be a Map of tokens when `depth` >= 1."""
        c, L = self.c, self.max_seq_len
        if enc == CAT:
            kind = self.pick([("tokens", 8), ("indices", 4), ("length", 1), ("full", 1), ("constant", 1)])
            if kind in ("tokens", "indices", "length"):
                return f"rasp.{kind}"
            pool = self.cat_pool()
            if kind == "full":
                fill = self.cat_value(pool, 5)
                return self.add("s", rasp.Full(fill), f"rasp.Full({fill!r})", [], values=[fill],
                                maybe_none=fill is None)
            n = c.integer(1, L)
            vals = [self.cat_value(pool, 10) for _ in range(n)]
            self.constant_lengths.add(n)
            return self.add("s", rasp.ConstantSOp(vals), f"rasp.ConstantSOp({vals!r})", [], values=vals,
                            maybe_none=None in vals)
        kind = self.pick([("indices", 4), ("full", 1), ("constant", 1), ("cat_map", 4 if depth >= 1 else 0)])
        if kind == "indices":
            return self.add("n", rasp.numerical(rasp.indices), "rasp.numerical(rasp.indices)", [],
                            enc=NUM, values=range(L))
        if kind == "full":
            fill = self.num_value()
            return self.add("n", rasp.numerical(rasp.Full(fill)), f"rasp.numerical(rasp.Full({fill!r}))", [],
                            enc=NUM, values=[fill])
        if kind == "constant":
            n = c.integer(1, L)
            vals = [self.num_value() for _ in range(n)]
            self.constant_lengths.add(n)
            return self.add("n", rasp.numerical(rasp.ConstantSOp(vals)), f"rasp.numerical(rasp.ConstantSOp({vals!r}))",
                            [], enc=NUM, values=vals)
        return self.map_cat_to_num(1, NUM, inner="rasp.tokens")

    # Maps ----------------------------------------------------------------------
    def table_over(self, name: str, pool: Sequence[Any], none_percent: int) -> Table:
        vals = self.node(name).values or ()
        mapping = {v: self.cat_value(pool, none_percent) for v in vals[:MAX_TABLE_INPUTS]}
        default = self.cat_value(pool, 30)
        return Table(mapping, default)

    def partial_over(self, name: str, pool: Sequence[Any], tags: list[str]) -> Optional[Partial]:
        """A function defined on some of the input's values: raises (KeyError) on the others."""
        vals = list(self.node(name).values or ())[:MAX_TABLE_INPUTS]
        if not vals:
            return None
        kept = [v for v in vals if self.c.chance(70)] or vals[:1]
        if len(kept) < len(vals):
            tags.append("function raises on some inputs")
        return Partial({v: self.c.choice(pool) for v in kept})

    def _map(self, prefix: str, f: Any, inner: str, enc: str, wrap_num: bool, tags: Sequence[str] = ()) -> str:
        simplify = not self.c.chance(25)
        args = f"{f!r}, {inner}" + ("" if simplify else ", simplify=False")
        expr = rasp.Map(f, self.expr(inner), simplify=simplify)
        code = f"rasp.Map({args})"
        if wrap_num:
            expr, code = rasp.numerical(expr), f"rasp.numerical({code})"
        elif self.c.chance(10):
            expr, code = rasp.categorical(expr), f"rasp.categorical({code})"
        # The Map's real function and input: fused with an inner Map when simplify applies.
        g = expr.f
        src = self.node(self.name_of[id(expr.inner)])
        outs: Optional[list] = None
        maybe_none = src.maybe_none
        tagset = list(tags)
        if self.node(inner).maybe_none:
            tagset.append("map over maybe-None")
        if src.values is not None:
            outs = []
            for v in src.values:
                ok, o = _apply(g, v)
                if not ok:  # the compiler leaves it out of the table; keep generating
                    continue
                if o is None:
                    maybe_none = True
                else:
                    outs.append(o)
            if len(_number_types(_dedup(outs))) >= 2:
                tagset.append("mixed number types")
        return self.add(prefix, expr, code, [inner], enc=enc, values=outs, maybe_none=maybe_none, tags=tagset)

    def map_cat(self, depth: int, enc: str) -> Optional[str]:
        inner = self.sop(self.child_depth(depth), CAT)
        if not self.finite(inner):
            return None
        tags: list[str] = []
        kind = self.c.weighted([("table", 14), ("partial", 2), ("str", 1), ("type", 1)])
        f: Any
        if kind == "str":
            f = Str()
            tags.append("str/type of values")
        elif kind == "type":
            f = TypeName()
            tags.append("str/type of values")
        else:
            pool = self.cat_pool()
            f = self.partial_over(inner, pool, tags) if kind == "partial" else None
            if f is None:
                f = self.table_over(inner, pool, 10)
            f = self.maybe_np(f, tags)
        return self._map("s", f, inner, CAT, wrap_num=False, tags=tags)

    def map_num_to_cat(self, depth: int, enc: str) -> Optional[str]:
        inner = self.num_operand(self.child_depth(depth))
        vals = self.node(inner).values
        tags: list[str] = []
        kind = self.c.weighted([("above", 6), ("table", 4), ("str", 1), ("type", 1)])
        f: Any
        if kind in ("str", "type"):
            f = Str() if kind == "str" else TypeName()
            tags.append("str/type of values")
        elif kind == "table" and vals and len(vals) <= 12:
            f = self.table_over(inner, self.cat_pool(), 5)
            f = self.maybe_np(f, tags)
        elif vals:
            ordered = sorted(vals)
            i = self.c.integer(0, len(ordered) - 1)
            t = ordered[i] if self.c.chance(50) or i + 1 >= len(ordered) else (ordered[i] + ordered[i + 1]) / 2
            f = Above(t)
        else:
            f = Above(self.c.choice(NUM_POOL))
        if self.is_mean(inner) and isinstance(f, Above):
            tags.append("mean -> comparison")
        return self._map("s", f, inner, CAT, wrap_num=False, tags=tags)

    def map_cat_to_num(self, depth: int, enc: str, inner: Optional[str] = None) -> Optional[str]:
        if inner is None:
            inner = self.sop(self.child_depth(depth), CAT)
        if not self.finite(inner):
            return None
        vals = self.node(inner).values or ()
        tags: list[str] = []
        f: Any
        if self.c.chance(12):  # a numerical bool (frac_prevs' `numerical(Map(lambda x: x == "x", tokens))`)
            f = Table({v: self.c.choice(BOOL_POOL) for v in vals}, False)
        elif self.c.chance(6):
            f = self.partial_over(inner, NUM_POOL, tags)
        else:
            f = Table({v: self.num_value() for v in vals}, self.num_value())
        return self._map("n", self.maybe_np(f, tags), inner, NUM, wrap_num=True, tags=tags)

    def map_num_to_num(self, depth: int, enc: str) -> Optional[str]:
        inner = self.num_operand(self.child_depth(depth))
        vals = self.node(inner).values
        tags: list[str] = []
        f: Any
        if vals and len(vals) <= 12 and self.c.chance(40):
            f = Table({v: self.num_value() for v in vals}, 0)
        elif vals and len(vals) <= 12 and self.c.chance(10):
            f = self.partial_over(inner, NUM_POOL, tags)
        else:
            f = Affine(self.c.choice(FACTORS), self.c.choice(NUM_POOL))
        return self._map("n", self.maybe_np(f, tags), inner, NUM, wrap_num=True, tags=tags)

    # SequenceMaps -------------------------------------------------------------
    def sequence_map(self, depth: int, enc: str) -> Optional[str]:
        c = self.c
        a = self.sop(self.child_depth(depth), None)
        b = a if c.chance(10) else self.sop(self.child_depth(depth), None)
        va, vb = self.node(a).values, self.node(b).values
        if va is None or vb is None or not va or not vb or len(va) * len(vb) > MAX_TABLE_INPUTS * 2:
            return None
        tags: list[str] = []
        f: Any
        if _all_numbers(va + vb) and c.chance(10):
            f = FloorDiv(c.choice((12, 7, -6)))
            if any(x == y for x in va for y in vb):
                tags.append("function raises on some inputs")
        elif enc == CAT and c.chance(15):
            f = Pair()
        elif enc == CAT:
            pool = self.cat_pool()
            f = Table2({(x, y): self.cat_value(pool, 10) for x in va for y in vb}, self.cat_value(pool, 30))
        else:
            f = Table2({(x, y): self.num_value() for x in va for y in vb}, self.num_value())
        if not isinstance(f, Pair):
            f = self.maybe_np(f, tags)
        expr: rasp.SOp = rasp.SequenceMap(f, self.expr(a), self.expr(b))
        code = f"rasp.SequenceMap({f!r}, {a}, {b})"
        if enc == NUM:
            expr, code = rasp.numerical(expr), f"rasp.numerical({code})"
        results = [_apply(f, x, y) for x, y in ([(x, x) for x in va] if a == b else [(x, y) for x in va for y in vb])]
        outs = [o for ok, o in results if ok]
        maybe_none = self.node(a).maybe_none or self.node(b).maybe_none or any(o is None for o in outs)
        if len(_number_types(_dedup(outs))) >= 2:
            tags.append("mixed number types")
        if self.node(a).maybe_none or self.node(b).maybe_none:
            tags.append("map over maybe-None")
        return self.add("s" if enc == CAT else "n", expr, code, [a, b], enc=enc, values=outs, maybe_none=maybe_none,
                        tags=tags)

    def _lsm(self, a: str, b: str, fa: Any, fb: Any, tags: Sequence[str] = ()) -> str:
        expr = rasp.numerical(rasp.LinearSequenceMap(self.expr(a), self.expr(b), fa, fb))
        code = f"rasp.numerical(rasp.LinearSequenceMap({a}, {b}, {fa!r}, {fb!r}))"
        va, vb = self.node(a).values, self.node(b).values
        outs = None
        if va is not None and vb is not None and len(va) * len(vb) <= 4 * MAX_TRACKED_VALUES:
            outs = [fa * x + fb * y for x, y in ([(x, x) for x in va] if a == b else [(x, y) for x in va for y in vb])]
        return self.add("n", expr, code, [a, b], enc=NUM, values=outs,
                        maybe_none=self.node(a).maybe_none or self.node(b).maybe_none, tags=tags)

    def linear_sequence_map(self, depth: int, enc: str) -> Optional[str]:
        c = self.c
        a = self.num_operand(self.child_depth(depth))
        b = a if c.chance(15) else self.num_operand(self.child_depth(depth))
        return self._lsm(a, b, c.choice(FACTORS), c.choice(FACTORS))

    def linear_sequence_map_of_means(self, depth: int, enc: str) -> Optional[str]:
        """fa * mean(x) + fb * mean(y), often over one selector (frac_prevs-like arithmetic of means)."""
        c = self.c
        if depth < 2:
            return None
        a = self.aggregate_num(depth - 1, NUM)
        if a is None:
            return None
        if c.chance(20):
            b = a
        elif c.chance(60):  # another mean over the same selector
            sel = self.node(a).children[0]
            b = self.aggregate_num(depth - 1, NUM, selector=sel) or self.num_operand(self.child_depth(depth))
        else:
            b = self.num_operand(self.child_depth(depth))
        fa, fb = c.choice(MEAN_FACTORS), c.choice(MEAN_FACTORS)
        return self._lsm(a, b, fa, fb, tags=["linear_sequence_map of means"])

    def linear_sequence_map_cat(self, depth: int, enc: str) -> Optional[str]:
        """A categorical LinearSequenceMap (a plain table to the compiler) over numeric categorical s-ops."""
        c = self.c
        a = self.sop(self.child_depth(depth), CAT)
        b = self.sop(self.child_depth(depth), CAT)
        va, vb = self.node(a).values, self.node(b).values
        if va is None or vb is None or not _all_numbers(va + vb) or len(va) * len(vb) > MAX_TABLE_INPUTS * 2:
            return None
        fa, fb = c.choice(FACTORS[:4] + (3,)), c.choice(FACTORS[:4] + (3,))
        expr = rasp.LinearSequenceMap(self.expr(a), self.expr(b), fa, fb)
        code = f"rasp.LinearSequenceMap({a}, {b}, {fa!r}, {fb!r})"
        return self.add("s", expr, code, [a, b], enc=CAT, values=[fa * x + fb * y for x in va for y in vb],
                        maybe_none=self.node(a).maybe_none or self.node(b).maybe_none)

    # Selectors ------------------------------------------------------------------
    def predicate(self, keys: str, queries: str) -> tuple[Any, str, list[str]]:
        c = self.c
        kn, qn = self.node(keys), self.node(queries)
        kv, qv = kn.values or (), qn.values or ()
        options = COMPARISONS if _comparable(kv, qv) else EQUALITY_COMPARISONS
        if (kn.maybe_none or qn.maybe_none) and c.chance(65):  # a predicate that accepts None
            kind = c.weighted([("none_aware", 3), ("raw", 2), ("pred", 2)])
            if kind == "pred" and kv and qv and (len(kv) + 1) * (len(qv) + 1) <= MAX_TABLE_INPUTS * 2:
                ks = list(kv) + ([None] if kn.maybe_none else [])
                qs = list(qv) + ([None] if qn.maybe_none else [])
                p: Any = Pred([(k, q) for q in qs for k in ks if c.chance(40)], none_ok=True)
            elif kind == "raw":
                p = Raw(c.choice(options).name if c.chance(30) else c.choice(("EQ", "NEQ")))
            else:
                p = NoneAware(c.choice(options).name, key_none=c.chance(50), query_none=c.chance(50))
            return p, repr(p), ["predicate accepts None"]
        if c.chance(30) and kv and qv and len(kv) * len(qv) <= MAX_TABLE_INPUTS * 2:
            pairs = [(k, q) for q in qv for k in kv if c.chance(40)]
            p = Pred(pairs)
            return p, repr(p), []
        if _all_ints(kv + qv) and kv and qv and not qn.maybe_none and c.chance(10):
            p = Shift(c.choice((1, -1, 2)))
            return p, repr(p), []
        cmp = c.choice(options)
        return cmp, f"rasp.Comparison.{cmp.name}", []

    def maybe_none_sop(self, depth: int) -> Optional[str]:
        """An s-op that can be None (reused when one exists, else a shifted aggregate), of depth <= `depth`."""
        cands = [n for n in self.order if not self.nodes[n].is_selector and self.nodes[n].maybe_none
                 and self.nodes[n].enc == CAT and self.nodes[n].depth <= depth]
        if cands and self.c.chance(60):
            return self.c.choice(cands[::-1])
        if depth >= 1 and self.budget > 0 and self.allows("aggregate"):
            self.budget -= 1
            return self.shifted(depth, CAT)
        return None

    def select(self, depth: int, keys: Optional[str] = None, queries: Optional[str] = None) -> str:
        c = self.c
        depth = max(depth, 1)
        if keys is None and queries is None and self.causal and c.chance(30):
            keys = queries = "rasp.indices"  # ~Select(indices, indices, GT) is LEQ: rewrites before the causal check
        if keys is None and queries is None and c.chance(30):
            none_sop = self.maybe_none_sop(self.child_depth(depth))
            if none_sop is not None:
                if c.chance(50):
                    keys = none_sop
                else:
                    queries = none_sop
        if keys is None and queries is None and NUM in self.encodings and c.chance(10):
            keys = self.num_operand(self.child_depth(depth))
        if keys is None:
            keys = self.sop(self.child_depth(depth), None)
        if queries is None:
            queries = keys if c.chance(20) else self.sop(self.child_depth(depth), None)
        pred, pcode, tags = self.predicate(keys, queries)
        expr = rasp.Select(self.expr(keys), self.expr(queries), pred)
        return self.add("sel", expr, f"rasp.Select({keys}, {queries}, {pcode})", [keys, queries], selector=True,
                        tags=tags)

    def unique_select(self, depth: int) -> str:
        """Select(indices, q, EQ): every query selects at most one position (depth <= `depth`)."""
        L = self.max_seq_len
        if depth <= 1:
            q = "rasp.tokens" if _all_ints(self.vocab) and self.c.chance(50) else "rasp.indices"
        else:
            q = self.sop(self.c.integer(0, depth - 2), CAT)
            qv = self.node(q).values or ()
            if not (qv and _all_ints(qv)):
                if not self.finite(q) or not self.allows("map"):
                    q = "rasp.indices"
                else:  # map the query onto positions
                    f = Table({v: self.cat_value(range(L), 10) for v in qv}, None)
                    q = self._map("s", f, q, CAT, wrap_num=False)
        expr = rasp.Select(rasp.indices, self.expr(q), rasp.Comparison.EQ)
        return self.add("sel", expr, f"rasp.Select(rasp.indices, {q}, rasp.Comparison.EQ)", ["rasp.indices", q],
                        selector=True)

    def selector(self, depth: int, unique: bool = False) -> str:
        c = self.c
        depth = max(depth, 1)
        if unique:
            if depth >= 3 and self.allows("selector_and") and c.chance(25):
                fst = self.unique_select(depth - 1)
                snd = self.selector(depth - 1)
                return self.combine("and", fst, snd)
            return self.unique_select(depth)
        if self.budget <= 0 or self.sel_budget <= 0:
            return self.select(depth)
        # a combinator's operands stay at this depth: selector trees grow without deepening the program
        kind = self.pick([("select", 4), ("and", 2), ("or", 2), ("not", 2)])
        if kind == "select":
            return self.select(depth)
        self.sel_budget -= 1
        sub_depth = depth if c.chance(70) or depth <= 1 else depth - 1
        if kind == "not":
            return self.combine("not", self.selector(sub_depth), None)
        fst = self.selector(sub_depth)
        fst_expr = self.node(fst).expr
        shared = None
        if isinstance(fst_expr, rasp.Select):
            k, q = self.name_of.get(id(fst_expr.keys)), self.name_of.get(id(fst_expr.queries))
            shared = (k, q) if k is not None and q is not None else None
        if shared is not None and c.chance(40):
            # share keys or queries with the first select (the simplifying combinators merge those)
            k, q = shared
            snd = self.select(sub_depth, keys=k) if c.chance(50) else self.select(sub_depth, queries=q)
        else:
            snd = self.selector(sub_depth)
        return self.combine(kind, fst, snd)

    def combine(self, kind: str, fst: str, snd: Optional[str]) -> str:
        form = self.c.weighted([("function", 4), ("raw", 3), ("operator", 3)])
        a = self.expr(fst)
        if kind == "not":
            if form == "raw":
                expr, code = rasp.SelectorNot(a), f"rasp.SelectorNot({fst})"
            elif form == "operator":
                expr, code = ~a, f"~{fst}"
            else:
                expr, code = rasp.selector_not(a), f"rasp.selector_not({fst})"
            return self.add("sel", expr, code, [fst], selector=True)
        assert snd is not None
        b = self.expr(snd)
        cls, fn, op = ((rasp.SelectorAnd, rasp.selector_and, "&") if kind == "and"
                       else (rasp.SelectorOr, rasp.selector_or, "|"))
        if form == "raw":
            expr, code = cls(a, b), f"rasp.{cls.__name__}({fst}, {snd})"
        elif form == "operator":
            expr, code = (a & b if kind == "and" else a | b), f"{fst} {op} {snd}"
        else:
            expr, code = fn(a, b), f"rasp.{fn.__name__}({fst}, {snd})"
        return self.add("sel", expr, code, [fst, snd], selector=True)

    # Aggregates / widths -------------------------------------------------------
    def aggregate_cat(self, depth: int, enc: str) -> Optional[str]:
        c = self.c
        sel = self.selector(self.child_depth(depth), unique=c.chance(70))
        src = self.sop(self.child_depth(depth), CAT)
        default = None if c.chance(75) else (1e9 if c.chance(10) else self.cat_value(self.cat_pool(), 0))
        expr = rasp.Aggregate(self.expr(sel), self.expr(src), default=default)
        code = f"rasp.Aggregate({sel}, {src}" + ("" if default is None else f", default={default!r}") + ")"
        if c.chance(15):
            expr, code = rasp.categorical(expr), f"rasp.categorical({code})"
        vals = self.node(src).values
        outs = None if vals is None else [*vals, *_equal_means(vals, self.max_seq_len), default]
        tags = ["large default"] if isinstance(default, float) and abs(default) >= 1e6 else []
        return self.add("s", expr, code, [sel, src], enc=CAT, values=outs, maybe_none=True, tags=tags)

    def shifted(self, depth: int, enc: str) -> Optional[str]:
        """Aggregate(Select(indices, indices, Shift(d)), x): the value d positions back (None at the edge)."""
        c = self.c
        d = c.choice((1, 1, -1, 2))
        src = self.sop(self.child_depth(depth), CAT) if c.chance(50) else "rasp.tokens"
        sel = self.add("sel", rasp.Select(rasp.indices, rasp.indices, Shift(d)),
                       f"rasp.Select(rasp.indices, rasp.indices, Shift({d!r}))", ["rasp.indices", "rasp.indices"],
                       selector=True)
        expr = rasp.Aggregate(self.expr(sel), self.expr(src))
        return self.add("s", expr, f"rasp.Aggregate({sel}, {src})", [sel, src], enc=CAT,
                        values=self.node(src).values, maybe_none=True, tags=["shifted aggregate"])

    def aggregate_num(self, depth: int, enc: str, selector: Optional[str] = None) -> Optional[str]:
        c = self.c
        src = self.sop(self.child_depth(depth), NUM)
        vals = self.node(src).values
        if vals is None or len(vals) > 12:
            return None
        sel = selector if selector is not None else self.selector(self.child_depth(depth))
        default = c.weighted(NUM_DEFAULTS)
        expr = rasp.numerical(rasp.Aggregate(self.expr(sel), self.expr(src), default=default))
        code = f"rasp.numerical(rasp.Aggregate({sel}, {src}, default={default!r}))"
        means = _possible_means(vals, self.max_seq_len, MAX_TRACKED_VALUES)
        outs = None if means is None else [*means, default]
        tags = ["large default"] if default is not None and abs(default) >= 1e6 else []
        return self.add("n", expr, code, [sel, src], enc=NUM, values=outs, maybe_none=default is None, tags=tags)

    def selector_width(self, depth: int, enc: str) -> Optional[str]:
        sel = self.selector(depth - 1)
        expr: rasp.SOp = rasp.SelectorWidth(self.expr(sel))
        code = f"rasp.SelectorWidth({sel})"
        if enc == NUM:
            expr, code = rasp.numerical(expr), f"rasp.numerical({code})"
        return self.add("s" if enc == CAT else "n", expr, code, [sel], enc=enc,
                        values=range(self.max_seq_len + 1))

    # -- the program -------------------------------------------------------------
    def read_tokens(self, root: str) -> str:
        """Makes the output depend on the input (a program that ignores it is refused, rightly)."""
        node = self.node(root)
        if node.reads_tokens:
            return root
        if node.enc == NUM and not self.allows("map", "linear_sequence_map"):
            return "rasp.tokens"  # the ops allowed cannot make this program read its input
        if node.enc == CAT and not self.allows("sequence_map"):
            return "rasp.tokens"
        if node.enc == NUM:
            tok = self.map_cat_to_num(1, NUM, inner="rasp.tokens")
            assert tok is not None
            return self._lsm(root, tok, self.c.choice(FACTORS[:4]), self.c.choice(FACTORS[:4]))
        f = Pair()
        expr = rasp.SequenceMap(f, self.expr(root), rasp.tokens)
        vals = node.values
        outs = None if vals is None else [(x, t) for x in vals for t in self.vocab]
        return self.add("s", expr, f"rasp.SequenceMap(Pair(), {root}, rasp.tokens)", [root, "rasp.tokens"],
                        enc=CAT, values=outs, maybe_none=node.maybe_none)

    def generate(self) -> GeneratedProgram:
        self.setup()
        depth = self.c.integer(1, self.max_depth)
        self.budget = self.c.integer(depth, depth + 8)
        self.sel_budget = self.c.integer(1, 6)
        enc = self.encoding()
        root = self.sop(depth, enc)
        for _ in range(2):  # a program must read its input: try again, then make it read tokens
            if self.node(root).reads_tokens:
                break
            root = self.sop(depth, enc)
        root = self.read_tokens(root)
        gp = GeneratedProgram(self.expr(root), self.vocab, self.max_seq_len, self.causal, root, self.nodes)
        return gp.with_root(root)


# The knob ops each choice needs, by option (a method's name, or a string); others need none.
_NEEDS: dict[str, tuple[str, ...]] = {
    "map_cat": ("map",), "map_num_to_cat": ("map", "numerical"), "map_cat_to_num": ("map",), "map_num_to_num": ("map",),
    "sequence_map": ("sequence_map",), "linear_sequence_map": ("linear_sequence_map",),
    "linear_sequence_map_cat": ("linear_sequence_map",),
    "linear_sequence_map_of_means": ("linear_sequence_map", "aggregate"), "aggregate_cat": ("aggregate",),
    "aggregate_num": ("aggregate",), "shifted": ("aggregate",), "selector_width": ("selector_width",),
    "length": ("length",), "full": ("full",), "constant": ("constant_sop",), "cat_map": ("map",),
    "and": ("selector_and",), "or": ("selector_or",), "not": ("selector_not",),
}


# --------------------------------------------------------------------------- knobs


class KnobsError(RaspcError):
    """Knobs that describe no program (an unknown op, an empty range, ...)."""


OPS = ("map", "sequence_map", "linear_sequence_map", "aggregate", "selector_width", "selector_and", "selector_or",
       "selector_not", "full", "constant_sop", "length")
"""The operations a knob can allow or forbid (tokens, indices and Select are always there)."""

VOCAB_KINDS = ("str", "int", "float")


@dataclass(frozen=True)
class Knobs:
    """What the random programs may look like. The defaults are the fuzzer's distribution.

    - `max_depth`: the longest chain of operations (a selector and/or/not tree counts as one);
    - `seq_len`: max_seq_len is drawn from this inclusive (lo, hi) range;
    - `vocab_kinds`: the kinds of vocabulary drawn from ("str", "int", "float");
    - `vocab_size`: None for the built-in vocabularies of 2-4 tokens (with their mixed floats and
      negative ints), or an inclusive (lo, hi) range of plain vocabularies (a, b, c...; 0, 1, 2...;
      0.25, 0.75, 1.25...);
    - `encodings`: the encodings the generator may pick for an s-op. ("categorical",) makes programs
      with no numerical s-op at all; ("numerical",) makes numerical outputs (categorical s-ops then
      appear only where an operation needs one: tokens, the input of a numerical Map);
    - `ops`: the operations allowed (a subset of OPS);
    - `causal_share`: the share of programs compiled as causal models (0..1, in steps of 0.01).
    """

    max_depth: int = 6
    seq_len: tuple[int, int] = (2, 6)
    vocab_kinds: tuple[str, ...] = VOCAB_KINDS
    vocab_size: Optional[tuple[int, int]] = None
    encodings: tuple[str, ...] = (CAT, NUM)
    ops: tuple[str, ...] = OPS
    causal_share: float = 0.15

    def __post_init__(self) -> None:
        def bad(message: str) -> KnobsError:
            return KnobsError(f"random program knobs: {message}")

        if not isinstance(self.max_depth, int) or self.max_depth < 1:
            raise bad(f"max_depth must be an integer >= 1, got {self.max_depth!r}")
        lo, hi = _range(self.seq_len, "seq_len", bad)
        if lo < 1:
            raise bad(f"seq_len must start at 1 or more, got {self.seq_len!r}")
        if self.vocab_size is not None:
            vlo, vhi = _range(self.vocab_size, "vocab_size", bad)
            if vlo < 1 or vhi > 1000:
                raise bad(f"vocab_size must lie within 1..1000, got {self.vocab_size!r}")
        for name, given, known in (("vocab_kinds", self.vocab_kinds, VOCAB_KINDS), ("encodings", self.encodings, (CAT, NUM)),
                                   ("ops", self.ops, OPS)):
            unknown = [x for x in given if x not in known]
            if unknown:
                raise bad(f"unknown {name} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
            if not given and name != "ops":
                raise bad(f"{name} must not be empty")
        if not (isinstance(self.causal_share, (int, float)) and 0 <= self.causal_share <= 1):
            raise bad(f"causal_share must lie within 0..1, got {self.causal_share!r}")
        # canonical forms, so equal knobs compare (and print) equal
        object.__setattr__(self, "seq_len", (lo, hi))
        if self.vocab_size is not None:
            object.__setattr__(self, "vocab_size", tuple(self.vocab_size))
        for name, known in (("vocab_kinds", VOCAB_KINDS), ("encodings", (CAT, NUM)), ("ops", OPS)):
            object.__setattr__(self, name, tuple(k for k in known if k in getattr(self, name)))

    @property
    def causal_percent(self) -> int:
        return round(self.causal_share * 100)

    def as_dict(self) -> dict[str, Any]:
        """The knobs as JSON-ready values."""
        return {"max_depth": self.max_depth, "seq_len": list(self.seq_len), "vocab_kinds": list(self.vocab_kinds),
                "vocab_size": None if self.vocab_size is None else list(self.vocab_size),
                "encodings": list(self.encodings), "ops": list(self.ops), "causal_share": self.causal_share}


def _range(value: Any, name: str, bad: Callable[[str], Exception]) -> tuple[int, int]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise bad(f"{name} must be a (lo, hi) pair, got {value!r}") from None
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
        raise bad(f"{name} must be integers lo <= hi, got {value!r}")
    return lo, hi


def _plain_vocab(kind: str, n: int) -> list:
    if kind == "int":
        return list(range(n))
    if kind == "float":
        return [0.25 + 0.5 * i for i in range(n)]  # binary fractions: exact in float32 too
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [letters[i] if n <= len(letters) else f"t{i}" for i in range(n)]


def _seq_len_range(max_seq_len: int | tuple[int, int], min_seq_len: Optional[int]) -> tuple[int, int]:
    if isinstance(max_seq_len, tuple):
        return max_seq_len[0], max_seq_len[1]
    return (2 if min_seq_len is None else min_seq_len), max_seq_len


def generate_program(rng: random.Random | Chooser, max_depth: int = 6, max_seq_len: int | tuple[int, int] = 6,
                     min_seq_len: Optional[int] = None, knobs: Optional[Knobs] = None) -> GeneratedProgram:
    """A random program from a seeded `random.Random` (or any Chooser); max_seq_len is drawn from
    `min_seq_len` (default 2)..`max_seq_len` (or from a (lo, hi) range). With `knobs`, those give
    every setting instead (max_depth and max_seq_len are then ignored)."""
    chooser = rng if isinstance(rng, Chooser) else RandomChooser(rng)
    if knobs is None:
        lo, hi = _seq_len_range(max_seq_len, min_seq_len)
        knobs = Knobs(max_depth=max(1, max_depth), seq_len=(max(1, min(lo, hi)), max(2, hi)))
    return _Generator(chooser, knobs).generate()


def program_rng(seed: int | str, index: int) -> random.Random:
    """The random source of program `index` of `seed`: independent of every other program."""
    return random.Random(f"raspc:{seed}:{index}")


def random_program(seed: int | str, index: int, knobs: Optional[Knobs] = None) -> GeneratedProgram:
    """Program `index` of `seed`: the same (seed, index, knobs) always give the same program, in any
    process, whatever was generated before."""
    return generate_program(program_rng(seed, index), knobs=knobs or Knobs())


def random_programs(seed: int | str, n: int, knobs: Optional[Knobs] = None, start: int = 0):
    """Programs `start` .. `start + n - 1` of `seed` (an iterator of GeneratedProgram)."""
    for i in range(start, start + n):
        yield random_program(seed, i, knobs)


def ir_text(module: Any, ctx: Any) -> str:
    """A module as `raspc-opt` prints it (so the text round-trips byte for byte)."""
    from io import StringIO

    from xdsl.targets.mlir import MLIRTarget

    out = StringIO()
    MLIRTarget().emit(ctx, module, out)
    return out.getvalue()


def stable_labels(program: rasp.RASPExpr) -> rasp.RASPExpr:
    """Numbers the unnamed s-ops of `program` afresh from 1, so its labels (`map_3`) and so its IR and
    model bytes do not depend on what the process built before (rasp numbers expressions
    process-wide, on first use). Returns `program`."""
    import itertools

    for e in _sub_exprs(program):
        e.__dict__.pop("_unique_id", None)
    rasp.RASPExpr._ids = itertools.count(1)
    return program


# --------------------------------------------------------------------------- inputs


def random_inputs(gp: GeneratedProgram, rng: random.Random, n: int = 20) -> list[list[Any]]:
    """n inputs: lengths 1..max_seq_len (always one of length 1 and one of max_seq_len), favouring the
    lengths of the program's ConstantSOps (check_length=True: other lengths do not evaluate); every
    fourth draws its tokens from two of the vocabulary only (repeats: categorical means of equal values)."""
    L = gp.max_seq_len
    lengths = [1, L]
    for i in range(n - 2):
        if gp.constant_lengths and i % 3 != 2:
            lengths.append(rng.choice(gp.constant_lengths))
        else:
            lengths.append(rng.randint(1, L))
    out = []
    for j, k in enumerate(lengths):
        pool = rng.sample(gp.vocab, min(2, len(gp.vocab))) if j % 4 == 3 else gp.vocab
        out.append([rng.choice(pool) for _ in range(k)])
    return out


def _sub_exprs(program: rasp.RASPExpr) -> list[rasp.RASPExpr]:
    out, seen, stack = [], set(), [program]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        stack.extend(e.children)
    return out



__all__ = [
    *CALLABLES, "CALLABLES", "SCRIPT_IMPORT", "GeneratedProgram", "Node", "Chooser", "RandomChooser", "Knobs",
    "KnobsError", "OPS", "VOCAB_KINDS", "generate_program", "random_program", "random_programs", "program_rng",
    "random_inputs", "stable_labels", "ir_text",
]
