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
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

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
    """`a,b,c` -> ["a", "b", "c"]; `1,2,3` -> [1, 2, 3]; empty text -> [] (rejected later)."""
    if not text.strip():
        return []
    return [parse_token(item) for item in text.split(",")]


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


def load_program(source: str, max_seq_len: int | None) -> Any:
    """The s-op named by `lib:NAME` or `path/to/file.py:FUNCTION`."""
    if source.startswith("lib:"):
        from raspc.lib import LIBRARY

        name = source[len("lib:"):]
        if name not in LIBRARY:
            raise CliError(f"unknown library program '{name}'; known: {', '.join(sorted(LIBRARY))}")
        return _call_program_function(LIBRARY[name], f"lib:{name}", max_seq_len)
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

        program = load_program(args.source, args.max_seq_len)
        bos = parse_token(args.bos) if args.bos is not None else "BOS"
        pad = parse_token(args.pad) if args.pad is not None else "PAD"
        vocab = parse_vocab(args.vocab)
        module = program_to_rasp(program, vocab, args.max_seq_len, bos, pad, args.causal)
        if verify:
            from raspc.verification import Verifier

            verifier = Verifier(module, verify, program=program)
            verifier.check_program()
        if args.pipeline is not None:
            spec = args.pipeline
        else:
            spec = "" if emit == "rasp" else DEFAULT_PIPELINE  # `--emit rasp`: the program as traced

    module = compile_module(module, spec, stop_at=emit if emit in IR_LEVELS else None, verifier=verifier)
    level = level_of(module)
    wanted = "tensor" if emit == "onnx" else emit
    if level != wanted:
        raise CliError(
            f"the pipeline ends at level {level}, so it cannot emit {emit}"
            + (" (ONNX export needs a tensor-level module)" if emit == "onnx" else "")
            + f"; pipeline: '{spec}'"
        )

    if emit == "onnx":
        if args.compact:
            from raspc.lowering.compact_onnx import tensor_to_compact_onnx as export
        else:
            from raspc.lowering.tensor_to_onnx import tensor_to_onnx as export

        model = export(module)
        _write(args.output, model.SerializeToString())
        return
    text = _ir_text(module)
    if args.elide:
        from raspc.compiler import elide_dense

        text = elide_dense(text)
    if args.output:
        _write(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text)


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


def _residual_table(model: Any, seq: Sequence[Any], residual: Any) -> str:
    labels = list(model.residual_labels)
    heads = ["label", *[f"{i}:{tok}" for i, tok in enumerate(seq)]]
    rows = [
        [lab, *[f"{float(residual[pos, d]):.3f}" for pos in range(len(seq))]] for d, lab in enumerate(labels)
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
                lines = [line.split() for line in f if line.strip()]
        except OSError as exc:
            raise CliError(f"cannot read '{args.batch}': {exc.strerror or exc}") from None
        seqs = [_sequence(model, line) for line in lines]
        for decoded in model.apply_batch(seqs):
            print(_format_values(decoded[1:]))
        return

    seq = _sequence(model, args.tokens)
    ids = np.array([model.encode(seq)], dtype=np.int64)
    output, residual = model.run_ids(ids)
    print(_format_values(model.decode(output[0])[1:]))
    if args.residual:
        print(_residual_table(model, seq, residual[0]))


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

    examples = getattr(lib, "LIBRARY_EXAMPLE_VOCAB", {})
    width = max(len(n) for n in lib.LIBRARY)
    for name in lib.LIBRARY:
        line = f"{name.ljust(width)}  {lib.LIBRARY_DEFAULTS.get(name, '')}"
        if name in examples:
            vocab, n = examples[name]
            line += f"    [e.g. --vocab {','.join(map(str, vocab))} --max-seq-len {n}]"
        print(line)


def cmd_circuits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from raspc.analysis.circuits import Circuits

    if not os.path.exists(args.model):
        _fail(f"{args.model}: no such file")
    onnx_model = args.model
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
    c.add_argument("--compact", action="store_true",
                   help="write the compact deployment graph (faster, same answers; `circuits` needs the default graph)")
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
    r.add_argument("--residual", action="store_true",
                   help="also print the residual stream (labels x positions)")
    r.add_argument("--batch", metavar="FILE",
                   help="run every line of FILE (space-separated tokens) in one batch")
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
    lb = sub.add_parser("lib", help="list the library programs usable as lib:NAME")
    lb.set_defaults(func=cmd_lib, subparser=lb)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.batch is None and not args.tokens:
        args.subparser.error("give at least one TOKEN, or --batch FILE")
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
