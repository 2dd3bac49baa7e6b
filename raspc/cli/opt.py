"""`raspc-opt`: xdsl-opt / mlir-opt for raspc's IR (a subclass of xDSL's `xDSLOptMain`).

    raspc-opt prog.mlir                                   # parse, verify, print (round-trips)
    raspc-opt prog.mlir -p lower-rasp-to-craft,allocate-layers,layout-residual --print-between-passes
    raspc-opt prog.mlir -p "$(python -c 'import raspc; print(raspc.DEFAULT_PIPELINE)')"
    raspc-opt tensor.mlir -p 'export-onnx{output="m.onnx"}'
    raspc-opt prog.mlir -p lower-rasp-to-craft,cse --print-ir-after-all
    raspc-opt prog.mlir -p my-pass --load-pass-plugin my_passes.py  # a file calling raspc.register_pass
    raspc-opt prog.mlir -p "$(raspc passes --default)" --verify-each=exhaustive

Everything upstream's driver offers works as in xdsl-opt (`--print-op-generic`,
`--split-input-file`, `--verify-diagnostics`, `--print-between-passes`, `-o`, ...). The
dialects are upstream's, plus `rasp` and `craft`, with raspc's `tensor` dialect in place of
upstream's. The passes are upstream's plus every raspc pass (`raspc passes` lists raspc's and
prints the default pipeline).

`--print-ir-after-all` prints the module after every pass, the last one included, to stderr,
each dump headed `// -----// IR Dump After <pass-name> //----- //` as mlir-opt does.

`--verify-each[=exhaustive|N]` checks a pipeline on an IR file alone: after every pass the module
runs in its level's interpreter and must answer like the rasp-level interpreter of the input.

Errors: malformed IR prints xDSL's parse error (file:line:col, the source line and a caret);
any other error prints one line `raspc-opt: error: <message>`; both exit 1, never with a
Python traceback unless RASPC_DEBUG=1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.printer import Printer
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from raspc.compiler import available_passes, dialect_factories
from raspc.errors import PipelineError, RaspcError

PROG = "raspc-opt"
DESCRIPTION = "raspc's modular optimizer driver (xdsl-opt with raspc's dialects and passes)"


class RaspcOptMain(xDSLOptMain):
    """xDSL's optimizer driver with raspc's dialects and passes."""

    version_format = "raspc-opt built from xdsl version {xdsl_version}"

    def register_all_dialects(self) -> None:
        super().register_all_dialects()
        # Context.register_dialect refuses a name twice; raspc's dialects must win (the plugin
        # universe already registered rasp/craft, and upstream has its own "tensor").
        for name, factory in dialect_factories().items():
            self.ctx._registered_dialects[name] = factory  # pyright: ignore[reportPrivateUsage]

    def register_all_passes(self) -> None:
        super().register_all_passes()
        for name, factory in available_passes().items():
            self.register_pass(name, factory)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.prog = PROG
        arg_parser.add_argument(
            "--print-ir-after-all",
            default=False,
            action="store_true",
            help="Print the IR after every pass (the last one included) to stderr, "
            "each dump headed '// -----// IR Dump After <pass> //----- //'",
        )
        arg_parser.add_argument(
            "--verify-each",
            nargs="?",
            const="",
            default=None,
            metavar="exhaustive|N",
            help="after every pass, run the module in its level's interpreter and compare its answers with the "
            "rasp-level interpreter of the input IR: on 32 random inputs (shrunk to a minimal failing one), on N, "
            "or on every input up to max_seq_len (exhaustive, when there are at most 100,000)",
        )
        arg_parser.add_argument(
            "--load-pass-plugin",
            metavar="FILE.py",
            action="append",
            default=[],
            help="Import a Python file before building the pipeline (its raspc.register_pass "
            "calls make its passes available); may be repeated",
        )

    def setup_pipeline(self) -> None:
        from xdsl.utils.arg_spec import parse_pipeline

        if self.args.load_pass_plugin:
            from raspc.cli.main import import_python_file

            for path in self.args.load_pass_plugin:
                import_python_file(path)
            for name, factory in available_passes().items():
                self.register_pass(name, factory)

        # Unknown names: one readable line instead of upstream's ValueError traceback.
        specs = parse_pipeline(self.args.passes)
        unknown = [spec.name for spec in specs if spec.name not in self.available_passes]
        if unknown:
            ours = ", ".join(available_passes())
            others = len(set(self.available_passes) - set(available_passes()))
            names = ", ".join(f"'{n}'" for n in unknown)
            raise PipelineError(
                f"unknown pass{'es' if len(unknown) > 1 else ''} {names}; raspc passes: {ours}; "
                f"plus {others} upstream xDSL passes (raspc-opt --help lists them all)"
            )
        try:
            super().setup_pipeline()
        except ValueError as exc:  # bad pass options (unknown option, wrong type)
            raise PipelineError(f"bad pipeline '{self.args.passes}': {exc}") from None

        if self.args.print_ir_after_all:
            inner = self.pipeline.callback

            def callback(prev: ModulePass | None, module: ModuleOp, nxt: ModulePass | None) -> None:
                if inner is not None:
                    inner(prev, module, nxt)
                if prev is not None:
                    self._dump_after(prev, module)

            self.pipeline = dataclasses.replace(self.pipeline, callback=callback)

    def _dump_after(self, prev: ModulePass, module: ModuleOp) -> None:
        sys.stdout.flush()
        out = sys.stderr
        out.write(f"// -----// IR Dump After {prev.name} //----- //\n")
        Printer(
            stream=out,
            print_generic_format=self.args.print_op_generic,
            print_properties_as_attributes=self.args.print_no_properties,
            print_debuginfo=self.args.print_debuginfo,
        ).print_op(module)
        out.write("\n\n")
        out.flush()

    def prepare_input(self):  # type: ignore[override]
        try:
            return super().prepare_input()
        except ValueError as exc:  # "Unrecognized file extension 'x'"
            raise PipelineError(f"{exc}; use a .mlir file or -f mlir") from None

    def apply_passes(self, prog: ModuleOp) -> None:
        if self.args.verify_each is not None:
            from raspc.cli.main import parse_verify
            from raspc.verification import Verifier

            check = Verifier(prog, parse_verify(self.args.verify_each)).callback()
            inner = self.pipeline.callback

            def callback(prev: ModulePass | None, module: ModuleOp, nxt: ModulePass | None) -> None:
                if inner is not None:
                    inner(prev, module, nxt)
                check(prev, module, nxt)

            self.pipeline = dataclasses.replace(self.pipeline, callback=callback)
        try:
            super().apply_passes(prog)
        except RaspcError as exc:
            if self.args.verify_diagnostics:
                # raspc's own errors are diagnostics too: print them and go on (exit 0)
                raise DiagnosticException(str(exc)) from exc
            raise


def _fail(message: str) -> None:
    from raspc.cli.main import one_line

    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    if os.environ.get("RASPC_DEBUG") == "1":
        RaspcOptMain(description=DESCRIPTION, args=argv).run()
        return
    from raspc.cli.main import describe_exception

    try:
        RaspcOptMain(description=DESCRIPTION, args=argv).run()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except ParseError as exc:  # xDSL's message: location, source line, caret
        sys.stdout.flush()
        print(str(exc).rstrip("\n"), file=sys.stderr)
        sys.exit(1)
    except ArgSpecParseError as exc:  # malformed -p text; a BaseException in xDSL
        sys.stdout.flush()
        print(f"{PROG}: error: {str(exc).rstrip()}", file=sys.stderr)
        sys.exit(1)
    except DiagnosticException as exc:  # a verifier failure (without --verify-diagnostics)
        sys.stdout.flush()
        print(f"{PROG}: error: {str(exc).rstrip()}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except RaspcError as exc:
        _fail(describe_exception(exc))
    except Exception as exc:
        _fail(f"internal error: {describe_exception(exc)} (RASPC_DEBUG=1 shows the traceback)")


if __name__ == "__main__":
    main()
