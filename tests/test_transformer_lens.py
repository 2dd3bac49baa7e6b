"""TransformerLens-named hooks in the ONNX graph, and the TransformerLens export (the `tl` extra).

The hook tests need only onnxruntime; the export tests skip without torch and transformer-lens
(`pip install -e ".[tl]"`; CI installs it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import library_model

from raspc import lib, rasp
from raspc.runtime import OnnxModel

HAS_TL = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformer_lens") is not None
needs_tl = pytest.mark.skipif(not HAS_TL, reason="needs the tl extra (torch, transformer-lens): pip install -e '.[tl]'")


def random_batch(name: str, model, rows: int = 24, seed: int = 0):
    """A padded batch of random inputs inside the program's domain, with the evaluator's answers."""
    vocab, max_seq_len = lib.LIBRARY_EXAMPLE_VOCAB[name]
    program = model.program
    rng = np.random.default_rng(seed)
    inputs, answers = [], []
    for _ in range(rows * 20):
        n = int(rng.integers(1, max_seq_len + 1))
        xs = [vocab[i] for i in rng.integers(0, len(vocab), size=n)]
        try:
            answers.append(rasp.evaluate(program, xs))
        except Exception:  # outside the program's domain (the evaluator raises too)
            continue
        inputs.append(xs)
        if len(inputs) == rows:
            break
    runtime = model.runtime
    ids = np.full((len(inputs), max(len(x) for x in inputs) + 1), runtime.pad_id, np.int64)
    for r, xs in enumerate(inputs):
        ids[r, : len(xs) + 1] = runtime.encode([runtime.bos, *xs])
    return inputs, answers, ids


def hooked_run(model, ids) -> dict[str, np.ndarray]:
    return OnnxModel.load(model.hooked_onnx_model.SerializeToString()).run(ids)


# --------------------------------------------------------------------------- hooked ONNX


@pytest.mark.parametrize("name", ["make_sort_unique", "make_shuffle_dyck2", "make_nary_sequencemap", "make_induction"])
def test_hooked_graph_outputs_transformer_lens_names_and_the_same_answers(name: str) -> None:
    model = library_model(name)
    _, _, ids = random_batch(name, model)
    hooked = hooked_run(model, ids)
    plain = OnnxModel.load(model.onnx_model.SerializeToString()).run(ids)
    np.testing.assert_array_equal(hooked["output"], plain["output"])
    np.testing.assert_array_equal(hooked["residual"], plain["residual"])
    cfg = model.model_config
    resid = hooked["blocks.0.hook_resid_pre"]
    np.testing.assert_array_equal(resid, hooked["hook_embed"] + hooked["hook_pos_embed"])
    for layer in range(cfg.num_layers):
        b = f"blocks.{layer}"
        np.testing.assert_array_equal(hooked[f"{b}.hook_resid_pre"], resid)
        heads = model.weights.heads_in(layer)
        if heads:
            result, pattern = hooked[f"{b}.attn.hook_result"], hooked[f"{b}.attn.hook_pattern"]
            assert result.shape == (*ids.shape, len(heads), len(model.residual_labels))
            assert pattern.shape == (ids.shape[0], len(heads), ids.shape[1], ids.shape[1])
            # "concatenate heads then project" == "project per head then sum"
            np.testing.assert_allclose(result.sum(axis=2), hooked[f"{b}.hook_attn_out"], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-6)
        else:
            assert f"{b}.attn.hook_pattern" not in hooked and not hooked[f"{b}.hook_attn_out"].any()
        np.testing.assert_allclose(hooked[f"{b}.hook_resid_mid"], resid + hooked[f"{b}.hook_attn_out"],
                                   rtol=1e-6, atol=1e-5)
        if f"{b}.mlp.hook_post" in hooked:
            np.testing.assert_array_equal(hooked[f"{b}.mlp.hook_post"], np.maximum(hooked[f"{b}.mlp.hook_pre"], 0))
        np.testing.assert_allclose(hooked[f"{b}.hook_resid_post"],
                                   hooked[f"{b}.hook_resid_mid"] + hooked[f"{b}.hook_mlp_out"], rtol=1e-6, atol=1e-5)
        resid = hooked[f"{b}.hook_resid_post"]
    np.testing.assert_array_equal(resid, hooked["residual"])
    np.testing.assert_array_equal(hooked["logits"], hooked["residual"][:, :, list(model.weights.readout_dims)])


def test_compile_hooks_on_the_command_line(tmp_path) -> None:
    path = tmp_path / "hist.onnx"
    cmd = [sys.executable, "-m", "raspc.cli.main", "compile", "lib:make_hist", "--vocab", "a,b,c",
           "--max-seq-len", "4", "-o", str(path)]
    subprocess.run([*cmd, "--hooks"], check=True, capture_output=True)
    names = OnnxModel.load(str(path)).output_names
    assert {"blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.0.hook_mlp_out", "logits"} <= set(names)
    bad = subprocess.run([*cmd, "--hooks", "--compact"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("raspc: error:")


def test_save_onnx_with_hooks(tmp_path) -> None:
    model = library_model("make_hist")
    model.save_onnx(tmp_path / "h.onnx", hooks=True)
    model.save_onnx(tmp_path / "p.onnx")
    hooked, plain = OnnxModel.load(str(tmp_path / "h.onnx")), OnnxModel.load(str(tmp_path / "p.onnx"))
    assert "blocks.0.attn.hook_result" in hooked.output_names and "blocks.0.attn.hook_result" not in plain.output_names
    assert hooked.apply(["BOS", "a", "b", "a"]).decoded == plain.apply(["BOS", "a", "b", "a"]).decoded


# --------------------------------------------------------------------------- TransformerLens


HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


@needs_tl
@pytest.mark.parametrize("name", sorted(lib.LIBRARY))
def test_transformer_lens_activations_equal_the_onnx_models(name: str) -> None:
    import torch

    model = library_model(name)
    inputs, answers, ids = random_batch(name, model)
    tl_model = model.to_transformer_lens()
    logits, cache = tl_model.run_with_cache(torch.from_numpy(ids))
    onnx_hooks = hooked_run(model, ids)

    def same(tl_value, onnx_value, what):
        np.testing.assert_allclose(tl_value.detach().numpy(), onnx_value, rtol=1e-5, atol=1e-5, err_msg=what)

    for layer in range(model.model_config.num_layers):
        b = f"blocks.{layer}"
        for hook in HOOKS:
            same(cache[f"{b}.{hook}"], onnx_hooks[f"{b}.{hook}"], f"{b}.{hook}")
        heads = len(model.weights.heads_in(layer))
        if heads:
            same(cache[f"{b}.attn.hook_pattern"][:, :heads], onnx_hooks[f"{b}.attn.hook_pattern"], f"{b} pattern")
        if f"{b}.mlp.hook_post" in onnx_hooks:
            width = onnx_hooks[f"{b}.mlp.hook_post"].shape[-1]
            same(cache[f"{b}.mlp.hook_post"][..., :width], onnx_hooks[f"{b}.mlp.hook_post"], f"{b} mlp")
    same(logits, onnx_hooks["logits"], "logits")
    decoded = tl_model.raspc.decode(logits)
    for row, xs, expected in zip(decoded, inputs, answers):
        got = row[1 : len(xs) + 1]
        if model.output_encoding == "numerical":
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        else:
            assert got == expected


@needs_tl
def test_labels_travel_to_transformer_lens_indices() -> None:
    import torch

    model = library_model("make_sort_unique")
    tl_model = model.to_transformer_lens()
    labels = tl_model.raspc
    layer, head = labels.head("sort")  # by label, as by the s-op it computes
    assert labels.head("L1.sort") == (layer, head) and layer == 1
    assert labels.residual_labels == tuple(model.residual_labels)
    assert labels.residual_index("one") == model.residual_labels.index("one")
    mlp_layer, start, stop = labels.mlp("target_pos")
    assert mlp_layer == 0 and stop > start
    ids = torch.tensor([labels.token_ids(["BOS", 3, 1, 2])])
    _, cache = tl_model.run_with_cache(ids)
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, head].detach().numpy()
    hooked = hooked_run(model, ids.numpy())
    np.testing.assert_allclose(pattern, hooked["blocks.1.attn.hook_pattern"][0, head], atol=1e-6)
    with pytest.raises(KeyError):
        labels.head("nothing")


@needs_tl
def test_exported_files_load_without_raspc(tmp_path) -> None:
    model = library_model("make_hist")
    onnx_path = tmp_path / "hist.onnx"
    model.save_onnx(onnx_path)
    out = subprocess.run([sys.executable, "-m", "raspc.cli.main", "export-tl", str(onnx_path), "-o",
                          str(tmp_path / "hist.pt")], capture_output=True, text=True, check=True)
    assert "hist.json" in out.stdout
    import transformer_lens

    # the README's loaders, in a process that never imports raspc
    common = '''
import json, sys, torch
doc = json.load(open("hist.json"))

def raspc_mask(tokens):  # True = masked: PAD keys, and every key but BOS for the BOS query
    mask = (tokens == doc["raspc"]["pad_id"])[:, None, None, :].expand(-1, 1, tokens.shape[1], -1).clone()
    if doc["config"]["attention_dir"] != "causal":
        mask[:, :, 0, 1:] = True
    return mask

vocab = doc["raspc"]["vocab"]
tokens = torch.tensor([[vocab.index(t) for t in ["BOS", "a", "b", "a"]]])
'''
    bridge = '''
from transformer_lens import TransformerBridge
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
import transformer_lens.model_bridge.sources.native  # registers TransformerBridge.boot_native

cfg = TransformerBridgeConfig(architecture="TransformerLensNative", init_weights=False, **doc["config"])
model = TransformerBridge.boot_native(cfg)
model.load_state_dict(convert_tl_checkpoint(torch.load("hist.pt"), model.cfg))
logits, cache = model.run_with_cache(tokens, attention_mask=raspc_mask(tokens))
'''
    hooked = '''
from transformer_lens import HookedTransformer, HookedTransformerConfig

model = HookedTransformer(HookedTransformerConfig(**doc["config"]))
model.load_state_dict(torch.load("hist.pt"), strict=False)
# HookedTransformer ignores attention_mask in bidirectional mode: mask the scores in a hook
mask_scores = lambda scores, hook: scores.masked_fill(raspc_mask(tokens), float("-inf"))
hooks = [(f"blocks.{l}.attn.hook_attn_scores", mask_scores) for l in range(model.cfg.n_layers)]
logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
'''
    check = '''
values = doc["raspc"]["output_values"]
print(json.dumps([values[i] for i in logits[0, 1:].argmax(-1).tolist()]))
assert not any(m == "raspc" or m.startswith("raspc.") for m in sys.modules)
'''
    loader = common + (bridge if hasattr(transformer_lens, "TransformerBridge") else hooked) + check
    run = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [2, 1, 2]
    config = json.loads((tmp_path / "hist.json").read_text())
    assert config["config"]["attn_scale"] == 2.0 and config["raspc"]["heads"]


def test_export_tl_errors_are_one_line(tmp_path) -> None:
    bad = subprocess.run([sys.executable, "-m", "raspc.cli.main", "export-tl", str(tmp_path / "none.onnx"), "-o",
                          str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("raspc: error:") and "Traceback" not in bad.stderr
