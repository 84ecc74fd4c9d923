"""The published Thought Anchors file formats: ``chunks_labeled.json`` and ``chunks_resampled.json``.

- ``chunks_labeled.json``: a list with one record per sentence ("chunk"): ``chunk``, ``chunk_idx``,
  ``function_tags``, ``depends_on``, the metrics of ``METRIC_COLUMNS`` and a ``summary``.
- ``chunks_resampled.json``: ``{"<sentence index>": [chunk_resampled of each rollout, ...]}``. In the released
  traces the lists hold 57-100 strings (apparently only the rollouts that produced an answer), and 277 sentences
  of two traces have none (their published metrics are 0.0 placeholders).

Import them to analyse the released data with anchorlens; export anchorlens results in the same format
to compare with, or feed, the published tools.

>>> trace = load_reference_trace("data/thought-anchors/deepseek-r1-distill-llama-8b/"
...                              "correct_base_solution/problem_330")           # doctest: +SKIP
>>> trace.importance.to_dataframe().head()                                       # doctest: +SKIP
>>> export_chunks_labeled(my_result, "out/chunks_labeled.json")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from anchorlens.errors import InputError
from anchorlens.resampling.metrics import METRIC_COLUMNS, ImportanceResult, different_trajectories_fraction, overdeterminedness
from anchorlens.resampling.rollout import RESAMPLE, Rollout
from anchorlens.resampling.similarity import SIMILARITY_THRESHOLD, Embedder

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "data" / "thought-anchors"  # in a repository checkout
_KEY_ORDER = ("chunk", "chunk_idx", "function_tags", "depends_on", *METRIC_COLUMNS, "summary")


ReferenceFormatError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def _read_json(path: Path):
    path = Path(path)
    if not path.exists():
        raise ReferenceFormatError(f"{path} does not exist; pass the path of a published trace file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReferenceFormatError(f"{path} is not valid JSON ({err})") from err


def load_chunks_labeled(path: str | Path) -> ImportanceResult:
    """Read a published ``chunks_labeled.json`` as an ``ImportanceResult``.

    ``categories`` is the first of each chunk's ``function_tags``; ``function_tags``, ``depends_on`` and
    ``summary`` are kept in ``result.extra``. The file has no rollout counts and no sentence matrix: those
    are NaN.

    >>> result = load_chunks_labeled(folder / "chunks_labeled.json")    # doctest: +SKIP
    """
    records = _read_json(Path(path))
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ReferenceFormatError(f"{path}: expected a non-empty JSON list of chunk records")
    records = sorted(records, key=lambda r: r.get("chunk_idx", 0))
    missing = [k for k in ("chunk", "chunk_idx") if k not in records[0]]
    if missing:
        raise ReferenceFormatError(f"{path}: chunk records lack {missing}; is this a chunks_labeled.json?")
    if [r["chunk_idx"] for r in records] != list(range(len(records))):
        raise ReferenceFormatError(f"{path}: chunk_idx values are not 0..{len(records) - 1}")
    n = len(records)
    nan = float("nan")
    metrics = {
        name: torch.tensor([float(r.get(name, nan)) if r.get(name) is not None else nan for r in records], dtype=torch.float64)
        for name in METRIC_COLUMNS
    }
    extra = {}
    for key in ("function_tags", "depends_on", "summary"):
        if any(key in r for r in records):
            extra[key] = [r.get(key) for r in records]
    tags = extra.get("function_tags")
    categories = [(t[0] if t else "unknown") for t in tags] if tags else None
    return ImportanceResult(
        sentences=[r["chunk"] for r in records],
        counterfactual_matrix=torch.full((n, n), nan, dtype=torch.float64),
        n_rollouts=torch.full((n,), nan),
        n_answered=torch.full((n,), nan),
        n_forced=torch.full((n,), nan),
        categories=categories,
        trace_id=Path(path).parent.name,
        extra=extra,
        **metrics,
    )


def _json_number(value: float) -> float:
    # The published files hold 0.0 where a metric is undefined (the last sentence, missing data).
    return 0.0 if value is None or math.isnan(value) else float(value)


def to_chunks_labeled(result: ImportanceResult) -> list[dict]:
    """The records of ``chunks_labeled.json`` for a result (NaN written as 0.0, as published)."""
    records = []
    for i, text in enumerate(result.sentences):
        record: dict = {"chunk": text, "chunk_idx": i}
        tags = result.extra.get("function_tags")
        if tags is not None:
            record["function_tags"] = list(tags[i] or [])
        elif result.categories is not None:
            record["function_tags"] = [result.categories[i]]
        depends = result.extra.get("depends_on")
        record["depends_on"] = list(depends[i] or []) if depends is not None else []
        for name in METRIC_COLUMNS:
            record[name] = _json_number(float(getattr(result, name)[i]))
        summaries = result.extra.get("summary")
        if summaries is not None:
            record["summary"] = summaries[i]
        records.append({k: record[k] for k in _KEY_ORDER if k in record})
    return records


def export_chunks_labeled(result: ImportanceResult, path: str | Path) -> Path:
    """Write ``result`` as a published-format ``chunks_labeled.json``; returns the path.

    >>> export_chunks_labeled(result, "out/problem_1/chunks_labeled.json")   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_chunks_labeled(result), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def load_chunks_resampled(path: str | Path) -> list[list[str]]:
    """Read ``chunks_resampled.json``: for each sentence index (in order), its rollouts' ``chunk_resampled``.

    >>> resampled = load_chunks_resampled(folder / "chunks_resampled.json")   # doctest: +SKIP
    >>> len(resampled[0])                                                    # doctest: +SKIP
    100
    """
    data = _read_json(Path(path))
    if not isinstance(data, dict):
        raise ReferenceFormatError(f"{path}: expected a JSON object {{sentence index: [strings]}}")
    try:
        indexed = {int(k): v for k, v in data.items()}
    except ValueError as err:
        raise ReferenceFormatError(f"{path}: keys must be sentence indices ({err})") from err
    if sorted(indexed) != list(range(len(indexed))):
        raise ReferenceFormatError(f"{path}: sentence indices are not 0..{len(indexed) - 1}")
    out = []
    for k in range(len(indexed)):
        strings = indexed[k]
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            raise ReferenceFormatError(f"{path}: entry {k} is not a list of strings")
        out.append(strings)
    return out


def export_chunks_resampled(rollouts: Sequence[Rollout], path: str | Path, n_sentences: int | None = None) -> Path:
    """Write the ``chunk_resampled`` of the resample rollouts of one trace as ``chunks_resampled.json``.

    >>> export_chunks_resampled(store.rollouts("trace-0"), "out/chunks_resampled.json")   # doctest: +SKIP
    """
    rows = [r for r in rollouts if r.kind == RESAMPLE]
    n = n_sentences if n_sentences is not None else (max((r.sentence_index for r in rows), default=-1) + 1)
    data: dict[str, list[str]] = {str(i): [] for i in range(n)}
    for r in sorted(rows, key=lambda r: (r.sentence_index, r.seed)):
        data.setdefault(str(r.sentence_index), []).append(r.chunk_resampled)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


@dataclass
class ReferenceTrace:
    """One published trace folder: problem, chain of thought, published metrics and resampled sentences."""

    folder: Path
    problem: dict
    base_solution: dict
    importance: ImportanceResult  # from chunks_labeled.json
    resampled: list[list[str]] | None  # from chunks_resampled.json, when present

    @property
    def sentences(self) -> list[str]:
        return self.importance.sentences

    @property
    def categories(self) -> list[str] | None:
        return self.importance.categories

    @property
    def problem_id(self) -> str:
        return self.folder.name

    @property
    def is_correct(self) -> bool | None:
        return self.base_solution.get("is_correct")


def load_reference_trace(folder: str | Path) -> ReferenceTrace:
    """Load a published trace folder (``problem.json``, ``base_solution.json``, ``chunks_labeled.json``,
    optional ``chunks_resampled.json``)."""
    folder = Path(folder)
    if not (folder / "chunks_labeled.json").exists():
        raise ReferenceFormatError(f"{folder} has no chunks_labeled.json; pass a published trace folder (problem_<id>/)")
    resampled_path = folder / "chunks_resampled.json"
    return ReferenceTrace(
        folder=folder,
        problem=_read_json(folder / "problem.json") if (folder / "problem.json").exists() else {},
        base_solution=_read_json(folder / "base_solution.json") if (folder / "base_solution.json").exists() else {},
        importance=load_chunks_labeled(folder / "chunks_labeled.json"),
        resampled=load_chunks_resampled(resampled_path) if resampled_path.exists() else None,
    )


def reference_trace_dirs(root: str | Path | None = None) -> list[Path]:
    """The published trace folders under ``root`` (default: the repository's ``data/thought-anchors``)."""
    root = Path(root) if root is not None else REFERENCE_DIR
    if not root.exists():
        raise ReferenceFormatError(
            f"{root} does not exist; pass the folder holding the published traces (a repository checkout has "
            "data/thought-anchors)"
        )
    return sorted(p.parent for p in root.glob("**/chunks_labeled.json"))


def recompute_trajectory_metrics(
    trace: ReferenceTrace, *, embed: Embedder | None = None, threshold: float = SIMILARITY_THRESHOLD
):
    """Published vs recomputed ``different_trajectories_fraction`` and ``overdeterminedness`` for one trace.

    Recomputed from ``chunks_resampled.json`` and the original sentences. Returns a DataFrame with columns
    ``chunk_idx``, ``published_dtf``, ``dtf``, ``published_overdeterminedness``, ``overdeterminedness``.
    """
    import pandas as pd

    if trace.resampled is None:
        raise ReferenceFormatError(f"{trace.folder} has no chunks_resampled.json to recompute from")
    if len(trace.resampled) != len(trace.sentences):
        raise ReferenceFormatError(
            f"{trace.folder}: {len(trace.resampled)} resampled entries for {len(trace.sentences)} chunks"
        )
    rows = []
    for i, (original, resampled) in enumerate(zip(trace.sentences, trace.resampled)):
        rows.append(
            {
                "chunk_idx": i,
                "published_dtf": float(trace.importance.different_trajectories_fraction[i]),
                "dtf": different_trajectories_fraction(original, resampled, threshold, embed=embed),
                "published_overdeterminedness": float(trace.importance.overdeterminedness[i]),
                "overdeterminedness": overdeterminedness(resampled),
            }
        )
    return pd.DataFrame(rows)
