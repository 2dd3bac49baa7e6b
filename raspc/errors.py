"""Typed errors. Every failure a user can cause is one of these, with a message naming the culprit."""

from __future__ import annotations


# The s-ops raspc.rasp defines itself (their errors have no user source line to point at).
BUILTIN_SOPS = frozenset({"tokens", "indices", "length"})


class RaspcError(Exception):
    """Base class of every error raspc raises on bad input."""


class CompileError(RaspcError):
    """A program cannot be compiled; names the s-op (label) and where it was written."""

    def __init__(self, message: str, *, label: str | None = None, source: str | None = None):
        where = ""
        if label is not None:
            where = f"s-op '{label}'"
            if source:
                where += f" ({source})"
            elif label in BUILTIN_SOPS:
                where = f"built-in s-op '{label}' (raspc defines it: no source line)"
            where += ": "
        super().__init__(where + message)
        self.label = label
        self.source = source


class UnsupportedError(CompileError):
    """A construct the compiler cannot turn into exact weights."""


class ValueSetError(CompileError):
    """A value set cannot be inferred (a function raised, or the set grew past the bound)."""


class VocabError(RaspcError):
    """The vocabulary or BOS token given to the compiler is unusable."""


class InputError(RaspcError):
    """An input sequence the compiled model cannot take (unknown token, too long, no BOS)."""


class IRError(RaspcError):
    """Malformed or unverifiable IR text; the message carries the location."""


class PipelineError(RaspcError):
    """An unknown pass name or a malformed pass pipeline."""


class VerificationError(RaspcError):
    """A pass changed what the program computes (a compiler bug: please report it with the program)."""
