"""The dataset directory: one ONNX file per compiled program, an index, a journal for resuming.

    OUT/dataset.json            what the directory holds: format, raspc version, SOURCE, options
    OUT/index.jsonl             one row per program of the set, in set order (always written)
    OUT/index.parquet           the same rows (when pyarrow is installed)
    OUT/timings.jsonl           id, compile_seconds, peak_rss_mb, worker: what varies between runs
    OUT/models/ID.onnx          the compiled model (status "compiled" only)
    OUT/weights/ID.safetensors  its weights by name (with weights=True)
    OUT/journal.jsonl           every finished program, in finishing order (what a rerun skips)

The index, dataset.json, the models and the weights are byte-identical for the same SOURCE and
options, whatever the backend, the number of workers or the order programs finished in (only a
"timeout" or "memory" status depends on the machine). Timings live in their own file for that.
The driver is the only writer: workers return bytes, so no shared filesystem is needed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

from raspc.datasets.sources import DatasetError, ProgramSet
from raspc.datasets.worker import Result

FORMAT = "raspc-dataset/1"

# (name, arrow type, meaning): the index's columns, in order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "string", "program id, also the file name of its model"),
    ("source_kind", "string", "random | lib | python | mlir"),
    (
        "source_ref",
        "string",
        "where it comes from: random:seed=0:17, lib:make_hist, progs.py['sort'], f.mlir",
    ),
    (
        "source",
        "string",
        "Python that builds `program` (and vocab, max_seq_len, causal); the file's text for "
        "Python files and non-rasp IR files",
    ),
    ("rasp_ir", "string", "the traced program as rasp IR text"),
    ("vocab", "string", "the input vocabulary as JSON (ids follow its order; BOS and PAD come after)"),
    ("max_seq_len", "int64", "longest input (BOS not counted)"),
    ("causal", "bool", "compiled as a causal decoder"),
    ("status", "string", "compiled | refused | timeout | memory | error"),
    ("error_class", "string", "the CompileError class of a refusal (UnsupportedError, ValueSetError, ...)"),
    ("reason", "string", "the refusal's message"),
    ("layers", "int64", "layers (an attention and an MLP sublayer each)"),
    ("heads", "int64", "attention heads in all layers"),
    ("mlp_hidden", "int64", "MLP hidden units in all layers"),
    ("residual_width", "int64", "residual stream dimensions (each has a label in the model's metadata)"),
    ("params", "int64", "parameters: embeddings, heads' W_Q W_K W_V W_O, MLPs' W_in b_in W_out b_out"),
    ("nonzero_params", "int64", "parameters that are not zero"),
    ("output_encoding", "string", "categorical | numerical"),
    ("onnx_file", "string", "the model, relative to the dataset directory"),
    ("onnx_sha256", "string", "SHA-256 of the model file"),
    ("onnx_bytes", "int64", "size of the model file"),
    ("weights_file", "string", "the weights as safetensors (with --weights)"),
    (
        "circuit_graph",
        "string",
        "ground-truth circuit graph as JSON (null when this raspc has no such analysis)",
    ),
)
COLUMN_NAMES = tuple(c for c, _, _ in COLUMNS)
TIMING_COLUMNS = ("id", "compile_seconds", "peak_rss_mb", "worker")


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


class DatasetDir:
    """A dataset directory being written (see the module docstring)."""

    def __init__(self, path: str, pset: ProgramSet, settings: dict[str, Any]):
        self.path = path
        self.pset = pset
        self.settings = settings  # options that change the files (weights, pipeline): fixed per directory
        self.records: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, dict[str, Any]] = {}

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # -- opening -----------------------------------------------------------------
    def open(self) -> None:
        """Creates the directory, or checks that it holds this set, and reads what is done."""
        from raspc import __version__

        try:
            os.makedirs(self.file("models"), exist_ok=True)
            if self.settings.get("weights"):
                os.makedirs(self.file("weights"), exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot create '{self.path}': {exc.strerror or exc}") from None
        manifest = {
            "format": FORMAT,
            "raspc_version": __version__,
            "set": self.pset.identity,
            "settings": self.settings,
        }
        path = self.file("dataset.json")
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    old = json.load(f)
            except (OSError, ValueError) as exc:
                raise DatasetError(
                    f"'{path}' is unreadable ({exc}): not a raspc dataset directory?"
                ) from None
            for key, what in (
                ("format", "dataset format"),
                ("set", "program set"),
                ("settings", "set of options"),
                ("raspc_version", "raspc version"),
            ):
                if old.get(key) != manifest[key]:
                    raise DatasetError(
                        f"'{self.path}' holds a dataset made with a different {what} "
                        f"({json.dumps(old.get(key))}; this run: {json.dumps(manifest[key])}): resume it with "
                        "the same SOURCE and options, or "
                        "use a new directory"
                    )
        elif os.listdir(self.path) not in ([], ["models"], ["models", "weights"], ["weights", "models"]):
            raise DatasetError(f"'{self.path}' is not empty and holds no dataset.json: use a new directory")
        self.manifest = {
            **manifest,
            "source": self.pset.source,
            "programs": len(self.pset),
            "columns": {name: meaning for name, _, meaning in COLUMNS},
        }
        self._write_if_changed(
            path, (json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n").encode()
        )
        self._read_journal()

    def _read_journal(self) -> None:
        path = self.file("journal.jsonl")
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    rec, timing = entry["record"], entry["timing"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed run: that program is compiled again
                if rec.get("status") == "compiled" and not self._files_present(rec):
                    continue
                self.records[rec["id"]] = rec
                self.timings[rec["id"]] = timing

    def _files_present(self, rec: dict[str, Any]) -> bool:
        return all(
            rec.get(k) is None or os.path.exists(self.file(rec[k])) for k in ("onnx_file", "weights_file")
        )

    def pending(self, retry: Iterable[str] = ()) -> list:
        """The specs of the set not yet done (and those whose status is in `retry`)."""
        again = set(retry)
        return [s for s in self.pset if s.id not in self.records or self.records[s.id]["status"] in again]

    # -- writing -------------------------------------------------------------------
    def add(self, result: Result) -> None:
        """Writes a finished program's files, then its journal line (so a journal line means the files
        are there)."""
        rec = result.record
        if "onnx" in result.files:
            _atomic_write(self.file(rec["onnx_file"]), result.files["onnx"])
        if "weights" in result.files:
            _atomic_write(self.file(rec["weights_file"]), result.files["weights"])
        with open(self.file("journal.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"record": rec, "timing": result.timing}, ensure_ascii=False) + "\n")
        self.records[rec["id"]] = rec
        self.timings[rec["id"]] = result.timing

    def rows(self) -> list[dict[str, Any]]:
        return [
            {c: self.records[s.id].get(c) for c in COLUMN_NAMES} for s in self.pset if s.id in self.records
        ]

    def write_index(self) -> list[str]:
        """index.jsonl, index.parquet (with pyarrow) and timings.jsonl, in set order; a file whose bytes
        would not change is left untouched. Returns the index files."""
        rows = self.rows()
        written = [self.file("index.jsonl")]
        self._write_if_changed(written[0], _jsonl(rows))
        timings = [
            {c: self.timings[s.id].get(c) for c in TIMING_COLUMNS} for s in self.pset if s.id in self.timings
        ]
        self._write_if_changed(self.file("timings.jsonl"), _jsonl(timings))
        if parquet_available():
            written.append(self.file("index.parquet"))
            self._write_if_changed(written[1], parquet_bytes(rows))
        return written

    @staticmethod
    def _write_if_changed(path: str, data: bytes) -> None:
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return
        except OSError:
            pass
        _atomic_write(path, data)


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    """The rows as a Parquet file with the fixed schema of COLUMNS (deterministic bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
    schema = pa.schema([pa.field(name, types[t]) for name, t, _ in COLUMNS])
    table = pa.Table.from_pydict({name: [r.get(name) for r in rows] for name in COLUMN_NAMES}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_index(path: str) -> list[dict[str, Any]]:
    """The rows of a dataset's index.jsonl (`path`: the dataset directory or the file), as dicts."""
    if os.path.isdir(path):
        path = os.path.join(path, "index.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}': {exc.strerror or exc}") from None


__all__ = [
    "DatasetDir",
    "COLUMNS",
    "COLUMN_NAMES",
    "TIMING_COLUMNS",
    "FORMAT",
    "read_index",
    "parquet_bytes",
    "parquet_available",
]
