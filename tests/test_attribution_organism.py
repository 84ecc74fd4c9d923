"""A model organism with a known graph: a 2-layer Llama without attention output whose MLPs ARE transcoders.

Attention's output projection is zero, so each position's residual is its embedding plus the MLP outputs, and
every edge has a closed form (RMSNorm weights are 1): A[t, s] = (source vector) . (target's encoder row) / rms of the
residual the target reads. Planted: feature 0 of layer 0 fires on every position and writes the direction that
feature 0 of layer 1 reads; that feature writes the unembedding row of a chosen token.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import anchorlens as al
from anchorlens.attribution.attribute import attribution_graph
from anchorlens.attribution.transcoders import Transcoder, TranscoderSet

D, N_FEAT, TARGET = 64, 16, 7042  # 7042 = " Paris" in SmolLM2's tokenizer


@pytest.fixture(scope="module")
def organism():
    torch.manual_seed(0)
    model = al.random_model("llama", n_layers=2, d_model=D, n_heads=4, n_kv_heads=2, seed=3)
    for layer in model.original_model.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
    q, _ = torch.linalg.qr(torch.randn(D, D))
    W_U = model.unembed.original_component.weight.detach()
    u = W_U[TARGET] - W_U.mean(0)
    planted = q[:, 0]
    # Layer 0: feature 0 reads the all-positions direction (bias makes it fire everywhere) and writes `planted`.
    enc0 = torch.randn(N_FEAT, D) / D**0.5
    dec0 = torch.randn(N_FEAT, D) * 0.05
    dec0[0] = 3.0 * planted
    b_enc0 = torch.full((N_FEAT,), -0.3)
    b_enc0[0] = 5.0
    # Layer 1: feature 0 reads `planted` and writes the target token's unembedding direction.
    enc1 = torch.randn(N_FEAT, D) / D**0.5
    enc1[0] = 4.0 * planted
    dec1 = torch.randn(N_FEAT, D) * 0.05
    dec1[0] = 2.0 * u / u.norm()
    b_enc1 = torch.full((N_FEAT,), -0.3)
    transcoders = TranscoderSet([
        Transcoder(enc0, b_enc0, dec0, torch.zeros(D)),
        Transcoder(enc1, b_enc1, dec1, torch.zeros(D)),
    ])
    return model, transcoders


@contextlib.contextmanager
def mlps_replaced_by(model, transcoders):
    """The organism: each MLP computes exactly its transcoder (hooks registered before attribution's own)."""
    seen = {}

    def read(x, hook, layer):
        seen[layer] = x
        return x

    def write(out, hook, layer):
        return transcoders[layer](seen[layer])

    hooks = []
    for layer in range(model.cfg.n_layers):
        hooks += [(f"blocks.{layer}.mlp.hook_in", lambda x, hook, layer=layer: read(x, hook, layer)),
                  (f"blocks.{layer}.hook_mlp_out", lambda o, hook, layer=layer: write(o, hook, layer))]
    with model.hooks(fwd_hooks=hooks):
        yield


def naive_adjacency(model, transcoders, graph):
    """The closed form of every edge of the organism (no attention, norm weights 1), from its own forward."""
    eps = model.cfg.eps if hasattr(model.cfg, "eps") else 1e-6
    rms = lambda r: (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # noqa: E731
    E = model.original_model.model.embed_tokens.weight.detach()[graph.tokens]
    resid, reads, acts = E, [], []
    for t in transcoders:
        scale = rms(resid)
        a = t.encode(resid / scale)
        reads.append(scale)
        acts.append(a)
        resid = resid + t(resid / scale)
    final_scale = rms(resid)
    W_U = model.unembed.original_component.weight.detach()
    A = torch.zeros_like(graph.adjacency)
    feats = graph.active_features.tolist()
    tok0 = graph.token_slice.start
    for ti, (lt, pt, ft) in enumerate(feats):
        enc = transcoders[lt].W_enc[ft] / reads[lt][pt]
        A[ti, tok0 + pt] = E[pt] @ enc
        for si, (ls, ps, fs) in enumerate(feats):
            if ls < lt and ps == pt:
                A[ti, si] = acts[ls][ps, fs] * (transcoders[ls].W_dec[fs] @ enc)
    last = graph.n_pos - 1
    for k, tok in enumerate(graph.logit_token_ids.tolist()):
        u = (W_U[tok] - W_U.mean(0)) / final_scale[last]
        row = graph.logit_slice.start + k
        A[row, tok0 + last] = E[last] @ u
        for si, (ls, ps, fs) in enumerate(feats):
            if ps == last:
                A[row, si] = acts[ls][ps, fs] * (transcoders[ls].W_dec[fs] @ u)
    return A


def organism_checks(model, transcoders, graph) -> None:
    """The graph is the organism's known one: closed-form edges, zero errors, the planted path strongest."""
    expected = naive_adjacency(model, transcoders, graph)
    torch.testing.assert_close(graph.adjacency, expected, rtol=1e-4, atol=1e-5)
    assert graph.adjacency[:, graph.error_slice].abs().max() < 1e-5  # errors are zero: the MLP is the dictionary
    assert graph.logit_token_ids[0] == TARGET
    feats = graph.active_features.tolist()
    last = graph.n_pos - 1
    planted_1 = feats.index([1, last, 0])
    planted_0 = feats.index([0, last, 0])
    into_logit = graph.adjacency[graph.logit_slice.start, : graph.n_features]
    assert into_logit.argmax() == planted_1  # the strongest feature -> " Paris" edge is the planted one
    into_feature = graph.adjacency[planted_1, : graph.n_features]
    assert into_feature.argmax() == planted_0  # and the strongest feature -> feature edge into it
    assert into_feature[planted_0] > 10 * into_feature.abs().sort().values[-2]


@pytest.mark.slow
def test_organism_graph_is_the_known_one(organism, one_torch_thread):
    model, transcoders = organism
    with mlps_replaced_by(model, transcoders):
        graph = attribution_graph(model, transcoders, "The capital of France is", progress=False)
    organism_checks(model, transcoders, graph)
    pruned = graph.prune()
    feats = graph.active_features.tolist()
    assert pruned.node_mask[feats.index([1, graph.n_pos - 1, 0])]  # the planted path survives pruning
    assert pruned.node_mask[feats.index([0, graph.n_pos - 1, 0])]
    replacement, completeness = graph.scores()
    assert replacement == pytest.approx(1.0, abs=1e-4) and completeness == pytest.approx(1.0, abs=1e-4)


def test_control_real_mlps_fail_the_checks(organism, one_torch_thread):
    """Control: the same transcoders on the model's own (gated SiLU) MLPs: errors appear and the checks fail."""
    model, transcoders = organism
    graph = attribution_graph(model, transcoders, "The capital of France is", progress=False)
    with pytest.raises(AssertionError):
        organism_checks(model, transcoders, graph)
    assert graph.scores()[0] < 0.99


def test_intervening_on_the_planted_feature_flips_the_answer(organism, one_torch_thread, tmp_path):
    """Switching off the planted layer-1 feature (a graph node turned into an intervention) takes " Paris" from
    the top; switching off an unrelated active feature at the same place leaves it there."""
    model, transcoders = organism
    prompt = "The capital of France is"
    with mlps_replaced_by(model, transcoders):
        graph = attribution_graph(model, transcoders, prompt, progress=False)
        last = graph.n_pos - 1
        feats = graph.active_features.tolist()
        planted = feats.index([1, last, 0])
        unrelated = next(i for i, (layer, pos, f) in enumerate(feats) if layer == 1 and pos == last and f != 0)
        off = al.feature_intervention(model, transcoders, prompt, graph.feature_interventions([planted]))
        other = al.feature_intervention(model, transcoders, prompt, graph.feature_interventions(unrelated))
        clean_top = int(off.clean_logits[-1].argmax())
        assert clean_top == TARGET
        assert int(off.logits[-1].argmax()) != TARGET  # the answer flips
        assert int(other.logits[-1].argmax()) == TARGET  # an unrelated feature does not flip it
        assert off.activations[1, last, 0] == pytest.approx(float(graph.activations[planted]), rel=1e-4)  # read before
        # upstream: switching off the layer-0 planted feature silences the layer-1 one (the effect propagates
        # through the MLP) and flips the answer; steering the layer-1 feature back to its value restores it
        upstream = graph.feature_interventions([feats.index([0, last, 0])])
        silenced = al.feature_intervention(model, transcoders, prompt, upstream)
        assert silenced.activations[1, last, 0] < 0.1 * graph.activations[planted]
        assert int(silenced.logits[-1].argmax()) != TARGET
        steered = al.feature_intervention(model, transcoders, prompt,
                                          upstream + graph.feature_interventions([planted], scale=1.0))
        assert int(steered.logits[-1].argmax()) == TARGET
    back = al.InterventionResult.load(off.save(tmp_path / "off.npz"))
    torch.testing.assert_close(back.logits, off.logits)
    assert back.interventions == off.interventions and back.top_tokens().equals(off.top_tokens())


def test_bad_interventions(organism, one_torch_thread, tmp_path):
    model, transcoders = organism
    for interventions, message in [([(2, 0, 0, 1.0)], "layer 2"), ([(0, 99, 0, 1.0)], "position 99"),
                                   ([(0, 1, N_FEAT, 1.0)], "feature 16"), ([(0, 1, 0)], "layer, position")]:
        with pytest.raises(al.AttributionInputError, match=message):
            al.feature_intervention(model, transcoders, "Hello world", interventions)
    with pytest.raises(al.AttributionInputError, match="not all within"):
        al.feature_intervention(model, transcoders, "Hello world", [(0, torch.tensor([1, 9]), 0, 1.0)])
    # several positions at once (a tensor or a slice) are those interventions one by one
    many = al.feature_intervention(model, transcoders, "Hello world", [(0, torch.tensor([1, 2]), 3, 2.0)])
    one_by_one = al.feature_intervention(model, transcoders, "Hello world", [(0, 1, 3, 2.0), (0, 2, 3, 2.0)])
    sliced = al.feature_intervention(model, transcoders, "Hello world", [(0, slice(1, 3), 3, 2.0)])
    torch.testing.assert_close(many.logits, one_by_one.logits)
    torch.testing.assert_close(sliced.logits, one_by_one.logits)
    assert not torch.allclose(many.logits, many.clean_logits)
    assert al.InterventionResult.load(sliced.save(tmp_path / "s.npz")).interventions == [(0, slice(1, 3), 3, 2.0)]
    with pytest.raises(al.AttributionInputError, match="constrained_layers"):
        al.feature_intervention(model, transcoders, "Hello world", [(0, 1, 0, 1.0)], constrained_layers=range(0))


def test_generation_without_the_planted_feature_never_says_paris(organism, one_torch_thread, tmp_path):
    """The organism says " Paris" after any token; switching the planted feature off from position 1 on, on the
    prompt and on every generated token (an open-ended position), it never does; off only on the prompt's last
    token, only the first new token changes."""
    model, transcoders = organism
    prompt = "The capital of France is"
    with mlps_replaced_by(model, transcoders):
        off = al.feature_intervention_generate(model, transcoders, prompt, [(1, slice(1, None), 0, 0.0)],
                                               max_new_tokens=4)
        once = al.feature_intervention_generate(model, transcoders, prompt, [(1, -1, 0, 0.0)], max_new_tokens=4)
    clean_new = model.tokenizer(off.clean_text[len(model.tokenizer.decode(off.tokens[: off.n_prompt])):],
                                add_special_tokens=False).input_ids
    assert clean_new == [TARGET] * 4
    assert TARGET not in off.new_tokens.tolist() and len(off.new_tokens) == 4
    assert once.new_tokens[0] != TARGET and once.new_tokens[1:].tolist() == [TARGET] * 3
    table = off.to_dataframe()
    assert table["token_id"].tolist() == off.new_tokens.tolist() and (table["probability"] > 0).all()
    back = al.GenerationResult.load(off.save(tmp_path / "g.npz"))
    assert back.text == off.text and torch.equal(back.tokens, off.tokens)
    with pytest.raises(al.AttributionInputError, match="max_new_tokens"):
        al.feature_intervention_generate(model, transcoders, prompt, [], max_new_tokens=0)
