"""The ``anchorlens`` command line.

Importing this module, ``--help`` and refused arguments import no torch, transformers or TransformerLens (the
package's exports are lazy, the defaults come from the light ``anchorlens.settings``): every option and path is
checked first, and a command imports the heavy modules only when it starts its work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anchorlens import settings
from anchorlens.mediation.command import add_mediate_parser
from anchorlens.study.command import add_study_parser

# The sample problem: the embedded 135M model answers it right about half the time, and with this seed its
# chain of thought computes 42, takes a wrong detour, and comes back: resampling then shows the anchor.
SAMPLE_PROBLEM = "What is 6 times 7?"
SAMPLE_ANSWER = "42"
SAMPLE_SEED = 1
# Printed per sentence: how much resampling from the next sentence on, instead of keeping this one, changes accuracy.
ANCHOR_METRIC = "resampling_importance_accuracy"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from anchorlens.errors import AnchorlensError, ModelPackageMissingError

    try:
        if args.command == "split":
            return _split(args)
        if args.command == "mediate":
            from anchorlens.mediation.command import run_mediate

            return run_mediate(args)
        if args.command == "study":
            from anchorlens.study.command import run_study

            return run_study(args)
        return _analyze(args)
    except (AnchorlensError, ModelPackageMissingError) as error:
        # bad input, said in one line; anything else is a bug and keeps its traceback
        print(f"anchorlens: error: {_one_line(error)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``anchorlens`` parser and its subcommands; builds without importing torch."""
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
        "--model", default=settings.DEFAULT_MODEL_NAME,
        help="the embedded model (default: %(default)s), a Hugging Face model name, or a local folder",
    )
    analyze.add_argument(
        "--out", type=Path, default=Path("anchorlens-report"),
        help="output folder, resumed if it exists (default: %(default)s)",
    )
    analyze.add_argument(
        "--max-new-tokens", type=int, default=None,
        help=f"length limit of a generated trace (default: {settings.MAX_NEW_TOKENS})",
    )
    analyze.add_argument(
        "--seed", type=int, default=None,
        help=f"sampling seed of the trace (default: {settings.SEED}; for the sample: {SAMPLE_SEED})",
    )
    analyze.add_argument(
        "--style", default=None, choices=list(settings.STYLES),
        help=f"sentence splitter (default: {settings.STYLE})",
    )
    analyze.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)")
    analyze.add_argument(
        "--dtype", default="float32", choices=list(settings.DTYPES),
        help="weights and activations (default: %(default)s; bfloat16 or float16 halve a GPU's memory for long "
             "traces; float16 is refused for a model whose activations come near its range)",
    )
    analyze.add_argument(
        "--rollouts", type=int, default=None,
        help=f"resampled continuations per sentence (default: {settings.N_ROLLOUTS}; the paper: 100)",
    )
    analyze.add_argument(
        "--rollout-tokens", type=int, default=None,
        help=f"max tokens per continuation (default: {settings.ROLLOUT_MAX_TOKENS}; a rollout cut off there has an "
             "answer only if it holds a complete \\boxed{}; raise it when many are cut off)",
    )
    analyze.add_argument("--answer", default=None, help="the correct answer (default: the trace's own answer)")
    analyze.add_argument(
        "--extractor", default=None, choices=list(settings.EXTRACTORS),
        help=f"how answers are read from rollouts (default: {settings.EXTRACTOR}, as published; "
             "boxed_or_last_number for small models that seldom write \\boxed{}: the last number is read from "
             "finished rollouts only)",
    )
    analyze.add_argument("--server", default=None, help="OpenAI-compatible server URL to sample rollouts from")
    analyze.add_argument(
        "--server-model", default=None, help="the model name the server expects (default: asked from its /v1/models)"
    )
    analyze.add_argument("--heads", type=int, default=None,
                         help=f"number of receiver heads (default: {settings.TOP_K_HEADS})")
    analyze.add_argument(
        "--skip", action="append", default=[],
        choices=list(settings.DEFAULT_STEPS),
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
        help=f"the cap on iterations of one resilience chain (default: {settings.RESILIENCE_ITERATIONS}, as in "
             "Thought Branches; needs --resilience)",
    )
    analyze.add_argument(
        "--transcoders", type=Path, default=None,
        help="a transcoder folder (circuit-tracer's or sparsify's layout, or anchorlens train_transcoders'): adds "
             "the attribution step, the final answer's logit attributed back to sentences (off by default)",
    )
    analyze.add_argument(
        "--attribution-features", type=int, default=None,
        help="at most this many feature nodes in the attribution graph, those of largest influence "
             f"(default: {settings.ATTRIBUTION_FEATURES}; needs --transcoders)",
    )

    split = commands.add_parser("split", help="split a text file into sentences and print them")
    split.add_argument("file", type=Path)
    split.add_argument("--style", default=settings.STYLE, choices=list(settings.STYLES))
    add_mediate_parser(commands)  # causal mediation analysis
    add_study_parser(commands)  # many traces, aggregated
    return parser


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

    from anchorlens.inputs import read_text

    for i, sentence in enumerate(split_sentences(read_text(args.file, "split"), style=args.style)):
        print(f"[{i}] ({sentence.start}-{sentence.end}) {sentence.text}")
    return 0


def _analyze(args) -> int:
    given = _check_analyze(args)  # every option and input file, before torch and the minutes of loading a model
    import pandas as pd

    from anchorlens.pipeline import analyze

    sampler = None
    if args.server is not None:  # checked before loading the model: a wrong URL fails in seconds
        from anchorlens.resampling.samplers.remote import ServerSampler

        sampler = ServerSampler(args.server, model=args.server_model)
    from anchorlens.models import load_model

    print(f"loading {args.model} ...", file=sys.stderr)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    trace = None
    if args.trace is not None:
        trace = _read_trace(model, args.trace, args.problem, given["style"])
    analysis = analyze(model, args.out, trace=trace, sampler=sampler, steps=given.pop("steps"), **given)
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
    from anchorlens.inputs import (check_model_source, check_server_reachable, check_server_url,
                                   check_transcoder_folder, read_text, read_trace_json)
    from anchorlens.outdir import check_writable

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
    if args.transcoders is not None:
        check_transcoder_folder(args.transcoders)
    if args.server is not None:
        check_server_url(args.server)
    if args.trace is not None:
        if not args.trace.is_file():
            raise OptionError(f"no trace file {args.trace}: pass a .txt with the chain of thought or a trace .json "
                              "(Trace.save)")
        if args.trace.suffix == ".json":
            read_trace_json(args.trace)
        elif not read_text(args.trace, "--trace").strip():
            raise OptionError(f"{args.trace} is empty: pass a file that holds the chain of thought")
    check_model_source(args.model)
    check_writable(args.out)

    sample = args.trace is None and args.problem in (None, SAMPLE_PROBLEM)
    steps = tuple(s for s in settings.DEFAULT_STEPS if s not in skip)
    given = {
        "problem": None if args.trace is not None else (args.problem or SAMPLE_PROBLEM),
        "reference_answer": args.answer if args.answer is not None else (SAMPLE_ANSWER if sample else None),
        "seed": args.seed if args.seed is not None else (SAMPLE_SEED if sample else settings.SEED),
        "n_rollouts": _or(args.rollouts, settings.N_ROLLOUTS),
        "rollout_max_tokens": _or(args.rollout_tokens, settings.ROLLOUT_MAX_TOKENS),
        "max_new_tokens": _or(args.max_new_tokens, settings.MAX_NEW_TOKENS),
        "top_k_heads": _or(args.heads, settings.TOP_K_HEADS),
        "style": _or(args.style, settings.STYLE),
        "extractor": _or(args.extractor, settings.EXTRACTOR),
        "transcoders": args.transcoders,
        "attribution_features": _or(args.attribution_features, settings.ATTRIBUTION_FEATURES),
        "steps": steps,
        "resilience_top": _or(args.resilience, settings.RESILIENCE_TOP),
        "resilience_iterations": _or(args.resilience_iterations, settings.RESILIENCE_ITERATIONS),
    }
    names = {"n_rollouts": "--rollouts", "rollout_max_tokens": "--rollout-tokens", "top_k_heads": "--heads",
             "max_new_tokens": "--max-new-tokens", "attribution_features": "--attribution-features",
             "resilience_iterations": "--resilience-iterations"}
    if args.resilience is not None and args.resilience < 1:
        raise OptionError(f"--resilience must be at least 1 (the number of top sentences), not {args.resilience}")
    for name, option in names.items():
        if given[name] < 1:
            raise OptionError(f"{option} must be at least 1, not {given[name]}")
    settings.check_settings(**{k: given[k] for k in (*names, "style", "extractor", "steps")})
    if args.server is not None:  # last: the one check that waits on the network
        check_server_reachable(args.server)
    return given


def _or(value, default):
    """An option's value, or (not given) the API's default from ``anchorlens.settings``."""
    return default if value is None else value


def _one_line(error: Exception) -> str:
    """An error's message on one line (a message of several lines is joined), so the error is one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _read_trace(model, path: Path, problem: str | None, style: str):
    """A saved trace (.json, with its own prompt) or a chain of thought as text, prompted with ``problem``."""
    from anchorlens.generation import problem_prompt
    from anchorlens.inputs import read_text
    from anchorlens.trace import Trace

    if path.suffix == ".json":
        return Trace.load(path)
    prompt = problem_prompt(model, problem) if problem is not None else ""
    metadata = {"problem": problem} if problem is not None else None
    return Trace.from_text(model, read_text(path, "--trace"), prompt=prompt, style=style, metadata=metadata)


if __name__ == "__main__":
    raise SystemExit(main())
