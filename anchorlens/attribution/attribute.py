"""Attribution graphs with circuit-tracer's definitions, on a TransformerBridge.

Nodes, in circuit-tracer's order: active transcoder features sorted by (layer, position, feature); error nodes
(MLP output minus the transcoder's reconstruction), layer-major; token embeddings; targets: by default the logits
of the top tokens by probability, at most ``max_n_logits``, cut where their cumulative probability reaches
``desired_logit_prob``; or chosen tokens, or custom directions (``attribution_targets``, ``attribution.targets``).
A special token is prepended when the prompt does not start with one; position 0's features and errors are zeroed.

Edge A[target, source] = (gradient of the target at the source's output site) . (source vector), computed in
the local replacement model (``anchorlens.hooks.replacement``): a feature's vector is its activation times its
decoder row, an error's is its error vector, a token's its embedding. Targets are injected as raw encoder rows at
the transcoders' input (features) and at the final norm output as the unembedding row minus its vocabulary mean
(token targets) or as given (custom targets).
"""

from __future__ import annotations

import ctypes
import logging

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.errors import EmptyTextError, InputError, TraceTooLongError
from anchorlens.hooks.architecture import attribution_refusal, refuse
from anchorlens.hooks.replacement import bytes_per_copy, replacement_forward
from anchorlens.attribution.graph import AttributionGraph, partial_influence
from anchorlens.attribution.targets import resolve_targets
from anchorlens.attribution.transcoders import TranscoderSet
from anchorlens.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes for the batched forward's per-copy activations (attention patterns)


AttributionInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def prompt_tokens(model, prompt: str | Tensor | list[int]) -> Int[Tensor, " position"]:
    """Token ids with a special token in front, as circuit-tracer's ``ensure_tokenized`` makes them."""
    tokenizer = model.tokenizer
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyTextError("the prompt is empty: pass the text whose next token you want to explain")
        tokens = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.squeeze(0)
    elif isinstance(prompt, (Tensor, list)):
        tokens = torch.as_tensor(prompt, dtype=torch.long).squeeze()
        if tokens.ndim != 1 or tokens.numel() == 0:
            raise AttributionInputError(f"token ids must be one non-empty sequence, got shape {tuple(tokens.shape)}")
    else:
        raise AttributionInputError(f"a prompt is a string or token ids, not {type(prompt).__name__}")
    if int(tokens[0]) not in tokenizer.all_special_ids:
        candidates = [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, *tokenizer.all_special_ids]
        bos = next(filter(None, candidates), None)  # circuit-tracer skips falsy ids (0) the same way
        if bos is not None:
            tokens = torch.cat([torch.tensor([bos]), tokens])
    n_ctx = model.cfg.n_ctx
    if len(tokens) > n_ctx:
        raise TraceTooLongError(f"the prompt has {len(tokens)} tokens (with the special token in front), more than "
                                f"the model's context of {n_ctx}: shorten it")
    return tokens


def prepare(model, transcoders: TranscoderSet, prompt) -> tuple[Int[Tensor, " position"], TranscoderSet]:
    """The prompt's tokens (``prompt_tokens``) and the transcoders, checked against the model and moved to its
    device in float32: the start of every call that runs transcoders on a prompt."""
    refuse("attribution with transcoders", attribution_refusal(model))
    transcoders.check_model(model)
    device = next(model.parameters()).device
    return prompt_tokens(model, prompt).to(device), transcoders.to(device, torch.float32)


def _unembedding(model) -> Float[Tensor, "vocab d_model"]:
    # TransformerLens's public W_U [d_model, vocab] (a view of the Hugging Face weight, no copy), not the wrapped module
    return model.W_U.detach().T


def logit_targets(logits: Float[Tensor, " vocab"], W_U: Float[Tensor, "vocab d_model"], max_n_logits: int,
                  desired_logit_prob: float):
    """(token ids, probabilities, demeaned unembedding rows) of the salient next tokens."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_idx = torch.topk(probs, max_n_logits)
    cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1
    idx = top_idx[:cutoff]
    return idx, probs[idx], W_U[idx] - W_U.mean(dim=0, keepdim=True)


def attribution_graph(
    model,
    transcoders: TranscoderSet,
    prompt: str | Tensor | list[int],
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    batch_size: int = 64,
    max_feature_nodes: int | None = None,
    progress: bool = True,
    update_interval: int = 4,
    attribution_targets=None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> AttributionGraph:
    """The attribution graph of ``prompt``'s next-token prediction through ``transcoders`` (circuit-tracer's).

    Args:
        model: a TransformerBridge (Llama / Qwen2 style: ``mlp.hook_in``, ``hook_mlp_out``, RMSNorm hooks).
        transcoders: one transcoder per layer (``load_transcoders``, ``train_transcoders``), or a cross-layer
            transcoder (circuit-tracer's CLT folder, ``train_transcoders(cross_layer=True)``): a feature's edge
            then sums its effects through the MLP outputs of its own and every later layer it writes to.
        prompt: text or token ids; a special token is put in front unless it starts with one.
        max_n_logits, desired_logit_prob: which next tokens become logit nodes (when ``attribution_targets`` is
            None).
        batch_size: targets per backward pass, at most (memory grows with it); fewer when ``memory_budget``
            says so. The graph does not depend on it beyond circuit-tracer's rounds of ``update_interval *
            batch_size`` (which use ``batch_size`` as given, whatever the memory allows).
        memory_budget: bytes that the batched forward's copies may keep for the backward passes (mostly every
            layer's attention pattern, n_heads x T^2 floats per layer and copy: about 1 GB per copy for SmolLM2
            at 1,000 tokens), measured on a one-copy forward; the batch is lowered to fit it (said in the log
            and the progress bar), never below 1. None: ``batch_size`` copies whatever they take.
        max_feature_nodes: keep at most this many feature nodes, those of largest influence on the logits, as
            circuit-tracer chooses them: the logit rows first, then repeatedly the ``update_interval *
            batch_size`` unvisited features of largest influence estimated from the rows computed so far. The
            features left out are in the graph's ``dropped_features`` (the adjacency is dense: n^2 floats).
        attribution_targets: what the graph explains, as circuit-tracer's ``attribute`` takes it: None (the
            salient next tokens), a tensor of token ids, a list of token strings (each weighted by its
            probability), or a list of ``CustomTarget(label, weight, vector)`` / 3-tuples, directions in the
            residual stream after the final norm such as ``logit_difference_target(model, " Paris", " Rome")``
            (``anchorlens.attribution.targets``). Non-token targets get ids ``d_vocab + i`` and their labels.
    """
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise AttributionInputError(f"max_feature_nodes must be >= 0 (or None for all), got {max_feature_nodes}")
    tokens, transcoders = prepare(model, transcoders, prompt)
    device = tokens.device
    n_layers, n_pos = model.cfg.n_layers, len(tokens)

    # Features and errors come from one plain forward (batch element 0 of the frozen forward has the same values).
    probe = replacement_forward(model, transcoders, tokens, batch=1)
    acts, errors, decoder_rows, encoder_rows, feats = _features_and_errors(probe, transcoders)
    n_feat = len(feats)
    token_vectors = probe.embed[0].detach()
    W_U = _unembedding(model).float()
    targets = resolve_targets(attribution_targets, probe.logits[0, -1], W_U, model.tokenizer, max_n_logits,
                              desired_logit_prob)
    logit_ids, logit_probs, logit_vectors = targets.ids, targets.weights.to(device), targets.vectors.to(device)
    mlp_outputs = probe.mlp_out_value  # the batched forward reuses them instead of running the MLPs 64 times
    del probe

    n_logits = len(logit_ids)
    n_nodes = n_feat + (n_layers + 1) * n_pos + n_logits
    # Every target, logits first: (site layer or n_layers for the final norm, position, injected vector).
    target_layer = torch.cat([torch.full((n_logits,), n_layers), feats[:, 0]])
    target_pos = torch.cat([torch.full((n_logits,), n_pos - 1), feats[:, 1]])
    target_vec = torch.cat([logit_vectors, encoder_rows])

    batch = max(1, min(batch_size, n_logits + n_feat))
    queue_size = batch * update_interval  # circuit-tracer's rounds: the requested batch, not the memory-bound one
    desc = "attribution"
    if memory_budget is not None:
        per_copy = bytes_per_copy(model, transcoders, tokens, mlp_outputs) + _transient_bytes(model, n_pos, n_nodes)
        fitting = max(1, int(memory_budget // per_copy))
        if fitting < batch:
            log.info("attribution: %d copies per backward pass instead of %d: each keeps %.0f MB (%d tokens), the "
                     "memory budget is %.0f MB", fitting, batch, per_copy / 2**20, n_pos, memory_budget / 2**20)
            if per_copy > memory_budget:
                log.warning("attribution: one copy of the forward (%.0f MB) is already over the memory budget "
                            "(%.0f MB): running with 1", per_copy / 2**20, memory_budget / 2**20)
            batch = fitting
            desc = f"attribution ({batch} copies per pass, memory budget)"
    record = replacement_forward(model, transcoders, tokens, batch=batch, logits=False, mlp_outputs=mlp_outputs)
    if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(record.mlp_out_value, mlp_outputs)):
        # the transcoders' output site is not the MLP's own output (a norm after it?): compute the MLPs
        record = replacement_forward(model, transcoders, tokens, batch=batch, logits=False)
    bar = progress_bar(total=n_logits + min(n_feat, max_feature_nodes if max_feature_nodes is not None else n_feat),
                       desc=desc, progress=progress)

    layer_feats = [(feats[:, 0] == layer).nonzero().squeeze(1).to(device) for layer in range(n_layers)]
    layer_feat_pos = [feats[index.cpu(), 1].to(device) for index in layer_feats]

    def attribute_rows(targets: Tensor) -> Tensor:
        """Adjacency rows (columns: features, errors, tokens) of the given targets, ``batch`` per backward pass."""
        out = torch.zeros(len(targets), n_nodes - n_logits)
        for start in range(0, len(targets), batch):
            chosen_targets = targets[start : start + batch]
            rows = _backward_rows(record, chosen_targets, target_layer, target_pos, target_vec, layer_feats,
                                  layer_feat_pos, decoder_rows, errors, token_vectors, n_feat, n_pos)
            out[start : start + len(chosen_targets)] = rows[: len(chosen_targets)].cpu()
            bar.update(len(chosen_targets))
        return out

    if max_feature_nodes is None or max_feature_nodes >= n_feat:
        rows = attribute_rows(torch.arange(n_logits + n_feat))
        del record  # the batched forward's activations go before the dense adjacency comes
        _give_back_freed_memory()
        adjacency = torch.zeros(n_nodes, n_nodes)
        adjacency[n_nodes - n_logits :, : n_nodes - n_logits] = rows[:n_logits]
        adjacency[:n_feat, : n_nodes - n_logits] = rows[n_logits:]
        kept, dropped = torch.arange(n_feat), torch.zeros(0, dtype=torch.long)
    else:
        rows, row_node, kept = _select_features(attribute_rows, n_feat, n_nodes, n_logits,
                                                logit_probs.cpu().float(), max_feature_nodes, queue_size)
        del record
        _give_back_freed_memory()
        adjacency = _kept_adjacency(rows, row_node, kept, n_feat, n_nodes, n_logits)
        dropped = torch.ones(n_feat, dtype=torch.bool)
        dropped[kept] = False
        dropped = dropped.nonzero().squeeze(1)
        log.info("attribution: kept %d of %d active features (max_feature_nodes), dropped %d of smaller influence",
                 len(kept), n_feat, len(dropped))
    bar.close()
    log.debug("attribution: %d targets in passes of %d copies", n_logits + n_feat, batch)

    return AttributionGraph(
        adjacency=adjacency,
        tokens=tokens.cpu(),
        active_features=feats[kept].cpu(),
        activations=acts.cpu()[kept],
        logit_token_ids=logit_ids.cpu(),
        logit_probabilities=logit_probs.cpu(),
        n_layers=n_layers,
        token_strings=[model.tokenizer.decode([t]) for t in tokens.tolist()],
        logit_strings=targets.labels,
        vocab_size=W_U.shape[0],
        scan=transcoders.scan,
        model_name=getattr(model, "anchorlens_name", type(model).__name__),
        dropped_features=feats[dropped].cpu(),
    )


def _give_back_freed_memory() -> None:
    """glibc keeps the batched forward's freed medium-sized blocks (a few MB each) in its heap, where the dense
    adjacency (one large block) cannot reuse them; malloc_trim hands them back. Nothing to do off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _transient_bytes(model, n_pos: int, n_nodes: int) -> int:
    """Per copy, what a one-copy forward's saved tensors do not show: one layer's attention scores while they are
    computed (scores, masked scores, softmax: 3 x n_heads x T^2 floats), the gradients of a backward pass at a few
    sites ([T, d_model] floats each) and the copy's adjacency row."""
    cfg = model.cfg
    return 4 * (3 * cfg.n_heads * n_pos**2 + 4 * n_pos * cfg.d_model + n_nodes)


def _select_features(attribute_rows, n_feat: int, n_nodes: int, n_logits: int, logit_probs: Tensor,
                     max_feature_nodes: int, queue_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """circuit-tracer's choice of ``max_feature_nodes`` features (``_run_attribution``, phase 4): logit rows
    first, then in rounds the ``queue_size`` unvisited features of largest partial influence on the logits.
    Returns the rows computed (over every node), the node of each row and the kept features' indices."""
    n_rows = n_logits + max_feature_nodes
    rows = torch.zeros(n_rows, n_nodes)
    row_node = torch.zeros(n_rows, dtype=torch.long)  # which node each stored row belongs to
    rows[:n_logits, : n_nodes - n_logits] = attribute_rows(torch.arange(n_logits))
    row_node[:n_logits] = torch.arange(n_nodes - n_logits, n_nodes)
    visited = torch.zeros(n_feat, dtype=torch.bool)
    filled = n_logits
    while filled < n_rows:
        influence = partial_influence(rows[:filled], row_node[:filled], logit_probs)
        rank = torch.argsort(influence[:n_feat], descending=True)
        pending = rank[~visited[rank]][: min(queue_size, n_rows - filled)]
        rows[filled : filled + len(pending), : n_nodes - n_logits] = attribute_rows(n_logits + pending)
        row_node[filled : filled + len(pending)] = pending
        visited[pending] = True
        filled += len(pending)
    return rows, row_node, visited.nonzero().squeeze(1)


def _kept_adjacency(rows: Tensor, row_node: Tensor, kept: Tensor, n_feat: int, n_nodes: int,
                    n_logits: int) -> Tensor:
    """The dense adjacency over the kept features (in their original order), errors, tokens and logits."""
    max_feature_nodes = len(kept)
    columns = torch.cat([kept, torch.arange(n_feat, n_nodes)])
    ordered = rows[row_node.argsort()][:, columns]  # kept features in order, then the logits
    del rows
    size = len(columns)
    adjacency = torch.zeros(size, size)
    adjacency[:max_feature_nodes] = ordered[:max_feature_nodes]
    adjacency[size - n_logits :] = ordered[max_feature_nodes:]
    return adjacency


def _features_and_errors(probe, transcoders: TranscoderSet):
    """Active features (layer, position, feature) in order, their activations, encoder rows, decoder rows scaled
    by the activations (per source layer: [features, reach, d_model], the layers it writes to from its own on),
    and the error vectors [layer, position, d_model]; position 0 zeroed."""
    feats, acts, dec, enc, errors = [], [], [], [], []
    # what the features encoded so far write to each layer's MLP output; a layer's dense activations are dropped
    # once decoded, so memory stays one [position, feature] matrix plus [layer, position, d_model] for a CLT
    written = [0.0] * len(transcoders)
    for layer, transcoder in enumerate(transcoders):
        x = probe.mlp_in[layer][0].detach()
        with torch.no_grad():
            a = transcoder.encode(x)
            a[0] = 0
            for offset in range(transcoder.reach):  # a cross-layer feature also writes to later layers
                written[layer + offset] = written[layer + offset] + a @ transcoder.decoder(offset)
            reconstruction = written[layer] + transcoder.b_dec + transcoder.skip(x)
            written[layer] = None
            error = probe.mlp_out_value[layer] - reconstruction
            error[0] = 0
        pos, feat = a.nonzero(as_tuple=True)  # row-major: sorted by (position, feature)
        values = a[pos, feat]
        feats.append(torch.stack([torch.full_like(pos, layer), pos, feat], dim=1))
        acts.append(values)
        dec.append(torch.stack([transcoder.decoder(k)[feat] for k in range(transcoder.reach)], 1) * values[:, None, None])
        enc.append(transcoder.W_enc[feat])
        errors.append(error)
    return (torch.cat(acts), torch.stack(errors), dec, torch.cat(enc), torch.cat(feats).cpu())


def _backward_rows(record, chosen, target_layer, target_pos, target_vec, layer_feats, layer_feat_pos,
                   decoder_rows, errors, token_vectors, n_feat: int, n_pos: int) -> Float[Tensor, "batch column"]:
    """One backward pass for the targets ``chosen`` (one per copy of the batched forward): adjacency rows
    [batch, features + errors + tokens]; ``decoder_rows`` per source layer [features, reach, d_model].

    Like circuit-tracer, the pass starts at the highest target site alone; the other targets' vectors are added to
    the gradient as it passes their sites (tensor hooks), and each layer's rows are read from the gradient at its
    MLP output as it passes, so neither a dense injection per layer nor every layer's gradient is held at once
    (2 x 31 x [64, 256, 576] floats, 2.3 GB, for SmolLM2 at 256 tokens)."""
    sites = record.mlp_in + [record.final]
    device = record.embed.device
    copies = record.embed.shape[0]
    layers, positions = target_layer[chosen], target_pos[chosen]
    copy = torch.arange(len(chosen))
    rows = torch.zeros(copies, n_feat + (len(sites)) * n_pos, device=device)

    def inject(layer: int, grad: Tensor | None) -> Tensor:
        mask = layers == layer
        grad = torch.zeros_like(sites[layer]) if grad is None else grad.clone(memory_format=torch.contiguous_format)
        index = (copy[mask].to(device), positions[mask].to(device))
        return grad.index_put_(index, target_vec[chosen[mask]].to(grad), accumulate=True)

    def read(layer: int, grad: Tensor) -> None:
        # the features of every source layer that writes to this MLP output (a cross-layer feature's edge sums
        # over the layers it writes to; a per-layer feature writes to its own layer only)
        for source in range(layer + 1):
            offset = layer - source
            feature_index = layer_feats[source]
            if len(feature_index) and offset < decoder_rows[source].shape[1]:
                g = grad[:, layer_feat_pos[source]]  # [batch, features of the source layer, d_model]
                rows[:, feature_index] += einsum(g, decoder_rows[source][:, offset], "b n d, n d -> b n")
        start = n_feat + layer * n_pos
        rows[:, start : start + n_pos] = einsum(grad, errors[layer], "b p d, p d -> b p")

    top = int(layers.max())
    handles = [record.mlp_out[layer].register_hook(lambda g, layer=layer: read(layer, g)) for layer in range(top)]
    handles += [sites[layer].register_hook(lambda g, layer=layer: inject(layer, g))
                for layer in layers.unique().tolist() if layer != top]
    try:
        (g_embed,) = torch.autograd.grad(sites[top], record.embed, inject(top, None), retain_graph=True,
                                         allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    if g_embed is not None:
        start = n_feat + (len(sites) - 1) * n_pos
        rows[:, start : start + n_pos] = einsum(g_embed, token_vectors, "b p d, p d -> b p")
    return rows


def answer_token_position(tokenizer, trace, answer: str | None) -> int | None:
    """Position in ``trace.token_ids`` of the first token of the last occurrence of ``answer`` in the chain of
    thought (its logit is the one to explain), or None when the answer does not occur there."""
    answer = (answer or "").strip()
    if not answer:
        return None
    ids = trace.token_ids
    # the largest p whose suffix still holds the answer: token p holds the answer's first character
    for p in range(len(ids) - 1, max(trace.prompt_token_end, 1) - 1, -1):
        if answer in tokenizer.decode(ids[p:]):
            return p
    return None


def trace_attribution(model, transcoders: TranscoderSet, trace, answer_position: int | None = None, **kwargs):
    """Attribute the final answer's logit of a chain of thought back to its sentences.

    The graph is built on the trace's tokens before ``answer_position`` (default: the last token, taken as the
    answer), so the logit nodes are the model's predictions of the answer token; each sentence gets the
    influence of its token-embedding and feature nodes on the answer token's logit (on all logit nodes weighted
    by probability when the answer token is not among them). Returns ``(graph, table)``: the table has one row
    per sentence (text, token_influence, feature_influence, influence) plus whether the answer token is a logit node.
    """
    tokens = torch.tensor(trace.token_ids, dtype=torch.long)
    answer_position = len(tokens) - 1 if answer_position is None else answer_position
    if not 0 < answer_position < len(tokens):
        raise AttributionInputError(f"answer_position must be within the trace's {len(tokens)} tokens, after the first")
    prefix = tokens[:answer_position]
    graph = attribution_graph(model, transcoders, prefix, **kwargs)
    shift = len(graph.tokens) - len(prefix)  # 1 when a special token was put in front
    spans = [(min(s, answer_position) + shift, min(e, answer_position) + shift) for s, e in trace.token_spans]
    answer = int(tokens[answer_position])
    is_logit = answer in graph.logit_token_ids.tolist()
    table = graph.sentence_attribution(spans, logit_token=answer if is_logit else None)
    table.insert(1, "text", trace.sentence_texts())
    table.attrs["answer_token"] = answer
    table.attrs["answer_is_logit_node"] = is_logit
    return graph, table
