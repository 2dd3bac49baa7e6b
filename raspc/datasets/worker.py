"""Compiles one program of a set into its dataset row and files, inside a time budget and a memory
guard. Runs in a worker process (local pool or Ray); returns plain data (no xDSL objects), so the
result travels through a pipe or Ray's object store to the driver, which writes every file.

The row (`Result.record`) holds only what is the same on every run and machine: the program's
source, rasp IR, vocabulary, sizes, status and refusal reason. What varies (compile seconds, peak
memory, which worker) is in `Result.timing`, kept apart so the index stays byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from raspc.datasets.sources import ProgramSpec

COMPILED, REFUSED, TIMEOUT, MEMORY, ERROR = "compiled", "refused", "timeout", "memory", "error"
STATUSES = (COMPILED, REFUSED, TIMEOUT, MEMORY, ERROR)


@dataclass(frozen=True)
class Options:
    """What every worker is told: the per-program budget, the memory guard and what to write."""

    time_budget: float = 10.0  # seconds per program (0: none)
    memory_limit_mb: int = 4096  # resident memory a worker may grow by (0: none)
    weights: bool = False  # also return the weights as safetensors bytes
    pipeline: Optional[str] = None  # None: raspc's default pipeline


@dataclass
class Result:
    id: str
    record: dict[str, Any]
    timing: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # "onnx" / "weights" -> bytes


class _OverBudget(BaseException):
    """Raised by the alarm inside the compiler (a BaseException, so no `except Exception` keeps it)."""


# --------------------------------------------------------------------------- guards


ADDRESS_SPACE_MARGIN_MB = 32 * 1024  # the RLIMIT_AS backstop sits this far above the memory guard


class _OverMemory(BaseException):
    """Raised in the compiling thread when the watchdog sees the guard passed."""


def resident_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (Linux /proc; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _address_space() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _MemoryGuard:
    """Resident memory above the worker's own at start, watched every 10 ms by a thread that
    interrupts the compile (SIGUSR1 -> _OverMemory in the main thread) once it passes `limit_mb`.

    Resident, not virtual, memory: the compiler may reserve far more address space than it touches
    (one random program reserves 10 GB of address space for 60 MB resident, measured), so
    an RLIMIT_AS at the limit would stop programs that fit. RLIMIT_AS stays as a backstop far above
    it (ADDRESS_SPACE_MARGIN_MB), and the driver stops a worker whose resident memory runs past the
    guard while a C call keeps this thread from running (raspc.datasets.local)."""

    def __init__(self, limit_mb: int):
        self.limit = limit_mb * 1024 * 1024
        self.baseline = resident_bytes()
        self.active = False
        self.main = threading.main_thread().ident
        threading.Thread(target=self._watch, name="raspc-memory-guard", daemon=True).start()
        base_as = _address_space()
        if base_as > 0:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = base_as + (limit_mb + ADDRESS_SPACE_MARGIN_MB) * 1024 * 1024
            if hard != resource.RLIM_INFINITY:
                cap = min(cap, hard)
            try:
                resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
            except (ValueError, OSError):  # not permitted here: the watchdog and the driver remain
                pass

    def _watch(self) -> None:
        while True:
            time.sleep(0.01)
            if self.active and resident_bytes() - self.baseline > self.limit:
                self.active = False
                signal.pthread_kill(self.main, signal.SIGUSR1)  # type: ignore[arg-type]

    def __enter__(self) -> "_MemoryGuard":
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Any) -> None:
                raise _OverMemory()

            self.previous = signal.signal(signal.SIGUSR1, on_signal)
            self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active or hasattr(self, "previous"):
            self.active = False
            signal.signal(signal.SIGUSR1, self.previous)
            del self.previous


_GUARD: dict[str, Optional[_MemoryGuard]] = {"guard": None}


def install_memory_guard(limit_mb: int) -> Optional[_MemoryGuard]:
    """This process's memory guard (started once; None with no limit): see _MemoryGuard."""
    if limit_mb <= 0:
        return None
    if _GUARD["guard"] is None:
        _GUARD["guard"] = _MemoryGuard(limit_mb)
    _GUARD["guard"].limit = limit_mb * 1024 * 1024
    return _GUARD["guard"]


class _Alarm:
    """A SIGALRM after `seconds` raising _OverBudget in the compiling (main) thread; a no-op off the
    main thread or with no budget (the driver's deadline then stops the program)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = (
            seconds > 0
            and threading.current_thread() is threading.main_thread()
            and hasattr(signal, "SIGALRM")
        )

    def __enter__(self) -> "_Alarm":
        if self.armed:

            def on_alarm(signum: int, frame: Any) -> None:
                raise _OverBudget()

            self.previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if os.uname().sysname == "Darwin" else 1024), 1)


# --------------------------------------------------------------------------- building programs


_FILE_CACHE: dict[tuple[str, str], list] = {}


def build_program(spec: ProgramSpec) -> tuple[Any, list, int, bool, Optional[str]]:
    """(program s-op, vocab, max_seq_len, causal, Python source) for a non-IR spec."""
    if spec.kind == "random":
        from raspc.random_programs import random_program

        gp = random_program(spec.seed, spec.index, spec.knobs)  # type: ignore[arg-type]
        header = f"Random program {spec.index} of seed {spec.seed} (raspc.random_programs)."
        # rebuilt from its own text: the stored source is exactly what was compiled, and each s-op's
        # `src` location points into it
        program = gp.rebuilt(f"{spec.id}.py", header)
        return program, gp.vocab, gp.max_seq_len, gp.causal, gp.module_source(header)
    if spec.kind == "lib":
        from raspc.lib import LIBRARY

        source = "\n".join(
            [
                "from raspc import lib",
                "",
                f"vocab = {list(spec.vocab)!r}",
                f"max_seq_len = {spec.max_seq_len!r}",
                f"causal = {spec.causal!r}",
                f"program = lib.LIBRARY[{spec.name!r}](max_seq_len=max_seq_len)",
                "",
            ]
        )
        program = LIBRARY[spec.name](max_seq_len=spec.max_seq_len)  # type: ignore[index]
        return program, list(spec.vocab), spec.max_seq_len, spec.causal, source  # type: ignore[arg-type]
    if spec.kind == "python":
        from raspc.datasets.sources import python_entries

        key = (spec.filename or "", hashlib.sha256((spec.text or "").encode()).hexdigest())
        if key not in _FILE_CACHE:
            _FILE_CACHE.clear()  # one file at a time is enough: specs come in file order
            _FILE_CACHE[key] = python_entries(spec.text or "", spec.filename or "<file>", _function_of(spec))
        entry = dict(_FILE_CACHE[key])[spec.name]
        return entry["program"], list(spec.vocab), spec.max_seq_len, spec.causal, spec.text  # type: ignore[arg-type]
    raise ValueError(f"not a program spec: {spec.kind}")


def _function_of(spec: ProgramSpec) -> Optional[str]:
    if ":" in spec.ref and not spec.ref.endswith("]"):
        return None
    head = spec.ref.split("[", 1)[0]
    return head.rsplit(":", 1)[1] if ":" in head else None


# --------------------------------------------------------------------------- compiling


def _json(v: Any) -> str:
    from raspc.lowering.tensor_to_onnx import json_value

    return json.dumps(json_value(v), ensure_ascii=False, allow_nan=False)


def model_stats(module: Any) -> dict[str, Any]:
    """Layers (distinct layer numbers of heads and MLPs: an attention then an MLP sublayer each, as
    in Tracr), heads, MLP hidden units, residual width and parameters (embeddings, every head's
    W_Q W_K W_V W_O, every MLP's W_in b_in W_out b_out) of a tensor-level module."""
    from raspc.dialects.tensor import AttentionHeadOp, MlpOp, dense_to_numpy, tensor_model

    model = tensor_model(module)
    arrays = [dense_to_numpy(model.embed.token_embedding), dense_to_numpy(model.embed.position_embedding)]
    layers: set[int] = set()
    heads = hidden = 0
    for op in model.ops:
        if isinstance(op, AttentionHeadOp):
            heads += 1
            layers.add(op.layer_int)
            arrays += [dense_to_numpy(a) for a in (op.w_q, op.w_k, op.w_v, op.w_o)]
        elif isinstance(op, MlpOp):
            layers.add(op.layer_int)
            hidden += int(op.w_in.get_shape()[1])
            arrays += [dense_to_numpy(a) for a in (op.w_in, op.b_in, op.w_out, op.b_out)]
    return {
        "layers": len(layers),
        "heads": heads,
        "mlp_hidden": hidden,
        "residual_width": model.d_model,
        "params": int(sum(a.size for a in arrays)),
        "nonzero_params": int(sum(np.count_nonzero(a) for a in arrays)),
        "output_encoding": model.readout.encoding_enum.value,
    }


def weight_arrays(module: Any) -> dict[str, np.ndarray]:
    """Every weight of a tensor-level module by name: `embed.token`, `embed.position`,
    `L{layer}.{label}.W_Q` ... `.scale`, `L{layer}.{label}.W_in` ... (the ONNX initializer names)."""
    from raspc.dialects.tensor import AttentionHeadOp, MlpOp, dense_to_numpy, tensor_model

    model = tensor_model(module)
    out = {
        "embed.token": dense_to_numpy(model.embed.token_embedding),
        "embed.position": dense_to_numpy(model.embed.position_embedding),
    }
    for op, prefix in model.block_prefixes().items():
        if isinstance(op, AttentionHeadOp):
            for name, attr in (("W_Q", op.w_q), ("W_K", op.w_k), ("W_V", op.w_v), ("W_O", op.w_o)):
                out[f"{prefix}.{name}"] = dense_to_numpy(attr)
            out[f"{prefix}.scale"] = np.asarray(op.scale_float, dtype=np.float32)
        elif isinstance(op, MlpOp):
            for name, attr in (
                ("W_in", op.w_in),
                ("b_in", op.b_in),
                ("W_out", op.w_out),
                ("b_out", op.b_out),
            ):
                out[f"{prefix}.{name}"] = dense_to_numpy(attr)
    return out


_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.bool_): "BOOL",
}


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors file format (a little-endian u64 header length, a JSON header of dtypes,
    shapes and byte offsets, then the raw little-endian data), written in name order so the bytes
    are deterministic; loads with `safetensors.numpy.load_file`."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        data = a.tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


CIRCUIT_GRAPH_KEY = "raspc.circuit_graph"


def circuit_graph_json(onnx_model: Any) -> Optional[str]:
    """The ground-truth circuit graph (heads and MLPs, what each computes, what it reads through Q,
    K, V or the MLP input) as JSON, when the ONNX export of this raspc stores it in the model's
    metadata (`raspc.circuit_graph`); None when it does not."""
    for prop in onnx_model.metadata_props:
        if prop.key == CIRCUIT_GRAPH_KEY:
            return prop.value
    return None


def _reason(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:2000]


def compile_one(spec: ProgramSpec, options: Options) -> Result:
    """Compiles `spec` under the options' budget and guard; never raises (a refusal, a timeout, an
    exhausted memory guard or a compiler error is the row's status)."""
    from raspc.errors import CompileError, RaspcError

    guard = install_memory_guard(options.memory_limit_mb)
    record = _empty_record(spec)
    files: dict[str, bytes] = {}
    start = time.perf_counter()
    try:
        with _Alarm(options.time_budget), guard if guard is not None else contextlib.nullcontext():
            _compile_into(spec, options, record, files)
        record["status"] = COMPILED
    except _OverBudget:
        record["status"], record["error_class"] = TIMEOUT, "Timeout"
        record["reason"] = f"compilation took more than the {options.time_budget:g} s budget"
        files.clear()
    except (_OverMemory, MemoryError):
        record["status"], record["error_class"] = MEMORY, "MemoryError"
        record["reason"] = f"compilation needed more than the {options.memory_limit_mb} MiB memory guard"
        files.clear()
    except CompileError as exc:
        record["status"], record["error_class"], record["reason"] = REFUSED, type(exc).__name__, _reason(exc)
        files.clear()
    except RaspcError as exc:  # a bad program file, vocabulary, IR: the user's input, refused
        record["status"], record["error_class"], record["reason"] = REFUSED, type(exc).__name__, _reason(exc)
        files.clear()
    except Exception as exc:  # noqa: BLE001 - a compiler bug or a program that raises: recorded, not fatal
        record["status"], record["error_class"], record["reason"] = ERROR, type(exc).__name__, _reason(exc)
        files.clear()
    seconds = time.perf_counter() - start
    timing = {
        "id": spec.id,
        "compile_seconds": round(seconds, 4),
        "peak_rss_mb": peak_rss_mb(),
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }
    return Result(spec.id, record, timing, files)


_RESULT_KEYS = (
    "source",
    "rasp_ir",
    "vocab",
    "status",
    "error_class",
    "reason",
    "layers",
    "heads",
    "mlp_hidden",
    "residual_width",
    "params",
    "nonzero_params",
    "output_encoding",
    "onnx_file",
    "onnx_sha256",
    "onnx_bytes",
    "weights_file",
    "circuit_graph",
)


def _empty_record(spec: ProgramSpec) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": spec.id,
        "source_kind": spec.kind,
        "source_ref": spec.ref,
        "max_seq_len": spec.max_seq_len,
        "causal": spec.causal,
    }
    record.update(dict.fromkeys(_RESULT_KEYS))
    return record


def failure(
    spec: ProgramSpec, status: str, error_class: str, reason: str, seconds: float, worker: str = ""
) -> Result:
    """The row of a program whose worker was stopped or died (the driver writes it): no source or IR,
    which only a worker computes."""
    record = _empty_record(spec)
    record.update(status=status, error_class=error_class, reason=reason)
    timing = {"id": spec.id, "compile_seconds": round(seconds, 4), "peak_rss_mb": None, "worker": worker}
    return Result(spec.id, record, timing)


def _compile_into(
    spec: ProgramSpec, options: Options, record: dict[str, Any], files: dict[str, bytes]
) -> None:
    from raspc.compiler import (
        DEFAULT_PIPELINE,
        compile_module,
        context,
        level_of,
        parse_ir,
        remaining_pipeline,
    )
    from raspc.dialects.common import container_of
    from raspc.errors import IRError
    from raspc.lowering.program_to_rasp import program_to_rasp
    from raspc.lowering.tensor_to_onnx import tensor_to_onnx
    from raspc.random_programs import ir_text, stable_labels

    pipeline = options.pipeline or DEFAULT_PIPELINE
    if spec.kind == "mlir":
        module = parse_ir(spec.text or "", spec.filename or "<input>")
        level = level_of(module)
        input_spec = container_of(module).spec
        record.update(
            vocab=_json(tuple(input_spec.vocab)), max_seq_len=input_spec.max_seq_len, causal=input_spec.causal
        )
        record["source"] = spec.text if level != "rasp" else None
        if level == "rasp":
            record["rasp_ir"] = spec.text
        pipeline = remaining_pipeline(module, pipeline)
    else:
        program, vocab, max_seq_len, causal, source = build_program(spec)
        record.update(source=source, vocab=_json(tuple(vocab)), max_seq_len=max_seq_len, causal=causal)
        module = program_to_rasp(stable_labels(program), vocab, max_seq_len, "BOS", "PAD", causal)
        record["rasp_ir"] = ir_text(module, context())
    module = compile_module(module, pipeline)
    if level_of(module) != "tensor":
        raise IRError(f"the pipeline ends at the {level_of(module)} level, not tensor: '{pipeline}'")
    onnx_model = tensor_to_onnx(module)
    data = onnx_model.SerializeToString()
    record.update(model_stats(module))
    record.update(
        onnx_file=f"models/{spec.id}.onnx",
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        onnx_bytes=len(data),
        circuit_graph=circuit_graph_json(onnx_model),
    )
    files["onnx"] = data
    if options.weights:
        meta = {p.key: p.value for p in onnx_model.metadata_props if p.key.startswith("raspc.")}
        files["weights"] = safetensors_bytes(weight_arrays(module), meta)
        record["weights_file"] = f"weights/{spec.id}.safetensors"


__all__ = [
    "Options",
    "Result",
    "compile_one",
    "failure",
    "build_program",
    "model_stats",
    "weight_arrays",
    "safetensors_bytes",
    "install_memory_guard",
    "resident_bytes",
    "peak_rss_mb",
    "STATUSES",
    "COMPILED",
    "REFUSED",
    "TIMEOUT",
    "MEMORY",
    "ERROR",
]
