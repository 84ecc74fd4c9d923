"""The command line answers at once and takes its defaults from the API (issue 30).

- ``import anchorlens.cli``, every ``--help``, and refused arguments import no torch, transformers or
  TransformerLens (run in a fresh interpreter: this test process has torch loaded already);
- every default of ``analyze``, ``study`` and ``mediate`` on the command line equals the Python function's
  signature default;
- ``--model`` pointing at a folder without a model is one clear line, before transformers sees it.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from pathlib import Path

import anchorlens
import anchorlens.models
from anchorlens.cli import _check_analyze, build_parser, main

HEAVY = ("torch", "transformers", "transformer_lens")

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
import anchorlens.cli
cases = json.loads(sys.argv[1])
heavy = {heavy!r}
results = []
for args in cases:
    try:
        code = anchorlens.cli.main(args)
    except SystemExit as exit_:
        code = exit_.code
    results.append([args, code, [m for m in heavy if m in sys.modules]])
print(json.dumps(results))
"""


def test_help_and_refused_arguments_import_no_torch(tmp_path):
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "out")
    cases = [["--help"], ["analyze", "--help"], ["study", "--help"], ["mediate", "--help"], ["split", "--help"],
             ["analyze", "--rollouts", "x"], ["no-such-command"], ["analyze", "--heads", "0", "--out", out],
             ["analyze", "--model", str(tmp_path / "empty"), "--out", out],
             ["mediate", "--pairs", "0", "--out", out], ["split", str(tmp_path / "missing.txt")],
             ["study", str(tmp_path / "missing"), "--out", out], ["study", str(tmp_path), "--heads", "0", "--out", out],
             ["study", str(REPO / "data" / "thought-anchors"), "--views", "none", "--out", "/proc/cannot-write"]]
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(cases)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    for args, code, loaded in results:
        assert loaded == [], f"anchorlens {' '.join(args)} imported {loaded}"
        assert code == (0 if "--help" in args else 2), (args, code)
    assert all(m in sys.modules for m in HEAVY), "the names looked for are what anchorlens.models imports"
    assert run.stderr.count("Traceback") == 0, run.stderr


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_analyze_defaults_are_the_api_defaults(tmp_path):
    from anchorlens.pipeline import analyze

    args = build_parser().parse_args(["analyze", "--problem", "What is 2 + 3?", "--out", str(tmp_path / "r")])
    given = _check_analyze(args)
    api = _defaults(analyze)
    compared = [k for k in given if k in api and k not in ("problem", "reference_answer", "transcoders")]
    assert len(compared) >= 10, compared
    for name in compared:
        assert given[name] == api[name], f"--{name}: command line {given[name]!r}, analyze() {api[name]!r}"
    assert api["extractor"] == "boxed"  # as published and documented (docs/methods.md)


def test_study_and_mediate_defaults_are_the_api_defaults():
    from anchorlens.hooks.cell_patch import COMPONENTS
    from anchorlens.mediation.metrics import METRICS
    from anchorlens.mediation.sweep import mediation_sweep
    from anchorlens.study.runner import study

    parser = build_parser()
    study_args = parser.parse_args(["study", "folder"])
    api = _defaults(study)
    assert study_args.heads == api["top_k"]
    assert tuple(study_args.views) == tuple(api["views"])
    assert study_args.importance == api["importance"]
    mediate = parser.parse_args(["mediate"])
    api = _defaults(mediation_sweep)
    assert (mediate.metric, mediate.positions, mediate.chunk_size) == (api["metric"], api["positions"],
                                                                         api["chunk_size"])
    assert mediate.components[0] == api["component"]
    from anchorlens import settings

    assert tuple(COMPONENTS) == settings.MEDIATION_COMPONENTS and tuple(METRICS) == settings.MEDIATION_METRICS


@pytest.fixture
def tripwire(monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(anchorlens.models, "load_model", load_model)


MODEL_CASES = [  # (how to make the --model path, words of the message)
    ("empty", ["--model folder", "is empty", "save_pretrained"]),
    ("no-config", ["has no config.json", "Hugging Face model name"]),
    ("bad-config", ["config.json is not valid JSON"]),
    ("no-type", ["names no model_type"]),
    ("a-file", ["is a file, not a model folder"]),
    ("missing/deep/folder", ["no such folder"]),
]


@pytest.mark.parametrize("command", ["analyze", "mediate", "study"])
@pytest.mark.parametrize("case, words", MODEL_CASES, ids=[c for c, _ in MODEL_CASES])
def test_a_model_folder_without_a_model_is_one_clear_line(command, case, words, tmp_path, tripwire, capsys):
    path = tmp_path / case
    if case != "missing/deep/folder" and case != "a-file":
        path.mkdir()
    if case == "no-config":
        (path / "weights.bin").write_bytes(b"\0")
    if case == "bad-config":
        (path / "config.json").write_text("{oops")
    if case == "no-type":
        (path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    if case == "a-file":
        path.write_text("x")
    extra = []
    if command == "study":
        extra = [str(tmp_path), "--importance", "none", "--views", "receivers"]
    code = main([command, *extra, "--model", str(path), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.startswith("anchorlens: error: ") and error.count("\n") == 1, error
    for word in words:
        assert word in error, f"{word!r} not in {error!r}"


def test_lazy_exports_keep_every_public_name():
    import anchorlens.study.runner  # binds the subpackage onto the package: the exported function still wins

    names = dir(anchorlens)
    for name in anchorlens.__all__:
        assert name in names, name
        assert getattr(anchorlens, name) is not None, name
    assert callable(anchorlens.study) and not inspect.ismodule(anchorlens.study)
    assert set(anchorlens._EXPORTS) <= set(anchorlens.__all__)
    with pytest.raises(AttributeError):
        anchorlens.no_such_name
