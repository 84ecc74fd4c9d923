"""Running suppressed forwards: the baseline, the naive method and the fast (prefix-reusing, batched) one.

Both methods return the KL per *logit position* ``[suppressed sentence, position]`` (see ``matrix.py`` for
the shift to tokens). Positions before the suppressed sentence are 0 by construction: suppression there
changes nothing (causal masking), so neither method reports rounding noise for them.

- naive: one full forward per suppressed sentence (the reference method);
- fast: one baseline forward with a KV cache; then, per batch of consecutive sentences ``j1 < j2 < ...``,
  one forward over positions ``start(j1):`` with the baseline's keys and values for the prefix, each batch
  row hiding its own sentence. Equal to the naive method up to float rounding (tests check 1e-4).
  On a CPU the default batch is one sentence (``default_max_batch``); on a GPU several.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.hooks.fused_attention import hide_keys, is_fused
from anchorlens.hooks.key_suppression import key_suppression_hooks
from anchorlens.suppression.matrix import log_probs, position_kl
from anchorlens.hooks.kv_cache import forward_with_cache, prefix, reusable, sliding_windows
from anchorlens.progress import progress_bar

METHODS = ("fast", "naive")


class SuppressionFallbackWarning(UserWarning):
    """The fast method cannot reuse this model's KV cache and runs the naive method instead (slower, same result).

    Only for caches that hold no per-position keys to cut (linear attention, state-space layers, chunked or
    shared-cache layers; ``hooks.kv_cache.full_length_cache``). Sliding-window models reuse the prefix: their
    baseline keeps a full-length cache and the mask applies each layer's window.
    """

# Positions per fast batch (rows x recomputed positions). Bounds the suppressed logits kept at once:
# 4096 positions x 49k vocabulary x 4 bytes = 800 MB for SmolLM2.
DEFAULT_BATCH_POSITIONS = 4096
# A sentence joins a batch only if the positions it recomputes needlessly (its start minus the batch's
# shared prefix) stay under this share of the batch's work; on a CPU batching buys little, on a GPU a lot.
DEFAULT_MAX_WASTE = 0.25


def default_batch_positions(model, n_tokens: int, device) -> int:
    """``DEFAULT_BATCH_POSITIONS`` on a CPU; on a CUDA device as many as fit in half its free memory.

    Per (row x position) a suppressed forward holds the logits and the KL's log-softmax of that position
    (``vocabulary`` floats each), its rows of the boolean key masks (a few bytes per key) and one layer's
    activations. Not measured on a GPU yet (none was lent); pass ``batch_positions`` to override.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return DEFAULT_BATCH_POSITIONS
    free, _ = torch.cuda.mem_get_info(device)
    cfg = model.cfg
    element = torch.finfo(getattr(cfg, "dtype", None) or torch.float32).bits // 8
    per_position = cfg.d_vocab * (element + 4) + 4 * n_tokens + element * (8 * cfg.d_model + 3 * (cfg.d_mlp or 0))
    return max(n_tokens, int(0.5 * free / per_position))


def default_max_batch(device) -> int | None:
    """One sentence per forward on a CPU, batches (bounded by positions and waste) elsewhere.

    On a CPU a forward's cost grows with its rows, so batching only adds the recomputed positions between
    a batch's shared prefix and each row's own sentence (benchmarks/README.md: 30 s unbatched against
    60 s batched for a 605-token trace on SmolLM2, one thread). A GPU runs the rows of a batch in parallel.
    """
    return 1 if torch.device(device).type == "cpu" else None


def keep_baseline_probs(device) -> bool:
    """Whether the baseline also keeps ``log_probs.exp()``: on a CPU, yes (each suppressed run's KL then
    skips that exponential: 0.30 -> 0.13 s per 558 positions of SmolLM2, benchmarks/README.md); elsewhere
    no, since a GPU's memory is the scarcer resource (a second ``pos x vocab`` float32 tensor: 20 GB at 32k
    tokens of a 152k vocabulary) and the exponential costs little there (not measured: no GPU was lent).
    Both give the same floats.

    >>> keep_baseline_probs("cpu"), keep_baseline_probs("cuda")
    (True, False)
    """
    return torch.device(device).type == "cpu"


@dataclass
class Baseline:
    """The unsuppressed run: next-token log-probabilities at the temperature, and its KV cache (or None).

    ``probs`` is ``log_probs.exp()`` or None (``keep_baseline_probs``): when kept, each suppressed run's KL
    skips that exponential (one more ``pos x vocab`` float32 tensor: 200 MB at 1k tokens of a 49k vocabulary).
    """

    log_probs: Float[Tensor, "pos vocab"]
    cache: object | None
    temperature: float
    probs: Float[Tensor, "pos vocab"] | None = None

    def kl(self, start: int, logits: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, "batch pos"]:
        """Per-position KL of suppressed ``logits`` covering positions ``start:`` against this baseline."""
        probs = None if self.probs is None else self.probs[start:]
        return position_kl(self.log_probs[start:], logits, self.temperature, base_probs=probs)


@torch.inference_mode()
def run_baseline(model, tokens: Int[Tensor, "1 pos"], temperature: float, keep_cache: bool = True) -> Baseline:
    """One clean forward; keeps log-probs (not logits) and a full-length cache when it can serve prefix reuse.

    >>> baseline = run_baseline(model, trace.tokens(model.cfg.device), 0.6)   # doctest: +SKIP
    """
    if keep_cache:
        logits, cache = forward_with_cache(model, tokens, keep="full")
        if not reusable(cache, tokens.shape[1]):
            layers = sorted({type(layer).__name__ for layer in getattr(cache, "layers", ())})
            warnings.warn(
                f"the KV cache of this model ({type(cache).__name__}: {', '.join(layers) or 'no layers'}) holds "
                "no per-position keys and values to cut to a prefix (e.g. linear attention's running state); "
                "attention suppression falls back to the naive method (one full forward per sentence)",
                SuppressionFallbackWarning,
                stacklevel=3,
            )
            cache = None
    else:
        logits, cache = model(tokens), None
    lp = log_probs(logits[0], temperature)
    del logits
    return Baseline(lp, cache, temperature, probs=lp.exp() if keep_baseline_probs(lp.device) else None)


def plan_batches(
    starts: Sequence[int],
    n_tokens: int,
    max_positions: int = DEFAULT_BATCH_POSITIONS,
    max_waste: float = DEFAULT_MAX_WASTE,
    max_batch: int | None = None,
) -> list[list[int]]:
    """Group suppressed sentences (by their start positions, ascending) into fast batches.

    A batch shares the prefix before its first sentence, so every row recomputes ``n_tokens - start(first)``
    positions. Consecutive sentences join while the batch stays under ``max_positions`` and the needless
    recomputation stays under ``max_waste`` of the batch's work. Returns lists of indices into ``starts``.

    >>> plan_batches([1, 5, 9, 90], n_tokens=100, max_positions=400)
    [[0, 1, 2], [3]]
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for index, start in enumerate(starts):
        if current:
            first = starts[current[0]]
            rows = len(current) + 1
            work = rows * (n_tokens - first)
            waste = sum(starts[k] - first for k in current) + start - first
            if work > max_positions or waste > max_waste * work or (max_batch and rows > max_batch):
                batches.append(current)
                current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def suppressed_logits(model, tokens, key_ranges, layers, heads, **forward_kwargs) -> Tensor:
    """One forward with ``key_ranges[b]`` hidden from row ``b``'s queries: as an SDPA mask when the model runs
    fused (inside ``fused_attention``), else as ``hook_attn_scores`` hooks. The same result either way."""
    if is_fused(model):
        with hide_keys(model, key_ranges, layers, heads):
            return model(tokens, **forward_kwargs)
    hooks = key_suppression_hooks(key_ranges, layers, heads, windows=sliding_windows(model))
    return model.run_with_hooks(tokens, fwd_hooks=hooks, **forward_kwargs)


@torch.inference_mode()
def naive_position_kl(
    model,
    tokens: Int[Tensor, "1 pos"],
    baseline: Baseline,
    spans: Sequence[tuple[int, int]],
    suppressed: Sequence[int],
    layers: Sequence[int],
    heads: Sequence[int] | None,
    progress: bool = True,
) -> Float[Tensor, "suppressed pos"]:
    """One full forward per suppressed sentence: KL per logit position, ``[len(suppressed), n_tokens]``."""
    n_tokens = tokens.shape[1]
    out = torch.zeros(len(suppressed), n_tokens, device=tokens.device)  # on the device: no sync per row
    for row, j in enumerate(progress_bar(suppressed, desc="suppression (naive)", progress=progress, leave=False)):
        start, end = spans[j]
        logits = suppressed_logits(model, tokens, [(start, end)], layers, heads)
        kl = baseline.kl(start, logits[:, start:])
        out[row, start:] = kl[0]
        del logits
    return out.cpu()


@torch.inference_mode()
def fast_position_kl(
    model,
    tokens: Int[Tensor, "1 pos"],
    baseline: Baseline,
    spans: Sequence[tuple[int, int]],
    suppressed: Sequence[int],
    layers: Sequence[int],
    heads: Sequence[int] | None,
    max_positions: int | None = None,
    max_waste: float = DEFAULT_MAX_WASTE,
    max_batch: int | None = None,
    progress: bool = True,
) -> Float[Tensor, "suppressed pos"]:
    """Batched suppressed forwards that reuse the baseline's keys and values before each batch's first sentence.

    ``max_positions`` None: ``default_batch_positions``. The KL stays on the model's device until the
    end: no host synchronisation between batches.
    """
    if baseline.cache is None:
        return naive_position_kl(model, tokens, baseline, spans, suppressed, layers, heads, progress)
    if max_batch is None:
        max_batch = default_max_batch(tokens.device)
    n_tokens = tokens.shape[1]
    if max_positions is None:
        max_positions = default_batch_positions(model, n_tokens, tokens.device)
    order = sorted(range(len(suppressed)), key=lambda r: spans[suppressed[r]][0])
    starts = [spans[suppressed[r]][0] for r in order]
    out = torch.zeros(len(suppressed), n_tokens, device=tokens.device)
    bar = progress_bar(total=len(suppressed), desc="suppression (fast)", progress=progress, leave=False)
    for batch in plan_batches(starts, n_tokens, max_positions, max_waste, max_batch):
        rows = [order[k] for k in batch]
        ranges = [spans[suppressed[r]] for r in rows]
        shared = ranges[0][0]  # positions before the batch's first sentence: the baseline's
        size = len(rows)
        new_tokens = tokens[:, shared:].expand(size, -1)
        if shared > 0:
            cache = prefix(baseline.cache, shared, size)
            logits = suppressed_logits(model, new_tokens, ranges, layers, heads, past_key_values=cache)
            del cache
        else:
            logits = suppressed_logits(model, new_tokens, ranges, layers, heads)
        kl = baseline.kl(shared, logits)
        del logits
        for k, r in enumerate(rows):
            start = ranges[k][0]
            # Positions before a row's own sentence are unchanged; keep them exactly 0, as the naive method does.
            out[r, start:] = kl[k, start - shared :]
        bar.update(size)
    bar.close()
    return out.cpu()
