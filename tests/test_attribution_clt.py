"""Cross-layer transcoders: circuit-tracer 0.5.0's CLT folder loads as it is, and graphs and feature interventions
with random CLTs equal circuit-tracer's (stored in tests/data/attribution/, made by the scripts its README names)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import anchorlens as al
from anchorlens.attribution.attribute import attribution_graph
from anchorlens.attribution.transcoders import Transcoder, TranscoderError, TranscoderSet, random_transcoders

from attribution_cases import CASES, case_model, case_transcoders
from test_attribution_oracle import compare, interventions_equal_circuit_tracers

DATA = Path(__file__).parent / "data" / "attribution"


def test_a_folder_circuit_tracer_wrote_loads_and_reconstructs_as_circuit_tracer(tmp_path):
    """circuit-tracer's own to_safetensors output (JumpReLU, 3 layers): the same activations and, per layer, the
    same reconstructed MLP output as its CrossLayerTranscoder.forward (the sum over earlier layers' decoders)."""
    clt = al.load_transcoders(DATA / "ct_clt")
    ref = np.load(DATA / "ct_clt" / "forward.npz")
    assert clt.cross_layer and [t.reach for t in clt] == [3, 2, 1] and clt.input_site == "hook_resid_mid"
    x = torch.from_numpy(ref["x"])
    acts = [clt.encode_layer(layer, x[layer]) for layer in range(3)]
    np.testing.assert_allclose(torch.stack(acts).numpy(), ref["activations"], rtol=1e-5, atol=1e-6)
    out = torch.stack([clt.decode_layer(layer, acts, x[layer]) for layer in range(3)])
    np.testing.assert_allclose(out.numpy(), ref["out"], rtol=1e-5, atol=1e-6)
    # control: the last layer's output alone (its own features, as a per-layer transcoder) is not circuit-tracer's
    own = acts[2] @ clt[2].decoder(0) + clt[2].b_dec
    assert not np.allclose(own.numpy(), ref["out"][2], atol=1e-3)
    # without config.yaml, circuit-tracer's load_clt defaults (hook_resid_mid -> hook_mlp_out)
    bare = tmp_path / "bare"
    shutil.copytree(DATA / "ct_clt", bare)
    (bare / "config.yaml").unlink()
    again = al.load_transcoders(bare)
    assert (again.feature_input_hook, again.feature_output_hook) == ("hook_resid_mid", "hook_mlp_out")
    torch.testing.assert_close(again[0].W_dec, clt[0].W_dec)
    # written back in the same layout, read back the same
    written = clt.save(tmp_path / "written")
    assert sorted(p.name for p in written.glob("*.safetensors")) == sorted(
        p.name for p in (DATA / "ct_clt").glob("*.safetensors"))
    for layer in range(3):
        ours, theirs = (load_file(str(d / f"W_dec_{layer}.safetensors")) for d in (written, DATA / "ct_clt"))
        torch.testing.assert_close(ours, theirs)
    assert al.load_transcoders(written).feature_input_hook == "hook_resid_mid"


@pytest.mark.parametrize("name", ["tiny_llama_clt", "tiny_llama_clt_jumprelu_resid_mid"])
def test_graph_with_random_clts_equals_circuit_tracers(name, one_torch_thread, tmp_path):
    """Random CLTs written in circuit-tracer's format (read by its load_clt): the same nodes, adjacency within
    1e-4 relative, pruning and scores. The graph is built from the folder anchorlens wrote, loaded back."""
    case = CASES[name]
    folder = case_transcoders(case).save(tmp_path / "clt")
    assert (folder / "W_dec_0.safetensors").exists() and not (folder / "layer_0.safetensors").exists()
    clt = al.load_transcoders(folder)
    assert clt.cross_layer
    graph = attribution_graph(case_model(case), clt, case["prompt"], progress=False)
    compare(graph, np.load(DATA / f"{name}.npz"))


def test_cross_layer_decoders_change_the_graph_and_a_reach_one_clt_is_per_layer(one_torch_thread):
    """Control: dropping the decoders to later layers gives another graph (so the comparison sees them); and a CLT
    whose features write only to their own layer gives exactly the per-layer transcoders' graph."""
    case = CASES["tiny_llama_clt"]
    model, clt = case_model(case), case_transcoders(case)
    own_only = TranscoderSet([Transcoder(t.W_enc, t.b_enc, t.W_dec[:, :1], t.b_dec) for t in clt],
                             clt.feature_input_hook, clt.feature_output_hook)
    per_layer = TranscoderSet([Transcoder(t.W_enc, t.b_enc, t.W_dec[:, 0], t.b_dec) for t in clt],
                              clt.feature_input_hook, clt.feature_output_hook)
    assert not own_only.cross_layer
    a = attribution_graph(model, own_only, case["prompt"], progress=False)
    b = attribution_graph(model, per_layer, case["prompt"], progress=False)
    torch.testing.assert_close(a.adjacency, b.adjacency)
    with pytest.raises(AssertionError):
        compare(a, np.load(DATA / "tiny_llama_clt.npz"))


def test_feature_intervention_with_clts_equals_circuit_tracers(one_torch_thread):
    """circuit-tracer's feature_intervention with a CLT (a delta at layer l goes to layers l..L-1 through each
    decoder): frozen attention; layers 0-1 of 3 constrained (layer 2 gets nothing); all constrained."""
    name = "tiny_llama_clt"
    case, ref = CASES[name], np.load(DATA / f"{name}.npz")
    model, clt = case_model(case), case_transcoders(case)
    interventions_equal_circuit_tracers(case, ref, model, clt)
    # control: the same interventions through each feature's own-layer decoder only differ from circuit-tracer's
    own_only = TranscoderSet([Transcoder(t.W_enc, t.b_enc, t.W_dec[:, :1], t.b_dec) for t in clt],
                             clt.feature_input_hook, clt.feature_output_hook)
    setting = case["interventions"][0]
    other = al.feature_intervention(model, own_only, case["prompt"], setting["interventions"])
    assert not np.allclose(other.logits[-1].numpy(), ref["intervention_0_last_logits"], rtol=1e-3)


def _folder(tmp_path, name="clt"):
    return random_transcoders(3, 16, 8, cross_layer=True, seed=0).save(tmp_path / name)


def test_malformed_clt_folders_get_clear_errors(tmp_path):
    folder = _folder(tmp_path, "no_dec")
    (folder / "W_dec_1.safetensors").unlink()
    with pytest.raises(TranscoderError, match=r"W_dec_1.safetensors is missing"):
        al.load_transcoders(folder)
    folder = _folder(tmp_path, "gap")
    (folder / "W_enc_1.safetensors").unlink()
    with pytest.raises(TranscoderError, match=r"layers \[0, 2\]"):
        al.load_transcoders(folder)
    folder = _folder(tmp_path, "shape")
    save_file({"W_dec_1": torch.zeros(8, 1, 16)}, str(folder / "W_dec_1.safetensors"))  # a per-layer decoder
    with pytest.raises(TranscoderError, match=r"shape \(8, 1, 16\), expected \(8, 2, 16\)"):
        al.load_transcoders(folder)
    folder = _folder(tmp_path, "key")
    tensors = load_file(str(folder / "W_enc_0.safetensors"))
    del tensors["b_enc_0"]
    save_file(tensors, str(folder / "W_enc_0.safetensors"))
    with pytest.raises(TranscoderError, match=r"lacks \['b_enc_0'\]"):
        al.load_transcoders(folder)
    folder = _folder(tmp_path, "empty")
    for file in folder.glob("W_*.safetensors"):
        file.unlink()
    with pytest.raises(TranscoderError, match="no W_enc"):
        al.load_transcoders(folder)
    with pytest.raises(TranscoderError, match="past the last"):  # a decoder reaching past the model's layers
        TranscoderSet([Transcoder(torch.zeros(4, 8), torch.zeros(4), torch.zeros(4, 3, 8), torch.zeros(8))] * 2)
    clt = random_transcoders(3, 16, 8, cross_layer=True)
    with pytest.raises(TranscoderError, match="decode_layer"):
        clt[0].decode(torch.zeros(8), torch.zeros(16))
    with pytest.raises(TranscoderError, match="no skip connection"):
        random_transcoders(3, 16, 8, cross_layer=True, skip=True)


def test_generation_under_clt_interventions_equals_circuit_tracers(one_torch_thread):
    """feature_intervention_generate with a CLT, greedy, 6 tokens, open-ended positions: circuit-tracer's text (with
    its KV cache), last logits and activations; frozen attention, layers 0-1 of 3 constrained, free attention."""
    name = "tiny_llama_clt_generate"
    case, ref = CASES[name], np.load(DATA / f"{name}.npz")
    model, clt = case_model(case), case_transcoders(case)
    last_logits = []
    for i, setting in enumerate(case["interventions"]):
        interventions = [(x[0], slice(x[1][0], None) if isinstance(x[1], list) else x[1], x[2], x[3])
                         for x in setting["interventions"]]
        constrained = range(*setting["constrained_layers"]) if setting["constrained_layers"] else None
        generated = al.feature_intervention_generate(model, clt, case["prompt"], interventions,
                                                     max_new_tokens=setting["generate"],
                                                     freeze_attention=setting["freeze_attention"],
                                                     constrained_layers=constrained)
        assert generated.text == str(ref[f"generate_{i}_text"])
        for ours, theirs in ((generated.logits[-1], ref[f"generate_{i}_last_logits"]),
                             (generated.activations, ref[f"generate_{i}_activations"])):
            assert ours.shape == theirs.shape
            assert np.all(np.abs(ours.numpy() - theirs) <= 1e-4 * np.abs(theirs) + 1e-6 * np.abs(theirs).max())
        last_logits.append(generated.logits[-1])
    for a, b in zip(last_logits, last_logits[1:]):  # the settings differ, so each comparison tests its own
        assert not torch.allclose(a, b, atol=1e-4)


def test_replacement_hooks_import_no_method_package():
    """hooks/ sits below the method packages: the replacement and intervention hooks take a FeatureDictionary
    (a protocol TranscoderSet satisfies) instead of importing anchorlens.attribution."""
    import ast

    hooks = Path(al.__file__).parent / "hooks"
    for name in ("replacement.py", "feature_intervention.py", "dictionary.py"):
        tree = ast.parse((hooks / name).read_text())
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        above = [m for m in imported if m and m.startswith("anchorlens.") and
                 not m.startswith(("anchorlens.hooks", "anchorlens.errors"))]
        assert not above, f"hooks/{name} imports {above}"
