"""Tracr's model object on raspc models: params, encoders, model_config, apply's per-layer outputs,
and Tracr's README and notebook snippets run unchanged apart from the import."""

from __future__ import annotations

import numpy as np
import pytest

from raspc import compile_rasp_to_model, compiling, lib, rasp
from raspc.interpreters.tensor import attention_mask


def tracr_forward(model, seq):
    """Tracr's transformer (tracr/transformer/model.py: attention then MLP per layer, logits divided
    by sqrt(key_size), no layer norm) on `model.params`, with raspc's mask."""
    params, cfg = model.params, model.model_config
    ids = np.array([model.input_encoder.encode(seq)])
    t = ids.shape[1]
    x = params["token_embed"]["embeddings"][ids] + params["pos_embed"]["embeddings"][:t][None]
    mask = attention_mask(ids, model.input_encoder.pad_encoding, cfg.causal)[:, None]  # [B, 1, T, T]
    residuals, logits_out = [], []
    for layer in range(cfg.num_layers):
        a = f"transformer/layer_{layer}/attn"

        def heads(name):
            p = params[f"{a}/{name}"]
            return (x @ p["w"] + p["b"]).reshape(1, t, cfg.num_heads, cfg.key_size)

        q, k, v = heads("query"), heads("key"), heads("value")
        logits = np.einsum("bthd,bThd->bhtT", q, k) / np.sqrt(cfg.key_size) + mask
        pattern = np.exp(logits - logits.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        z = np.einsum("bhtT,bThd->bthd", pattern, v).reshape(1, t, -1)
        x = x + z @ params[f"{a}/linear"]["w"] + params[f"{a}/linear"]["b"]
        residuals.append(x)
        logits_out.append(logits)
        m = f"transformer/layer_{layer}/mlp"
        hidden = np.maximum(x @ params[f"{m}/linear_1"]["w"] + params[f"{m}/linear_1"]["b"], 0)
        x = x + hidden @ params[f"{m}/linear_2"]["w"] + params[f"{m}/linear_2"]["b"]
        residuals.append(x)
    return residuals, logits_out


CASES = [
    ("make_sort_unique", lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3, 4], 5, ["BOS", 3, 1, 4, 2]),
    ("make_hist", lib.make_hist(), ["a", "b", "c"], 5, ["BOS", "a", "b", "a", "c"]),
    ("make_frac_prevs", lib.make_frac_prevs(rasp.numerical(rasp.tokens == "a")), ["a", "b"], 6,
     ["BOS", "a", "b", "b", "a"]),
    ("make_induction", lib.make_induction(), ["a", "b", "c"], 6, ["BOS", "a", "b", "c", "a", "b"]),
]


@pytest.mark.parametrize("name,program,vocab,max_seq_len,seq", CASES, ids=[c[0] for c in CASES])
def test_params_in_tracrs_forward_give_the_models_residuals(name, program, vocab, max_seq_len, seq) -> None:
    model = compile_rasp_to_model(program, vocab, max_seq_len)
    out = model.apply(seq)
    residuals, logits = tracr_forward(model, seq)
    cfg = model.model_config
    assert len(out.residuals) == len(out.layer_outputs) == 2 * cfg.num_layers == len(residuals)
    assert len(out.attn_logits) == cfg.num_layers
    for mine, tracr in zip(out.residuals, residuals):
        np.testing.assert_allclose(mine, tracr, rtol=1e-5, atol=1e-4)
    for mine, tracr in zip(out.attn_logits, logits):
        live = tracr > -1e8  # masked entries: -1e9 in both, up to rounding
        np.testing.assert_allclose(mine[live], tracr[live], rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(out.residuals[-1][0], out.residual)
    np.testing.assert_allclose(out.input_embeddings + sum(out.layer_outputs), out.residuals[-1], rtol=1e-5, atol=1e-4)
    expected = rasp.evaluate(program, seq[1:])
    if model.output_encoding == "numerical":
        np.testing.assert_allclose(out.decoded[1:], expected, rtol=1e-6)
    else:
        assert out.decoded == ["BOS", *expected]


def test_encoders_and_config() -> None:
    model = compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens), [1, 2, 3], 4)
    enc = model.input_encoder
    assert enc.bos_token == "BOS" and enc.pad_token == "PAD"
    assert enc.encode(["BOS", 3, 1]) == [enc.bos_encoding, 2, 0]
    assert enc.decode(enc.encode(["BOS", 2, 3])) == ["BOS", 2, 3]
    assert model.output_encoder.decode(list(range(len(model.output_values))) + [-1]) == [*model.output_values, None]
    cfg = model.model_config
    assert (cfg.num_layers, cfg.layer_norm, cfg.causal) == (2, False, False)
    assert model.params["transformer/layer_0/attn/query"]["w"].shape == (len(model.residual_labels),
                                                                          cfg.num_heads * cfg.key_size)
    numerical = compile_rasp_to_model(lib.make_frac_prevs(rasp.numerical(rasp.tokens == "a")), ["a", "b"], 4)
    assert numerical.output_encoder.decode([0.5]) == [0.5]
    from raspc.errors import InputError

    with pytest.raises(InputError):
        enc.encode([1, 2])


def test_tracr_readme_snippet_runs() -> None:
    # Tracr's README, with `from tracr.rasp import rasp` / `from tracr.compiler import compiling`
    # replaced by raspc's imports (done at the top of this file)
    def make_length():
        all_true_selector = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)
        return rasp.SelectorWidth(all_true_selector)

    length = make_length()  # `length` is not a primitive in our implementation.
    opp_index = length - rasp.indices - 1
    flip = rasp.Select(rasp.indices, opp_index, rasp.Comparison.EQ)
    reverse = rasp.Aggregate(flip, rasp.tokens)

    bos = "BOS"
    model = compiling.compile_rasp_to_model(
        reverse,
        vocab={1, 2, 3},
        max_seq_len=5,
        compiler_bos=bos,
    )

    out = model.apply([bos, 1, 2, 3])
    assert out.decoded == ["BOS", 3, 2, 1]


def test_tracr_notebook_plotting_snippets_run(tmp_path) -> None:
    """The plotting cells of Tracr's examples/Visualize_Tracr_Models.ipynb, verbatim (the imports
    cell minus its JAX precision line, which is about JAX), on raspc models."""
    matplotlib = pytest.importorskip("matplotlib", reason="the notebook's plots need matplotlib (the tl extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # ---- notebook: Plotting functions (verbatim)
    def tidy_label(label, value_width=5):
        if ':' in label:
            label, value = label.split(':')
        else:
            value = ''
        return label + f":{value:>{value_width}}"

    def add_residual_ticks(model, value_width=5, x=False, y=True):
        if y:
            plt.yticks(
                np.arange(len(model.residual_labels))+0.5,
                [tidy_label(l, value_width=value_width)
                 for l in model.residual_labels],
                family='monospace',
                fontsize=20,
            )
        if x:
            plt.xticks(
                np.arange(len(model.residual_labels))+0.5,
                [tidy_label(l, value_width=value_width)
                 for l in model.residual_labels],
                family='monospace',
                rotation=90,
                fontsize=20,
            )

    def plot_computation_trace(model,
                               input_labels,
                               residuals_or_outputs,
                               add_input_layer=False,
                               figsize=(12, 9)):
        fig, axes = plt.subplots(nrows=1, ncols=len(residuals_or_outputs), figsize=figsize, sharey=True)
        value_width = max(map(len, map(str, input_labels))) + 1

        for i, (layer, ax) in enumerate(zip(residuals_or_outputs, axes)):
            plt.sca(ax)
            plt.pcolormesh(layer[0].T, vmin=0, vmax=1)
            if i == 0:
                add_residual_ticks(model, value_width=value_width)
            plt.xticks(
                np.arange(len(input_labels))+0.5,
                input_labels,
                rotation=90,
                fontsize=20,
            )
            if add_input_layer and i == 0:
                title = 'Input'
            else:
                layer_no = i - 1 if add_input_layer else i
                layer_type = 'Attn' if layer_no % 2 == 0 else 'MLP'
                title = f'{layer_type} {layer_no // 2 + 1}'
            plt.title(title, fontsize=20)

    def plot_residuals_and_input(model, inputs, figsize=(12, 9)):
        """Applies model to inputs, and plots the residual stream at each layer."""
        model_out = model.apply(inputs)
        residuals = np.concatenate([model_out.input_embeddings[None, ...],
                                    model_out.residuals], axis=0)
        plot_computation_trace(
            model=model,
            input_labels=inputs,
            residuals_or_outputs=residuals,
            add_input_layer=True,
            figsize=figsize)

    def plot_layer_outputs(model, inputs, figsize=(12, 9)):
        """Applies model to inputs, and plots the outputs of each layer."""
        model_out = model.apply(inputs)
        plot_computation_trace(
            model=model,
            input_labels=inputs,
            residuals_or_outputs=model_out.layer_outputs,
            add_input_layer=False,
            figsize=figsize)

    # ---- notebook: Define RASP programs (the cases it offers that compile at this size quickly)
    def get_program(program_name, max_seq_len):
        """Returns RASP program and corresponding token vocabulary."""
        if program_name == "frac_prevs":
            vocab = {"a", "b", "c", "x"}
            program = lib.make_frac_prevs((rasp.tokens == "x").named("is_x"))
        elif program_name == "dyck-2":
            vocab = {"(", ")", "{", "}"}
            program = lib.make_shuffle_dyck(pairs=["()", "{}"])
        elif program_name == "sort":
            vocab = {1, 2, 3, 4, 5}
            program = lib.make_sort(
                rasp.tokens, rasp.tokens, max_seq_len=max_seq_len, min_key=1)
        elif program_name == "sort_unique":
            vocab = {1, 2, 3, 4, 5}
            program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
        else:
            raise NotImplementedError(f"Program {program_name} not implemented.")
        return program, vocab

    # ---- notebook: Assemble model, Forward pass, Plot residual stream, Plot layer outputs
    for program_name, inputs in (("sort_unique", ["bos", 3, 4, 1]), ("frac_prevs", ["bos", "x", "a", "x"])):
        max_seq_len = 5
        program, vocab = get_program(program_name=program_name, max_seq_len=max_seq_len)
        assembled_model = compiling.compile_rasp_to_model(
            program=program,
            vocab=vocab,
            max_seq_len=max_seq_len,
            causal=False,
            compiler_bos="bos",
            compiler_pad="pad",
            mlp_exactness=100)
        decoded = assembled_model.apply(inputs).decoded
        assert decoded[0] == "bos" and len(decoded) == len(inputs)
        plot_residuals_and_input(model=assembled_model, inputs=inputs, figsize=(10, 9))
        plt.savefig(tmp_path / f"{program_name}_residuals.png")
        plot_layer_outputs(model=assembled_model, inputs=inputs, figsize=(8, 9))
        plt.savefig(tmp_path / f"{program_name}_layers.png")
        plt.close("all")
        assert (tmp_path / f"{program_name}_residuals.png").stat().st_size > 10_000
    assert get_program("dyck-2", 5)[1] == {"(", ")", "{", "}"}
