"""Bad input to every ``anchorlens`` command is one line that says what to do, never a traceback (issue 30).

The sweep covers ``analyze``, ``split``, ``study`` and ``mediate``: missing, empty, binary and malformed files (as a
trace, a file of problems, a study folder's contents); empty and wrong model folders; bad numbers; unreachable and
malformed server URLs; unwritable outputs. Each case runs the real command-line entry point in this process.

- Cases that need no model run with ``load_model`` replaced by a tripwire: a case that reaches the model fails the
  test, so each is refused before the minutes of loading one.
- Model folders that hold something transformers or TransformerLens must read (an unknown model type, weights that
  are not weights, an architecture without an adapter or without attention) run the real loader, offline
  (``HF_HUB_OFFLINE=1``): each must fail in seconds, with an anchorlens error. Those that save a model's weights
  first are slow.

Bugs (errors that are not the project's own) keep their traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

import anchorlens.models
from anchorlens.cli import main
from conftest import REFERENCE, reference_traces

VALID_TRACE = {"prompt": "p", "cot": "One. Two.", "sentences": [{"text": "One.", "start": 0, "end": 4}],
               "token_ids": [1, 2, 3], "token_spans": [[1, 2], [2, 3]], "prompt_token_end": 1}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01" + bytes(range(256))  # not UTF-8 from its first byte
NUL = b"We need 6 times 7.\x00\x00\x00\x01 So 42."  # valid UTF-8, but a NUL byte: a binary file all the same


class ModelLoaded(Exception):
    pass


@pytest.fixture
def tripwire(monkeypatch):
    def load_model(*args, **kwargs):
        raise ModelLoaded("the model was loaded")

    monkeypatch.setattr(anchorlens.models, "load_model", load_model)


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released): connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _published_copy(tmp_path, name: str, file: str, data: bytes):
    """A study folder with a copy of one published trace whose ``file`` holds ``data``."""
    folder = tmp_path / name / "problem_x"
    shutil.copytree(reference_traces()[0], folder)
    (folder / file).write_bytes(data)
    return tmp_path / name


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad (and a few good) inputs, made once: the cases only read them (or write under ``out``)."""
    tmp_path = tmp_path_factory.mktemp("inputs")
    texts = {"cot.txt": b"We need 6 times 7. So 42.", "latin1.txt": "Caf\xe9 au lait. So 42.".encode("latin-1"),
             "blank.txt": b"  \n ", "empty.txt": b"", "png.txt": PNG, "nul.txt": NUL,
             "broken.json": b"{not json", "empty.json": b"", "png.json": PNG, "nul.json": b'{"prompt": "\x00"}',
             "other.json": json.dumps({"problem": "x", "answer": "1"}).encode(),
             "edited.json": json.dumps(VALID_TRACE).encode(),
             "wrong-types.json": json.dumps(VALID_TRACE | {"token_ids": "1 2 3", "sentences": [["One.", 0, 4]]}).encode(),
             "extra-field.json": json.dumps(VALID_TRACE | {"token_spans": [[1, 2]], "colour": "red"}).encode(),
             "problems-dict.json": json.dumps({"problem": "x"}).encode(), "problems-numbers.json": b"[1, 2]",
             "a-file": b""}
    for name, data in texts.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.txt").mkdir()
    (tmp_path / "tc").mkdir()
    (tmp_path / "tc-ok").mkdir()
    (tmp_path / "tc-ok" / "config.yaml").write_text("model_kind: transcoder_set\n")
    (tmp_path / "tc-png").mkdir()
    (tmp_path / "tc-png" / "config.yaml").write_bytes(PNG)
    (tmp_path / "tc-bad").mkdir()
    (tmp_path / "tc-bad" / "config.yaml").write_text("a: [unclosed\n")
    models = tmp_path / "models"
    for name, config in {"empty": None, "corrupt": b'{"model_type": "llama', "binary": PNG,
                         "no-type": b'{"architectures": ["LlamaForCausalLM"]}', "list": b"[]",
                         "no-weights": b'{"model_type": "llama"}'}.items():
        (models / name).mkdir(parents=True)
        if config is not None:
            (models / name / "config.json").write_bytes(config)
    (models / "no-config").mkdir()
    (models / "no-config" / "model.safetensors").write_bytes(PNG)
    for name, file, data in [("study-png", "problem.json", PNG), ("study-nul", "base_solution.json", NUL),
                             ("study-empty", "chunks_labeled.json", b""),
                             ("study-malformed", "chunks_labeled.json", b'[{"chunk": "One."'),
                             ("study-list", "problem.json", b"[]"),
                             ("study-chunks", "chunks_labeled.json", b'[{"text": "One."}]'),
                             ("study-solution", "base_solution.json", b'{"prompt": "p"}')]:
        _published_copy(tmp_path, name, file, data)
    (tmp_path / "no-traces").mkdir()
    return tmp_path


CASES = [  # (arguments, words the message must hold); {d}: the files fixture's folder; {port}: a closed port
    # analyze: numbers, option combinations
    (["analyze", "--heads", "0"], ["--heads must be at least 1"]),
    (["analyze", "--rollouts", "0"], ["--rollouts must be at least 1"]),
    (["analyze", "--rollouts", "-3"], ["--rollouts must be at least 1"]),
    (["analyze", "--rollout-tokens", "-5"], ["--rollout-tokens must be at least 1"]),
    (["analyze", "--max-new-tokens", "0"], ["--max-new-tokens must be at least 1"]),
    (["analyze", "--resilience", "0"], ["--resilience must be at least 1"]),
    (["analyze", "--resilience", "2", "--resilience-iterations", "-1"], ["--resilience-iterations must be at least 1"]),
    (["analyze", "--resilience-iterations", "3"], ["--resilience-iterations does nothing without --resilience"]),
    (["analyze", "--attribution-features", "10"], ["--attribution-features does nothing without --transcoders"]),
    (["analyze", "--transcoders", "{d}/tc-ok", "--attribution-features", "0"],
     ["--attribution-features must be at least 1"]),
    (["analyze", "--server-model", "m"], ["--server-model does nothing without --server", "--server URL"]),
    (["analyze", "--skip", "resampling", "--rollouts", "4"], ["--rollouts does nothing with --skip resampling"]),
    (["analyze", "--skip", "resampling", "--server", "http://127.0.0.1:9"],
     ["--server does nothing with --skip resampling"]),
    (["analyze", "--skip", "receivers", "--heads", "4"], ["--heads does nothing with --skip receivers"]),
    (["analyze", "--trace", "{d}/cot.txt", "--seed", "3"], ["--seed does nothing with --trace"]),
    (["analyze", "--trace", "{d}/edited.json", "--problem", "What?"], ["--problem does nothing with a saved trace"]),
    (["analyze", "--problem", "   "], ["--problem is empty"]),
    (["analyze", "--answer", ""], ["--answer is empty"]),
    # analyze: trace files, missing, empty, binary, malformed
    (["analyze", "--trace", "{d}/missing.txt"], ["no trace file", ".txt"]),
    (["analyze", "--trace", "{d}/folder.txt"], ["no trace file"]),
    (["analyze", "--trace", "{d}/latin1.txt"], ["not UTF-8 text", "save it as UTF-8"]),
    (["analyze", "--trace", "{d}/png.txt"], ["not UTF-8 text", "save it as UTF-8"]),
    (["analyze", "--trace", "{d}/nul.txt"], ["binary file", "a UTF-8 text file"]),
    (["analyze", "--trace", "{d}/blank.txt"], ["is empty"]),
    (["analyze", "--trace", "{d}/empty.txt"], ["is empty"]),
    (["analyze", "--trace", "{d}/broken.json"], ["not valid JSON", ".txt"]),
    (["analyze", "--trace", "{d}/empty.json"], ["not valid JSON", "Trace.save"]),
    (["analyze", "--trace", "{d}/png.json"], ["not UTF-8 text"]),
    (["analyze", "--trace", "{d}/nul.json"], ["binary file"]),
    (["analyze", "--trace", "{d}/other.json"], ["not a saved trace", "lacks prompt, cot, sentences, token_ids"]),
    (["analyze", "--trace", "{d}/wrong-types.json"], ["wrong type: sentences, token_ids", "save the trace again"]),
    (["analyze", "--trace", "{d}/extra-field.json"], ["unknown field(s) colour", "save the trace again"]),
    (["analyze", "--trace", "{d}/edited.json"], ["1 sentences but 2 token spans"]),
    # analyze: transcoder folders
    (["analyze", "--transcoders", "{d}/no-such-folder"], ["no transcoder folder", "config.yaml"]),
    (["analyze", "--transcoders", "{d}/cot.txt"], ["no transcoder folder", "config.yaml"]),
    (["analyze", "--transcoders", "{d}/tc"], ["holds no transcoders", "config.yaml"]),
    (["analyze", "--transcoders", "{d}/tc-png"], ["not UTF-8 text"]),
    (["analyze", "--transcoders", "{d}/tc-bad"], ["not valid YAML", "restore the transcoder folder"]),
    # analyze: model folders that hold no model (refused before transformers reads them)
    (["analyze", "--model", ""], ["--model is empty"]),
    (["analyze", "--model", "{d}/models/empty"], ["is empty", "save_pretrained"]),
    (["analyze", "--model", "{d}/models/no-config"], ["has no config.json", "save_pretrained"]),
    (["analyze", "--model", "{d}/models/corrupt"], ["config.json is not valid JSON", "save_pretrained"]),
    (["analyze", "--model", "{d}/models/binary"], ["config.json is not UTF-8 text"]),
    (["analyze", "--model", "{d}/models/no-type"], ["names no model_type"]),
    (["analyze", "--model", "{d}/models/list"], ["names no model_type"]),
    (["analyze", "--model", "{d}/models/no-weights"], ["no weights", "save_pretrained"]),
    (["analyze", "--model", "{d}/models/missing"], ["no such folder"]),
    (["analyze", "--model", "{d}/cot.txt"], ["is a file, not a model folder"]),
    # analyze: servers
    (["analyze", "--server", "http://127.0.0.1:{port}"], ["does not answer", "start the server", "--server"]),
    (["analyze", "--server", "not-a-url"], ["must be an http(s) URL"]),
    (["analyze", "--server", "http://"], ["must be an http(s) URL"]),
    (["analyze", "--server", "ftp://example.org"], ["must be an http(s) URL"]),
    (["analyze", "--server", "http://127.0.0.1:99999"], ["must be an http(s) URL"]),
    (["analyze", "--server", "http://127.0.0.1:port"], ["must be an http(s) URL"]),
    # analyze: outputs
    (["analyze", "--out", "{d}/a-file"], ["is a file", "folder"]),
    (["analyze", "--out", "{d}/a-file/report"], ["cannot write the report", "--out"]),
    (["analyze", "--out", "/proc/anchorlens-cannot-write-here"], ["cannot write the report", "--out"]),
    (["analyze", "--out", "/proc/self/status"], ["is a file", "folder"]),
    # split
    (["split", "{d}/missing.txt"], ["no such file", "split"]),
    (["split", "{d}/folder.txt"], ["is a folder, not a file"]),
    (["split", "{d}/latin1.txt"], ["not UTF-8 text"]),
    (["split", "{d}/png.txt"], ["not UTF-8 text"]),
    (["split", "{d}/nul.txt"], ["binary file"]),
    (["split", "{d}/empty.txt"], ["the text is empty"]),
    (["split", "{d}/blank.txt"], ["the text is empty"]),
    # study: folders, files of problems, published traces' files
    (["study", "{d}/missing"], ["is not a folder"]),
    (["study", "{d}/no-traces"], ["no trace folder under"]),
    (["study", "{d}/nul.txt", "--importance", "none"], ["binary file"]),
    (["study", "{d}/png.txt", "--importance", "none"], ["not UTF-8 text"]),
    (["study", "{d}/empty.txt", "--importance", "none"], ["holds no problem"]),
    (["study", "{d}/empty.json", "--importance", "none"], ["not valid JSON", "JSON list of problems"]),
    (["study", "{d}/broken.json", "--importance", "none"], ["not valid JSON", "JSON list of problems"]),
    (["study", "{d}/png.json", "--importance", "none"], ["not UTF-8 text"]),
    (["study", "{d}/problems-dict.json", "--importance", "none"], ["must hold a JSON list of problems"]),
    (["study", "{d}/problems-numbers.json", "--importance", "none"], ["problem 0 is not a non-empty text"]),
    (["study", "{d}/cot.txt"], ["is a file of problems", "--importance rollouts"]),
    (["study", "{d}/study-png"], ["problem.json is not UTF-8 text"]),
    (["study", "{d}/study-nul"], ["base_solution.json is a binary file"]),
    (["study", "{d}/study-empty"], ["chunks_labeled.json is not valid JSON", "fix or remove that trace folder"]),
    (["study", "{d}/study-malformed"], ["chunks_labeled.json is not valid JSON"]),
    (["study", "{d}/study-list"], ["problem.json is not a JSON object"]),
    (["study", "{d}/study-chunks"], ["chunks_labeled.json is not a list of chunk records"]),
    (["study", "{d}/study-solution"], ["has no 'solution' text"]),
    (["study", "data/thought-anchors", "--heads", "0"], ["--heads must be at least 1"]),
    (["study", "data/thought-anchors", "--importance", "rollouts", "--rollouts", "-1"], ["--rollouts must be at least 1"]),
    (["study", "data/thought-anchors", "--rollouts", "4"], ["do nothing without --importance rollouts"]),
    (["study", "data/thought-anchors", "--shard", "x"], ["shard must read i/n"]),
    (["study", "data/thought-anchors", "--shard", "3/2"], ["i lie in 0..n-1"]),
    (["study", "data/thought-anchors", "--shard", "0/0"], ["n must be at least 1"]),
    (["study", "data/thought-anchors", "--model", "{d}/models/empty"], ["is empty", "save_pretrained"]),
    (["study", "data/thought-anchors", "--model", "{d}/models/no-weights"], ["no weights"]),
    (["study", "data/thought-anchors", "--importance", "rollouts", "--server", "http://"],
     ["must be an http(s) URL"]),
    (["study", "data/thought-anchors", "--importance", "rollouts", "--server", "http://127.0.0.1:{port}"],
     ["does not answer", "start the server"]),
    (["study", "data/thought-anchors", "--out", "/proc/anchorlens-cannot-write-here"], ["cannot write the report"]),
    (["study", "data/thought-anchors", "--out", "{d}/a-file"], ["is a file", "folder"]),
    # mediate
    (["mediate", "--pairs", "0"], ["--pairs must be at least 1"]),
    (["mediate", "--pairs", "-1"], ["--pairs must be at least 1"]),
    (["mediate", "--per-template", "0"], ["--per-template must be at least 1"]),
    (["mediate", "--chunk-size", "0"], ["--chunk-size must be at least 1"]),
    (["mediate", "--model", "{d}/models/binary"], ["config.json is not UTF-8 text"]),
    (["mediate", "--model", "{d}/models/no-weights"], ["no weights"]),
    (["mediate", "--out", "/proc/anchorlens-cannot-write-here"], ["cannot write the report"]),
    (["mediate", "--out", "{d}/a-file"], ["is a file", "folder"]),
]


def _run(args: list[str], files, capsys) -> tuple[int, str]:
    args = [a.format(d=files, port=_closed_port()).replace("data/thought-anchors", str(REFERENCE)) for a in args]
    if "--out" not in args and args[0] != "split":
        args += ["--out", str(files / "out")]
    code = main(args)
    return code, capsys.readouterr().err


def _assert_refused(code: int, error: str, words: list[str], loading: bool = False) -> None:
    """Exit status 2 and one ``anchorlens: error:`` line, the last, holding ``words``; before it nothing (where the
    model starts loading: what loading prints); never a traceback."""
    assert code == 2, error
    assert "Traceback" not in error, error
    before, _, last = error.rstrip("\n").rpartition("\n")
    assert last.startswith("anchorlens: error: ") and "anchorlens: error" not in before, f"one line: {error!r}"
    assert loading or before == "", f"refused before anything else is said: {before!r}"
    for word in words:
        assert word in last, f"{word!r} not in {last!r}"


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a).replace("{d}/", "") for a, _ in CASES])
def test_bad_input_is_refused_before_the_model_loads(args, words, files, tripwire, capsys):
    _assert_refused(*_run(args, files, capsys), words)


ARGPARSE_CASES = [  # numbers that are not numbers, unknown choices: argparse's own refusal (usage, then one line)
    ["analyze", "--rollouts", "abc"], ["analyze", "--rollouts", "nan"], ["analyze", "--heads", "inf"],
    ["analyze", "--rollouts", "1.5"], ["analyze", "--seed", "x"], ["analyze", "--dtype", "float8"],
    ["analyze", "--temperature", "-1"], ["study", "data/thought-anchors", "--heads", "NaN"],
    ["study", "data/thought-anchors", "--views", "everything"], ["mediate", "--pairs", "1e3"],
    ["mediate", "--chunk-size", "-inf"], ["mediate", "--task", "poetry"], ["split"], ["no-such-command"],
]


@pytest.mark.parametrize("args", ARGPARSE_CASES, ids=" ".join)
def test_arguments_that_do_not_parse_are_refused_by_the_parser(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in error
    assert error.startswith("usage: anchorlens") and ": error: " in error.splitlines()[-1]


def test_settings_refuse_probabilities_and_temperatures_out_of_range():
    """The API's sampling settings (not command-line options) refuse NaN, inf and values out of range."""
    from anchorlens.errors import InputError
    from anchorlens.settings import check_settings

    for bad in [{"top_p": 1.5}, {"top_p": 0}, {"top_p": float("nan")}, {"temperature": -1},
                {"temperature": float("inf")}, {"temperature": float("nan")}, {"n_rollouts": 0},
                {"n_rollouts": 2.5}, {"n_rollouts": True}]:
        with pytest.raises(InputError):
            check_settings(**bad)
    check_settings(top_p=1.0, temperature=0.0, n_rollouts=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway, so the case cannot "
                    "arise: run as another user to test it")
@pytest.mark.parametrize("command", [["analyze"], ["mediate"], ["study", "data/thought-anchors"]])
def test_a_read_only_output_folder_is_refused(command, files, tripwire, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _assert_refused(*_run([*command, "--out", str(locked / "report")], files, capsys),
                        ["cannot write the report", "Permission denied"])
    finally:
        locked.chmod(0o700)


def test_good_input_reaches_the_model(files, tripwire):
    with pytest.raises(ModelLoaded):
        main(["analyze", "--trace", str(files / "cot.txt"), "--problem", "What is 6 times 7?", "--out",
              str(files / "r")])
    with pytest.raises(ModelLoaded):
        main(["analyze", "--trace", str(files / "cot.txt"), "--transcoders", str(files / "tc-ok"), "--out",
              str(files / "r")])
    with pytest.raises(ModelLoaded):
        main(["study", "data/thought-anchors", "--out", str(files / "s")])


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    def load_model(*args, **kwargs):
        raise ValueError("an internal bug")  # not one of the project's error classes

    monkeypatch.setattr(anchorlens.models, "load_model", load_model)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["analyze", "--out", str(files / "r")])


def test_version_names_the_installed_and_tested_versions(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("anchorlens ") and "tested" in printed and "transformers" in printed


# The real loader, offline: what transformers or TransformerLens read and refuse, said in one line, in seconds.
LOADER_CASES = [
    (["analyze", "--model", "{d}/models/unknown-type"],
     ["does not know its model type 'frobnicator'", "check config.json's model_type"]),
    (["mediate", "--model", "{d}/models/unknown-type"], ["does not know its model type 'frobnicator'"]),
    (["study", "data/thought-anchors", "--model", "{d}/models/unknown-type"], ["does not know its model type"]),
    (["analyze", "--model", "{d}/models/png-weights"], ["cannot load the model folder", "save_pretrained"]),
    (["analyze", "--model", "no-such-org/no-such-model-anchorlens"],
     ["cannot load model 'no-such-org/no-such-model-anchorlens'", "a Hugging Face model name"]),
    (["analyze", "--model", "no-such-model-anchorlens"], ["cannot load model", "the embedded model"]),
    (["analyze", "--device", "tpu"], ["'tpu' is not a device name", "--device"]),
    (["analyze", "--device", "cuda:7"], ["has no device 'cuda:7'", "--device"]),
    (["mediate", "--device", "cuda:7"], ["has no device 'cuda:7'", "--device"]),
]


@pytest.fixture(scope="module")
def loader_folders(files):
    models = files / "models"
    (models / "unknown-type").mkdir()
    (models / "unknown-type" / "config.json").write_text(
        json.dumps({"model_type": "frobnicator", "architectures": ["FrobForCausalLM"]}))
    (models / "unknown-type" / "model.safetensors").write_bytes(PNG)
    shutil.copytree(anchorlens.models.embedded_model_dir(), models / "png-weights",
                    ignore=shutil.ignore_patterns("*.safetensors"))
    (models / "png-weights" / "model.safetensors").write_bytes(PNG)  # the embedded model's config, no weights
    return files


@pytest.mark.parametrize("args, words", LOADER_CASES, ids=[" ".join(a).replace("{d}/", "") for a, _ in LOADER_CASES])
def test_the_loader_refuses_what_it_cannot_read_in_one_line(args, words, loader_folders, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name not found must not wait on the network
    start = time.monotonic()
    _assert_refused(*_run(args, loader_folders, capsys), words, loading=True)
    assert time.monotonic() - start < 30, "a refused model fails fast"


def _save_random(folder, config_class, model_class, **sizes):
    model_class(config_class(**sizes)).save_pretrained(folder)


@pytest.mark.slow
def test_architectures_anchorlens_cannot_use_are_refused_in_one_line(files, capsys, monkeypatch, tmp_path):
    """Saved random models (real weight files): one TransformerLens has no adapter for, one without attention,
    one whose attention edits do not reach the output; each refused as it loads."""
    from transformers import (BertConfig, BertForMaskedLM, BioGptConfig, BioGptForCausalLM, MambaConfig,
                              MambaForCausalLM)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = {"hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 100}
    heads = {"num_attention_heads": 2, "intermediate_size": 64}
    _save_random(tmp_path / "biogpt", BioGptConfig, BioGptForCausalLM, **small, **heads)
    _save_random(tmp_path / "mamba", MambaConfig, MambaForCausalLM, **small, state_size=4)
    _save_random(tmp_path / "bert", BertConfig, BertForMaskedLM, **small, **heads)
    for folder, words in [("biogpt", ["has no adapter for its architecture (BioGptForCausalLM)",
                                      "docs/architectures.md"]),
                          ("mamba", ["(MambaForCausalLM) has no attention hook", "use a model with attention"]),
                          ("bert", ["does not change the output", "Use a supported architecture"])]:
        _assert_refused(*_run(["analyze", "--model", str(tmp_path / folder)], files, capsys), words, loading=True)


def test_refused_files_and_addresses_import_no_torch(files):
    """The checks of files, folders and addresses are light: refused without torch, transformers or
    TransformerLens (a fresh interpreter; ``study``'s refusals are in test_cli_startup)."""
    import subprocess
    import sys

    from test_cli_startup import HEAVY, PROBE

    out = str(files / "out")
    cases = [["analyze", "--trace", f"{files}/png.txt", "--out", out],
             ["analyze", "--trace", f"{files}/wrong-types.json", "--out", out],
             ["analyze", "--transcoders", f"{files}/tc", "--out", out],
             ["analyze", "--server", "http://", "--out", out],
             ["analyze", "--model", f"{files}/models/no-weights", "--out", out],
             ["analyze", "--out", "/proc/anchorlens-cannot-write-here"],
             ["split", f"{files}/nul.txt"], ["mediate", "--model", f"{files}/models/binary", "--out", out]]
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(cases)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert [code for _, code, _ in results] == [2] * len(cases), run.stderr
    assert all(loaded == [] for _, _, loaded in results), results
    assert "Traceback" not in run.stderr
