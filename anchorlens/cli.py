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
    parser.add_argument("--version", action=_Version, help="print anchorlens's version and the installed and "
                        "tested versions of torch, transformers and TransformerLens, then exit")
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
        "--max-new-tokens", type=int, default=None, help="length limit of a generated trace (default: 200)"
    )
    analyze.add_argument(
        "--seed", type=int, default=None, help="sampling seed of the trace (default: 0; for the sample: 1)"
    )
    analyze.add_argument(
        "--style", default=None, choices=["default", "thought-anchors"],
        help="sentence splitter (default: default)",
    )
    analyze.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)")
    analyze.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
        help="weights and activations (default: %(default)s; bfloat16 or float16 halve a GPU's memory for long "
             "traces; float16 is refused for a model whose activations come near its range)",
    )
    analyze.add_argument(
        "--rollouts", type=int, default=None,
        help="resampled continuations per sentence (default: 8; the paper: 100)",
    )
    analyze.add_argument(
        "--rollout-tokens", type=int, default=None,
        help="max tokens per continuation (default: 64; a rollout cut off there has an answer only if it holds a "
             "complete \\boxed{}; raise it when many are cut off)"
    )
    analyze.add_argument("--answer", default=None, help="the correct answer (default: the trace's own answer)")
    analyze.add_argument(
        "--extractor", default=None, choices=["boxed", "boxed_or_last_number", "last_number"],
        help="how answers are read from rollouts (default: boxed_or_last_number; the paper: boxed); the last "
             "number is read from finished rollouts only",
    )
    analyze.add_argument("--server", default=None, help="OpenAI-compatible server URL to sample rollouts from")
    analyze.add_argument(
        "--server-model", default=None, help="the model name the server expects (default: asked from its /v1/models)"
    )
    analyze.add_argument("--heads", type=int, default=None, help="number of receiver heads (default: 16)")
    analyze.add_argument(
        "--skip", action="append", default=[],
        choices=["categories", "receivers", "suppression", "resampling", "flow"],
        help="leave an analysis out (repeatable; flow: information flow routes aggregated to sentences)",
    )
    analyze.add_argument(
        "--resilience", type=int, default=None, metavar="TOP",
        help="adds the resilience step (Thought Branches): resilience and Counterfactual++ of the TOP sentences by "
             "counterfactual importance, --rollouts chains each, sharing the resampling rollouts (off by default: "
             "each chain can run up to --resilience-iterations continuations)",
    )
    analyze.add_argument(
        "--resilience-iterations", type=int, default=None,
        help="the cap on iterations of one resilience chain (default: 20, as in Thought Branches; needs --resilience)",
    )
    analyze.add_argument(
        "--transcoders", type=Path, default=None,
        help="a transcoder folder (circuit-tracer's or sparsify's layout, or anchorlens train_transcoders'): adds "
             "the attribution step, the final answer's logit attributed back to sentences (off by default)",
    )
    analyze.add_argument(
        "--attribution-features", type=int, default=None,
        help="at most this many feature nodes in the attribution graph, those of largest influence "
             "(default: 1024; needs --transcoders)",
    )

    split = commands.add_parser("split", help="split a text file into sentences and print them")
    split.add_argument("file", type=Path)
    split.add_argument("--style", default="default", choices=["default", "thought-anchors"])

    from anchorlens.mediation.command import add_mediate_parser, run_mediate  # causal mediation analysis

    add_mediate_parser(commands)
    from anchorlens.study.command import add_study_parser, run_study  # many traces, aggregated

    add_study_parser(commands)

    args = parser.parse_args(argv)
    from anchorlens.errors import AnchorlensError, ModelPackageMissingError

    try:
        if args.command == "split":
            return _split(args)
        if args.command == "mediate":
            return run_mediate(args)
        if args.command == "study":
            return run_study(args)
        return _analyze(args)
    except (AnchorlensError, ModelPackageMissingError) as error:
        # bad input, said in one line; anything else is a bug and keeps its traceback
        print(f"anchorlens: error: {error}", file=sys.stderr)
        return 2


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def _version() -> str:
    from anchorlens.versions import __version__, version_report

    return f"anchorlens {__version__} ({version_report()})"


def _split(args) -> int:
    from anchorlens.sentences import split_sentences

    for i, sentence in enumerate(split_sentences(_read_text(args.file, "file"), style=args.style)):
        print(f"[{i}] ({sentence.start}-{sentence.end}) {sentence.text}")
    return 0


def _analyze(args) -> int:
    import pandas as pd

    from anchorlens.pipeline import analyze

    settings = _check_analyze(args)  # every option and input file, before the minutes of loading a model
    sampler = None
    if args.server is not None:  # checked before loading the model: a wrong URL fails in seconds
        from anchorlens.resampling.samplers.remote import ServerSampler

        sampler = ServerSampler(args.server, model=args.server_model)
    from anchorlens.models import load_model

    print(f"loading {args.model} ...", file=sys.stderr)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    trace = None
    if args.trace is not None:
        trace = _read_trace(model, args.trace, args.problem, settings["style"])
    analysis = analyze(model, args.out, trace=trace, sampler=sampler, steps=settings.pop("steps"), **settings)
    trace = analysis.trace
    print(trace)
    frame = analysis.to_dataframe()
    importance = frame.get(ANCHOR_METRIC)
    for i, sentence in enumerate(trace.sentences):
        start, end = trace.token_spans[i]
        category = f" [{frame['category'][i]}]" if "category" in frame else ""
        shift = ""
        if importance is not None and pd.notna(importance[i]):
            low, high = frame[f"{ANCHOR_METRIC}_ci_low"][i], frame[f"{ANCHOR_METRIC}_ci_high"][i]
            shift = f" {importance[i]:+5.2f} [{low:+5.2f}, {high:+5.2f}]"
        cut = frame["n_truncated"][i] if "n_truncated" in frame else 0
        cut = f" ({int(cut)} cut off)" if pd.notna(cut) and cut > 0 else ""
        print(f"[{i:2d}] tokens {start:4d}-{end:4d}{shift}{cut}{category} | {sentence.text}")
    if analysis.importance is not None:
        print(f"(the numbers after the tokens: {ANCHOR_METRIC} and its 95% bootstrap interval over rollouts)")
        top = analysis.importance.top_sentence(ANCHOR_METRIC)
        print(f"{top}" + (f": {trace.sentences[top.index].text}" if top.stands_out else ""))
        warning = analysis.importance.truncation_message()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    print("seconds per step: " + ", ".join(f"{step} {seconds:.1f}" for step, seconds in analysis.seconds.items()))
    print(f"report: {analysis.report_path.resolve()}")
    return 0


def _check_analyze(args) -> dict:
    """Check every option and input file of ``analyze`` without a model; return ``analyze``'s keyword arguments.

    Raises ``OptionError`` / ``TraceFileError`` saying what to do: numbers out of range, options that do nothing
    without another one, a trace file that is not UTF-8 text or not a saved trace, an output folder that
    cannot be written.
    """
    from anchorlens.errors import OptionError
    from anchorlens.outdir import check_writable
    from anchorlens.pipeline import check_settings
    from anchorlens.trace import read_trace_json

    skip = set(args.skip)
    given = {name: getattr(args, name) is not None for name in
             ("rollouts", "rollout_tokens", "extractor", "heads", "attribution_features", "max_new_tokens", "seed",
              "style", "server", "server_model", "problem", "answer", "resilience", "resilience_iterations")}

    def needs(option: str, name: str, other: str, why: str) -> None:
        if given[name]:
            raise OptionError(f"{option} does nothing {why}: {other}")

    if "resampling" in skip:
        for option, name in [("--rollouts", "rollouts"), ("--rollout-tokens", "rollout_tokens"),
                             ("--extractor", "extractor"), ("--server", "server")]:
            needs(option, name, "leave it out, or drop --skip resampling", "with --skip resampling")
    if "resampling" in skip:
        needs("--resilience", "resilience", "drop --skip resampling (resilience shares its rollouts and picks the "
              "top sentences by its counterfactual importance), or leave --resilience out", "with --skip resampling")
    if args.resilience is None:
        needs("--resilience-iterations", "resilience_iterations", "add --resilience TOP, or leave it out",
              "without --resilience")
    if "receivers" in skip:
        needs("--heads", "heads", "leave it out, or drop --skip receivers", "with --skip receivers")
    if args.transcoders is None:
        needs("--attribution-features", "attribution_features", "add --transcoders FOLDER, or leave it out",
              "without --transcoders")
    if args.server is None:
        needs("--server-model", "server_model", "add --server URL, or leave it out", "without --server")
    if args.trace is not None:
        for option, name in [("--seed", "seed"), ("--max-new-tokens", "max_new_tokens")]:
            needs(option, name, "leave it out (it sets how a trace is generated)", "with --trace")
        if args.trace.suffix == ".json":
            needs("--problem", "problem", "leave out --problem (the saved trace has its own prompt), or pass the "
                  "chain of thought as a .txt", f"with a saved trace ({args.trace})")
            needs("--style", "style", "leave it out (the saved trace is split already)", "with a saved trace")
    for option, value in [("--problem", args.problem), ("--answer", args.answer)]:
        if value is not None and not value.strip():
            raise OptionError(f"{option} is empty: give its text, or leave it out")
    if args.transcoders is not None and not args.transcoders.is_dir():
        raise OptionError(f"no transcoder folder {args.transcoders}: pass the folder with config.yaml and "
                          "layer_*.safetensors (or sparsify's layout)")
    if args.trace is not None:
        if not args.trace.is_file():
            raise OptionError(f"no trace file {args.trace}: pass a .txt with the chain of thought or a trace .json "
                              "(Trace.save)")
        if args.trace.suffix == ".json":
            read_trace_json(args.trace)
        elif not _read_text(args.trace, "--trace").strip():
            raise OptionError(f"{args.trace} is empty: pass a file that holds the chain of thought")
    check_writable(args.out)

    sample = args.trace is None and args.problem in (None, SAMPLE_PROBLEM)
    steps = tuple(s for s in ("categories", "receivers", "suppression", "resampling", "flow") if s not in skip)
    settings = {
        "problem": None if args.trace is not None else (args.problem or SAMPLE_PROBLEM),
        "reference_answer": args.answer if args.answer is not None else (SAMPLE_ANSWER if sample else None),
        "seed": args.seed if args.seed is not None else (SAMPLE_SEED if sample else 0),
        "n_rollouts": args.rollouts if args.rollouts is not None else 8,
        "rollout_max_tokens": args.rollout_tokens if args.rollout_tokens is not None else 64,
        "max_new_tokens": args.max_new_tokens if args.max_new_tokens is not None else 200,
        "top_k_heads": args.heads if args.heads is not None else 16,
        "style": args.style or "default",
        "extractor": args.extractor or "boxed_or_last_number",
        "transcoders": args.transcoders,
        "attribution_features": args.attribution_features if args.attribution_features is not None else 1024,
        "steps": steps,
        "resilience_top": args.resilience if args.resilience is not None else 0,
        "resilience_iterations": args.resilience_iterations if args.resilience_iterations is not None else 20,
    }
    names = {"n_rollouts": "--rollouts", "rollout_max_tokens": "--rollout-tokens", "top_k_heads": "--heads",
             "max_new_tokens": "--max-new-tokens", "attribution_features": "--attribution-features",
             "resilience_iterations": "--resilience-iterations"}
    if args.resilience is not None and args.resilience < 1:
        raise OptionError(f"--resilience must be at least 1 (the number of top sentences), not {args.resilience}")
    for name, option in names.items():
        if settings[name] < 1:
            raise OptionError(f"{option} must be at least 1, not {settings[name]}")
    check_settings(**{k: settings[k] for k in (*names, "style", "extractor", "steps")})
    return settings


def _read_text(path: Path, option: str) -> str:
    from anchorlens.errors import OptionError

    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise OptionError(f"no such file {path}: check the path given to {option}") from None
    except UnicodeDecodeError as error:
        raise OptionError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8 "
                          f"and pass it to {option} again") from None


def _read_trace(model, path: Path, problem: str | None, style: str):
    """A saved trace (.json, with its own prompt) or a chain of thought as text, prompted with ``problem``."""
    from anchorlens.generation import problem_prompt
    from anchorlens.trace import Trace

    if path.suffix == ".json":
        return Trace.load(path)
    prompt = problem_prompt(model, problem) if problem is not None else ""
    metadata = {"problem": problem} if problem is not None else None
    return Trace.from_text(model, _read_text(path, "--trace"), prompt=prompt, style=style, metadata=metadata)


if __name__ == "__main__":
    raise SystemExit(main())
