"""Program sets: what `compile-many` compiles, named by one SOURCE string.

    random:seed=0,n=1000[,max_seq_len=4-16,depth=6,causal=0.15,vocab=str+int,vocab_size=2-8,
                         encodings=categorical,ops=map+aggregate+...]
    lib:*   lib:make_hist   lib:make_hist+make_sort
    path/to/programs.py     a PROGRAMS dict, a `programs()` generator, or one `program`
    path/to/programs.py:FUNCTION
    path/to/file.mlir       IR at any level (vocab and max_seq_len come from the module)
    path/to/directory/      every *.py and *.mlir file in it (sorted, not recursive)

A set is a list of `ProgramSpec`s: small, picklable descriptions that a worker process (or a Ray
worker on another machine) turns back into the program. Python files travel as their text, so a
worker needs no shared filesystem; random programs travel as (seed, index, knobs).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from raspc.errors import RaspcError
from raspc.random_programs import OPS, Knobs, KnobsError


class DatasetError(RaspcError):
    """A program set or dataset directory that cannot be used (bad SOURCE, another dataset in OUT...)."""


@dataclass(frozen=True)
class ProgramSpec:
    """One program of a set. `kind` is "random", "lib", "python" or "mlir"; `ref` says where it
    comes from ("random:seed=0:17", "lib:make_hist", "progs.py:PROGRAMS['sort']")."""

    id: str
    kind: str
    ref: str
    seed: Optional[int] = None
    index: Optional[int] = None
    knobs: Optional[Knobs] = None
    name: Optional[str] = None  # lib: the LIBRARY name; python: the PROGRAMS key / function
    text: Optional[str] = None  # python / mlir: the file's text
    filename: Optional[str] = None
    vocab: Optional[tuple] = None
    max_seq_len: Optional[int] = None
    causal: bool = False


@dataclass(frozen=True)
class ProgramSet:
    """The programs of one SOURCE, in a fixed order, and what identifies the set (a dataset
    directory holds one set: resuming with another is refused; `n` may grow)."""

    source: str
    specs: tuple[ProgramSpec, ...]
    identity: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[ProgramSpec]:
        return iter(self.specs)


RANDOM_ID_WIDTH = 6


def _safe(text: str) -> str:
    """A file-name-safe id part."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return out or "program"


# --------------------------------------------------------------------------- random:


def _int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"random: {key} must be an integer, got '{text}'") from None


def _int_range(key: str, text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not sep:
        n = _int(key, text)
        return n, n
    return _int(key, lo), _int(key, hi)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in re.split(r"[+|/]", text) if x)


RANDOM_KEYS = (
    "seed",
    "n",
    "start",
    "max_seq_len",
    "depth",
    "causal",
    "vocab",
    "vocab_size",
    "encodings",
    "ops",
)


def parse_random(text: str) -> tuple[int, int, int, Knobs]:
    """`seed=0,n=1000,max_seq_len=4-16,...` -> (seed, n, start, knobs)."""
    items: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise DatasetError(f"random: expected key=value, got '{part}' (keys: {', '.join(RANDOM_KEYS)})")
        if key not in RANDOM_KEYS:
            raise DatasetError(f"random: unknown key '{key}'; known: {', '.join(RANDOM_KEYS)}")
        items[key] = value.strip()
    if "n" not in items:
        raise DatasetError("random: give the number of programs, e.g. random:seed=0,n=1000")
    seed, n, start = (
        _int("seed", items.get("seed", "0")),
        _int("n", items["n"]),
        _int("start", items.get("start", "0")),
    )
    if n < 0 or start < 0:
        raise DatasetError("random: n and start must be >= 0")
    kw: dict[str, Any] = {}
    if "max_seq_len" in items:
        kw["seq_len"] = _int_range("max_seq_len", items["max_seq_len"])
    if "depth" in items:
        kw["max_depth"] = _int("depth", items["depth"])
    if "causal" in items:
        try:
            kw["causal_share"] = float(items["causal"])
        except ValueError:
            raise DatasetError(f"random: causal is a share 0..1, got '{items['causal']}'") from None
    if "vocab" in items:
        kw["vocab_kinds"] = _names(items["vocab"])
    if "vocab_size" in items:
        kw["vocab_size"] = _int_range("vocab_size", items["vocab_size"])
    if "encodings" in items:
        kw["encodings"] = _names(items["encodings"])
    if "ops" in items:
        ops = _names(items["ops"])
        kw["ops"] = (
            tuple(o for o in OPS if o not in _names(items["ops"][1:]))
            if items["ops"].startswith("-")
            else ops
        )
    try:
        knobs = Knobs(**kw)
    except KnobsError as exc:
        raise DatasetError(str(exc)) from None
    return seed, n, start, knobs


def random_set(source: str, seed: int, n: int, start: int, knobs: Knobs) -> ProgramSet:
    specs = tuple(
        ProgramSpec(
            id=f"random-{seed}-{i:0{RANDOM_ID_WIDTH}d}",
            kind="random",
            ref=f"random:seed={seed}:{i}",
            seed=seed,
            index=i,
            knobs=knobs,
        )
        for i in range(start, start + n)
    )
    return ProgramSet(source, specs, {"kind": "random", "seed": seed, "knobs": knobs.as_dict()})


# --------------------------------------------------------------------------- lib:


def lib_set(
    source: str, names: str, vocab: Optional[Sequence[Any]], max_seq_len: Optional[int], causal: bool
) -> ProgramSet:
    from raspc.lib import LIBRARY, LIBRARY_EXAMPLE_VOCAB

    wanted = list(LIBRARY) if names in ("*", "") else list(_names(names))
    unknown = [n for n in wanted if n not in LIBRARY]
    if unknown:
        raise DatasetError(
            f"unknown library program(s) {', '.join(unknown)}; known: {', '.join(sorted(LIBRARY))}"
        )
    specs = []
    for name in wanted:
        v, n = LIBRARY_EXAMPLE_VOCAB.get(name, (["a", "b", "c"], 5))
        specs.append(
            ProgramSpec(
                id=f"lib-{name}",
                kind="lib",
                ref=f"lib:{name}",
                name=name,
                vocab=tuple(vocab if vocab is not None else v),
                max_seq_len=max_seq_len if max_seq_len is not None else n,
                causal=causal,
            )
        )
    return ProgramSet(
        source,
        tuple(specs),
        {
            "kind": "lib",
            "names": wanted,
            "vocab": _jsonable(vocab),
            "max_seq_len": max_seq_len,
            "causal": causal,
        },
    )


# --------------------------------------------------------------------------- files


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}': {exc.strerror or exc}") from None


def python_entries(text: str, filename: str, function: Optional[str]) -> list[tuple[str, dict]]:
    """Executes a program file and lists its programs as (key, entry) pairs, where an entry has
    `program` and maybe `vocab`, `max_seq_len`, `causal` (used by the driver to list the set, and by
    a worker to build one program)."""
    from raspc import rasp

    env: dict[str, Any] = {
        "__name__": "_raspc_dataset_" + _safe(os.path.basename(filename)),
        "__file__": filename,
    }
    try:
        exec(compile(text, filename, "exec"), env)  # noqa: S102 - the user's own program file
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise DatasetError(f"running '{filename}' failed: {type(exc).__name__}: {exc}") from None
    defaults = {
        k: env[v]
        for k, v in (
            ("vocab", "vocab"),
            ("max_seq_len", "max_seq_len"),
            ("causal", "causal"),
            ("vocab", "VOCAB"),
            ("max_seq_len", "MAX_SEQ_LEN"),
            ("causal", "CAUSAL"),
        )
        if v in env
    }

    def entry(key: str, value: Any) -> tuple[str, dict]:
        if isinstance(value, rasp.SOp):
            return key, {**defaults, "program": value}
        if isinstance(value, dict) and isinstance(value.get("program"), rasp.SOp):
            return key, {**defaults, **value}
        if isinstance(value, tuple) and value and isinstance(value[0], rasp.SOp):
            return key, {**defaults, **dict(zip(("program", "vocab", "max_seq_len", "causal"), value))}
        raise DatasetError(
            f"{filename}: program '{key}' is a {type(value).__name__}, not a RASP s-op, a "
            "(program, vocab, max_seq_len[, causal]) tuple or a dict with 'program'"
        )

    if function is not None or "PROGRAMS" not in env and callable(env.get("programs")):
        fname = function or "programs"
        fn = env.get(fname)
        if not callable(fn):
            raise DatasetError(f"{filename} defines no function '{fname}'")
        try:
            produced = fn()
            items = list(produced.items()) if isinstance(produced, dict) else list(produced)
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(
                f"calling {os.path.basename(filename)}:{fname} failed: {type(exc).__name__}: {exc}"
            ) from None
        out = []
        for i, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                out.append(entry(item[0], item[1]))
            else:
                out.append(entry(f"{fname}_{i}", item))
        return out
    if "PROGRAMS" in env:
        programs = env["PROGRAMS"]
        if not isinstance(programs, dict):
            raise DatasetError(f"{filename}: PROGRAMS must be a dict of name -> program")
        return [entry(str(k), v) for k, v in programs.items()]
    if isinstance(env.get("program"), rasp.SOp):
        return [entry("program", env["program"])]
    raise DatasetError(f"{filename} defines no PROGRAMS dict, no programs() function and no `program`")


def python_set(
    path: str, function: Optional[str], vocab, max_seq_len, causal, prefix: str = ""
) -> list[ProgramSpec]:
    text = _read(path)
    entries = python_entries(text, path, function)
    stem = _safe(os.path.splitext(os.path.basename(path))[0])
    specs = []
    for key, e in entries:
        v = vocab if vocab is not None else e.get("vocab")
        n = max_seq_len if max_seq_len is not None else e.get("max_seq_len")
        if v is None or n is None:
            raise DatasetError(
                f"{path}: program '{key}' has no vocab or max_seq_len: give them in the file "
                "(vocab = [...], max_seq_len = N, or per program) or with --vocab / --max-seq-len"
            )
        single = len(entries) == 1 and key == "program"
        pid = prefix + (stem if single else f"{stem}-{_safe(key)}")
        where = "" if single else (f":{function}" if function else "") + f"[{key!r}]"
        specs.append(
            ProgramSpec(
                id=pid,
                kind="python",
                ref=f"{os.path.basename(path)}{where}",
                name=key,
                text=text,
                filename=os.path.basename(path),
                vocab=tuple(v),
                max_seq_len=int(n),
                causal=bool(e.get("causal", causal)),
            )
        )
    return specs


def mlir_spec(path: str, prefix: str = "") -> ProgramSpec:
    stem = _safe(os.path.splitext(os.path.basename(path))[0])
    return ProgramSpec(
        id=prefix + stem,
        kind="mlir",
        ref=os.path.basename(path),
        text=_read(path),
        filename=os.path.basename(path),
    )


def _jsonable(v: Any) -> Any:
    if v is None:
        return None
    return json.loads(json.dumps(list(v), default=repr))


# --------------------------------------------------------------------------- SOURCE


def parse_source(
    source: str,
    *,
    vocab: Optional[Sequence[Any]] = None,
    max_seq_len: Optional[int] = None,
    causal: bool = False,
) -> ProgramSet:
    """The program set a SOURCE string names (see the module docstring). `vocab`, `max_seq_len` and
    `causal` apply to library programs and to Python programs that do not give their own."""
    if source.startswith("random:"):
        return random_set(source, *parse_random(source[len("random:") :]))
    if source.startswith("lib:"):
        return lib_set(source, source[len("lib:") :], vocab, max_seq_len, causal)
    identity = {
        "kind": "files",
        "source": source,
        "vocab": _jsonable(vocab),
        "max_seq_len": max_seq_len,
        "causal": causal,
    }
    if os.path.isdir(source):
        names = sorted(
            f for f in os.listdir(source) if f.endswith((".py", ".mlir")) and not f.startswith("_")
        )
        if not names:
            raise DatasetError(f"directory '{source}' holds no .py or .mlir files")
        specs: list[ProgramSpec] = []
        for f in names:
            path = os.path.join(source, f)
            specs += (
                [mlir_spec(path)]
                if f.endswith(".mlir")
                else python_set(path, None, vocab, max_seq_len, causal)
            )
        return _checked(ProgramSet(source, tuple(specs), identity))
    if source.endswith(".mlir"):
        if not os.path.isfile(source):
            raise DatasetError(f"'{source}' does not exist")
        return ProgramSet(source, (mlir_spec(source),), identity)
    path, function = source, None
    if not source.endswith(".py"):
        head, sep, tail = source.rpartition(":")
        if sep and head.endswith(".py"):
            path, function = head, tail
        else:
            raise DatasetError(
                f"cannot read SOURCE '{source}': expected random:..., lib:..., FILE.py[:FUNCTION], "
                "FILE.mlir or a directory"
            )
    if not os.path.isfile(path):
        raise DatasetError(f"'{path}' does not exist")
    return _checked(
        ProgramSet(source, tuple(python_set(path, function, vocab, max_seq_len, causal)), identity)
    )


def _checked(pset: ProgramSet) -> ProgramSet:
    seen: dict[str, str] = {}
    for s in pset.specs:
        if s.id in seen:
            raise DatasetError(
                f"two programs would get the id '{s.id}' ({seen[s.id]} and {s.ref}): rename one"
            )
        seen[s.id] = s.ref
    return pset


__all__ = [
    "DatasetError",
    "ProgramSpec",
    "ProgramSet",
    "parse_source",
    "parse_random",
    "python_entries",
    "RANDOM_KEYS",
]
