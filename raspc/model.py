"""The public, Tracr-compatible API: `compile_rasp_to_model` and `CompiledModel`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import onnx
from xdsl.dialects.builtin import ModuleOp

from raspc import rasp
from raspc.compiler import DEFAULT_PIPELINE, compile_program
from raspc.errors import InputError, PipelineError
from raspc.runtime import ModelOutput, OnnxModel  # ModelOutput: what both models' apply answer

if TYPE_CHECKING:
    from raspc.analysis.weights import ModelWeights


class CompiledModel:
    """A compiled RASP program: its IR at every level, the ONNX model, and an onnxruntime session."""

    def __init__(self, module: ModuleOp, snapshots: dict[str, ModuleOp], program: rasp.SOp | None = None,
                 pipeline: str = DEFAULT_PIPELINE):
        from raspc.lowering.compact_onnx import tensor_to_compact_onnx

        self.module = module
        self.pipeline = pipeline
        self._snapshots = snapshots
        self._ir: dict[str, str] = {}
        self.program = program
        self._onnx_model: onnx.ModelProto | None = None
        # the session runs the compact graph (same answers, cost follows the non-zero weights)
        self.compact_onnx_model: onnx.ModelProto = tensor_to_compact_onnx(self.labelled_module)
        self.runtime = OnnxModel.load(self.compact_onnx_model.SerializeToString())

    _program_graph: dict[str, Any] | None = None
    _program_graph_built = False

    @property
    def program_graph(self) -> dict[str, Any] | None:
        """The program as the rasp passes left it (raspc.report.program_graph), which the
        transformer-shaped ONNX graph's metadata stores: read on first use from the rasp-level module
        the pipeline reached (recompiled from the traced program, as `module_at` does: compilation is
        deterministic), so a model that is only run never builds it."""
        if not self._program_graph_built:
            from raspc.compiler import compile_module, level_of
            from raspc.report.program_graph import program_graph

            graph = None
            if "rasp" in self._snapshots:
                module = compile_module(self._snapshots["rasp"].clone(), self.pipeline, stop_at="rasp")
                graph = program_graph(module) if level_of(module) == "rasp" else None
            self.program_graph = graph
        return self._program_graph

    @program_graph.setter
    def program_graph(self, graph: dict[str, Any] | None) -> None:
        self._program_graph, self._program_graph_built = graph, True

    @property
    def onnx_model(self) -> onnx.ModelProto:
        """The transformer-shaped ONNX graph: full residual, named per-head intermediates and
        weights (what circuit analysis, hooks and TransformerLens read); built on first use."""
        if self._onnx_model is None:
            from raspc.lowering.tensor_to_onnx import tensor_to_onnx

            from raspc.report.program_graph import attach_program_graph

            self._onnx_model = attach_program_graph(tensor_to_onnx(self.module), self.program_graph)
        return self._onnx_model

    # -- inspection ------------------------------------------------------
    def ir(self, level: str = "tensor") -> str:
        """IR text at `level`: "rasp" (as traced), "craft" (blocks, layers, layout) or "tensor"."""
        if level not in self._ir:
            self._ir[level] = str(self.module_at(level))
        return self._ir[level]

    def module_at(self, level: str) -> ModuleOp:
        """The module at `level` (an intermediate level is recompiled from the traced program, once:
        compilation is deterministic, so it is the module the pipeline went through)."""
        from raspc.compiler import LEVELS, compile_module, level_of

        if level not in self._snapshots:
            if level not in LEVELS or "rasp" not in self._snapshots:
                raise PipelineError(f"no IR at level '{level}'; levels: {', '.join(LEVELS)}")
            module = compile_module(self._snapshots["rasp"].clone(), self.pipeline, stop_at=level)
            if level_of(module) != level:
                raise PipelineError(f"the pipeline never reaches the {level} level: '{self.pipeline}'")
            self._snapshots[level] = module
        return self._snapshots[level]

    @property
    def residual_labels(self) -> list[str]:
        return list(self.runtime.residual_labels)

    @property
    def vocab(self) -> tuple[Any, ...]:
        return self.runtime.input_vocab

    @property
    def max_seq_len(self) -> int:
        return self.runtime.max_seq_len

    @property
    def output_values(self) -> tuple[Any, ...]:
        return self.runtime.output_values

    @property
    def output_encoding(self) -> str:
        return self.runtime.output_encoding

    # -- running ---------------------------------------------------------
    def apply(self, seq: Sequence[Any]) -> "TracrOutput":
        """Runs one sequence that starts with the BOS token, e.g. ["BOS", "a", "b"]: `.decoded`,
        `.output`, `.residual`, and what Tracr's output has (`.input_embeddings`, `.residuals`,
        `.layer_outputs`, `.attn_logits`; see TracrOutput)."""
        out = self.runtime.apply(seq)
        tokens = list(seq)
        return TracrOutput(out.decoded, out.output, out.residual, trace=lambda: self._trace(tokens))

    def apply_batch(self, seqs: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Runs sequences of mixed lengths in one padded, masked batch; returns decoded lists."""
        return self.runtime.apply_batch(seqs)

    def report(self, path: str | os.PathLike[str], tokens: Sequence[Any] | None = None) -> str:
        """Writes the HTML report (raspc.report) of this model run on `tokens` (BOS first; default:
        an example input) to `path`; returns the path."""
        from raspc.report import ModelView, write_report

        return write_report(ModelView(self.onnx_model, os.path.basename(os.fspath(path))), os.fspath(path), tokens)

    def save_onnx(self, path: str | os.PathLike[str], *, compact: bool = False, hooks: bool = False) -> None:
        """Writes the transformer-shaped graph, or with `compact` the faster deployment graph (same
        inputs, outputs, metadata and answers; not readable by `raspc circuits`). With `hooks`, the
        transformer-shaped graph also outputs its intermediates under TransformerLens's hook names
        (`blocks.0.hook_resid_pre`, `blocks.0.attn.hook_pattern`, ...)."""
        if compact and hooks:
            raise InputError("hooks name the transformer-shaped graph's intermediates: not with compact=True")
        model = self.compact_onnx_model if compact else self.hooked_onnx_model if hooks else self.onnx_model
        with open(path, "wb") as f:
            f.write(model.SerializeToString())

    # -- Tracr's model object and TransformerLens (issue 8) ----------------
    @property
    def labelled_module(self) -> ModuleOp:
        """`module` with one residual dimension per direction: itself, or for a model compiled with
        `reuse_residual=True` the same model without reuse (expand-residual). What this object
        runs and shows (`apply`, Tracr's activations, `weights`, TransformerLens) is this one, so
        `residual_labels` label every residual it returns; `onnx_model` and `save_onnx` keep the
        reuse (its layout in the file's metadata)."""
        if getattr(self, "_labelled_module", None) is None:
            from raspc.passes.expand_residual import expand_residual

            self._labelled_module = expand_residual(self.module)
        return self._labelled_module

    @property
    def hooked_onnx_model(self) -> onnx.ModelProto:
        """The transformer-shaped graph with TransformerLens-named hook outputs (built on first use)."""
        if getattr(self, "_hooked_onnx_model", None) is None:
            from raspc.lowering.tensor_to_onnx import tensor_to_onnx

            self._hooked_onnx_model = tensor_to_onnx(self.labelled_module, hooks=True)
        return self._hooked_onnx_model

    @property
    def weights(self) -> "ModelWeights":
        """The weights as numpy arrays, in block order (raspc.analysis.weights)."""
        if getattr(self, "_weights", None) is None:
            from raspc.analysis.weights import ModelWeights

            self._weights = ModelWeights.from_module(self.labelled_module)
        return self._weights

    @property
    def model_config(self) -> "TransformerConfig":
        """Tracr's `model_config`: heads per layer (the most any layer has), layers, key size (the
        widest head), MLP hidden size (the widest layer), no layer norm, causal or not."""
        w = self.weights
        return TransformerConfig(
            num_heads=max([len(w.heads_in(lyr)) for lyr in range(w.n_layers)] + [1]),
            num_layers=w.n_layers,
            key_size=max([max(h.w_q.shape[1], h.w_v.shape[1]) for h in w.heads] + [1]),
            mlp_hidden_size=max([m.w_in.shape[1] for m in w.mlps] + [1]),
            causal=w.causal,
        )

    @property
    def params(self) -> dict[str, dict[str, np.ndarray]]:
        """The weights in Tracr's naming (`token_embed`, `pos_embed`, `transformer/layer_{l}/attn/query`
        ... `/mlp/linear_2`, each `{"w", "b"}`), heads zero-padded to `key_size` and stacked. Tracr
        divides attention logits by sqrt(key_size): each head's own softmax scale times sqrt(key_size)
        is folded into its query weights, so Tracr's forward on these params computes raspc's scores
        (under raspc's mask, in which BOS attends only to itself)."""
        w, cfg = self.weights, self.model_config
        d, heads, size, hidden = w.d_model, cfg.num_heads, cfg.key_size, cfg.mlp_hidden_size
        params: dict[str, dict[str, np.ndarray]] = {
            "token_embed": {"embeddings": w.token_embedding.copy()},
            "pos_embed": {"embeddings": w.position_embedding.copy()},
        }
        for layer in range(cfg.num_layers):
            q, k, v = (np.zeros((d, heads * size), np.float32) for _ in range(3))
            o = np.zeros((heads * size, d), np.float32)
            for i, h in enumerate(w.heads_in(layer)):
                at = i * size
                q[:, at: at + h.w_q.shape[1]] = h.w_q * np.float32(h.scale * np.sqrt(size))
                k[:, at: at + h.w_k.shape[1]] = h.w_k
                v[:, at: at + h.w_v.shape[1]] = h.w_v
                o[at: at + h.w_o.shape[0]] = h.w_o
            attn = f"transformer/layer_{layer}/attn"
            for name, m in (("query", q), ("key", k), ("value", v)):
                params[f"{attn}/{name}"] = {"w": m, "b": np.zeros((heads * size,), np.float32)}
            params[f"{attn}/linear"] = {"w": o, "b": np.zeros((d,), np.float32)}
            w_in, b_in = np.zeros((d, hidden), np.float32), np.zeros((hidden,), np.float32)
            w_out, b_out = np.zeros((hidden, d), np.float32), np.zeros((d,), np.float32)
            mlp = w.mlp_in(layer)
            if mlp is not None:
                n = mlp.w_in.shape[1]
                w_in[:, :n], b_in[:n], w_out[:n], b_out[:] = mlp.w_in, mlp.b_in, mlp.w_out, mlp.b_out
            params[f"transformer/layer_{layer}/mlp/linear_1"] = {"w": w_in, "b": b_in}
            params[f"transformer/layer_{layer}/mlp/linear_2"] = {"w": w_out, "b": b_out}
        return params

    @property
    def input_encoder(self) -> "CategoricalEncoder":
        """Tracr's input encoder: `encode([bos, tokens...])` -> ids, `decode(ids)`, `encoding_map`."""
        w = self.weights
        return CategoricalEncoder(w.vocab, w.vocab[w.bos_id], w.vocab[w.pad_id], self.max_seq_len + 1)

    @property
    def output_encoder(self) -> "CategoricalEncoder | NumericalEncoder":
        """Tracr's output encoder: categorical `decode(indices)` -> values (-1 -> None), or numerical."""
        if self.output_encoding == "numerical":
            return NumericalEncoder()
        return CategoricalEncoder(self.output_values)

    def to_transformer_lens(self) -> Any:
        """This model as a TransformerLens model with identical activations: a `TransformerBridge`
        (TransformerLens 4.x) or a `HookedTransformer` (3.x); needs the `tl` extra. `.raspc` on it
        maps raspc's names to TransformerLens indices (raspc.export.transformer_lens)."""
        from raspc.export.transformer_lens import to_transformer_lens

        return to_transformer_lens(self)

    def _trace(self, seq: Sequence[Any]) -> dict[str, Any]:
        """Tracr's per-layer activations of one sequence, from the hooked graph."""
        if getattr(self, "_hooked_runtime", None) is None:
            self._hooked_runtime = OnnxModel.load(self.hooked_onnx_model.SerializeToString())
        ids = np.array([self.runtime.encode(seq)], dtype=np.int64)
        run = self._hooked_runtime.run(ids)
        cfg = self.model_config
        residuals, layer_outputs, attn_logits = [], [], []
        for layer in range(cfg.num_layers):
            b = f"blocks.{layer}"
            residuals += [run[f"{b}.hook_resid_mid"], run[f"{b}.hook_resid_post"]]
            layer_outputs += [run[f"{b}.hook_attn_out"], run[f"{b}.hook_mlp_out"]]
            logits = np.zeros((1, cfg.num_heads, ids.shape[1], ids.shape[1]), np.float32)
            if f"{b}.attn.hook_attn_scores" in run:
                scores = run[f"{b}.attn.hook_attn_scores"]
                logits[:, : scores.shape[1]] = scores
            attn_logits.append(logits)
        return {"input_embeddings": run["blocks.0.hook_resid_pre"] if cfg.num_layers else run["residual"],
                "residuals": residuals, "layer_outputs": layer_outputs, "attn_logits": attn_logits}


# --------------------------------------------------------------------------- Tracr's model objects


class TracrOutput(ModelOutput):
    """`apply`'s answer with Tracr's fields besides ModelOutput's: `input_embeddings` [1, T, D];
    `residuals` and `layer_outputs`, one [1, T, D] per sublayer (attention then MLP, two per layer,
    an empty sublayer's output is zeros); `attn_logits`, one [1, heads, T, T] per layer (scaled
    scores, masked ones at -1e9; heads a layer lacks are zeros).

    Those four come from the transformer-shaped graph with hooks, run when one of them is first
    read (`trace`), so an answer read only for `.decoded` costs one run of the compact graph."""

    def __init__(self, decoded: list[Any], output: np.ndarray, residual: np.ndarray,
                 trace: Callable[[], dict[str, Any]] | None = None, **activations: Any):
        super().__init__(decoded, output, residual)
        self._trace, self._activations = trace, (activations or None)

    def _activation(self, name: str) -> Any:
        if self._activations is None:
            self._activations = self._trace() if self._trace is not None else {}
        return self._activations.get(name, np.zeros(0, np.float32) if name == "input_embeddings" else [])

    @property
    def input_embeddings(self) -> np.ndarray:
        return self._activation("input_embeddings")

    @property
    def residuals(self) -> list[np.ndarray]:
        return self._activation("residuals")

    @property
    def layer_outputs(self) -> list[np.ndarray]:
        return self._activation("layer_outputs")

    @property
    def attn_logits(self) -> list[np.ndarray]:
        return self._activation("attn_logits")


@dataclass
class TransformerConfig:
    """Tracr's `model.model_config` (raspc's models have no layer norm and use ReLU MLPs)."""

    num_heads: int
    num_layers: int
    key_size: int
    mlp_hidden_size: int
    dropout_rate: float = 0.0
    layer_norm: bool = False
    causal: bool = False

    @staticmethod
    def activation_function(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)


class CategoricalEncoder:
    """Tracr's categorical encoder: `encoding_map` value -> id, `encode`, `decode` (id -> value, -1 ->
    None). Built from the values in id order, so `decode` keeps values a dict would merge (1, 1.0)."""

    def __init__(self, values: Sequence[Any], bos_token: Any = None, pad_token: Any = None,
                 max_seq_len: int | None = None):
        self._values = tuple(values)
        self.encoding_map: dict[Any, int] = {}
        for i, v in enumerate(self._values):
            self.encoding_map.setdefault(v, i)
        self._bos_token, self._pad_token, self._max_seq_len = bos_token, pad_token, max_seq_len

    def encode(self, inputs: Sequence[Any]) -> list[int]:
        if self._bos_token is not None and (not inputs or inputs[0] != self._bos_token):
            raise InputError(f"the first token must be the BOS token {self._bos_token!r}")
        if self._max_seq_len is not None and len(inputs) > self._max_seq_len:
            raise InputError(f"{len(inputs)} tokens (BOS included) is more than {self._max_seq_len}")
        missing = [x for x in inputs if x not in self.encoding_map]
        if missing:
            raise InputError(f"tokens {missing!r} are not in the vocabulary {list(self.encoding_map)!r}")
        return [self.encoding_map[x] for x in inputs]

    def decode(self, encodings: Sequence[int]) -> list[Any]:
        return [None if int(i) < 0 else self._values[int(i)] for i in encodings]

    @property
    def vocab_size(self) -> int:
        return len(self._values)

    @property
    def bos_token(self) -> Any:
        return self._bos_token

    @property
    def pad_token(self) -> Any:
        return self._pad_token

    @property
    def bos_encoding(self) -> int | None:
        return None if self._bos_token is None else self.encoding_map[self._bos_token]

    @property
    def pad_encoding(self) -> int | None:
        return None if self._pad_token is None else self.encoding_map[self._pad_token]


class NumericalEncoder:
    """Tracr's numerical encoder: the identity."""

    def encode(self, inputs: Sequence[float]) -> list[float]:
        return list(inputs)

    def decode(self, encodings: Sequence[float]) -> list[float]:
        return [float(x) for x in encodings]


def compile_rasp_to_model(
    program: rasp.SOp,
    vocab: Sequence[Any] | set[Any],
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    mlp_exactness: int | None = None,
    *,
    pipeline: str = DEFAULT_PIPELINE,
    verify: bool | int | str = False,
    reuse_residual: bool = False,
) -> CompiledModel:
    """Compiles a RASP program to a transformer (Tracr's signature; `mlp_exactness` is accepted and
    ignored: raspc's MLPs are exact by construction). A set vocabulary is sorted for determinism.
    `verify` checks after every pass that the IR still computes the program: `True` on 32 random
    inputs (hypothesis, shrunk to a minimal failing one), an int on that many, `"exhaustive"` on
    every input up to max_seq_len when there are at most 100,000 (see raspc.verification).
    `reuse_residual` adds the reuse-residual pass: s-ops that are no longer read give their residual
    dimensions to later ones (a narrower residual; see README "Residual reuse")."""
    del mlp_exactness
    if reuse_residual:
        from raspc.compiler import with_residual_reuse

        pipeline = with_residual_reuse(pipeline)
    if isinstance(vocab, (set, frozenset)):
        from raspc.utils.values import sorted_values

        vocab = list(sorted_values(vocab))
    from raspc.compiler import level_of
    from raspc.errors import IRError

    module, snapshots = compile_program(
        program, vocab, max_seq_len, compiler_bos=compiler_bos, compiler_pad=compiler_pad, causal=causal,
        pipeline=pipeline, verify=verify, verify_end=False,  # the export below verifies the tensor module
    )
    if level_of(module) != "tensor":
        raise IRError(
            f"the pipeline ends at the {level_of(module)} level; a model needs it to reach tensor "
            f"(end with ...,lower-craft-to-tensor). Pipeline: '{pipeline}'"
        )
    return CompiledModel(module, snapshots, program, pipeline)
