"""``anchorlens study``: analyse every trace of a folder of published traces and aggregate over them.

    anchorlens study data/thought-anchors --importance published --views categories receivers --out study
    anchorlens study data/thought-anchors --shard 0/4 --out shared/study     # one of 4 machines; any scheduler
    anchorlens study data/thought-anchors --aggregate --out shared/study     # then: no model, just aggregate
    anchorlens study data/thought-anchors --importance published --views none --out study   # no model at all

Writes into ``--out``: ``traces/<name>/`` (what ``anchorlens analyze`` writes, keyed, with the trace's own
report), ``study.npz`` and ``study_sentences.json`` (``Study.load``), ``study_heads.csv``, ``study_sentences.csv``,
``study_by_category.csv``, ``study_view_correlations.csv``, ``study.png``, ``study_categories_<metric>.png`` (the
paper's category figure for the importance metric and the receiver score) and ``study.html`` (the figures and
tables, linking each trace's report). A re-run reuses every saved step; a
shard aggregates whatever is complete and says what is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anchorlens import settings


def add_study_parser(commands) -> argparse.ArgumentParser:
    """Register the ``study`` subcommand on an argparse subparsers object."""
    parser = commands.add_parser(
        "study", help="analyse a folder of traces and aggregate over them (receiver heads, categories, ...)",
        description="Run analyze on every published trace folder under FOLDER (problem.json, base_solution.json, "
                    "chunks_labeled.json; searched recursively, in sorted order), each into OUT/traces/<name>, and "
                    "aggregate over traces: receiver heads by mean kurtosis, split-half reliability, importance "
                    "by category with intervals over traces, view correlations.",
    )
    parser.add_argument("folder", type=Path, help="a folder of published trace folders (e.g. data/thought-anchors), "
                        "or a file of problems to generate traces for (.txt one a line, or a .json list)")
    parser.add_argument("--importance", default=settings.STUDY_IMPORTANCE, choices=["published", "rollouts", "none"],
                        help="published: the metrics and tags of chunks_labeled.json; rollouts: resample every "
                             "trace (slow); none (default: %(default)s)")
    parser.add_argument("--views", nargs="*", default=list(settings.STUDY_DEFAULT_VIEWS),
                        choices=[v for v in settings.STUDY_VIEWS if v != "attribution"] + ["none"],
                        help="per-sentence views, computed as analyze computes them (default: categories receivers); "
                             "none (or --views with nothing after it) with --importance published loads no model "
                             "and reads the published files alone")
    parser.add_argument("--heads", type=int, default=settings.STUDY_TOP_K,
                        help="number of receiver heads (default: %(default)s)")
    parser.add_argument("--shard", default=None, help="i/n: run only the traces whose index is i modulo n")
    parser.add_argument("--model", default=settings.DEFAULT_MODEL_NAME,
                        help="the white-box model (default: %(default)s), a Hugging Face name or a local folder")
    parser.add_argument("--base-model", default=None, help="a base model to compare head kurtosis with")
    parser.add_argument("--rollouts", type=int, default=None, help="with --importance rollouts: per sentence "
                        f"(default: {settings.N_ROLLOUTS})")
    parser.add_argument("--rollout-tokens", type=int, default=None, help="with --importance rollouts: max tokens "
                        f"per continuation (default: {settings.ROLLOUT_MAX_TOKENS})")
    parser.add_argument("--server", default=None, help="with --importance rollouts: an OpenAI-compatible server URL "
                        "to sample rollouts from (vLLM, SGLang, transformers serve)")
    parser.add_argument("--server-model", default=None,
                        help="the model name the server expects (default: asked from its /v1/models)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    parser.add_argument("--dtype", default="float32", choices=list(settings.DTYPES))
    parser.add_argument("--out", type=Path, default=Path("anchorlens-study"),
                        help="the study's folder, resumed if it exists (default: %(default)s)")
    parser.add_argument("--aggregate", action="store_true",
                        help="load no model: aggregate whatever the shards saved in --out and write the tables, "
                             "figures and page (e.g. the last step of a Slurm array)")
    return parser


def check_study_args(args) -> dict:
    """Every option and input checked without a model; returns ``study``'s keyword arguments."""
    from anchorlens.errors import OptionError
    from anchorlens.inputs import (check_model_source, check_published_folders, check_server_reachable,
                                   check_server_url)
    from anchorlens.outdir import check_writable
    from anchorlens.study.discovery import check_study_options, discover

    importance = None if args.importance == "none" else args.importance
    if importance != "rollouts" and (args.rollouts is not None or args.rollout_tokens is not None):
        raise OptionError("--rollouts and --rollout-tokens do nothing without --importance rollouts: add "
                          "--importance rollouts, or leave them out")
    if importance != "rollouts" and args.server is not None:
        raise OptionError("--server samples rollouts, which only --importance rollouts makes: add it, or leave out "
                          "--server")
    if args.server is None and args.server_model is not None:
        raise OptionError("--server-model does nothing without --server: add --server URL, or leave it out")
    rollouts = args.rollouts if args.rollouts is not None else settings.N_ROLLOUTS
    rollout_tokens = args.rollout_tokens if args.rollout_tokens is not None else settings.ROLLOUT_MAX_TOKENS
    for option, value in [("--heads", args.heads), ("--rollouts", rollouts), ("--rollout-tokens", rollout_tokens)]:
        if value < 1:
            raise OptionError(f"{option} must be at least 1, not {value}")
    views = tuple(dict.fromkeys(v for v in args.views if v != "none"))
    if "none" in args.views and views:
        raise OptionError(f"--views none means no view: leave it out, or leave out {' '.join(views)}")
    views, _ = check_study_options(views, importance, args.heads, args.shard)
    if not views and importance != "published" and not args.aggregate:
        raise OptionError("with no view and no published importance there is nothing to study: add --views ... or "
                          "--importance published")
    if args.base_model is not None and "receivers" not in views:
        raise OptionError("--base-model is compared by its heads' kurtosis: add receivers to --views, or leave it out")
    if args.folder.is_file() and importance == "published":
        raise OptionError(f"{args.folder} is a file of problems: their traces have no published importance; add "
                          "--importance rollouts or --importance none")
    if not args.aggregate and (views or importance == "rollouts"):  # a model will be loaded
        check_model_source(args.model)
        if args.base_model is not None:
            check_model_source(args.base_model, "--base-model")
    sources = discover(args.folder)  # the traces (or problems) are there and readable
    check_published_folders(s.folder for s in sources if s.published)  # and their files are what the study reads
    if args.server is not None:
        check_server_url(args.server)
    check_writable(args.out)
    if args.server is not None:  # last: the one check that waits on the network
        check_server_reachable(args.server)
    return {"views": views, "importance": importance, "top_k": args.heads, "shard": args.shard,
            "n_rollouts": rollouts, "rollout_max_tokens": rollout_tokens}


def run_study(args) -> int:
    """Run the ``study`` command; returns the exit status."""
    given = check_study_args(args)  # before torch and the minutes of loading a model
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anchorlens.models import load_model
    from anchorlens.study.runner import study

    if args.aggregate:
        from anchorlens.study.collect import aggregate_folder

        result = aggregate_folder(args.out)
        result.save(args.out)
        if result.missing:
            print(f"missing {len(result.missing)}: " + "; ".join(f"{n}: {why}" for n, why in result.missing.items()),
                  file=sys.stderr)
    elif not given["views"] and given["importance"] == "published":  # nothing needs a forward pass
        print("no forward-pass view: reading the published files, no model loaded", file=sys.stderr)
        result = study(None, args.folder, out_dir=args.out, **given)
    else:
        print(f"loading {args.model} ...", file=sys.stderr)
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        base = load_model(args.base_model, device=args.device, dtype=args.dtype) if args.base_model else None
        sampler = None
        if args.server is not None:
            from anchorlens.resampling.samplers.remote import ServerSampler

            sampler = ServerSampler(args.server, model=args.server_model)
        result = study(model, args.folder, out_dir=args.out, base_model=base, sampler=sampler, **given)
    print(result)
    result.heads_dataframe().to_csv(args.out / "study_heads.csv", index=False)
    result.to_dataframe().to_csv(args.out / "study_sentences.csv", index=False)
    if "category" in result.sentences and len(result.sentences):
        table = result.by_category()
        table.to_csv(args.out / "study_by_category.csv", index=False)
        metric = result.default_metric()
        if metric is not None and metric in table:
            shown = table[table.shown].sort_values(metric, ascending=False)
            print(f"{metric} by category (the paper's definition, mean over traces ± SE): " + ", ".join(
                f"{row.category} {row[metric]:.2f} ± {row[metric + '_se']:.2f}" for _, row in shown.iterrows()))
    if len(result.sentences):
        result.view_correlations().to_csv(args.out / "study_view_correlations.csv", index=False)
    if result.receiver_heads:
        print("receiver heads (mean kurtosis over traces): " + ", ".join(
            f"L{l}H{h} {float(result.mean_kurtosis[l, h]):.2f}" for l, h in result.receiver_heads[:10]))
    if result.base_kurtosis is not None:
        print("vs base model: " + ", ".join(f"{k} {v}" for k, v in result.base_comparison().items()))
    if len(result.traces):
        figure = result.plot()
        figure.savefig(args.out / "study.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
    if "category" in result.sentences and len(result.sentences):  # the paper's category figures, one per quantity
        for metric in dict.fromkeys([result.default_metric(), "receiver_score"]):
            if metric in result.sentences and result.sentences[metric].notna().any():
                ax = result.plot_categories(metric)
                ax.figure.savefig(args.out / f"study_categories_{metric}.png", dpi=110, bbox_inches="tight")
                plt.close(ax.figure)
    print(f"study: {result.write_page(args.out).resolve()}")
    return 0
