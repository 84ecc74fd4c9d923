"""Every saved result of ``analyze`` is keyed on what made it: a re-run recomputes exactly the changed steps.

Ground truth here is the files themselves: a reused step leaves its file untouched (same bytes, same mtime), a
recomputed one holds what a fresh run into an empty folder computes.
"""

from __future__ import annotations

import json

import pytest
import torch

import anchorlens as al
from anchorlens import Analysis, Trace, analyze
from anchorlens.errors import OptionError
from anchorlens.step_keys import changes, status

TEXT = ("We need 6 times 7. Six sevens make 42. Let me check the product again. Seven times six is 42 as well. "
        "Both agree on the value. Nothing else is needed here. So the answer is 42. The final answer is 42.")
STEPS = ("receivers", "suppression", "flow")


@pytest.fixture(scope="module")
def models():
    shape = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2)
    return al.random_model("llama", seed=0, **shape), al.random_model("llama", seed=1, **shape)


def _run(model, out, trace, **kwargs):
    lines = []
    analysis = analyze(model, out, trace=trace, steps=kwargs.pop("steps", STEPS), progress=False, say=lines.append,
                       **kwargs)
    return analysis, dict(line.split(": ", 1) for line in lines)


def _mtimes(out, names):
    return {name: (out / name).stat().st_mtime_ns for name in names}


@pytest.mark.slow
def test_a_rerun_with_new_heads_recomputes_receivers_only(models, tmp_path):
    model, _ = models
    trace = Trace.from_text(model, TEXT)
    out = tmp_path / "out"
    first, said = _run(model, out, trace, top_k_heads=4)
    assert said == {"trace": "given", "receivers": "computed", "suppression": "computed", "flow": "computed"}
    assert len(first.receiver_heads) == 4
    kept = _mtimes(out, ["suppression.npz", "flow.npz", "trace.json"])

    second, said = _run(model, out, trace, top_k_heads=2)
    assert said == {"trace": "reused", "receivers": "recomputed (heads 4 -> 2)", "suppression": "reused",
                    "flow": "reused"}
    assert _mtimes(out, kept) == kept, "reused steps leave their files untouched"
    assert second.receiver_heads == first.receiver_heads[:2]
    fresh, _ = _run(model, tmp_path / "fresh", trace, top_k_heads=2)
    torch.testing.assert_close(second.receiver_scores, fresh.receiver_scores, equal_nan=True)
    assert Analysis.load(out).receiver_heads == second.receiver_heads
    assert json.loads((out / "receivers.npz.key.json").read_text())["heads"] == 2


@pytest.mark.slow
def test_another_model_with_the_same_tokenizer_recomputes_everything(models, tmp_path):
    model, other = models
    trace = Trace.from_text(model, TEXT)
    _run(model, tmp_path, trace)
    analysis, said = _run(other, tmp_path, trace)
    assert said["trace"] == "reused"
    for step in STEPS:
        assert said[step].startswith("recomputed (") and "other model weights" in said[step]
    fresh, _ = _run(other, tmp_path / "fresh", trace)
    torch.testing.assert_close(analysis.suppression_kl, fresh.suppression_kl, equal_nan=True)
    torch.testing.assert_close(analysis.flow_to_answer, fresh.flow_to_answer)


@pytest.mark.slow
def test_a_new_trace_recomputes_and_load_reads_only_its_own_results(models, tmp_path):
    model, _ = models
    _run(model, tmp_path, Trace.from_text(model, TEXT))
    shorter = Trace.from_text(model, TEXT.rsplit(". ", 2)[0] + ".")
    analysis, said = _run(model, tmp_path, shorter, steps=("receivers",))
    assert said["trace"] == "given (replaces the saved trace)" and said["receivers"].startswith("recomputed (a new trace")
    loaded = Analysis.load(tmp_path)
    assert loaded.suppression_kl is None and loaded.flow_to_answer is None, "left from the other trace: not read"
    assert loaded.receiver_heads == analysis.receiver_heads


@pytest.mark.slow
def test_a_step_killed_while_writing_is_recomputed(models, tmp_path):
    model, _ = models
    trace = Trace.from_text(model, TEXT)
    _run(model, tmp_path, trace)
    (tmp_path / "flow.npz.key.json").unlink()  # what a kill between writing the result and its key leaves
    _, said = _run(model, tmp_path, trace)
    assert said["flow"] == "computed" and said["suppression"] == "reused"


def test_flow_and_attribution_explain_the_same_answer_token(models, tmp_path):
    model, _ = models
    trace = Trace.from_text(model, TEXT)
    analysis, _ = _run(model, tmp_path, trace, reference_answer="42", steps=("flow",))
    position = analysis.answer_position
    assert model.tokenizer.decode(trace.token_ids[position:]).lstrip().startswith("42")
    assert "42" in model.tokenizer.decode(trace.token_ids[position:position + 2])
    assert json.loads((tmp_path / "flow.npz.key.json").read_text())["answer_position"] == position
    flow = al.sentence_flow(model, trace, distance="l2", position=position - 1)
    torch.testing.assert_close(analysis.flow_to_answer, flow.to_answer)


def test_key_changes_read_as_what_changed():
    old = {"model": {"name": "m", "dtype": "float32", "weights": "a"}, "trace": {"tokens": "x"}, "heads": 16}
    assert status(None, old) == "computed" and status(old, dict(old)) == "reused"
    new = old | {"heads": 4, "model": old["model"] | {"dtype": "bfloat16"}}
    assert changes(old, new) == ["heads 16 -> 4", "model dtype float32 -> bfloat16"]
    assert status(old, new | {"trace": {"tokens": "y"}}).endswith(", a new trace)")


def test_analyze_refuses_settings_out_of_range_before_any_work(models, tmp_path):
    model, _ = models
    trace = Trace.from_text(model, TEXT)
    for kwargs, message in [({"top_k_heads": 0}, "top_k_heads"), ({"n_rollouts": 0}, "n_rollouts"),
                            ({"steps": ("receivers", "nonsense")}, "unknown step"), ({"top_p": 0}, "top_p")]:
        with pytest.raises(OptionError, match=message):
            analyze(model, tmp_path / "never", trace=trace, progress=False, **kwargs)
    assert not (tmp_path / "never").exists()


def test_the_bar_switch_leaves_the_account_of_what_was_reused(models, tmp_path, capsys, monkeypatch):
    """ANCHORLENS_PROGRESS=0 turns bars off, not the lines that say what a re-run reused or recomputed."""
    model, _ = models
    trace = Trace.from_text(model, TEXT)
    monkeypatch.setenv("ANCHORLENS_PROGRESS", "0")
    for heads in (4, 2):
        analyze(model, tmp_path / "out", trace=trace, steps=("receivers",), top_k_heads=heads)
    err = capsys.readouterr().err
    assert "receivers: recomputed (heads 4 -> 2)" in err
    assert "%|" not in err, "no progress bar drawn"


def test_the_step_table_is_the_steps_the_command_line_offers():
    """The command line takes its step names from ``settings`` (no torch); they are the table's, one to one."""
    from anchorlens import settings
    from anchorlens.pipeline import STEP_TABLE

    assert sorted(settings.STEPS) == sorted(spec.name for spec in STEP_TABLE)
    assert set(settings.DEFAULT_STEPS) <= set(settings.STEPS)


@pytest.mark.slow
def test_results_are_the_methods_own_and_older_layouts_are_recomputed(models, tmp_path):
    """Each step's saved result is what its method returns when called directly; a file saved in the layout
    before (bare arrays, no ``format`` in its key) is not read as the new one: load skips it with a warning and a
    re-run recomputes it, saying why."""
    from anchorlens.io import save_arrays

    model, _ = models
    trace = Trace.from_text(model, TEXT)
    out = tmp_path / "out"
    analysis, _ = _run(model, out, trace, top_k_heads=3)
    direct = al.suppression_matrix(model, trace, progress=False)
    assert isinstance(analysis.suppression, al.SuppressionMatrix)
    torch.testing.assert_close(analysis.suppression.kl, direct.kl, equal_nan=True)
    heads = al.receiver_heads(model, trace, top_k=3, progress=False)
    assert analysis.receivers.heads == heads.heads
    torch.testing.assert_close(analysis.receiver_scores, heads.scores(0), equal_nan=True)
    attention = al.sentence_attention(model, trace).head(*heads.heads[0])
    torch.testing.assert_close(analysis.head_attention, attention)

    key_file = out / "suppression.npz.key.json"
    key = json.loads(key_file.read_text())
    assert key.pop("format") == "SuppressionMatrix"
    save_arrays(out / "suppression.npz", {"kl": direct.kl})  # what analyze saved before
    key_file.write_text(json.dumps(key))
    with pytest.warns(UserWarning, match="suppression.npz was saved by an older anchorlens"):
        loaded = Analysis.load(out)
    assert loaded.suppression is None and loaded.receivers is not None
    again, said = _run(model, out, trace, top_k_heads=3)
    assert said["suppression"].startswith("recomputed (format") and said["receivers"] == "reused"
    torch.testing.assert_close(again.suppression.kl, direct.kl, equal_nan=True)
