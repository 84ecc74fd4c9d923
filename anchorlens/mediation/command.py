"""``anchorlens mediate``: causal mediation analysis of a task, written as heatmaps and tables.

    anchorlens mediate --task factual --out mediation-factual
    anchorlens mediate --task arithmetic --model organism --components attn_out mlp_out --positions all

Writes into ``--out``: ``filter.csv`` (pairs generated and kept per template, with the reasons for drops),
``pairs.csv`` (the pairs swept), and per component ``{component}.png`` (the heatmap), ``{component}.csv``
(one row per cell: every metric's mean and confidence interval) and ``{component}.npz`` (the
``MediationResult``, for ``MediationResult.load``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anchorlens import settings

TASKS = settings.MEDIATION_TASKS


def add_mediate_parser(commands) -> argparse.ArgumentParser:
    """Register the ``mediate`` subcommand on an argparse subparsers object."""
    parser = commands.add_parser(
        "mediate", help="causal mediation analysis: patch counterfactual activations, write heatmaps and tables",
        description="Patch each component's activation from counterfactual prompts into base prompts, cell by "
                    "cell, and measure the effect on the answer (Stolfo et al. 2023).",
    )
    parser.add_argument("--task", default=settings.MEDIATION_TASK, choices=list(settings.MEDIATION_TASKS),
                        help="prompt pairs (default: %(default)s)")
    parser.add_argument(
        "--model", default=settings.DEFAULT_MODEL_NAME,
        help="the embedded model (default: %(default)s), 'organism' (the trained arithmetic organism), a Hugging "
             "Face model name or a local folder",
    )
    parser.add_argument("--components", nargs="+", default=list(settings.MEDIATION_COMMAND_COMPONENTS),
                        choices=list(settings.MEDIATION_COMPONENTS),
                        help=f"what to patch (default: {' '.join(settings.MEDIATION_COMMAND_COMPONENTS)})")
    parser.add_argument("--positions", default=settings.MEDIATION_POSITIONS,
                        choices=list(settings.MEDIATION_POSITION_CHOICES),
                        help="the last token only, or every position of the largest group of equal-length pairs "
                             "(default: %(default)s)")
    parser.add_argument("--metric", default=settings.MEDIATION_METRIC, choices=list(settings.MEDIATION_METRICS),
                        help="metric of the heatmaps (every metric is in the tables; default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=settings.MEDIATION_MAX_PAIRS,
                        help="at most this many pairs (default: %(default)s)")
    parser.add_argument("--per-template", type=int, default=settings.MEDIATION_PER_TEMPLATE,
                        help="arithmetic pairs generated per template and pair type (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=settings.MEDIATION_SEED,
                        help="prompt sampling seed (default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=settings.MEDIATION_CHUNK_SIZE,
                        help="rows per forward pass (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    parser.add_argument("--out", type=Path, default=Path(settings.MEDIATION_OUT),
                        help="output folder (default: %(default)s)")
    return parser


def check_mediate_args(args) -> None:
    """Every option checked without torch: numbers in range, a model folder that holds a model, a writable --out."""
    from anchorlens.errors import OptionError
    from anchorlens.inputs import check_model_source
    from anchorlens.outdir import check_writable

    for option, value in [("--pairs", args.pairs), ("--per-template", args.per_template),
                          ("--chunk-size", args.chunk_size)]:
        if value < 1:
            raise OptionError(f"{option} must be at least 1, not {value}")
    if args.model != "organism":
        check_model_source(args.model)
    check_writable(args.out)


def _load(name: str, device):
    if name == "organism":
        from anchorlens.mediation.organism import arithmetic_organism

        return arithmetic_organism(device=device or "cpu", progress=False)
    from anchorlens.models import load_model

    return load_model(name, device=device)


def run_mediate(args) -> int:
    """Run the ``mediate`` command; returns the exit status."""
    check_mediate_args(args)  # before torch and the minutes of loading a model
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from anchorlens.mediation.errors import MediationInputError
    from anchorlens.mediation.pairs import filter_pairs, group_by_length
    from anchorlens.mediation.prompts import task_pairs
    from anchorlens.mediation.sweep import mediation_sweep

    model = _load(args.model, args.device)
    options = {"n_per_template": args.per_template} if args.task.startswith("arithmetic") else {}
    if args.model == "organism" and args.task == "arithmetic":
        options["result_range"] = (0, 99)
    report = filter_pairs(model, task_pairs(args.task, seed=args.seed, **options), progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report.to_dataframe().to_csv(args.out / "filter.csv", index=False)
    print(f"{args.task}: the model answers {report.n_kept} of {report.n_generated} generated pairs right "
          f"({report.yield_fraction:.0%}); per template in {args.out / 'filter.csv'}")
    pairs = report.kept
    if args.positions == "all" and pairs:
        pairs = next(iter(group_by_length(model, pairs).values()))
    pairs = pairs[: args.pairs]
    if not pairs:
        raise MediationInputError(f"no pair of task {args.task!r} survived the filter (see {args.out / 'filter.csv'}): "
                                  "try another task, more --per-template pairs, or --model organism")
    pd.DataFrame([p.to_dict() for p in pairs]).to_csv(args.out / "pairs.csv", index=False)
    columns = ([p.base for p in pairs], [p.counterfactual for p in pairs], [p.base_answer for p in pairs],
               [p.counterfactual_answer for p in pairs])
    tokens = model.to_str_tokens(pairs[0].base) if args.positions == "all" else None
    for component in args.components:
        result = mediation_sweep(model, *columns, component=component, positions=args.positions, metric=args.metric,
                                 chunk_size=args.chunk_size, progress=True)
        result.save(args.out / f"{component}.npz")
        result.to_dataframe().to_csv(args.out / f"{component}.csv", index=False)
        ax = result.plot(tokens=tokens)
        ax.figure.savefig(args.out / f"{component}.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        where = _describe(result.top_cells(3), result, args.metric)
        print(f"{component}: {len(pairs)} pairs; strongest cells ({args.metric}): {where}")
    print(f"wrote {args.out}")
    return 0


def _describe(top, result, metric: str) -> str:
    parts = []
    for _, row in top.iterrows():
        cell = f"layer {row['layer']}"
        if result.unit:
            cell += f" {result.unit} {int(row[result.unit])}"
        if result.positions != ["last"]:
            cell += f" position {row['position']}"
        parts.append(f"{cell} = {row[metric]:.3g}")
    return "; ".join(parts)
