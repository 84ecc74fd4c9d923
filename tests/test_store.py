"""The SQLite rollout store: idempotent writes, durable commits, rollouts kept apart by settings, migration of
schema-1 stores, several writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import matplotlib
import pytest

matplotlib.use("Agg")

from anchorlens.errors import AnchorlensError
from anchorlens.resampling.rollout import Rollout
from anchorlens.resampling.store import RolloutStore, StoreError


def make(i: int, seed: int, kind: str = "resample", correct: bool | None = True, trace: str = "t0") -> Rollout:
    return Rollout(trace, i, kind, seed, f" text {i}/{seed}. More.", f"text {i}/{seed}.", str(seed % 3), correct, 5)


def test_roundtrip_order_and_filters(tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    written = [make(1, 9), make(0, 5, correct=None), make(0, 2, "forced", False), make(0, 1), make(2, 0, trace="t1")]
    for r in written:
        assert store.add(r, finish_reason="stop", sampler="test")
    back = store.rollouts("t0")
    assert [(r.sentence_index, r.kind, r.seed) for r in back] == [(0, "forced", 2), (0, "resample", 1), (0, "resample", 5), (1, "resample", 9)]
    assert {r for r in back} == {r for r in written if r.trace_id == "t0"}  # every field survives, None included
    assert store.count() == 5 and store.count("t0", kind="resample") == 3 and store.count("t0", sentence_index=0) == 3
    assert store.done("t0") == {(0, "forced", 2), (0, "resample", 1), (0, "resample", 5), (1, "resample", 9)}
    assert store.rollouts("t0", sentence_index=1, kind="resample") == [make(1, 9)]


def test_the_key_is_unique(tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    assert store.add(make(0, 1))
    changed = Rollout("t0", 0, "resample", 1, "another text", "another", "7", False, 3)
    assert not store.add(changed)  # same (trace, settings, sentence, kind, seed): ignored, the first one stays
    assert store.rollouts("t0") == [make(0, 1)]
    assert store.add(make(0, 1, kind="forced"))  # another kind is another key
    assert store.add_many([make(0, 1), make(0, 2), make(0, 3)]) == 2
    assert store.count() == 4


def test_durable_wal_and_reopen(tmp_path):
    path = tmp_path / "deep" / "r.sqlite"
    store = RolloutStore(path)
    store.add(make(0, 1))
    # A second connection sees the committed rollout before the first one is closed: it is on disk.
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0] == 1
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    store.close()
    assert RolloutStore.load(path).rollouts() == [make(0, 1)]


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="folder"):
        RolloutStore(tmp_path)
    with pytest.raises(StoreError, match="no rollout store"):
        RolloutStore.load(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        RolloutStore(junk)
    store = RolloutStore(tmp_path / "r.sqlite")
    with pytest.raises(StoreError, match="kind"):
        store.add(Rollout("t", 0, "other", 0, "", "", None, None))
    with pytest.raises(AnchorlensError):
        store.add("not a rollout")


def test_rollouts_are_kept_apart_by_their_settings(tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    settings = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "sampler": {"model": "m", "dtype": "float32"}}
    first = store.register_trace("t0", ["A.", "B."], settings)
    assert store.register_trace("t0", ["A.", "B."], dict(reversed(settings.items()))) == first  # a resume: same id
    hotter = store.register_settings("t0", {**settings, "temperature": 1.0})
    longer = store.register_settings("t0", {**settings, "max_tokens": 128})
    bf16 = store.register_settings("t0", {**settings, "sampler": {"model": "m", "dtype": "bfloat16"}})
    assert len({first, hotter, longer, bf16}) == 4
    # the same (trace, sentence, kind, seed) under two settings: two rollouts, neither replaces the other
    assert store.add(make(0, 1), settings_id=first)
    other = Rollout("t0", 0, "resample", 1, "hot text", "hot", "9", False, 7, "length")
    assert store.add(other, settings_id=hotter)
    assert not store.add(other, settings_id=hotter)  # but each is stored once
    assert store.rollouts("t0", settings_id=first) == [make(0, 1)]
    assert store.rollouts("t0", settings_id=hotter) == [other] and other.truncated
    assert store.done("t0", first) == store.done("t0", hotter) == {(0, "resample", 1)}
    assert store.count("t0") == 2 and store.count("t0", settings_id=longer) == 0
    assert set(store.settings("t0")) == {first, hotter, longer, bf16}
    assert store.trace_info("t0")["settings"][hotter]["temperature"] == 1.0
    assert set(store.to_dataframe("t0").settings_id) == {first, hotter}
    with pytest.raises(StoreError, match="other sentences"):
        store.register_trace("t0", ["A.", "C."], settings)
    with pytest.raises(StoreError, match="no trace"):
        store.trace_info("t9")


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE traces (trace_id TEXT PRIMARY KEY, sentences TEXT NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, sentence_index INTEGER NOT NULL CHECK (sentence_index >= 0),
    kind TEXT NOT NULL CHECK (kind IN ('resample', 'forced')), seed INTEGER NOT NULL, text TEXT NOT NULL,
    chunk_resampled TEXT NOT NULL, answer TEXT, is_correct INTEGER, n_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT, sampler TEXT, created REAL NOT NULL, UNIQUE (trace_id, sentence_index, kind, seed)
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO traces VALUES ('t0', '["A.", "B."]', '{"temperature": 0.6, "max_tokens": 64}', 0);
INSERT INTO rollouts (trace_id, sentence_index, kind, seed, text, chunk_resampled, answer, is_correct, n_tokens,
                      finish_reason, sampler, created)
VALUES ('t0', 0, 'resample', 1, ' So 6.', 'So 6.', '6', 0, 3, 'length', 'local:smollm2', 0),
       ('t0', 1, 'resample', 2, ' So 4.', 'So 4.', '4', 1, 3, 'stop', 'local:smollm2', 0);
"""


def test_a_schema_1_store_is_migrated(tmp_path):
    """Stores written before rollouts were keyed on their settings: kept, readable, never mixed into new runs."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.close()
    store = RolloutStore(path)
    old = store.rollouts("t0")
    assert [(r.sentence_index, r.seed, r.answer, r.finish_reason) for r in old] == [(0, 1, "6", "length"), (1, 2, "4", "stop")]
    (sid, settings), = store.settings("t0").items()
    assert settings == {"temperature": 0.6, "max_tokens": 64, "sampler": "local:smollm2", "migrated_from_schema": 1}
    assert store.done("t0", sid) == {(0, "resample", 1), (1, "resample", 2)}
    new = store.register_settings("t0", {"temperature": 0.6, "max_tokens": 64})
    assert store.done("t0", new) == set() and store.add(make(0, 1), settings_id=new)
    store.close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0] == "2"
    assert RolloutStore(path).count("t0") == 3  # reopening a migrated store changes nothing


def test_schema_version_is_checked(tmp_path):
    path = tmp_path / "r.sqlite"
    RolloutStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema 99"):
        RolloutStore(path)


def test_save_copies_a_store_in_use(tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    store.register_trace("t0", ["A."], {"x": 1})
    store.add_many([make(0, s) for s in range(10)])
    copy = RolloutStore.load(store.save(tmp_path / "backup" / "copy.sqlite"))
    assert copy.rollouts() == store.rollouts() and copy.trace_info("t0") == store.trace_info("t0")


def test_dataframe_and_plot(tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    store.add_many([make(i, s, correct=s % 2 == 0) for i in range(3) for s in range(4)] + [make(0, 0, "forced")])
    frame = store.to_dataframe("t0")
    assert len(frame) == 13
    assert {"trace_id", "sentence_index", "kind", "seed", "text", "chunk_resampled", "answer", "is_correct",
            "n_tokens", "finish_reason", "sampler"} <= set(frame.columns)
    ax = store.plot("t0")
    assert ax.get_xlabel() == "sentence"
    assert "13 rollouts" in repr(store)


WRITER = textwrap.dedent(
    """
    import sys
    from anchorlens.resampling.rollout import Rollout
    from anchorlens.resampling.store import RolloutStore
    store = RolloutStore(sys.argv[1])
    first = int(sys.argv[2])
    for seed in range(first, first + 60):
        store.add(Rollout("t0", seed % 3, "resample", seed, "x", "x", None, None, 1))
    """
)


@pytest.mark.slow
def test_two_processes_write_one_store(tmp_path):
    path = tmp_path / "shared.sqlite"
    RolloutStore(path).close()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(first)]) for first in (0, 30)]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    seeds = [r.seed for r in RolloutStore(path).rollouts()]
    assert sorted(seeds) == list(range(90))  # the 30 seeds both wrote are stored once
