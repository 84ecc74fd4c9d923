"""Every public result class follows one protocol: ``to_dataframe()``, ``plot()`` with no argument,
``save(path)`` and ``Class.load(path)`` giving the same result back, and a file of another kind refused with
``ResultKindError`` naming both kinds.

Each result is made by the public function that returns it, on a small random model (2 layers, d_model 64),
random transcoders or the published data; the few that only summarise others are built from their fields.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import anchorlens as al
from anchorlens.errors import ResultKindError
from anchorlens.io import save_arrays
from anchorlens.kinds import all_kinds
from anchorlens.results import Result

KINDS = all_kinds()  # every exported result class, imported (the package imports its modules on first use)

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
TEXT = ("We need 6 times 7. Six sevens make 42. Let me check the product again. Seven times six is 42 as well. "
        "Both agree on the value. So the answer is 42.")
OTHER = "First add 2 and 3. That gives 5. Then double it. Ten is the result. So the answer is 10."
PROMPT = "The capital of France is"


@cache
def model():
    return al.random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0)


@cache
def other_model():
    return al.random_model("qwen2", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=1)


@cache
def traces():
    return [al.Trace.from_text(model(), TEXT), al.Trace.from_text(model(), OTHER)]


@cache
def transcoders():
    from anchorlens.attribution.transcoders import random_transcoders

    made = random_transcoders(2, 64, 48, activation="relu", skip=False, seed=1)
    made.scan = "random-test"  # save() fills in a scan name when there is none
    return made


@cache
def sweep():
    pairs = [("2 plus 3 is ", "4 plus 3 is ", "5", "7"), ("1 plus 6 is ", "2 plus 6 is ", "7", "8")]
    base, counterfactual, base_answer, counterfactual_answer = map(list, zip(*pairs))
    return al.mediation_sweep(model(), base, counterfactual, base_answer, counterfactual_answer,
                              component="mlp_post", layers=[1], units=list(range(40)), progress=False)


@cache
def analysis_folder(root: Path):
    return al.analyze(model(), root / "analysis", trace=traces()[0], steps=("receivers", "suppression", "flow"),
                      top_k_heads=2, progress=False)


def _study(tmp):
    return al.study(model(), list(traces()), out_dir=tmp / "study", views=("receivers",), importance=None, top_k=2,
                    n_bootstrap=20, progress=False)


BUILDERS = {
    "Trace": lambda tmp: traces()[0],
    "ImportanceResult": lambda tmp: al.load_chunks_labeled(next(REPO.glob(
        "data/thought-anchors/*/*/problem_*/chunks_labeled.json"))),
    "RunSummary": lambda tmp: al.RunSummary("trace-0", str(tmp / "rollouts.sqlite"), requested=12, already_done=4,
                                            generated=8, tokens=512, seconds=3.5,
                                            settings={"resample": {"temperature": 0.6}},
                                            settings_ids={"resample": "s-1"}),
    "SentenceAttention": lambda tmp: al.sentence_attention(model(), traces()[0]),
    "ReceiverHeads": lambda tmp: al.receiver_heads(model(), list(traces()), top_k=2, progress=False),
    "SplitHalfReliability": lambda tmp: al.receiver_heads(model(), list(traces()) * 2, top_k=2,
                                                          progress=False).reliability(n_splits=5),
    "HeadAblationResult": lambda tmp: al.head_ablation_experiment(
        model(), [(1, 0)], continuations=[(PROMPT, " Paris")], n_random=2, progress=False),
    "ModelComparison": lambda tmp: al.compare_models(model(), other_model(), list(traces()), top_k=2,
                                                     progress=False),
    "SuppressionMatrix": lambda tmp: al.suppression_matrix(model(), traces()[0], progress=False),
    "LayerSuppression": lambda tmp: al.suppression_by_layer(model(), traces()[0], progress=False),
    "InformationFlow": lambda tmp: al.information_flow(model(), PROMPT),
    "Routes": lambda tmp: al.information_flow(model(), PROMPT).routes(),
    "SentenceFlow": lambda tmp: al.sentence_flow(model(), traces()[0]),
    "KnockoutResult": lambda tmp: al.knockout_experiment(model(), PROMPT, n_edges=2, n_random=2),
    "EdgeAttribution": lambda tmp: al.edge_attribution(model(), PROMPT, "The capital of Italy is", " Paris",
                                                       " Rome"),
    "AttributionGraph": lambda tmp: al.attribution_graph(model(), transcoders(), PROMPT, max_n_logits=3,
                                                         progress=False),
    "SentenceAttribution": lambda tmp: al.answer_attribution(model(), transcoders(), traces()[0],
                                                             answer_position=traces()[0].n_tokens - 1,
                                                             max_feature_nodes=20, progress=False),
    "TranscoderSet": lambda tmp: transcoders(),
    "InterventionResult": lambda tmp: al.feature_intervention(model(), transcoders(), PROMPT, [(0, 5, 2, 0.0)]),
    "GenerationResult": lambda tmp: al.feature_intervention_generate(model(), transcoders(), PROMPT,
                                                                     [(0, 5, 2, 0.0)], max_new_tokens=3),
    "MediationResult": lambda tmp: sweep(),
    "NeuronOverlap": lambda tmp: al.neuron_overlap(sweep(), sweep(), k=10, n_permutations=50),
    "MediationPicture": lambda tmp: al.MediationPicture(0.9, 0.01, 0.02, 0.95, 0.6, 0.1, 0.4, 0.8, n_pairs=2),
    "Analysis": lambda tmp: analysis_folder(tmp.parent),
    "ReportData": lambda tmp: al.ReportData.load(analysis_folder(tmp.parent).out_dir / "report.json"),
    "Study": _study,
    "Explained": lambda tmp: al.study(None, REPO / "data" / "thought-anchors", out_dir=tmp / "published", views=(),
                                      importance="published", progress=False).explain(n_bootstrap=20),
    "RolloutStore": lambda tmp: _store(tmp),
    "ResilienceResult": lambda tmp: al.resilience(_planted(), _prompted(), [1, 5], n_rollouts=4, max_iterations=3,
                                                  store=tmp / "b.sqlite", reference_answer="42",
                                                  n_bootstrap=20, progress=False),
    "ChainDisruptionResult": lambda tmp: al.chain_disruption(_planted(), _prompted(), 1, "Let me check the product.",
                                                             n_candidates=2, n_continuations=2, max_iterations=1,
                                                             n_rollouts=3, store=tmp / "b.sqlite",
                                                             reference_answer="42", n_bootstrap=20, progress=False),
    "TransplantResult": lambda tmp: al.transplant_resampling(_planted(), _prompted(), "Another prompt.\n",
                                                             positions=[0, 3, 6], n_rollouts=3, store=tmp / "b.sqlite",
                                                             reference_answer="42", cue_answer="41", n_bootstrap=20,
                                                             progress=False),
}


def _planted():
    return al.PlantedSampler("Six sevens make 42.", 0.5)


@cache
def _prompted():
    return al.Trace.from_text(model(), TEXT, prompt="What is 6 times 7?\n")


def _store(tmp):
    store = al.RolloutStore(tmp / "made.sqlite")
    for i, kind in enumerate(["resample", "resample", "forced"]):
        store.add(al.Rollout("trace-0", i // 2, kind, i, f" text {i}. More.", f"text {i}.", str(i), i != 1, 5))
    return store
# fields a save cannot keep: where the analysis lives and what this run did (recomputed or reused, timings, the
# trace's key, which the folder's trace.json stands for); each step's key is compared below
NOT_SAVED = {"Analysis": {"out_dir", "report_path", "steps", "seconds", "keys"}}


def test_every_public_result_class_is_covered():
    """The builders above cover every result class, and every one is exported from anchorlens."""
    assert set(BUILDERS) == set(KINDS)
    assert all(getattr(al, name) is cls for name, cls in KINDS.items())


def assert_same(a, b, where: str = "", rel: float = 0.0) -> None:
    """Equal contents: tensors and frames exactly (a tensor stored in a narrower dtype, at that dtype), nested
    dataclasses field by field; lists and tuples alike (JSON has no tuple), NaN equal to NaN."""
    if isinstance(a, al.RolloutStore):  # a SQLite file: its rows are its contents
        assert_same(a.to_dataframe(), b.to_dataframe(), where, rel)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(b, a.to(b.dtype), rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False,
                                      obj=where)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.name not in NOT_SAVED.get(type(a).__name__, ()):
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}", rel)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), where
        by_name = {str(k): v for k, v in b.items()}
        for k, v in a.items():
            assert_same(v, by_name[str(k)], f"{where}[{k!r}]", rel)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", rel)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif rel and isinstance(a, float):
        assert math.isclose(a, b, rel_tol=rel), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _saved(name: str, tmp: Path) -> tuple[Result, Path]:
    result = BUILDERS[name](tmp)
    suffix = {"Trace": ".json", "ReportData": ".json", "RolloutStore": ".sqlite"}.get(name, "" if name in ("Analysis", "Study",
                                                                                  "TranscoderSet") else ".npz")
    return result, result.save(tmp / f"{name.lower()}{suffix}")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_round_trip_kind_check_and_plot(name, root, one_torch_thread):
    import matplotlib.pyplot as plt

    tmp = root / name
    tmp.mkdir()
    cls = KINDS[name]
    result, path = _saved(name, tmp)
    assert isinstance(result, cls) and isinstance(result, Result)

    loaded = cls.load(path)
    assert_same(result, loaded, name)
    assert_same(result.to_dataframe(), loaded.to_dataframe(), f"{name}.to_dataframe()")
    if name == "Analysis":
        assert loaded.keys and loaded.keys == {k: v for k, v in result.keys.items() if k != "trace"}
    assert isinstance(loaded.to_dataframe(), pd.DataFrame) and len(loaded.to_dataframe())

    # a file of another kind: the error names both kinds and the loader that reads the file
    names = sorted(BUILDERS)
    other = names[(names.index(name) + 1) % len(names)]
    (root / f"{name}-other").mkdir()
    other_path = _saved(other, root / f"{name}-other")[1]
    with pytest.raises(ResultKindError) as caught:
        cls.load(other_path)
    message = str(caught.value)
    assert other in message and name in message and f"anchorlens.{other}.load" in message, message

    figure = loaded.plot()
    assert isinstance(figure, (matplotlib.figure.Figure, matplotlib.axes.Axes)), type(figure)
    assert (figure if isinstance(figure, matplotlib.figure.Figure) else figure.figure).get_axes()
    plt.close("all")


def test_files_from_before_kinds_were_stored(tmp_path):
    """An older file (no kind in it) still loads; an older file of another class says what it lacks."""
    attention = BUILDERS["SentenceAttention"](tmp_path)
    meta = {"sentences": attention.sentences, "token_spans": [list(s) for s in attention.token_spans],
            "include_prompt": attention.include_prompt, "model_name": attention.model_name, "metadata": {}}
    old = save_arrays(tmp_path / "old_attention.npz", {"matrix": attention.matrix}, meta)  # as 0.1.0 wrote it
    assert_same(attention, al.SentenceAttention.load(old))

    with pytest.raises(ResultKindError, match="holds no SuppressionMatrix"):
        al.SuppressionMatrix.load(old)


def test_a_file_that_is_no_result_is_refused_with_the_expected_kind(tmp_path):
    path = save_arrays(tmp_path / "foreign.npz", {"x": torch.zeros(2)}, {"kind": "SomethingElse"})
    with pytest.raises(ResultKindError, match="SomethingElse.*not a Routes"):
        al.Routes.load(path)


def test_one_switch_silences_every_bar(capsys, monkeypatch):
    """Bars are on by default; ``set_progress(False)`` or ``ANCHORLENS_PROGRESS=0`` silences a real call's bar,
    and a call's own ``progress=False`` silences its own."""
    trace = traces()[0]

    def bars(call) -> str:
        capsys.readouterr()
        call()
        return capsys.readouterr().err

    previous = al.set_progress(None)
    try:
        monkeypatch.delenv("ANCHORLENS_PROGRESS", raising=False)
        assert "suppression" in bars(lambda: al.suppression_matrix(model(), trace))
        assert "information flow" in bars(lambda: al.information_flow(model(), PROMPT))
        assert bars(lambda: al.information_flow(model(), PROMPT, progress=False)) == ""

        al.set_progress(False)
        assert not al.progress_enabled()
        assert bars(lambda: al.suppression_matrix(model(), trace)) == ""
        assert bars(lambda: al.information_flow(model(), PROMPT)) == ""

        al.set_progress(None)
        monkeypatch.setenv("ANCHORLENS_PROGRESS", "0")
        assert bars(lambda: al.suppression_matrix(model(), trace)) == ""
        al.set_progress(True)  # the call in code wins over the environment
        assert "suppression" in bars(lambda: al.suppression_matrix(model(), trace))
    finally:
        al.set_progress(previous)


SAVED = REPO / "tests" / "data" / "saved_results"
# files saved by the code before the generic persistence (issue 30); InterventionResult and GenerationResult keep
# every logit (MBs), so they are not among them
SAVED_FILES = sorted(p.name for p in SAVED.iterdir()) if SAVED.is_dir() else []


ADDED_AFTER_THE_FIXTURES = {"SentenceAttribution"}  # no file of theirs was saved by the hand-written code


def test_saved_files_cover_the_single_file_results():
    folders_or_other_formats = {"Analysis", "Study", "TranscoderSet", "RolloutStore", "ReportData", "InterventionResult",
                                "GenerationResult"}
    assert {name.lower() for name in set(BUILDERS) - folders_or_other_formats - ADDED_AFTER_THE_FIXTURES} == {Path(f).stem for f in SAVED_FILES}


@pytest.mark.parametrize("file", SAVED_FILES)
def test_files_saved_before_the_generic_persistence_still_load(file, tmp_path, one_torch_thread):
    """Each file in tests/data/saved_results was written by the hand-written save of its class; it loads with
    today's code to the result its builder makes now."""
    name = next(n for n in BUILDERS if n.lower() == Path(file).stem)
    built, loaded = BUILDERS[name](tmp_path), KINDS[name].load(SAVED / file)
    if isinstance(getattr(built, "run_info", None), dict):  # where and how long this run took: not the result
        built.run_info.update({k: loaded.run_info[k] for k in ("store", "seconds") if k in built.run_info})
    if name == "RunSummary":
        built.store_path = loaded.store_path
    assert_same(built, loaded, name, rel=1e-6)  # float32 sums differ in the last bit with the thread layout


RENAMED = sorted(name for name, cls in KINDS.items() if getattr(cls, "_renamed", None))


def test_the_renamed_fields_are_the_ones_issue_30_renamed():
    assert RENAMED == ["ChainDisruptionResult", "ImportanceResult", "ResilienceResult", "TransplantResult"]
    assert all(KINDS[name]._renamed == {"confidence": "level"} for name in RENAMED)


@pytest.mark.parametrize("name", RENAMED)
def test_a_renamed_field_loads_from_a_file_that_saved_its_old_name(name, tmp_path):
    """A field renamed in issue 30 (``confidence`` -> ``level``) is read under its old name from older files (at
    a value other than the default, so a dropped key would show), without a warning; the old attribute name and
    constructor keyword still work, with a DeprecationWarning naming the new one."""
    import json
    import warnings

    cls = KINDS[name]
    built = BUILDERS[name](tmp_path)
    arrays, meta = dataclasses.replace(built, level=0.8)._to_file()
    assert meta["level"] == 0.8
    for old, new in cls._renamed.items():
        meta[old] = meta.pop(new)
    path = save_arrays(tmp_path / "old.npz", arrays, meta, kind=name)
    assert "level" not in json.loads(str(np.load(path)["__meta__"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = cls.load(path)
    assert loaded.level == 0.8
    assert_same(dataclasses.replace(built, level=0.8), loaded, name)

    with pytest.warns(DeprecationWarning, match=rf"{name}\.confidence is deprecated, use \.level"):
        assert loaded.confidence == 0.8
    fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded) if f.name != "level"}
    with pytest.warns(DeprecationWarning, match=rf"{name}\(confidence=\.\.\.\) is deprecated, use level="):
        again = cls(**fields, confidence=0.7)
    assert again.level == 0.7
    with pytest.raises(TypeError, match="both"):
        cls(**fields, confidence=0.7, level=0.7)
