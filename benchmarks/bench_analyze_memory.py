"""Benchmark: peak memory and time of ``analyze`` (categories, receivers, flow, report) on published traces,
against one plain forward pass of the same tokens.

    .venv/bin/python benchmarks/bench_analyze_memory.py                     # longest + median trace, SmolLM2, CPU
    .venv/bin/python benchmarks/bench_analyze_memory.py --old-flow-tokens 2048 4096   # + the old full flow step

Every measurement runs in a fresh subprocess (``--child``): load SmolLM2, build the Trace from the published
chunks (``load_reference_trace``; the chunks are the sentences, the problem is the prompt), then either

- ``forward``: one plain forward ``model(tokens)`` with fused (SDPA) attention, the mode ``analyze``'s model
  steps use by default (``forward-eager``: the bridge's own eager attention, for reference);
- ``analyze``: ``anchorlens.analyze(model, out, trace=trace, steps=("categories", "receivers", "flow"))``,
  with resampling and suppression left out; per-step peaks from a 5 ms RSS sampler around each step;
- ``old-flow``: the previous flow step (``information_flow`` over the whole trace + aggregation), on the
  first ``n`` tokens; ``new-flow``: the streamed one on the same tokens.

Peak memory: the process's resident-set high-water mark (``ru_maxrss``), which includes the loaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REFERENCE = REPO / "data" / "thought-anchors"
LONGEST = REFERENCE / "deepseek-r1-distill-llama-8b" / "correct_base_solution" / "problem_6596"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class Sampler(threading.Thread):
    """RSS every few milliseconds; ``peak`` since the last ``reset``."""

    def __init__(self, every: float = 0.005):
        super().__init__(daemon=True)
        self.every, self.peak, self.running = every, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.every)

    def reset(self):
        self.peak = rss_mb()


def trace_from_chunks(model, folder: Path, n_tokens: int | None = None):
    """The published trace as a ``Trace``: its chunks are the sentences, the problem the prompt."""
    from anchorlens.resampling.published_format import load_reference_trace
    from anchorlens.sentences import Sentence
    from anchorlens.trace import Trace, _token_spans, _wants_bos

    ref = load_reference_trace(folder)
    chunks = ref.sentences
    text, sentences = "", []
    for chunk in chunks:
        start = len(text) + (1 if text else 0)
        text = f"{text} {chunk}" if text else chunk
        sentences.append(Sentence(chunk, start, start + len(chunk)))
    prompt = (ref.problem.get("problem") or "") + "\n\n"
    full = prompt + text
    tokenizer = model.tokenizer
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    if _wants_bos(model, tokenizer, full):
        ids, offsets = [tokenizer.bos_token_id] + ids, [(0, 0)] + offsets
    spans, prompt_end = _token_spans(full, offsets, sentences, len(prompt))
    trace = Trace(prompt, text, sentences, ids, spans, prompt_end, "thought-anchors", model.anchorlens_name,
                  {"problem": ref.problem.get("problem")})
    if n_tokens is not None:  # the sentences that end within the first n tokens
        keep = [i for i, (_, end) in enumerate(spans) if end <= n_tokens]
        end = spans[keep[-1]][1]
        trace = Trace(prompt, text, sentences[: len(keep)], ids[:end], spans[: len(keep)], prompt_end,
                      "thought-anchors", model.anchorlens_name, {})
    return trace


def median_trace() -> Path:
    """The published trace of median length (SmolLM2 tokens)."""
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir
    from anchorlens.resampling.published_format import load_reference_trace, reference_trace_dirs

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    lengths = sorted((len(tokenizer(" ".join(load_reference_trace(d).sentences))["input_ids"]), str(d)) for d in reference_trace_dirs(REFERENCE))
    return Path(lengths[len(lengths) // 2][1])


def child(kind: str, folder: Path, n_tokens: int | None) -> dict:
    import torch

    from anchorlens import load_model

    torch.set_num_threads(1)
    model = load_model(device="cpu")
    trace = trace_from_chunks(model, folder, n_tokens)
    out = {"kind": kind, "trace": f"{folder.parent.name}/{folder.name}", "tokens": trace.n_tokens,
           "sentences": trace.n_sentences, "loaded_rss_mb": rss_mb()}
    tokens = trace.tokens()
    started = time.perf_counter()
    if kind in ("forward", "forward-eager"):
        from anchorlens.hooks.fused_attention import fused_attention

        with torch.inference_mode(), fused_attention(model, "sdpa" if kind == "forward" else "eager"):
            model(tokens)
    elif kind == "analyze":
        import anchorlens.pipeline.steps as pipeline
        from anchorlens import analyze

        sampler = Sampler()
        sampler.start()
        step_peaks: dict[str, float] = {}
        timed = pipeline.timed

        @contextmanager
        def measured(analysis, step):  # the pipeline's own timer, plus the RSS peak while the step runs
            sampler.reset()
            with timed(analysis, step):
                yield
            step_peaks[step] = max(sampler.peak, rss_mb())

        pipeline.timed = measured
        with tempfile.TemporaryDirectory() as tmp:
            analysis = analyze(model, Path(tmp) / "out", trace=trace, steps=("categories", "receivers", "flow"), progress=False)
        sampler.running = False
        out["step_seconds"] = {k: round(v, 2) for k, v in analysis.seconds.items()}
        out["step_peak_rss_mb"] = {k: round(v) for k, v in step_peaks.items()}
    elif kind in ("old-flow", "new-flow"):
        from anchorlens.flow import information_flow, sentence_flow

        if kind == "old-flow":
            sentence_flow(model, trace, distance="l2", flow=information_flow(model, trace, distance="l2", keep_heads=False))
        else:
            sentence_flow(model, trace, distance="l2")
    else:
        raise ValueError(kind)
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["peak_rss_mb"] = round(peak_mb())
    return out


def run(kind: str, folder: Path, n_tokens: int | None = None) -> dict:
    args = [sys.executable, __file__, "--child", kind, "--folder", str(folder)] + (["--n-tokens", str(n_tokens)] if n_tokens else [])
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--n-tokens", type=int)
    parser.add_argument("--old-flow-tokens", type=int, nargs="*", default=[])
    parser.add_argument("--traces", nargs="*", default=["longest", "median"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.n_tokens)))
        return
    folders = {"longest": LONGEST, "median": median_trace()}
    for name in args.traces:
        folder = folders[name]
        forward = run("forward", folder)
        run("forward-eager", folder)
        full = run("analyze", folder)
        print(f"{name}: analyze peak {full['peak_rss_mb']} MB = {full['peak_rss_mb'] / forward['peak_rss_mb']:.2f}x the "
              f"plain forward's {forward['peak_rss_mb']} MB ({full['tokens']} tokens)", flush=True)
    for n in args.old_flow_tokens:
        old, new = run("old-flow", LONGEST, n), run("new-flow", LONGEST, n)
        print(f"flow step at {old['tokens']} tokens: old {old['peak_rss_mb']} MB, {old['seconds']} s; "
              f"streamed {new['peak_rss_mb']} MB, {new['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
