"""Shared test configuration: hypothesis profiles and a session-wide cache of compiled programs.

Hypothesis profiles:

* ``ci`` (the default): deterministic (``derandomize=True``), no deadline, the ``too_slow``
  health check suppressed (every example compiles nothing but runs a whole batch of inputs).
* ``fuzz``: ten times the examples, random seeds. Select it with ``HYPOTHESIS_PROFILE=fuzz``.

Tests that draw batches of inputs scale their number of batches with the active profile's
``max_examples`` (see ``n_batches`` in the test files), so ``fuzz`` also runs more inputs there.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import pytest
from hypothesis import HealthCheck, settings

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=100,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    deadline=None,
    derandomize=False,
    max_examples=1000,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def build_program(spec: str, max_seq_len: int) -> Any:
    """A fresh program: `spec` is a name in raspc.lib.LIBRARY (built for `max_seq_len`), or a call
    written with Tracr's names (``lib.make_sort(rasp.tokens, ...)``), evaluated against raspc."""
    from raspc import lib, rasp

    if spec in lib.LIBRARY:
        return lib.LIBRARY[spec](max_seq_len=max_seq_len)
    return eval(spec, {"lib": lib, "rasp": rasp})  # noqa: S307 - trusted test data


_MODEL_CACHE: dict[tuple[str, tuple[Any, ...], int], Any] = {}


@pytest.fixture(scope="session")
def compiled() -> Callable[[str, Sequence[Any], int], Any]:
    """``compiled(name, vocab, max_seq_len) -> CompiledModel``, compiled once per session.

    `name` is a LIBRARY name or a Tracr-style call (see `build_program`). The model keeps the
    exact program object it was compiled from in ``model.program``: evaluate that one, since
    labels of unnamed s-ops depend on a global id counter."""
    from raspc.model import compile_rasp_to_model

    def get(name: str, vocab: Sequence[Any], max_seq_len: int) -> Any:
        key = (name, tuple(vocab), max_seq_len)
        if key not in _MODEL_CACHE:
            program = build_program(name, max_seq_len)
            _MODEL_CACHE[key] = compile_rasp_to_model(program, list(vocab), max_seq_len)
        return _MODEL_CACHE[key]

    return get
