"""Shared helpers of the benchmark scripts: inputs, exact-answer checks, model measurements.

Nothing here is imported by raspc itself; the scripts put this folder on sys.path (running
`python benchmarks/<script>.py` does that already).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import signal
import statistics
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
VECTORS = REPO.parent / "shared" / "tracr-lib-vectors.json"
NUM_TOL = 1e-4  # numerical outputs: absolute tolerance

# The cases of shared/tracr-lib-vectors.json, used when that file is not beside the repository.
FALLBACK_CASES: list[dict[str, Any]] = [
    {"name": "length", "call": "lib.make_length()", "vocab": list("abcd"), "max_seq_len": 5},
    {"name": "reverse", "call": "lib.make_reverse(rasp.tokens)", "vocab": list("abcd"), "max_seq_len": 5},
    {"name": "hist", "call": "lib.make_hist()", "vocab": list("abcd"), "max_seq_len": 5},
    {"name": "sort_unique", "call": "lib.make_sort_unique(rasp.tokens, rasp.tokens)", "vocab": [1, 2, 3, 4, 5],
     "max_seq_len": 5},
    {"name": "sort", "call": "lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)",
     "vocab": [1, 2, 3, 4], "max_seq_len": 5},
    {"name": "sort_freq", "call": "lib.make_sort_freq(max_seq_len=5)", "vocab": list("abcd"), "max_seq_len": 5},
    {"name": "frac_prevs",
     "call": 'lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens)))',
     "vocab": list("abcde"), "max_seq_len": 8},
    {"name": "pair_balance", "call": 'lib.make_pair_balance(rasp.tokens, "(", ")")', "vocab": ["(", ")", "a"],
     "max_seq_len": 8},
    {"name": "shuffle_dyck", "call": 'lib.make_shuffle_dyck(pairs=["()"])', "vocab": ["(", ")"], "max_seq_len": 8},
    {"name": "shuffle_dyck2", "call": "lib.make_shuffle_dyck2()", "vocab": list("(){}"), "max_seq_len": 8},
    {"name": "count_less_freq", "call": "lib.make_count_less_freq(2)", "vocab": list("abcd"), "max_seq_len": 6},
    {"name": "count", "call": 'lib.make_count(rasp.tokens, "a")', "vocab": list("abc"), "max_seq_len": 8},
    {"name": "nary_sequencemap",
     "call": "lib.make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices)",
     "vocab": [1, 2, 3], "max_seq_len": 5},
    {"name": "shift_by", "call": "lib.shift_by(2, rasp.tokens)", "vocab": list("abcd"), "max_seq_len": 5},
    {"name": "detect_pattern", "call": 'lib.detect_pattern(rasp.tokens, "abc")', "vocab": list("abc"),
     "max_seq_len": 6},
    {"name": "sort_unique@20", "call": "lib.make_sort_unique(rasp.tokens, rasp.tokens)", "vocab": list(range(20)),
     "max_seq_len": 20},
    {"name": "hist@20", "call": "lib.make_hist()", "vocab": list(range(20)), "max_seq_len": 20},
    {"name": "length@20", "call": "lib.make_length()", "vocab": list(range(20)), "max_seq_len": 20},
    {"name": "shuffle_dyck@bal", "call": 'lib.make_shuffle_dyck(pairs=["()"])', "vocab": ["(", ")"],
     "max_seq_len": 10},
    {"name": "shuffle_dyck2@bal", "call": "lib.make_shuffle_dyck2()", "vocab": list("(){}"), "max_seq_len": 10},
]


def load_cases(path: Path = VECTORS) -> tuple[list[dict[str, Any]], str]:
    """The benchmark cases (name, call, vocab, max_seq_len) and where they came from."""
    if path.is_file():
        cases = json.loads(path.read_text())["cases"]
        return [{k: c[k] for k in ("name", "call", "vocab", "max_seq_len")} for c in cases], str(path)
    return [dict(c) for c in FALLBACK_CASES], "built-in copy (vectors file not found)"


# --------------------------------------------------------------------------- Tracr (optional)


def tracr_available() -> tuple[bool, str]:
    """(True, version) when Tracr and JAX import; else (False, why)."""
    try:
        import jax  # noqa: F401
        from tracr.compiler import compiling  # noqa: F401
    except Exception as e:  # ImportError, or a broken JAX install
        return False, f"{type(e).__name__}: {e}"
    try:
        from importlib.metadata import version

        return True, version("tracr-pypi")
    except Exception:
        return True, "unknown version"


def tracr_modules() -> tuple[Any, Any]:
    from tracr.compiler import lib as tlib
    from tracr.rasp import rasp as trasp

    return tlib, trasp


def raspc_modules() -> tuple[Any, Any]:
    from raspc import lib as rlib
    from raspc import rasp as rrasp

    return rlib, rrasp


def build(call: str, lib_module: Any, rasp_module: Any) -> Any:
    """A program written with Tracr's names (`lib.`, `rasp.`), built from the given modules."""
    return eval(call, {"lib": lib_module, "rasp": rasp_module})  # noqa: S307 - our own case strings


# --------------------------------------------------------------------------- inputs


def seed_for(*parts: Any) -> int:
    """A fixed seed per (case, purpose): runs of a subset of cases see the same inputs."""
    return zlib.crc32(repr(parts).encode())


def dyck_pairs(call: str, vocab: Sequence[Any]) -> list[str]:
    """The bracket pairs a shuffle-Dyck program checks (those whose both tokens are in vocab)."""
    if "dyck" not in call:
        return []
    return [p for p in ("()", "{}", "[]") if p[0] in vocab and p[1] in vocab]


def _dyck_word(rng: random.Random, n_pairs: int, pair: str) -> list[str]:
    while True:  # rejection sampling: a shuffled word is balanced with probability 1/(n+1)
        word = [pair[0]] * n_pairs + [pair[1]] * n_pairs
        rng.shuffle(word)
        depth = 0
        for c in word:
            depth += 1 if c == pair[0] else -1
            if depth < 0:
                break
        else:
            return word


def balanced_shuffle_dyck(rng: random.Random, pairs: Sequence[str], length: int) -> list[str]:
    """A random string of even `length` in which every bracket kind is balanced (interleaved)."""
    n_pairs = length // 2
    counts = [0] * len(pairs)
    for _ in range(n_pairs):
        counts[rng.randrange(len(pairs))] += 1
    words = [_dyck_word(rng, c, p) for c, p in zip(counts, pairs)]
    # Interleave the words at random, keeping each word's own order.
    slots = [i for i, w in enumerate(words) for _ in w]
    rng.shuffle(slots)
    its = [iter(w) for w in words]
    return [next(its[i]) for i in slots]


def random_inputs(
    name: str, call: str, vocab: Sequence[Any], max_seq_len: int, n: int, salt: str = "acc"
) -> list[list[Any]]:
    """`n` random inputs of lengths 1..max_seq_len, reproducible per case.

    * make_sort_unique: distinct tokens (its keys must be unique), length <= len(vocab);
    * shuffle-Dyck cases named '...@bal': every second input is a balanced string;
    * otherwise tokens uniform over the vocabulary.
    """
    rng = random.Random(seed_for(name, call, tuple(vocab), max_seq_len, salt))
    vocab = list(vocab)
    pairs = dyck_pairs(call, vocab)
    out: list[list[Any]] = []
    for i in range(n):
        if "make_sort_unique" in call:
            length = rng.randint(1, min(max_seq_len, len(vocab)))
            out.append(rng.sample(vocab, length))
        elif "@bal" in name and pairs and i % 2 == 0 and max_seq_len >= 2:
            length = 2 * rng.randint(1, max_seq_len // 2)
            out.append(balanced_shuffle_dyck(rng, pairs, length))
        else:
            length = rng.randint(1, max_seq_len)
            out.append([rng.choice(vocab) for _ in range(length)])
    return out


def full_length_batch(vocab: Sequence[Any], max_seq_len: int, batch: int, seed: int) -> list[list[Any]]:
    """`batch` random sequences of exactly max_seq_len tokens (for timing the forward pass)."""
    rng = random.Random(seed)
    return [[rng.choice(list(vocab)) for _ in range(max_seq_len)] for _ in range(batch)]


# --------------------------------------------------------------------------- answers


def value_matches(actual: Any, expected: Any, tol: float = NUM_TOL) -> bool:
    """One position: equal values; numbers within `tol`; None only matches None."""
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(actual, np.generic):
        actual = actual.item()
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(value_matches(a, e, tol) for a, e in zip(actual, expected))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(actual) == bool(expected) and isinstance(actual, (bool, int)) and isinstance(expected, (bool, int))
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if math.isnan(actual) or math.isnan(expected):
            return False
        return abs(float(actual) - float(expected)) <= tol
    return actual == expected


def sequence_matches(actual: Sequence[Any], expected: Sequence[Any], skip_none: bool) -> bool:
    """A whole sequence answered exactly. With `skip_none`, positions where the evaluator gives
    None are not checked (Tracr has no way to output None)."""
    if len(actual) != len(expected):
        return False
    return all(
        (skip_none and e is None) or value_matches(a, e) for a, e in zip(actual, expected)
    )


def position_accuracy(actual: Sequence[Any], expected: Sequence[Any], skip_none: bool) -> tuple[int, int]:
    """(right, checked) positions."""
    right = checked = 0
    for a, e in zip(actual, expected):
        if skip_none and e is None:
            continue
        checked += 1
        right += value_matches(a, e)
    return right, checked


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class TimeLimit(Exception):
    """A measured call ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raises TimeLimit in the main thread after `seconds` (SIGALRM; a no-op where unavailable)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeLimit(f"stopped after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine_info() -> dict[str, Any]:
    import onnxruntime

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- raspc measurements


def raspc_structure(model: Any) -> dict[str, Any]:
    """Layers, heads and MLP sizes per layer, residual width and parameter counts of a raspc model.

    A layer is one `layer` value of the tensor-level ops (an attention sublayer then an MLP
    sublayer, as in Tracr). Parameters: token and position embeddings plus every head's
    w_q/w_k/w_v/w_o and every MLP's w_in/b_in/w_out/b_out (the readout has none)."""
    from raspc.dialects.tensor import AttentionHeadOp, EmbedOp, MlpOp, dense_to_numpy

    heads: dict[int, int] = {}
    mlp_hidden: dict[int, int] = {}
    head_dims: list[tuple[int, int]] = []
    total = nonzero = 0

    def count(*attrs: Any) -> None:
        nonlocal total, nonzero
        for a in attrs:
            arr = dense_to_numpy(a)
            total += arr.size
            nonzero += int(np.count_nonzero(arr))

    for op in model.module.walk():  # the ops sit inside the tensor.model container
        if isinstance(op, EmbedOp):
            count(op.token_embedding, op.position_embedding)
        elif isinstance(op, AttentionHeadOp):
            heads[op.layer_int] = heads.get(op.layer_int, 0) + 1
            mlp_hidden.setdefault(op.layer_int, 0)
            head_dims.append((int(op.w_q.get_shape()[1]), int(op.w_v.get_shape()[1])))
            count(op.w_q, op.w_k, op.w_v, op.w_o)
        elif isinstance(op, MlpOp):
            heads.setdefault(op.layer_int, 0)
            mlp_hidden[op.layer_int] = mlp_hidden.get(op.layer_int, 0) + int(op.w_in.get_shape()[1])
            count(op.w_in, op.b_in, op.w_out, op.b_out)
    layers = sorted(heads)
    onnx_init = sum(int(np.prod(t.dims)) for t in model.onnx_model.graph.initializer)
    return {
        "layers": len(layers),
        "layer_ids": layers,
        "heads_per_layer": [heads[i] for i in layers],
        "mlp_hidden_per_layer": [mlp_hidden.get(i, 0) for i in layers],
        "head_dims_qk_v": head_dims,
        "residual_width": len(model.residual_labels),
        "params": total,
        "nonzero_params": nonzero,
        "onnx_initializer_elements": onnx_init,
        "onnx_bytes": len(model.onnx_model.SerializeToString()),
    }


def raspc_ids(model: Any, seqs: Sequence[Sequence[Any]]) -> np.ndarray:
    rt = model.runtime
    return np.array([rt.encode([rt.bos, *s]) for s in seqs], dtype=np.int64)


def call_ms(call: Any, runs: int) -> list[float]:
    """Milliseconds per call of `call()`, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def raspc_forward_ms(model: Any, ids: np.ndarray, runs: int) -> list[float]:
    """Milliseconds per onnxruntime call on the batch `ids` (one untimed warm-up call first)."""
    return call_ms(lambda: model.runtime.run_ids(ids), runs)


def score(inputs: list[list[Any]], got: list[list[Any]], expected: list[list[Any]], skip_none: bool) -> dict[str, Any]:
    """Sequence and position accuracy of `got` against `expected`, with the shortest wrong inputs."""
    ok = [sequence_matches(g, e, skip_none) for g, e in zip(got, expected)]
    pos_right = pos_checked = 0
    for g, e in zip(got, expected):
        r, c = position_accuracy(g, e, skip_none)
        pos_right, pos_checked = pos_right + r, pos_checked + c
    wrong = [
        {"input": x, "expected": e, "got": [v.item() if hasattr(v, "item") else v for v in g]}
        for x, g, e, good in zip(inputs, got, expected, ok)
        if not good
    ]
    wrong.sort(key=lambda w: len(w["input"]))
    return {
        "seq_acc": sum(ok) / len(ok) if ok else float("nan"),
        "pos_acc": pos_right / pos_checked if pos_checked else float("nan"),
        "n_inputs": len(ok),
        "n_wrong": len(wrong),
        "wrong_examples": wrong[:5],
        "none_positions_skipped": skip_none,
    }




def raspc_outputs(model: Any, inputs: Sequence[Sequence[Any]], chunk: int = 256) -> list[list[Any]]:
    """The model's decoded answers (BOS dropped), run as padded batches via apply_batch."""
    out: list[list[Any]] = []
    bos = model.runtime.bos
    for i in range(0, len(inputs), chunk):
        for row in model.apply_batch([[bos, *s] for s in inputs[i : i + chunk]]):
            out.append(list(row[1:]))
    return out


# --------------------------------------------------------------------------- Tracr measurements


def tracr_structure(model: Any) -> dict[str, Any]:
    """The same quantities for a Tracr AssembledTransformerModel, read off its params.

    Tracr pads every attention layer to the config's num_heads and every MLP to mlp_hidden_size
    (and layers it does not use are all zero); the 'real' counts leave out all-zero heads and
    hidden units, the 'cfg' ones are what the model is configured and run with."""
    cfg = model.model_config
    p = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in model.params.items()}
    total = sum(a.size for d in p.values() for a in d.values())
    nonzero = sum(int(np.count_nonzero(a)) for d in p.values() for a in d.values())
    heads_real, mlp_real = [], []
    h, ks = cfg.num_heads, cfg.key_size
    for layer in range(cfg.num_layers):
        pre = f"transformer/layer_{layer}"
        q = p[f"{pre}/attn/query"]["w"].reshape(-1, h, ks)
        k = p[f"{pre}/attn/key"]["w"].reshape(-1, h, ks)
        v = p[f"{pre}/attn/value"]["w"].reshape(-1, h, ks)
        o = p[f"{pre}/attn/linear"]["w"].reshape(h, ks, -1)
        heads_real.append(
            sum(bool(q[:, i].any() or k[:, i].any() or v[:, i].any() or o[i].any()) for i in range(h))
        )
        w1, b1 = p[f"{pre}/mlp/linear_1"]["w"], p[f"{pre}/mlp/linear_1"]["b"]
        w2 = p[f"{pre}/mlp/linear_2"]["w"]
        used = w1.any(axis=0) | (b1 != 0) | w2.any(axis=1)
        mlp_real.append(int(used.sum()))
    return {
        "layers": int(cfg.num_layers),
        "heads_per_layer": heads_real,
        "heads_per_layer_cfg": int(cfg.num_heads),
        "key_size_cfg": int(ks),
        "mlp_hidden_per_layer": mlp_real,
        "mlp_hidden_cfg": int(cfg.mlp_hidden_size),
        "residual_width": len(model.residual_labels),
        "params": int(total),
        "nonzero_params": int(nonzero),
    }


def tracr_ids(model: Any, seqs: Sequence[Sequence[Any]]) -> np.ndarray:
    enc = model.input_encoder
    return np.array([enc.encode([enc.bos_token, *s]) for s in seqs], dtype=np.int32)


class TracrRunner:
    """Tracr's jitted forward pass (its own haiku `forward.apply` under jax.jit).

    Tracr's assembled model has no padding mask, so sequences of different lengths cannot share
    a batch: inputs are grouped by length and each length is one jitted call (a new shape costs
    one trace and compile, a few tenths of a second)."""

    def __init__(self, model: Any):
        import jax

        self.model = model
        self._fwd = jax.jit(model.forward)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        out = self._fwd(self.model.params, ids)
        return np.asarray(out.unembedded_output.block_until_ready())

    def forward_ms(self, ids: np.ndarray, runs: int) -> list[float]:
        return call_ms(lambda: self.forward(ids), runs)

    def outputs(self, inputs: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Decoded answers (BOS dropped) like Tracr's `apply`, computed per length group."""
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(inputs):
            by_len.setdefault(len(s), []).append(i)
        results: list[list[Any]] = [[] for _ in inputs]
        dec = self.model.output_encoder
        for _, idx in sorted(by_len.items()):
            out = self.forward(tracr_ids(self.model, [inputs[i] for i in idx]))
            for row, i in zip(out, idx):
                vals = row.tolist()
                if dec is not None:
                    vals = dec.decode(vals)
                results[i] = list(vals[1:])
        return results


def python_version_ok() -> None:
    if sys.version_info < (3, 11):
        raise SystemExit("raspc needs Python >= 3.11")
