"""The `raspc` command: compile RASP programs, run exported models, list passes and programs.

    raspc compile lib:make_hist --vocab a,b,c --max-seq-len 5                 # rasp IR on stdout
    raspc compile lib:make_hist --vocab a,b,c --max-seq-len 5 --emit craft    # craft IR
    raspc compile lib:make_hist --vocab a,b,c --max-seq-len 5 -o hist.onnx    # ONNX model
    raspc compile prog.py:make_program --vocab 1,2,3 --max-seq-len 8 -o m.onnx
    raspc compile prog.mlir -o m.onnx             # IR at any level; vocab etc. from the module
    raspc run hist.onnx a b a                     # -> [2, 1, 2]
    raspc run hist.onnx a b a --residual          # + the residual stream, labels x positions
    raspc run hist.onnx --batch inputs.txt        # one sequence per line
    raspc passes                                  # every pass, and the default pipeline
    raspc lib                                     # the library programs

Every error a user can cause prints one line `raspc: error: <message>` on stderr and exits 1
(argparse usage errors exit 2). RASPC_DEBUG=1 shows the Python traceback instead.

`raspc run` needs only raspc.runtime (onnxruntime + the model's metadata), not the compiler.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from raspc.errors import RaspcError

PROG = "raspc"
IR_LEVELS = ("rasp", "craft", "tensor")
EMIT_CHOICES = (*IR_LEVELS, "onnx")


class CliError(RaspcError):
    """A bad command line argument the argparse grammar cannot express (file not found, ...)."""


# --------------------------------------------------------------------------- shared helpers


def one_line(message: str) -> str:
    """`message` with its lines joined, so an error is a single line on stderr."""
    parts = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(parts) if parts else "unknown error"


def describe_exception(exc: BaseException) -> str:
    """A one-line description of any exception (RaspcErrors speak for themselves)."""
    from xdsl.utils.exceptions import ParseError

    if isinstance(exc, RaspcError):
        return one_line(str(exc))
    if isinstance(exc, ParseError):
        return f"{exc.span.get_location()}: {one_line(exc.msg)}"
    text = one_line(str(exc)) if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def import_python_file(path: str) -> Any:
    """Imports the Python file at `path` as a fresh module; errors become CliError."""
    if not os.path.isfile(path):
        raise CliError(f"program file '{path}' does not exist")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # let the file import its neighbours
    name = "_raspc_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import '{path}': not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt) or os.environ.get("RASPC_DEBUG") == "1":
            raise
        sys.modules.pop(name, None)
        raise CliError(f"importing '{path}' failed: {describe_exception(exc)}") from None
    return module


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- compile: sources


def parse_token(text: str) -> Any:
    """A command-line token: an integer if it reads as one, else the string."""
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        return s


def parse_vocab(text: str) -> list[Any]:
    """`a,b,c` -> ["a", "b", "c"]; `1,2,3` -> [1, 2, 3]; `-2,-1,0` -> [-2, -1, 0]; empty text -> []
    (rejected later). An empty item (`a,,b`) or a repeated token is a CliError naming it."""
    if not text.strip():
        return []
    items = text.split(",")
    empty = [i + 1 for i, item in enumerate(items) if not item.strip()]
    if empty:
        raise CliError(f"--vocab '{text}' has an empty token at position {empty[0]} (of {len(items)}): "
                       "tokens are separated by single commas")
    tokens = [parse_token(item) for item in items]
    seen: set[Any] = set()
    repeated = [t for t in tokens if (type(t), t) in seen or seen.add((type(t), t))]
    if repeated:
        raise CliError(f"--vocab '{text}' names {', '.join(dict.fromkeys(repr(t) for t in repeated))} more than once")
    return tokens


def _call_program_function(fn: Callable[..., Any], what: str, max_seq_len: int | None) -> Any:
    from raspc import rasp

    if not callable(fn):
        raise CliError(f"{what} is not a function (it is a {type(fn).__name__})")
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    accepts = "max_seq_len" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if accepts and max_seq_len is not None:
        kwargs["max_seq_len"] = max_seq_len
    try:
        program = fn(**kwargs)
    except RaspcError:
        raise
    except Exception as exc:
        if os.environ.get("RASPC_DEBUG") == "1":
            raise
        raise CliError(f"calling {what} failed: {describe_exception(exc)}") from None
    if not isinstance(program, rasp.SOp):
        raise CliError(f"{what} returned {type(program).__name__}, not a RASP s-op (raspc.rasp.SOp)")
    return program


# --------------------------------------------------------------------------- lib:NAME?ARG=VALUE


@dataclass(frozen=True)
class LibParam:
    """One argument a `lib:` source takes (`lib:make_count?token=x`)."""

    name: str
    default: str
    help: str
    tokens: bool = False  # its value names input tokens, which must be in the vocabulary


def _split_pattern(text: str) -> list[Any]:
    """A token sequence: comma-separated when it has commas (`1,2,3`), else one token per character."""
    return [parse_token(t) for t in text.split(",")] if "," in text else list(text)


# name -> (parameters, builder(args, max_seq_len)); the builders call raspc.lib with Tracr's signatures.
def _lib_builders() -> dict[str, tuple[tuple[LibParam, ...], Callable[[dict[str, str], int], Any]]]:
    from raspc import lib, rasp

    def flags(token: Any) -> Any:
        return rasp.numerical(rasp.Map(lambda t: 1 if t == token else 0, rasp.tokens))

    def number(text: str, what: str) -> Any:
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                pass
        raise CliError(f"{what} takes a number, got '{text}'")

    return {
        "make_pair_balance": (
            (LibParam("open", "(", "the opening token", True), LibParam("close", ")", "the closing token", True)),
            lambda a, n: lib.make_pair_balance(rasp.tokens, parse_token(a["open"]), parse_token(a["close"]))),
        "make_shuffle_dyck": (
            (LibParam("pairs", "()", "bracket pairs, comma-separated (e.g. '(),{}')", True),),
            lambda a, n: lib.make_shuffle_dyck(a["pairs"].split(","))),
        "make_sort": (
            (LibParam("min_key", "1", "the smallest key (keys are made unique by adding i * min_key / max_seq_len)"),),
            lambda a, n: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=number(a["min_key"], "min_key"))),
        "make_frac_prevs": (
            (LibParam("token", "a", "the token whose running share is computed", True),),
            lambda a, n: lib.make_frac_prevs(flags(parse_token(a["token"])))),
        "shift_by": (
            (LibParam("offset", "1", "how many positions to shift right"),),
            lambda a, n: lib.shift_by(int(number(a["offset"], "offset")), rasp.tokens)),
        "detect_pattern": (
            (LibParam("pattern", "abc", "the token sequence to detect (characters, or comma-separated)", True),),
            lambda a, n: lib.detect_pattern(rasp.tokens, _split_pattern(a["pattern"]))),
        "make_count_less_freq": (
            (LibParam("n", "2", "count the tokens occurring fewer than n times"),),
            lambda a, n: lib.make_count_less_freq(int(number(a["n"], "n")))),
        "make_count": (
            (LibParam("token", "a", "the token to count", True),),
            lambda a, n: lib.make_count(rasp.tokens, parse_token(a["token"]))),
    }


def _lib_arguments(name: str, query: str) -> dict[str, str]:
    """`token=x&n=3` checked against the program's parameters (defaults filled in)."""
    params = _lib_builders().get(name, ((), None))[0]
    known = {p.name: p for p in params}
    args = {p.name: p.default for p in params}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"lib:{name}: argument '{item}' is not KEY=VALUE")
        if key not in known:
            takes = ", ".join(known) if known else "none"
            raise CliError(f"lib:{name} has no argument '{key}' (it takes: {takes})")
        if not value:
            raise CliError(f"lib:{name}: argument '{key}' is empty")
        args[key] = value
    return args


def _check_lib_tokens(name: str, args: dict[str, str], given: set[str], vocab: Sequence[Any]) -> None:
    """Refuses a token argument (given or default) that names a token outside the vocabulary:
    the program would silently compute on a token no input can hold."""
    params = _lib_builders().get(name, ((), None))[0]
    for p in params:
        if not p.tokens:
            continue
        value = args[p.name]
        if p.name == "pairs":
            wanted = [c for pair in value.split(",") for c in pair]
        elif p.name == "pattern":
            wanted = _split_pattern(value)
        else:
            wanted = [parse_token(value)]
        outside = [t for t in wanted if t not in vocab]
        if outside:
            how = "is given" if p.name in given else "defaults to"
            example = next((t for t in vocab), "x")
            raise CliError(
                f"lib:{name}: {p.name} {how} '{value}', but {', '.join(map(repr, dict.fromkeys(outside)))} "
                f"is not in the vocabulary {list(vocab)!r}; choose with 'lib:{name}?{p.name}={example}'"
            )


def load_lib_program(source: str, max_seq_len: int | None, vocab: Sequence[Any] | None = None) -> Any:
    """The s-op of `lib:NAME` or `lib:NAME?ARG=VALUE&...`; with `vocab`, token arguments must be in it."""
    from raspc.lib import LIBRARY

    spec = source[len("lib:"):]
    name, _, query = spec.partition("?")
    if name not in LIBRARY:
        raise CliError(f"unknown library program '{name}'; known: {', '.join(sorted(LIBRARY))}")
    builders = _lib_builders()
    args = _lib_arguments(name, query)
    given = {item.partition("=")[0] for item in query.split("&") if item}
    if vocab is not None:
        _check_lib_tokens(name, args, given, vocab)
    if name not in builders or not given:
        return _call_program_function(LIBRARY[name], f"lib:{name}", max_seq_len)
    builder = builders[name][1]
    return _call_program_function(
        lambda max_seq_len=None: builder(args, max_seq_len if max_seq_len is not None else 8), source, max_seq_len
    )


def load_program(source: str, max_seq_len: int | None, vocab: Sequence[Any] | None = None) -> Any:
    """The s-op named by `lib:NAME[?ARG=VALUE&...]` or `path/to/file.py:FUNCTION`."""
    if source.startswith("lib:"):
        return load_lib_program(source, max_seq_len, vocab)
    path, sep, func = source.rpartition(":")
    if not sep or not path.endswith(".py") or not func:
        if source.endswith(".py"):
            raise CliError(f"name the function that builds the program: '{source}:FUNCTION'")
        raise CliError(f"cannot read source '{source}': expected lib:NAME, FILE.py:FUNCTION or FILE.mlir")
    module = import_python_file(path)
    if not hasattr(module, func):
        raise CliError(f"'{path}' defines no function '{func}'")
    return _call_program_function(getattr(module, func), f"{os.path.basename(path)}:{func}", max_seq_len)


def parse_ir_file(path: str) -> Any:
    """Parses and verifies the IR in `path` (any level); errors name the file location."""
    from raspc.compiler import parse_ir

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CliError(f"cannot read '{path}': {exc.strerror or exc}") from None
    return parse_ir(text, path)


def parse_verify(text: str | None) -> bool | int | str:
    """--verify, --verify=exhaustive, --verify=N."""
    if text is None:
        return False
    if text in ("", "random"):
        return True
    if text == "exhaustive":
        return "exhaustive"
    try:
        n = int(text)
    except ValueError:
        raise CliError(f"--verify takes 'exhaustive' or a number of inputs, got '{text}'") from None
    if n < 1:
        raise CliError(f"--verify needs at least one input, got {n}")
    return n


def _ir_text(module: Any) -> str:
    """The module as `xdsl-opt` / `raspc-opt` print it (so the tools round-trip byte for byte)."""
    from io import StringIO

    from xdsl.targets.mlir import MLIRTarget

    from raspc.compiler import context

    out = StringIO()
    MLIRTarget().emit(context(), module, out)
    return out.getvalue()


def cmd_compile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc.compiler import DEFAULT_PIPELINE, compile_module, level_of, remaining_pipeline

    emit = args.emit
    if emit is None:
        emit = "onnx" if args.output and args.output.endswith(".onnx") else "rasp"
    if emit == "onnx" and not args.output:
        raise CliError("--emit onnx writes a binary file: give it with -o FILE.onnx")
    if emit != "onnx" and args.output and args.output.endswith(".onnx"):
        raise CliError(f"--emit {emit} writes IR text, not ONNX: name the output '{args.output[:-5]}.mlir', "
                       "or drop --emit to write an ONNX model")
    verify = parse_verify(args.verify)

    verifier = None
    if args.source.endswith(".mlir"):
        given = [flag for flag, value in (
            ("--vocab", args.vocab), ("--max-seq-len", args.max_seq_len), ("--bos", args.bos),
            ("--pad", args.pad), ("--causal", args.causal or None),
        ) if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} cannot be used with an IR input: its model input fixes them")
        module = parse_ir_file(args.source)
        level = level_of(module)
        if emit in IR_LEVELS and IR_LEVELS.index(emit) < IR_LEVELS.index(level):
            raise CliError(f"cannot emit {emit} IR from '{args.source}': it is already at level {level}")
        if args.pipeline is not None:
            spec = args.pipeline
        elif emit == level:
            spec = ""  # nothing to do: print the input (verified) as it is
        else:
            spec = remaining_pipeline(module)
        if verify:
            if level != "rasp":
                raise CliError("--verify compares with the rasp-level program: give a rasp-level .mlir file")
            from raspc.verification import Verifier

            verifier = Verifier(module, verify)
    else:
        missing = [flag for flag, value in (("--vocab", args.vocab), ("--max-seq-len", args.max_seq_len))
                   if value is None]
        if missing:
            parser.error(f"the following arguments are required for a program source: {', '.join(missing)}")
        from raspc.lowering.program_to_rasp import program_to_rasp

        vocab = parse_vocab(args.vocab)
        program = load_program(args.source, args.max_seq_len, vocab)
        bos = parse_token(args.bos) if args.bos is not None else "BOS"
        pad = parse_token(args.pad) if args.pad is not None else "PAD"
        module = program_to_rasp(program, vocab, args.max_seq_len, bos, pad, args.causal)
        if verify:
            from raspc.verification import Verifier

            verifier = Verifier(module, verify, program=program)
            verifier.check_program()
        if args.pipeline is not None:
            spec = args.pipeline
        else:
            spec = "" if emit == "rasp" else DEFAULT_PIPELINE  # `--emit rasp`: the program as traced
    if args.reuse_residual:
        from raspc.compiler import with_residual_reuse

        spec = with_residual_reuse(spec)

    from raspc import progress
    from raspc.report.program_graph import ProgramGraphRecorder

    recorder = ProgramGraphRecorder()
    with progress.task(f"compiling {args.source}"):
        module = compile_module(module, spec, stop_at=emit if emit in IR_LEVELS else None, verifier=verifier,
                                on_pass=recorder if emit == "onnx" else None)
    level = level_of(module)
    wanted = "tensor" if emit == "onnx" else emit
    if level != wanted:
        raise CliError(
            f"the pipeline ends at level {level}, so it cannot emit {emit}"
            + (" (ONNX export needs a tensor-level module)" if emit == "onnx" else "")
            + f"; pipeline: '{spec}'"
        )

    if emit == "onnx":
        if args.compact and args.hooks:
            raise CliError("--hooks names the transformer-shaped graph's intermediates: not with --compact")
        if args.reuse_residual and args.hooks:
            raise CliError("--hooks labels intermediates by residual direction, and with --reuse-residual a "
                           "dimension's direction depends on the layer: use one or the other")
        if args.compact:
            from raspc.lowering.compact_onnx import tensor_to_compact_onnx as export
        elif args.hooks:  # TransformerLens-named hook outputs (issue 8)
            from functools import partial

            from raspc.lowering.tensor_to_onnx import tensor_to_onnx

            export = partial(tensor_to_onnx, hooks=True)
        else:
            from raspc.lowering.tensor_to_onnx import tensor_to_onnx as export

        from raspc.report.program_graph import attach_program_graph

        with progress.task(f"writing {args.output}"):
            model = attach_program_graph(export(module), recorder.graph)
            _write(args.output, model.SerializeToString())
        progress.say(f"wrote {args.output}: {_model_summary(module)}")
        return
    text = _ir_text(module)
    if args.elide:
        from raspc.compiler import elide_dense

        text = elide_dense(text)
    if args.output:
        _write(args.output, text.encode("utf-8"))
        progress.say(f"wrote {args.output}: {level} IR, {text.count(chr(10))} lines")
    else:
        sys.stdout.write(text)


def _model_summary(module: Any) -> str:
    """'1 layer, 12 dims, 525 params' for a tensor-level module (embeddings and block weights)."""
    from raspc.dialects import tensor as T

    model = T.model_op(module)
    layers = {op.layer_int for op in model.ops if isinstance(op, T.BlockOp)}
    params = 0
    for op in model.ops:
        for name in ("token_embedding", "position_embedding", "w_q", "w_k", "w_v", "w_o", "w_in", "b_in",
                     "w_out", "b_out"):
            attr = getattr(op, name, None) if isinstance(op, (T.EmbedOp, T.BlockOp)) else None
            if attr is not None:
                params += int(np.prod(attr.get_shape()))
    n = len(layers)
    layout = model.layout
    dims = f"{len(model.residual_labels)} dims" if layout is None else \
        f"{layout.d_model} dims holding {len(layout.labels)} directions"
    return f"{n} layer{'s' if n != 1 else ''}, {dims}, {params:,} params"


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CliError(f"cannot write '{path}': {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- run


def _to_token(text: str, known: dict[Any, None]) -> Any:
    """A command-line token as the model's vocabulary holds it: the string if the vocabulary has
    it, else the int or float it spells if that is in the vocabulary, else the string."""
    if text in known:
        return text
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        try:
            if value in known:
                return value
        except TypeError:
            pass
    return text


def _sequence(model: Any, texts: Sequence[str]) -> list[Any]:
    known = dict.fromkeys(model.vocab)
    seq = [_to_token(t, known) for t in texts]
    bos = model.bos
    if not seq or not (type(seq[0]) is type(bos) and seq[0] == bos):
        seq = [bos, *seq]
    return seq


def _short(v: Any) -> Any:
    """Numerical outputs are float32: print the shortest decimal that reads back as that float32."""
    if isinstance(v, float):
        import numpy as np

        return float(str(np.float32(v)))
    return v


def _format_values(values: Sequence[Any]) -> str:
    """Python repr of the values: [2, 1, 2], ['a', None], [1.0, 0.6666667]."""
    return repr([_short(v) for v in values])


def residual_filter_names(spec: str, labels: Sequence[str]) -> list[int]:
    """The dims of the s-ops `spec` names (`sort,hist`), or [] unless every name owns a label."""
    names = [n.strip() for n in spec.split(",") if n.strip()]

    def owner(label: str, name: str) -> bool:
        return label == name or label.startswith(name + ":") or label.startswith(name + ".")

    if names and all(any(owner(lab, n) for lab in labels) for n in names):
        return [d for d, lab in enumerate(labels) if any(owner(lab, n) for n in names)]
    return []


def residual_filter(spec: str | None, labels: Sequence[str]) -> list[int]:
    """The residual dims `--residual SPEC` selects: every dim without a SPEC; else the dims of the
    s-ops named in a comma-separated list (`sort,hist`: `hist:1`, `hist.bos_share`, ...), or, when
    no label belongs to a name, the labels the SPEC matches as a regular expression (`^hist:[12]$`)."""
    import re

    if not spec:
        return list(range(len(labels)))
    named = residual_filter_names(spec, labels)
    if named:
        return named
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise CliError(f"--residual '{spec}' names no s-op and is not a regular expression ({exc})") from None
    dims = [d for d, lab in enumerate(labels) if pattern.search(lab)]
    if not dims:
        groups = sorted({lab.split(":", 1)[0].split(".", 1)[0] for lab in labels})
        raise CliError(f"--residual '{spec}' matches no residual direction; s-ops: {', '.join(groups)}")
    return dims


def _residual_table(model: Any, seq: Sequence[Any], residual: Any, dims: Sequence[int] | None = None) -> str:
    labels = list(model.residual_labels)
    heads = ["label", *[f"{i}:{tok}" for i, tok in enumerate(seq)]]
    rows = [
        [labels[d], *[f"{float(residual[pos, d]):.3f}" for pos in range(len(seq))]]
        for d in (dims if dims is not None else range(len(labels)))
    ]
    widths = [max(len(r[c]) for r in [heads, *rows]) for c in range(len(heads))]
    lines = []
    for r in [heads, *rows]:
        cells = [r[0].ljust(widths[0]), *[cell.rjust(w) for cell, w in zip(r[1:], widths[1:])]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    import numpy as np

    from raspc.runtime import OnnxModel

    if args.batch is not None and args.tokens:
        parser.error("give either TOKENs or --batch FILE, not both")
    if args.batch is not None and args.residual:
        parser.error("--residual shows one sequence: it cannot be combined with --batch")
    if not os.path.isfile(args.model):
        raise CliError(f"model file '{args.model}' does not exist")
    model = OnnxModel.load(args.model)

    if args.batch is not None:
        try:
            with open(args.batch, encoding="utf-8") as f:
                # one answer per line: an empty line is the empty sequence (BOS alone)
                lines = [line.split() for line in f.read().splitlines()]
        except OSError as exc:
            raise CliError(f"cannot read '{args.batch}': {exc.strerror or exc}") from None
        seqs = []
        for number, line in enumerate(lines, start=1):
            try:
                seqs.append(_sequence(model, line))
                model.encode(seqs[-1])
            except RaspcError as exc:
                raise CliError(f"{args.batch}:{number}: {exc}") from None
        answers = model.apply_batch(seqs)
        if args.json:
            print(json.dumps([{"input": _json_values(s[1:]), "output": _json_values(a[1:])}
                              for s, a in zip(seqs, answers)], ensure_ascii=False))
            return
        for decoded in answers:
            print(_format_values(decoded[1:]))
        return

    seq = _sequence(model, args.tokens)
    if args.residual and args.residual in map(str, model.input_vocab) and not residual_filter_names(
            args.residual, model.residual_labels):
        raise CliError(f"--residual '{args.residual}' reads a token as the filter: give the tokens first "
                       f"(raspc run MODEL {args.residual} ... --residual) or write --residual=FILTER")
    dims = residual_filter(args.residual, model.residual_labels) if args.residual is not None else None
    ids = np.array([model.encode(seq)], dtype=np.int64)
    output, residual = model.run_ids(ids)
    decoded = model.decode(output[0])
    if args.json:
        answer: dict[str, Any] = {"input": _json_values(seq[1:]), "output": _json_values(decoded[1:])}
        if dims is not None:
            answer["residual"] = {
                "positions": [f"{i}:{tok}" for i, tok in enumerate(seq)],
                "rows": {model.residual_labels[d]: [round(float(x), 6) for x in residual[0][:, d]] for d in dims},
            }
        print(json.dumps(answer, ensure_ascii=False))
        return
    print(_format_values(decoded[1:]))
    if dims is not None:
        print(_residual_table(model, seq, residual[0], dims))


def _json_values(values: Sequence[Any]) -> list[Any]:
    """Values as JSON: tuples as lists, float32 outputs as their shortest decimals, other values as
    their string when JSON has no such type."""
    out = []
    for v in values:
        v = _short(v)
        if isinstance(v, tuple):
            out.append(_json_values(v))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out.append(v)
        else:
            out.append(str(v))
    return out


# --------------------------------------------------------------------------- passes, lib


# Upstream xDSL passes that carry no docstring.
_UPSTREAM_PASS_DOCS = {
    "cse": "Common subexpression elimination (xDSL).",
    "dce": "Removes unused side-effect-free operations (xDSL).",
}


def _first_doc_line(cls: type) -> str:
    if getattr(cls, "name", None) in _UPSTREAM_PASS_DOCS and not cls.__doc__:
        return _UPSTREAM_PASS_DOCS[cls.name]
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):  # the signature @dataclass writes when there is no docstring
        doc = ""
    if not doc.strip():
        module = sys.modules.get(cls.__module__)
        doc = (module.__doc__ or "") if module is not None else ""
    for line in doc.strip().splitlines():
        if line.strip():
            text = line.strip()
            name = getattr(cls, "name", "")
            if name and text.startswith(name + ":"):
                text = text[len(name) + 1:].strip()
            return text
    return ""


def cmd_passes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc.compiler import DEFAULT_PIPELINE, available_passes

    if args.default:
        print(DEFAULT_PIPELINE)
        return
    passes = available_passes()
    width = max(len(n) for n in passes)
    for name, factory in passes.items():
        print(f"{name.ljust(width)}  {_first_doc_line(factory())}".rstrip())
    print()
    print(f"default pipeline: {DEFAULT_PIPELINE}")


def cmd_lib(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc import lib

    import shlex

    examples = getattr(lib, "LIBRARY_EXAMPLE_VOCAB", {})
    builders = _lib_builders()
    width = max(len(n) for n in lib.LIBRARY)
    for name in lib.LIBRARY:
        print(f"{name.ljust(width)}  {lib.LIBRARY_DEFAULTS.get(name, '')}")
        for p in builders.get(name, ((), None))[0]:
            print(f"{''.ljust(width)}    ?{p.name}=VALUE  {p.help} (default {p.default!r})")
        if name in examples:
            vocab, n = examples[name]
            command = ["raspc", "compile", f"lib:{name}", "--vocab", ",".join(map(str, vocab)),
                       "--max-seq-len", str(n), "-o", f"{name.removeprefix('make_')}.onnx"]
            print(f"{''.ljust(width)}    e.g. {shlex.join(command)}")
    print()
    print("Arguments: lib:NAME?ARG=VALUE (several joined by &; quote the source in a shell, e.g. "
          "'lib:make_count?token=x').")


def _raspc_onnx(path: str, needs: Sequence[str] = ("raspc.vocab", "raspc.residual_labels")) -> Any:
    """The ONNX model at `path`, refused in one line when it is not ONNX or raspc did not write it."""
    import onnx

    if not os.path.isfile(path):
        raise CliError(f"model file '{path}' does not exist")
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise CliError(f"cannot read '{path}' as an ONNX model: {describe_exception(exc)}") from None
    keys = {p.key for p in model.metadata_props}
    missing = [k for k in needs if k not in keys]
    if missing:
        raise CliError(f"'{path}' is not a raspc model: its metadata has no {', '.join(missing)} "
                       "(raspc reads only models it compiled)")
    if not any(i.name.endswith(".W_Q") or i.name.endswith(".W_in") for i in model.graph.initializer) and \
            any(p.key == "raspc.graph" for p in model.metadata_props):
        raise CliError(f"'{path}' is a compact export: compile without --compact for circuits and pictures")
    return model


def cmd_circuits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc.analysis.circuits import Circuits

    if not os.path.exists(args.model):
        _fail(f"{args.model}: no such file")
    onnx_model = _raspc_onnx(args.model, ("raspc.residual_labels",))
    circuits = Circuits.from_onnx(onnx_model)
    if args.head:
        try:
            h = circuits.head(args.head)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        if args.json:
            _print_json({"head": h.name, **{side: [list(e) for e in matrix.entries()] for side, matrix in (
                ("qk", circuits.qk_circuit(h.name)), ("ov", circuits.ov_circuit(h.name)))}})
            return
        print(f"head {h.name}: QK circuit (query direction -> key direction)")
        print(circuits.qk_circuit(h.name).to_text(limit=args.limit))
        print(f"head {h.name}: OV circuit (key direction -> written direction)")
        print(circuits.ov_circuit(h.name).to_text(limit=args.limit))
    else:
        _circuits_graph_report(onnx_model, circuits.report(), args)


def cmd_export_tl(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Writes a TransformerLens state dict (-o FILE.pt) and its config with raspc's labels (FILE.json)."""
    from raspc.analysis.weights import ModelWeights
    from raspc.export.transformer_lens import save

    weights = ModelWeights.from_onnx(_raspc_onnx(args.model, ("raspc.residual_labels",)))
    state_path, config_path = save(weights, args.output)
    print(f"wrote {state_path} (state dict, TransformerLens property format) and {config_path} (config, labels)")


def _add_export_tl_command(sub: Any) -> None:
    e = sub.add_parser(
        "export-tl",
        help="export a model for TransformerLens: a state dict + config JSON (needs the tl extra)",
        description="Writes MODEL's weights as a TransformerLens state dict (embed.W_E, blocks.0.attn.W_Q, ...; "
        "heads padded to one d_head, the readout as W_U, scales folded into W_Q) to -o FILE.pt, and the "
        "config with raspc's labels (heads, MLP neurons, residual directions, vocabulary) to FILE.json.",
    )
    e.add_argument("model", metavar="MODEL.onnx")
    e.add_argument("-o", "--output", metavar="FILE.pt", required=True, help="the state dict (FILE.json beside it)")
    e.set_defaults(func=cmd_export_tl, subparser=e)


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))


def _circuits_graph_report(onnx_model: Any, report: str, args: argparse.Namespace) -> None:
    """Issue 8: the ground-truth circuit graph and the composition scores through MLPs (as JSON
    with --json: nodes, edges, composition, precision_recall at --threshold)."""
    from raspc.analysis.circuit_graph import circuit_graph
    from raspc.analysis.composition import analysis_json, composition_scores, precision_recall
    from raspc.analysis.weights import ModelWeights

    weights = ModelWeights.from_onnx(onnx_model)
    if args.json:
        _print_json(analysis_json(weights, args.threshold))
        return
    graph = circuit_graph(weights)
    print(report)
    print("circuit graph (ground truth: what each block reads, through Q, K, V or the MLP input):")
    print(graph.to_text())
    scores = [c for c in composition_scores(weights, graph) if c.path != "direct" and (c.score or c.ground_truth)]
    if scores:
        print("composition through MLPs (score, ground truth):")
        for c in scores:
            print(f"  {c.kind}-composition {c.source} -> {c.target} via {c.mlp}: {c.score:.3f}"
                  f"{'' if c.ground_truth else '  (not in the graph)'}")
    pr = precision_recall(composition_scores(weights, graph), args.threshold)
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
    print(f"scores >= {args.threshold:g} against the graph: precision {fmt(pr.precision)}, recall {fmt(pr.recall)}")


# --------------------------------------------------------------------------- argument parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compile RASP programs into transformer weights (rasp -> craft -> tensor -> ONNX).",
        epilog="Errors print one line 'raspc: error: ...' and exit 1; RASPC_DEBUG=1 shows the traceback.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "compile",
        help="compile a program to IR (rasp, craft, tensor) or an ONNX model",
        description="Compile lib:NAME, FILE.py:FUNCTION or FILE.mlir (IR at any level). Without --emit, "
        "the output is ONNX when -o ends in .onnx, else rasp IR. IR goes to stdout or -o FILE.",
    )
    c.add_argument("source", metavar="SOURCE", help="lib:NAME | path/to/file.py:FUNCTION | path/to/file.mlir")
    c.add_argument("--vocab", help="comma-separated input tokens, e.g. a,b,c (integers become ints); "
                   "required unless SOURCE is .mlir")
    c.add_argument("--max-seq-len", type=int,
                   help="longest input (BOS not counted); required unless SOURCE is .mlir")
    c.add_argument("--bos", help="BOS token (default BOS)")
    c.add_argument("--pad", help="PAD token (default PAD)")
    c.add_argument("--causal", action="store_true", default=False,
                   help="compile a causal (decoder-masked) model")
    c.add_argument("--emit", choices=EMIT_CHOICES,
                   help="output level (default: onnx if -o ends in .onnx, else rasp)")
    c.add_argument("-p", "--pipeline", metavar="PIPELINE", default=None,
                   help="pass pipeline replacing the default one (see `raspc passes`); for an IR --emit, "
                   "the pipeline stops before the first pass that lowers below that level")
    c.add_argument("-o", "--output", metavar="FILE", help="output file (required for --emit onnx)")
    c.add_argument("--verify", nargs="?", const="", default=None, metavar="exhaustive|N",
                   help="after every pass, run the IR in its level's interpreter and compare with the program: "
                   "on 32 random inputs (shrunk to a minimal failing one), on N, or on every input up to "
                   "max_seq_len (exhaustive, when there are at most 100,000)")
    c.add_argument("--hooks", action="store_true",
                   help="also output the intermediates, named like TransformerLens hooks (blocks.0.hook_resid_pre, "
                   "blocks.0.attn.hook_pattern, ..., logits)")
    c.add_argument("--compact", action="store_true",
                   help="write the compact deployment graph (faster, same answers; `circuits` needs the default graph)")
    c.add_argument("--reuse-residual", action="store_true",
                   help="let s-ops that are no longer read give their residual dimensions to later ones "
                   "(adds the reuse-residual pass: a narrower residual, same answers)")
    c.add_argument("--elide", action="store_true",
                   help="print long dense<...> weights as dense<...> (for reading; the text then does not parse)")
    c.set_defaults(func=cmd_compile, subparser=c)

    r = sub.add_parser(
        "run",
        help="run an exported ONNX model on a token sequence",
        description="Runs MODEL.onnx on TOKENs (BOS is prepended unless given) and prints the output "
        "as a Python list without the BOS slot, e.g. [2, 1, 2]; a position without a value prints None.",
    )
    r.add_argument("model", metavar="MODEL.onnx")
    r.add_argument("tokens", metavar="TOKEN", nargs="*", help="input tokens")
    r.add_argument("--residual", nargs="?", const="", default=None, metavar="FILTER",
                   help="also print the residual stream (labels x positions); FILTER keeps some rows: "
                   "s-op names (--residual sort,hist) or a regular expression over labels (--residual '^hist:')")
    r.add_argument("--batch", metavar="FILE",
                   help="run every line of FILE (space-separated tokens) in one batch; an empty line is "
                   "the empty input")
    r.add_argument("--json", action="store_true",
                   help="print a JSON object {input, output[, residual]} (with --batch: a list of them)")
    r.set_defaults(func=cmd_run, subparser=r)

    p = sub.add_parser("passes", help="list the registered passes and the default pipeline")
    p.add_argument("--default", action="store_true", help="print only the default pipeline (for -p \"$(...)\")")
    p.set_defaults(func=cmd_passes, subparser=p)
    ci = sub.add_parser(
        "circuits",
        help="QK/OV circuits and composition scores of an exported model, in the labelled bases",
    )
    ci.add_argument("model", metavar="MODEL.onnx")
    ci.add_argument("--head", help="only this head (its label, or L<layer>.<label>)")
    ci.add_argument("--limit", type=int, default=40, help="entries shown per circuit (default 40)")
    ci.add_argument("--json", action="store_true",
                    help="print JSON: the ground-truth circuit graph (nodes, edges), composition scores on "
                    "direct paths and through MLPs with their ground truth, precision/recall (--head: its circuits)")
    ci.add_argument("--threshold", type=float, default=0.05,
                    help="composition score counted as a composition, for precision/recall (default 0.05)")
    ci.set_defaults(func=cmd_circuits, subparser=ci)
    _add_export_tl_command(sub)
    lb = sub.add_parser("lib", help="list the library programs usable as lib:NAME")
    lb.set_defaults(func=cmd_lib, subparser=lb)
    from raspc.cli.compile_many import add_parser as add_compile_many, cmd_compile_many

    mm = add_compile_many(sub)  # raspc compile-many: datasets of compiled programs (raspc.datasets)
    mm.set_defaults(func=cmd_compile_many, subparser=mm)
    _add_picture_commands(sub)
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    for command in sub.choices.values():  # every subcommand takes -q
        if not any("--quiet" in a.option_strings for a in command._actions):
            command.add_argument("-q", "--quiet", action="store_true",
                                 help="no progress or 'wrote ...' lines on stderr (errors still print)")
    return parser


def _version() -> str:
    from raspc import __version__

    return __version__


# --------------------------------------------------------------------------- report, plot


def _input_tokens(view_runtime: Any, tokens: Sequence[str]) -> list[Any] | None:
    return _sequence(view_runtime, tokens) if tokens else None


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc import progress
    from raspc.report import ModelView, write_report

    view = ModelView(_raspc_onnx(args.model), os.path.basename(args.model))
    output = args.output or os.path.splitext(os.path.basename(args.model))[0] + ".html"
    with progress.task(f"report {output}"):
        try:
            write_report(view, output, _input_tokens(view.runtime, args.tokens))
        except OSError as exc:
            raise CliError(f"cannot write '{output}': {exc.strerror or exc}") from None
    size = os.path.getsize(output)
    progress.say(f"wrote {output}: {len(view.blocks)} blocks, {len(view.labels):,} dims, {size / 1024:.0f} KiB")


def cmd_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc import progress
    from raspc.report import ModelView

    try:
        import matplotlib  # noqa: F401  (the optional `plot` extra)
    except ImportError:
        raise CliError("raspc plot needs matplotlib: pip install 'raspc[plot]'") from None
    from raspc.plot import plot_model
    view = ModelView(_raspc_onnx(args.model), os.path.basename(args.model))
    output = args.output or os.path.splitext(os.path.basename(args.model))[0] + ".png"
    with progress.task(f"plot {output}"):
        try:
            written = plot_model(view, output, _input_tokens(view.runtime, args.tokens), what=args.what)
        except OSError as exc:
            raise CliError(f"cannot write '{output}': {exc.strerror or exc}") from None
    progress.say(f"wrote {', '.join(written)}")


def _add_picture_commands(sub: Any) -> None:
    rp = sub.add_parser(
        "report", help="write a self-contained HTML report of a model (graph, residual stream, heads)",
        description="Runs MODEL.onnx on TOKENs (default: an example input) and writes one HTML file that "
        "opens without network access: the program graph, the layer table, the residual stream at every "
        "layer boundary, every head's attention pattern and QK/OV circuits, the circuit graph.",
    )
    rp.add_argument("model", metavar="MODEL.onnx")
    rp.add_argument("tokens", metavar="TOKEN", nargs="*", help="input tokens (BOS is prepended unless given)")
    rp.add_argument("-o", "--output", metavar="FILE.html", help="output file (default: MODEL.html here)")
    rp.set_defaults(func=cmd_report, subparser=rp)
    pl = sub.add_parser(
        "plot", help="PNG plots of the residual stream per layer and attention per head (needs matplotlib)",
        description="Runs MODEL.onnx on TOKENs (default: an example input) and draws labelled heatmaps: "
        "the residual stream at every layer boundary and every head's attention pattern.",
    )
    pl.add_argument("model", metavar="MODEL.onnx")
    pl.add_argument("tokens", metavar="TOKEN", nargs="*", help="input tokens (BOS is prepended unless given)")
    pl.add_argument("-o", "--output", metavar="FILE.png", help="output file (default: MODEL.png here)")
    pl.add_argument("--what", choices=("all", "residual", "attention"), default="all",
                    help="residual and attention in one figure (all, the default), or one of them")
    pl.set_defaults(func=cmd_plot, subparser=pl)


# Options whose value may start with '-' (`--vocab -2,-1,0`): argparse would read it as an option.
_DASH_VALUE_OPTIONS = ("--vocab", "--bos", "--pad")


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """`--vocab -2,-1,0` -> `--vocab=-2,-1,0`, so negative numbers need no `=`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if a in _DASH_VALUE_OPTIONS and value.startswith("-") and (value[1:2].isdigit() or value[1:2] == "." or "," in value):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from raspc import progress

    parser = build_parser()
    args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    progress.configure(enabled=not getattr(args, "quiet", False))
    if args.command == "run" and args.batch is None and not args.tokens:
        hint = (f" (--residual took '{args.residual}' as its filter: put the TOKENs first, or write "
                f"--residual=FILTER)" if args.residual else "")
        args.subparser.error("give at least one TOKEN, or --batch FILE" + hint)
    if os.environ.get("RASPC_DEBUG") == "1":
        args.func(args, args.subparser)
        return
    try:
        args.func(args, args.subparser)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `raspc passes | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except BaseException as exc:  # ArgSpecParseError (bad -p syntax) is a BaseException
        if isinstance(exc, RaspcError):
            _fail(describe_exception(exc))
        from xdsl.utils.exceptions import ArgSpecParseError, ParseError

        if isinstance(exc, ArgSpecParseError):
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            where = f"{lines[1]}: " if len(lines) > 2 else ""
            _fail(f"bad pipeline '{getattr(args, 'pipeline', '')}': {where}{lines[-1] if lines else exc}")
        if isinstance(exc, ParseError):
            _fail(describe_exception(exc))
        if isinstance(exc, OSError):
            _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        _fail(f"internal error: {describe_exception(exc)} (RASPC_DEBUG=1 shows the traceback)")


if __name__ == "__main__":
    main()
