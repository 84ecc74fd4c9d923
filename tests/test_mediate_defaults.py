"""``anchorlens mediate`` takes every default from one source (``anchorlens.settings``, which the functions'
signatures read too): no literal in its parser, and each default equal to the function it feeds (issue 30)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import anchorlens
from anchorlens import settings
from anchorlens.cli import build_parser


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_mediate_defaults_are_the_api_defaults():
    from anchorlens.mediation.prompts import arithmetic_pairs, factual_pairs, retrieval_pairs, task_pairs
    from anchorlens.mediation.sweep import mediation_sweep

    args = build_parser().parse_args(["mediate"])
    assert args.per_template == _defaults(arithmetic_pairs)["n_per_template"]
    for function in (task_pairs, arithmetic_pairs, retrieval_pairs, factual_pairs):
        assert args.seed == _defaults(function)["seed"], function.__name__
    sweep = _defaults(mediation_sweep)
    assert (args.metric, args.positions, args.chunk_size) == (sweep["metric"], sweep["positions"], sweep["chunk_size"])
    assert args.components[0] == sweep["component"]
    assert args.task == settings.MEDIATION_TASK
    assert args.out == Path(settings.MEDIATION_OUT) and args.pairs == settings.MEDIATION_MAX_PAIRS
    for task in settings.MEDIATION_TASKS:  # every choice of --task is a task task_pairs knows
        assert task_pairs(task, **({"n_per_template": 1} if task.startswith("arithmetic") else {}))


def test_the_mediate_parser_holds_no_literal_default():
    """Every ``default=`` in ``add_mediate_parser`` names a setting (or is None: no value), so a default cannot
    drift from the API's again."""
    source = (Path(anchorlens.__file__).parent / "mediation" / "command.py").read_text()
    (function,) = [node for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.FunctionDef) and node.name == "add_mediate_parser"]
    defaults = [kw.value for node in ast.walk(function) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg == "default"]
    assert len(defaults) >= 10
    for value in defaults:
        literal = [n for n in ast.walk(value) if isinstance(n, ast.Constant) and n.value is not None]
        assert not literal, f"literal default {ast.unparse(value)} in add_mediate_parser: put it in settings.py"
