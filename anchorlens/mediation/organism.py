"""A model organism for causal mediation: a small Llama-style model trained here to do the templates' arithmetic.

``arithmetic_organism()`` loads the shipped checkpoint (``anchorlens/data/mediation/organism``, 4 MB, made by
``scripts/train_mediation_organism.py``, about 5 minutes on one busy CPU core); ``retrain=True`` trains it
again, once, into the cache (``$ANCHORLENS_CACHE/organisms/``). It is a
4-layer model with a word-level tokenizer in which every number 0..99 and every template word is one token,
on the 24 templates of ``prompts.TEMPLATES`` (operands in digits), loss on the answer token only. The
held-out set is a random 20% of all (template, operands) prompts, never trained on; its accuracy is stored
with the model (``model.anchorlens_organism["held_out_accuracy"]``).

Training uses the Hugging Face model directly (a plain PyTorch loop on the last-position loss: TransformerLens
4's training tools train bridged models on next-token loss over whole sequences, which is slower here and
not the objective); the trained weights are then booted as a ``TransformerBridge``, as every anchorlens model.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from anchorlens.mediation.prompts import OPERATORS, TEMPLATES, apply
from anchorlens.progress import progress_bar

ORGANISM_VERSION = 1
NUMBERS = [str(n) for n in range(100)]
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "mediation" / "organism"


def organism_tokenizer():
    """A word-level tokenizer: BOS, padding, every number 0..99 and every word and symbol of the templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words: list[str] = []
    for templates in TEMPLATES.values():
        for template in templates:
            for piece in pre_tokenizers.Whitespace().pre_tokenize_str(template.format(x="1", y="1")):
                if piece[0] not in words and piece[0] not in NUMBERS:
                    words.append(piece[0])
    vocab = {token: i for i, token in enumerate(["<pad>", "<bos>", "<unk>", *NUMBERS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<pad>", pad_token="<pad>",
                                   unk_token="<unk>")


def organism_prompts(operand_range: tuple[int, int] = (1, 9), seed: int = 0, held_out: float = 0.2):
    """``(train, test)`` lists of ``(prompt, answer)`` over every operator, template and valid operand pair."""
    lo, hi = operand_range
    items = []
    for op in OPERATORS:
        for template in TEMPLATES[op]:
            for x in range(lo, hi + 1):
                for y in range(lo, hi + 1):
                    r = apply(op, x, y)
                    if r is not None and r < 100:
                        items.append((template.format(x=x, y=y), f" {r}"))
    random.Random(seed).shuffle(items)
    n_test = int(len(items) * held_out)
    return items[n_test:], items[:n_test]


def _batch(tokenizer, items, device):
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p, _ in items]
    width = max(len(e) for e in encoded) + 1
    ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e) + 1] = torch.tensor([tokenizer.bos_token_id, *e])
        mask[i, : len(e) + 1] = 1
    last = mask.sum(1) - 1
    answers = torch.tensor([tokenizer.encode(a, add_special_tokens=False)[0] for _, a in items])
    return ids.to(device), mask.to(device), last.to(device), answers.to(device)


def _accuracy(model, batch) -> float:
    ids, mask, last, answers = batch
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return (logits[torch.arange(len(ids)), last].argmax(-1) == answers).float().mean().item()


def train_organism(out_dir: Path, n_layers: int = 4, d_model: int = 128, n_heads: int = 4, n_kv_heads: int = 2,
                   steps: int = 300, batch_size: int = 256, lr: float = 3e-3, seed: int = 0,
                   progress: bool = True) -> dict:
    """Train the organism and save it (Hugging Face folder plus ``organism.json``) into ``out_dir``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = organism_tokenizer()
    train, test = organism_prompts(seed=seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=4 * d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    train_batch, test_batch = _batch(tokenizer, train, "cpu"), _batch(tokenizer, test, "cpu")
    ids, mask, last, answers = train_batch
    rng = torch.Generator().manual_seed(seed)
    started = time.time()
    model.train()
    for _ in progress_bar(range(steps), desc="training the arithmetic organism", progress=progress):
        pick = torch.randint(0, len(ids), (batch_size,), generator=rng)
        logits = model(input_ids=ids[pick], attention_mask=mask[pick]).logits
        loss = torch.nn.functional.cross_entropy(logits[torch.arange(batch_size), last[pick]], answers[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    info = {
        "version": ORGANISM_VERSION, "n_train": len(train), "n_held_out": len(test), "steps": steps, "seed": seed,
        "train_accuracy": _accuracy(model, train_batch), "held_out_accuracy": _accuracy(model, test_batch),
        "final_loss": loss.item(), "seconds": round(time.time() - started, 1),
        "held_out_prompts": [p for p, _ in test],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "organism.json").write_text(json.dumps(info, indent=1))
    return info


def arithmetic_organism(seed: int = 0, device: str = "cpu", progress: bool = True, retrain: bool = False):
    """The trained arithmetic organism as a ``TransformerBridge``: the shipped checkpoint, or with
    ``retrain=True`` one trained here with ``seed`` (once, then cached). ``model.anchorlens_organism`` holds its
    training record (held-out accuracy, the held-out prompts)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, LlamaForCausalLM

    from anchorlens.models import _check, cache_dir

    folder = SHIPPED
    if retrain:
        folder = cache_dir() / "organisms" / f"arithmetic-v{ORGANISM_VERSION}-seed{seed}"
        if not (folder / "organism.json").exists():
            train_organism(folder, seed=seed, progress=progress)
    info = json.loads((folder / "organism.json").read_text())
    hf_model = LlamaForCausalLM.from_pretrained(folder).eval().to(device)
    hf_model.config._attn_implementation = "eager"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bridge = TransformerBridge.boot_transformers("arithmetic-organism", hf_model=hf_model, tokenizer=tokenizer,
                                                 device=device, dtype=torch.float32)
    bridge.eval()
    bridge.anchorlens_name = f"arithmetic-organism-v{ORGANISM_VERSION}" + ("" if folder == SHIPPED else f"-seed{seed}")
    bridge.anchorlens_organism = info
    _check(bridge, True, True)
    return bridge


@torch.no_grad()
def shuffled_weights(model, seed: int = 0):
    """The control: the same bridge with every weight tensor's entries randomly permuted, in place.

    Same architecture, same weight distributions, no learned computation."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        flat = parameter.data.flatten()
        parameter.data.copy_(flat[torch.randperm(flat.numel(), generator=generator)].reshape(parameter.shape))
    return model
