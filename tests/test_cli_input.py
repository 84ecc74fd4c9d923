"""Bad input to ``anchorlens analyze`` is refused with a message that says what to do, before the model loads.

Each case runs the real command-line entry point in this process with ``load_model`` replaced by a tripwire: a
case that reaches the model fails the test. Bugs (errors that are not the project's own) keep their traceback.
"""

from __future__ import annotations

import json

import pytest

import anchorlens.models
from anchorlens.cli import main

VALID_TRACE = {"prompt": "p", "cot": "One. Two.", "sentences": [{"text": "One.", "start": 0, "end": 4}],
               "token_ids": [1, 2, 3], "token_spans": [[1, 2], [2, 3]]}


class ModelLoaded(Exception):
    pass


@pytest.fixture
def tripwire(monkeypatch):
    def load_model(*args, **kwargs):
        raise ModelLoaded("the model was loaded")

    monkeypatch.setattr(anchorlens.models, "load_model", load_model)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "cot.txt").write_text("We need 6 times 7. So 42.")
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait. So 42.".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("  \n ")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"problem": "x", "answer": "1"}))
    (tmp_path / "edited.json").write_text(json.dumps(VALID_TRACE))
    (tmp_path / "tc").mkdir()
    (tmp_path / "a-file").write_text("")
    return tmp_path


CASES = [  # (arguments, words the message must hold)
    (["--heads", "0"], ["--heads must be at least 1"]),
    (["--rollouts", "0"], ["--rollouts must be at least 1"]),
    (["--rollout-tokens", "-5"], ["--rollout-tokens must be at least 1"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens must be at least 1"]),
    (["--attribution-features", "10"], ["--attribution-features does nothing without --transcoders"]),
    (["--transcoders", "{d}/tc", "--attribution-features", "0"], ["--attribution-features must be at least 1"]),
    (["--transcoders", "{d}/no-such-folder"], ["no transcoder folder", "config.yaml"]),
    (["--server-model", "m"], ["--server-model does nothing without --server", "--server URL"]),
    (["--skip", "resampling", "--rollouts", "4"], ["--rollouts does nothing with --skip resampling"]),
    (["--skip", "resampling", "--server", "http://127.0.0.1:9"], ["--server does nothing with --skip resampling"]),
    (["--skip", "receivers", "--heads", "4"], ["--heads does nothing with --skip receivers"]),
    (["--trace", "{d}/missing.txt"], ["no trace file", ".txt"]),
    (["--trace", "{d}/latin1.txt"], ["not UTF-8 text", "save it as UTF-8"]),
    (["--trace", "{d}/blank.txt"], ["is empty"]),
    (["--trace", "{d}/broken.json"], ["not valid JSON", ".txt"]),
    (["--trace", "{d}/other.json"], ["not a saved trace", "lacks prompt, cot, sentences, token_ids, token_spans"]),
    (["--trace", "{d}/edited.json"], ["1 sentences but 2 token spans"]),
    (["--trace", "{d}/edited.json", "--problem", "What?"], ["--problem does nothing with a saved trace"]),
    (["--trace", "{d}/cot.txt", "--seed", "3"], ["--seed does nothing with --trace"]),
    (["--problem", "   "], ["--problem is empty"]),
    (["--answer", ""], ["--answer is empty"]),
    (["--out", "{d}/a-file"], ["is a file", "folder"]),
    (["--out", "/proc/anchorlens-cannot-write-here"], ["cannot write the report", "--out"]),
]


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a).replace("{d}/", "") for a, _ in CASES])
def test_bad_input_is_refused_before_the_model_loads(args, words, files, tripwire, capsys):
    args = [a.format(d=files) for a in args]
    out = [] if "--out" in args else ["--out", str(files / "report")]
    code = main(["analyze", *args, *out])
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.startswith("anchorlens: error: ") and error.count("\n") == 1, "one line, no traceback"
    for word in words:
        assert word in error, f"{word!r} not in {error!r}"
    assert "loading" not in error


def test_good_input_reaches_the_model(files, tripwire):
    with pytest.raises(ModelLoaded):
        main(["analyze", "--trace", str(files / "cot.txt"), "--problem", "What is 6 times 7?", "--out",
              str(files / "r")])


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    def load_model(*args, **kwargs):
        raise ValueError("an internal bug")  # not one of the project's error classes

    monkeypatch.setattr(anchorlens.models, "load_model", load_model)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["analyze", "--out", str(files / "r")])


def test_split_refuses_a_file_that_is_not_utf8(files, capsys):
    assert main(["split", str(files / "latin1.txt")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_version_names_the_installed_and_tested_versions(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("anchorlens ") and "tested" in printed and "transformers" in printed
