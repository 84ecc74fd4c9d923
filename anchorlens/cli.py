"""The ``anchorlens`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The sample problem: the embedded 135M model answers it right about half the time, and with this seed its
# chain of thought computes 42, takes a wrong detour, and comes back: resampling then shows the anchor.
SAMPLE_PROBLEM = "What is 6 times 7?"
SAMPLE_ANSWER = "42"
SAMPLE_SEED = 1
# Printed per sentence: how much resampling from the next sentence on, instead of keeping this one, changes accuracy.
ANCHOR_METRIC = "resampling_importance_accuracy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="anchorlens", description="Find the thought anchors of a chain of thought."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser(
        "analyze", help="analyse a problem's chain of thought and write a report",
        description="Find the thought anchors of a chain of thought three ways and write an interactive report.",
    )
    analyze.add_argument(
        "--problem", default=None,
        help="the problem: the model reasons about it (default: a sample problem); with a .txt --trace, its prompt",
    )
    analyze.add_argument(
        "--trace", type=Path, default=None, help="an existing chain of thought: a trace .json or a .txt"
    )
    analyze.add_argument(
        "--model", default="smollm2-135m-instruct",
        help="the embedded model (default: %(default)s), a Hugging Face model name, or a local folder",
    )
    analyze.add_argument(
        "--out", type=Path, default=Path("anchorlens-report"),
        help="output folder, resumed if it exists (default: %(default)s)",
    )
    analyze.add_argument(
        "--max-new-tokens", type=int, default=200, help="length limit of a generated trace (default: %(default)s)"
    )
    analyze.add_argument(
        "--seed", type=int, default=None, help="sampling seed of the trace (default: 0; for the sample: 1)"
    )
    analyze.add_argument(
        "--style", default="default", choices=["default", "thought-anchors"],
        help="sentence splitter (default: %(default)s)",
    )
    analyze.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)")
    analyze.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"],
        help="weights and activations (default: %(default)s; bfloat16 halves a GPU's memory for long traces)",
    )
    analyze.add_argument(
        "--rollouts", type=int, default=8,
        help="resampled continuations per sentence (default: %(default)s; the paper: 100)",
    )
    analyze.add_argument(
        "--rollout-tokens", type=int, default=64, help="max tokens per continuation (default: %(default)s)"
    )
    analyze.add_argument("--answer", default=None, help="the correct answer (default: the trace's own answer)")
    analyze.add_argument(
        "--extractor", default="boxed_or_last_number", choices=["boxed", "boxed_or_last_number", "last_number"],
        help="how answers are read from rollouts (default: %(default)s; the paper: boxed)",
    )
    analyze.add_argument("--server", default=None, help="OpenAI-compatible server URL to sample rollouts from")
    analyze.add_argument(
        "--server-model", default=None, help="the model name the server expects (default: asked from its /v1/models)"
    )
    analyze.add_argument("--heads", type=int, default=16, help="number of receiver heads (default: %(default)s)")
    analyze.add_argument(
        "--skip", action="append", default=[],
        choices=["categories", "receivers", "suppression", "resampling", "flow"],
        help="leave an analysis out (repeatable; flow: information flow routes aggregated to sentences)",
    )
    analyze.add_argument(
        "--transcoders", type=Path, default=None,
        help="a transcoder folder (circuit-tracer's or sparsify's layout, or anchorlens train_transcoders'): adds "
             "the attribution step, the final answer's logit attributed back to sentences (off by default)",
    )
    analyze.add_argument(
        "--attribution-features", type=int, default=1024,
        help="at most this many feature nodes in the attribution graph, those of largest influence "
             "(default: %(default)s)",
    )

    split = commands.add_parser("split", help="split a text file into sentences and print them")
    split.add_argument("file", type=Path)
    split.add_argument("--style", default="default", choices=["default", "thought-anchors"])

    from anchorlens.mediation.command import add_mediate_parser, run_mediate  # causal mediation analysis

    add_mediate_parser(commands)

    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            return _split(args)
        if args.command == "mediate":
            return run_mediate(args)
        return _analyze(args)
    except (ValueError, ImportError, FileNotFoundError) as error:
        print(f"anchorlens: error: {error}", file=sys.stderr)
        return 2


def _split(args) -> int:
    from anchorlens.sentences import split_sentences

    for i, sentence in enumerate(split_sentences(args.file.read_text(), style=args.style)):
        print(f"[{i}] ({sentence.start}-{sentence.end}) {sentence.text}")
    return 0


def _analyze(args) -> int:
    import pandas as pd

    from anchorlens.models import load_model
    from anchorlens.pipeline import analyze

    if args.transcoders is not None and not args.transcoders.is_dir():  # before the minutes of loading a model
        raise FileNotFoundError(f"no transcoder folder {args.transcoders}: pass the folder with config.yaml and "
                                "layer_*.safetensors (or sparsify's layout)")
    if args.trace is not None and not args.trace.is_file():  # say so before the minutes of loading a model
        raise FileNotFoundError(
            f"no trace file {args.trace}: pass a .txt with the chain of thought or a trace .json (Trace.save)"
        )
    sampler = None
    if args.server is not None:  # checked before loading the model: a wrong URL fails in seconds
        from anchorlens.resampling.samplers.remote import ServerSampler

        sampler = ServerSampler(args.server, model=args.server_model)
    print(f"loading {args.model} ...", file=sys.stderr)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    trace = None
    if args.trace is not None:
        trace = _read_trace(model, args.trace, args.problem, args.style)
    problem = None if trace is not None else (args.problem or SAMPLE_PROBLEM)
    sample = problem == SAMPLE_PROBLEM
    answer = args.answer if args.answer is not None else (SAMPLE_ANSWER if sample else None)
    seed = args.seed if args.seed is not None else (SAMPLE_SEED if sample else 0)
    steps = tuple(s for s in ("categories", "receivers", "suppression", "resampling", "flow") if s not in args.skip)
    analysis = analyze(
        model,
        args.out,
        problem=problem,
        trace=trace,
        reference_answer=answer,
        n_rollouts=args.rollouts,
        rollout_max_tokens=args.rollout_tokens,
        max_new_tokens=args.max_new_tokens,
        top_k_heads=args.heads,
        seed=seed,
        style=args.style,
        sampler=sampler,
        extractor=args.extractor,
        steps=steps,
        transcoders=args.transcoders,
        attribution_features=args.attribution_features,
    )
    trace = analysis.trace
    print(trace)
    frame = analysis.to_dataframe()
    importance = frame.get(ANCHOR_METRIC)
    for i, sentence in enumerate(trace.sentences):
        start, end = trace.token_spans[i]
        category = f" [{frame['category'][i]}]" if "category" in frame else ""
        shift = f" {importance[i]:+5.2f}" if importance is not None and pd.notna(importance[i]) else ""
        print(f"[{i:2d}] tokens {start:4d}-{end:4d}{shift}{category} | {sentence.text}")
    if importance is not None and importance.notna().any():
        top = int(importance.idxmax())
        print(f"thought anchor by {ANCHOR_METRIC} (the number after the tokens): [{top}] {trace.sentences[top].text}")
    print("seconds per step: " + ", ".join(f"{step} {seconds:.1f}" for step, seconds in analysis.seconds.items()))
    print(f"report: {analysis.report_path.resolve()}")
    return 0


def _read_trace(model, path: Path, problem: str | None, style: str):
    """A saved trace (.json, with its own prompt) or a chain of thought as text, prompted with ``problem``."""
    from anchorlens.generation import problem_prompt
    from anchorlens.trace import Trace

    if path.suffix == ".json":
        if problem is not None:
            raise ValueError(f"{path} is a saved trace with its own prompt: leave out --problem")
        return Trace.load(path)
    prompt = problem_prompt(model, problem) if problem is not None else ""
    metadata = {"problem": problem} if problem is not None else None
    return Trace.from_text(model, path.read_text(), prompt=prompt, style=style, metadata=metadata)


if __name__ == "__main__":
    raise SystemExit(main())
