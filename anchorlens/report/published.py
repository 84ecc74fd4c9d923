"""Report data from a published Thought Anchors trace folder (``data/thought-anchors/.../problem_*``).

Shows the paper's own numbers in an anchorlens report: the sentences, their gpt-4o taxonomy labels and
the published importance metrics (docs/methods.md 1.3, 1.4). Useful as a demo and as ground truth for the
report itself.

>>> data = report_data_from_reference("data/thought-anchors/deepseek-r1-distill-llama-8b/"
...                                   "correct_base_solution/problem_330", tokenizer)    # doctest: +SKIP
>>> build_report("out/", data)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from anchorlens.report.data import ReportData, ReportDataError
from anchorlens.resampling.metrics import METRIC_COLUMNS
from anchorlens.trace import Trace

#: The published per-sentence numbers, in the order the report lists them (accuracy last).
REFERENCE_METRICS: tuple[str, ...] = tuple(c for c in METRIC_COLUMNS if c != "accuracy") + ("accuracy",)


def report_data_from_reference(folder: str | Path, model, **extra) -> ReportData:
    """A ``ReportData`` for one published trace folder, its sentences mapped onto ``model``'s tokens.

    ``model`` is a TransformerBridge or a bare tokenizer. The published chunks must come out of
    anchorlens's thought-anchors splitter unchanged; a mismatch raises instead of mislabelling.
    ``extra`` keyword arguments go to ``ReportData`` (e.g. matrices computed elsewhere, ``notes``).
    """
    import pandas as pd

    folder = Path(folder)
    needed = ["base_solution.json", "chunks_labeled.json"]
    missing = [name for name in needed if not (folder / name).exists()]
    if missing:
        raise ReportDataError(
            f"{folder} lacks {missing}: pass a published trace folder such as "
            "data/thought-anchors/deepseek-r1-distill-llama-8b/correct_base_solution/problem_330"
        )
    base = json.loads((folder / "base_solution.json").read_text())
    chunks = json.loads((folder / "chunks_labeled.json").read_text())
    problem = json.loads((folder / "problem.json").read_text()) if (folder / "problem.json").exists() else {}
    trace = Trace.from_text(
        model, base["solution"], prompt=base.get("prompt", ""), style="thought-anchors", check_length=False,
        metadata={"source": str(folder)},
    )
    published = [c["chunk"] for c in chunks]
    if trace.sentence_texts() != published:
        raise ReportDataError(
            f"splitting {folder}/base_solution.json does not reproduce its {len(published)} published chunks "
            f"(got {trace.n_sentences}); the reference data or the splitter changed"
        )
    metrics = pd.DataFrame(
        {name: [c.get(name) for c in chunks] for name in REFERENCE_METRICS if any(name in c for c in chunks)},
        dtype=float,
    )
    metrics["summary"] = [c.get("summary", "") for c in chunks]
    categories = [(c.get("function_tags") or [None])[0] for c in chunks]
    correct = str(base.get("is_correct", "")).lower() == "true"
    nickname = problem.get("nickname") or folder.name
    defaults = {
        "title": f"{nickname} ({folder.name}, {'correct' if correct else 'incorrect'} base solution)",
        "model_name": folder.parents[1].name if len(folder.parents) > 1 else None,
        "problem": problem.get("problem"),
        "answer": f"{base.get('answer')} (ground truth: {problem.get('gt_answer')})" if problem else base.get("answer"),
        "metrics": metrics,
        "categories": categories,
    }
    notes = {
        "cot": "Published Thought Anchors data: sentences, gpt-4o labels and importance metrics (100 rollouts each)."
    }
    notes.update(extra.pop("notes", {}))
    defaults.update(extra)
    return ReportData(trace=trace, notes=notes, **defaults)
