"""Sampling with a model loaded in this process, reusing each prompt's keys and values across its rollouts.

All rollouts of one sentence continue the same prefix, so the prefix is run once
(``return_type="logits_and_cache"`` gives its Hugging Face KV cache), the cache is copied across a
batch of rows, and only the new tokens run from then on. Rows that finish (end-of-sequence token or
``max_tokens``) leave the batch at once, and their completion is handed out immediately.

The forward passes go through the ``TransformerBridge``, so hooks you add with ``model.hooks(...)``
apply: a run under an intervention samples from the intervened model.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterator, Sequence

import torch

from anchorlens.hooks import active_hook_points
from anchorlens.hooks.kv_cache import forward_with_cache, keep_rows, repeat_rows
from anchorlens.hooks.fused_attention import ATTENTION_CHOICES, fused_attention, resolve_attention
from anchorlens.resampling.samplers.base import (
    Completion,
    Sampler,
    SampleRequest,
    SamplerError,
    SamplingParams,
    check_requests,
)
from anchorlens.resampling.samplers.nucleus import nucleus_probs, sample_rows, seeded_generators
from anchorlens.models import stop_token_ids, weights_fingerprint
from anchorlens.trace import encode_text
from anchorlens.progress import progress_bar


PositionalHooks = Callable[[int], list]
"""``hooks(start)``: the ``(hook name, function)`` pairs for one forward whose first token sits at position
``start``. Hooks that edit a position from that position and earlier ones only (causal, as a decoder's
computation is) give the same values on a KV cache as in one forward over the whole sequence, which
``anchorlens.hooks.feature_intervention.InterventionHooks`` relies on."""


class LocalSampler(Sampler):
    """Batched sampling with a ``TransformerBridge``; the shared prefix of a prompt's rollouts is run once.

    Args:
        model: a ``TransformerBridge`` (e.g. ``anchorlens.load_model()``).
        batch_size: rows decoded together (rollouts of the same prompt). None: 8 on a CPU; on a CUDA
            device as many as half its free memory holds for their KV caches (at most 64; see
            ``default_rollout_batch``).
        share_prefix: run each prompt once and copy its KV cache across the batch (the fast path);
            False runs the prompt once per row, as plain batched generation does.
        progress: show a tqdm bar.
        attention: ``"auto"`` (fused SDPA attention where the model supports it and no hook reads the
            pattern, else eager with a warning), ``"sdpa"`` or ``"eager"``. Fused only around the
            sampler's own forwards; greedy decoding gives the same tokens either way (tested).

    The prompt is tokenized as ``Trace`` tokenizes text (BOS prepended when the model expects one and
    the prompt does not start with it), so rollouts continue exactly what the trace analyses see.
    Servers tokenize with the tokenizer's own defaults instead; for SmolLM2 that adds no BOS to a raw
    prompt (a chat-template prompt starts with it either way), so on raw prompts the two samplers
    condition on slightly different tokens.

    >>> sampler = LocalSampler(load_model(), batch_size=8)                          # doctest: +SKIP
    >>> requests = [SampleRequest("The capital of France is", seed=s) for s in range(8)]
    >>> [c.text for c in sampler.sample(requests, SamplingParams(max_tokens=8))]  # doctest: +SKIP
    """

    def __init__(
        self, model, batch_size: int | None = None, share_prefix: bool = True, progress: bool = True,
        attention: str = "auto",
    ):
        if not hasattr(model, "tokenizer") or model.tokenizer is None:
            raise SamplerError("LocalSampler needs a model with a tokenizer (a TransformerBridge from load_model)")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise SamplerError(f"batch_size must be a positive integer, got {batch_size!r}")
        if attention not in ATTENTION_CHOICES:
            raise SamplerError(f"unknown attention {attention!r}: choose one of {ATTENTION_CHOICES}")
        self.model = model
        self.attention = attention
        self._resolved = "eager"  # per stream: resolve_attention sees the hooks active at that moment
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.progress = progress
        self.stop_token_ids = stop_token_ids(model)
        self.name = f"local:{getattr(model, 'anchorlens_name', None) or model.cfg.model_name}"

    @property
    def identity(self) -> dict:
        """The model's name, dtype and a fingerprint of its weights (``models.weights_fingerprint``), and the hook
        points with hooks on them right now, if any (sampling under an intervention makes other rollouts; the
        hook functions themselves cannot be told apart, so two interventions on the same points share a key)."""
        cfg = self.model.cfg
        identity = {
            "sampler": "local",
            "model": getattr(self.model, "anchorlens_name", None) or cfg.model_name,
            "dtype": str(getattr(cfg, "dtype", None)),
            "weights": weights_fingerprint(self.model),  # anchorlens.models
        }
        hooked = active_hook_points(self.model)
        if hooked:
            identity["hooks"] = hooked
        return identity

    # ------------------------------------------------------------------ the Sampler interface

    def stream(self, requests: Sequence[SampleRequest], params: SamplingParams) -> Iterator[Completion]:
        """Yield completions as rows finish; requests with the same prompt share one prefix pass."""
        requests = check_requests(requests)
        self._resolved = resolve_attention(self.model, self.attention)
        groups: dict[str, list[SampleRequest]] = {}
        for request in requests:
            groups.setdefault(request.prompt, []).append(request)
        bar = progress_bar(total=len(requests), unit="rollout", desc="local sampling", progress=self.progress)
        try:
            for prompt, group in groups.items():
                prompt_ids = self._encode(prompt, params.max_tokens)
                shared = self._prefill(prompt_ids, rows=1) if self.share_prefix else None
                rows = self.batch_size or default_rollout_batch(self.model, len(prompt_ids) + params.max_tokens)
                for start in range(0, len(group), rows):
                    batch = group[start : start + rows]
                    if shared is not None:
                        last_logits, cache = _expand(*shared, rows=len(batch))
                    else:
                        last_logits, cache = self._prefill(prompt_ids, rows=len(batch))
                    for completion in self._decode(batch, last_logits, cache, params):
                        bar.update(1)
                        bar.set_postfix(prompt_tokens=len(prompt_ids), refresh=False)
                        yield completion
        finally:
            bar.close()

    # ------------------------------------------------------------------ steps

    def _encode(self, prompt: str, max_tokens: int) -> list[int]:
        ids = encode_text(self.model, prompt)
        n_ctx = getattr(self.model.cfg, "n_ctx", None)
        if n_ctx is not None and len(ids) + max_tokens > n_ctx:
            raise SamplerError(
                f"the prompt has {len(ids)} tokens and max_tokens is {max_tokens}, more than the model's "
                f"context of {n_ctx} tokens: lower max_tokens or shorten the trace"
            )
        return ids

    def _prefill(self, prompt_ids: list[int], rows: int, hooks=None, logits_out: list | None = None):
        """Run the prompt (``rows`` identical copies) once: last-position logits and the KV cache."""
        tokens = torch.tensor([prompt_ids] * rows, dtype=torch.long, device=self.model.cfg.device)
        with torch.inference_mode(), fused_attention(self.model, self._resolved), _positioned(self.model, hooks, 0):
            # the model's own cache: rollouts only grow it, so sliding-window layers may keep just their window
            logits, cache = forward_with_cache(self.model, tokens, keep="window")
        if cache is None:
            raise SamplerError(
                f"{type(self.model).__name__} returned no KV cache; LocalSampler needs a decoder-only "
                "TransformerBridge whose forward supports return_type='logits_and_cache'"
            )
        if logits_out is not None:
            logits_out.append(logits)
        return logits[:, -1, :], cache

    def continue_ids(self, prompt_ids: Sequence[int], params: SamplingParams, seed: int = 0,
                     stop_token_ids: set[int] | None = None, hooks: PositionalHooks | None = None,
                     logits_out: list | None = None, progress: bool = False) -> list[int]:
        """The new token ids of one continuation of ``prompt_ids`` (the stop token included when one ended it).

        The token-level entry to the same decoding loop as ``sample`` (``temperature=0``: greedy decoding,
        as ``anchorlens.generation.greedy_generate`` uses it). ``stop_token_ids`` replaces the sampler's own
        (the tokenizer's and the generation config's end-of-sequence ids); an empty set never stops early.

        ``hooks``: hooks that act by absolute position (``PositionalHooks``): ``hooks(start)`` gives the
        ``(hook name, function)`` pairs for one forward whose first token sits at position ``start``; they are
        on during that forward only (the prompt's at ``start=0``, then each new token's). ``logits_out``: a list
        that receives each forward's logits ``[1, positions, vocab]`` (the prompt's, then each new token's but
        the last one's). ``progress``: a bar over the new tokens.
        """
        with self.model.hooks(fwd_hooks=hooks(0) if hooks is not None else []):
            self._resolved = resolve_attention(self.model, self.attention)  # sees the hooks that read the pattern
        last_logits, cache = self._prefill(list(prompt_ids), rows=1, hooks=hooks, logits_out=logits_out)
        stops = self.stop_token_ids if stop_token_ids is None else set(stop_token_ids)
        with progress_bar(total=params.max_tokens, unit="token", desc="greedy decoding", progress=progress,
                          leave=False) as bar:
            for _, tokens, _ in self._decode_ids([seed], last_logits, cache, params, stops, hooks=hooks,
                                                 start=len(prompt_ids), logits_out=logits_out, bar=bar):
                return tokens
        return []

    def _decode(self, batch: list[SampleRequest], last_logits, cache, params: SamplingParams) -> Iterator[Completion]:
        """Sample token by token; each row's completion is yielded as soon as it finishes."""
        for row, tokens, reason in self._decode_ids([r.seed for r in batch], last_logits, cache, params,
                                                    self.stop_token_ids):
            yield self._completion(batch[row], tokens, reason)

    def _decode_ids(self, seeds: list, last_logits, cache, params: SamplingParams, stop_token_ids: set[int],
                    hooks: PositionalHooks | None = None, start: int = 0,
                    logits_out: list | None = None, bar=None) -> Iterator[tuple[int, list[int], str]]:
        """``(row, new token ids, "stop" | "length")`` of each row as it finishes; a finished row leaves the batch.
        ``start``: the position of the first new token (the prompt's length), for ``hooks``; ``bar``: a
        progress bar advanced once per step."""
        generators = seeded_generators(seeds)
        generated: list[list[int]] = [[] for _ in seeds]
        active = list(range(len(seeds)))  # original row of each row still in the cache, in cache order
        logits = last_logits
        while active:
            probs = nucleus_probs(logits, params.temperature, params.top_p)
            next_tokens = sample_rows(probs, [generators[r] for r in active])
            finished, keep = [], []
            # One host read per step (the stop check needs the tokens), not one per row.
            for k, (row, token) in enumerate(zip(active, next_tokens.tolist())):
                generated[row].append(token)
                if token in stop_token_ids:
                    finished.append((row, generated[row], "stop"))
                elif len(generated[row]) >= params.max_tokens:
                    finished.append((row, generated[row], "length"))
                else:
                    keep.append(k)
            if keep:
                # Fused only around the sampler's own forward: the consumer's code between yields runs as it chose.
                with torch.inference_mode(), fused_attention(self.model, self._resolved):
                    if len(keep) < len(active):  # drop finished rows: no compute is spent on them
                        kept = torch.tensor(keep, device=next_tokens.device)
                        keep_rows(cache, kept)
                        next_tokens = next_tokens[kept]
                    with _positioned(self.model, hooks, start + len(generated[active[0]]) - 1):
                        out, cache = forward_with_cache(self.model, next_tokens[:, None], past_key_values=cache)
                if logits_out is not None:
                    logits_out.append(out)
                logits = out[:, -1, :]
            active = [active[k] for k in keep]
            if bar is not None:
                bar.update(1)
            yield from finished  # outside inference mode: the consumer's code must not run inside it

    def _completion(self, request: SampleRequest, tokens: list[int], reason: str) -> Completion:
        body = tokens[:-1] if reason == "stop" else tokens
        text = self.model.tokenizer.decode(body, skip_special_tokens=True)
        return Completion(request, text=text, n_tokens=len(tokens), finish_reason=reason)


ROLLOUT_BATCH_CAP = 64


def default_rollout_batch(model, n_positions: int) -> int:
    """Rows per batch: 8 on a CPU; on a CUDA device as many KV caches of ``n_positions`` as half its free
    memory holds (plus each row's logits and sampling temporaries), at most ``ROLLOUT_BATCH_CAP``.
    Not measured on a GPU yet (none was lent); pass ``batch_size`` to override."""
    device = torch.device(model.cfg.device)
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    cfg = model.cfg
    element = torch.finfo(getattr(cfg, "dtype", None) or torch.float32).bits // 8
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_row = 2 * cfg.n_layers * n_kv * cfg.d_head * n_positions * element + 16 * cfg.d_vocab
    return max(1, min(ROLLOUT_BATCH_CAP, int(0.5 * free / per_row)))


def _positioned(model, hooks: PositionalHooks | None, start: int):
    """``hooks(start)`` on the model for one forward (nothing to add without hooks)."""
    return model.hooks(fwd_hooks=hooks(start)) if hooks is not None else nullcontext()


def _expand(last_logits, cache, rows: int):
    """A private copy of a one-row prefix state, repeated over ``rows`` rows (later steps grow the copy)."""
    with torch.inference_mode():
        return last_logits.expand(rows, -1), repeat_rows(cache, rows)


