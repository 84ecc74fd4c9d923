"""The rollout store: every rollout of every trace in one SQLite file, written so that no work is lost.

Each finished rollout is written in its own committed transaction (WAL journal, full sync), so a run
killed at any moment, even by ``kill -9``, loses only the rollouts still being generated. A UNIQUE
constraint on ``(trace_id, settings_id, sentence_index, kind, seed)`` makes writes idempotent: a resumed
run that produces a rollout again cannot store it twice. Several processes may share one store file on
one machine (SQLite locks it); do not put it on a network file system.

Rollouts are stored under their settings: ``register_settings`` records everything that changes what a
rollout is (the sampler's identity, temperature, top_p, max_tokens, the prompt) and returns a
``settings_id`` (a hash of them); a run with other settings writes under another id, so it neither mixes
its rollouts with the old ones nor fails on them, and a run with more rollouts at the same settings
reuses the stored ones.

>>> store = RolloutStore("rollouts.sqlite")                                     # doctest: +SKIP
>>> sid = store.register_settings("t0", {"temperature": 0.6, "max_tokens": 64})  # doctest: +SKIP
>>> store.add(Rollout("t0", 3, "resample", 7, " So x = 2.", "So x = 2.", "2", True, 6), settings_id=sid)  # doctest: +SKIP
True
>>> store.rollouts("t0", settings_id=sid)[0].answer                             # doctest: +SKIP
'2'
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from anchorlens.errors import StoreError
from anchorlens.resampling.rollout import FORCED, RESAMPLE, Rollout
from anchorlens.results import Result, expect_kind

SCHEMA_VERSION = 2  # 2: rollouts keyed on their settings (settings_id); 1 is migrated on open
KINDS = (RESAMPLE, FORCED)

_ROLLOUTS = f"""
CREATE TABLE IF NOT EXISTS {{table}} (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    settings_id TEXT NOT NULL DEFAULT '',  -- the settings it was made with (see register_settings)
    sentence_index INTEGER NOT NULL CHECK (sentence_index >= 0),
    kind TEXT NOT NULL CHECK (kind IN ('{RESAMPLE}', '{FORCED}')),
    seed INTEGER NOT NULL,
    text TEXT NOT NULL,
    chunk_resampled TEXT NOT NULL,
    answer TEXT,                      -- NULL when none, and for a cut-off rollout without a complete boxed answer
    is_correct INTEGER,               -- 1, 0, or NULL (unknown)
    n_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,               -- 'stop' or 'length' (cut off at max_tokens)
    sampler TEXT,
    created REAL NOT NULL,
    UNIQUE (trace_id, settings_id, sentence_index, kind, seed)
);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    sentences TEXT NOT NULL,          -- JSON list of the original sentence texts
    settings TEXT NOT NULL,           -- JSON: what the first run of the trace recorded (informative only)
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    settings_id TEXT PRIMARY KEY,     -- a hash of the settings JSON
    trace_id TEXT NOT NULL,
    settings TEXT NOT NULL,           -- JSON: sampler identity, temperature, top_p, max_tokens, prompt, ...
    created REAL NOT NULL
);
""" + _ROLLOUTS.format(table="rollouts")


def settings_id(settings: dict) -> str:
    """The id of a settings dict: a hash of its canonical JSON (key order does not matter).

    >>> settings_id({"a": 1, "b": 2}) == settings_id({"b": 2, "a": 1})
    True
    """
    canonical = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return "s-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RolloutStore(Result):
    """Rollouts in a SQLite file: idempotent writes, one transaction per rollout, resumable runs.

    Args:
        path: the SQLite file (created with its folder when missing).

    Use ``add`` / ``add_many`` to write, ``rollouts`` / ``done`` / ``count`` to read,
    ``to_dataframe`` and ``plot`` to look, ``save`` to copy it safely while it is in use.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder: pass a file path for the store, e.g. {self.path / 'rollouts.sqlite'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: autocommit; transactions are opened explicitly (BEGIN IMMEDIATE).
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # a committed rollout survives even a power cut
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a usable SQLite rollout store ({error}); pass another path") from error
        self._check_schema()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def load(cls, path: str | Path) -> "RolloutStore":
        """Open an existing store (``RolloutStore(path)`` also creates a new one)."""
        if not Path(path).is_file():
            raise StoreError(f"no rollout store at {path}; create one with RolloutStore(path)")
        expect_kind(path, cls)  # e.g. a result's .npz: say what it is rather than a SQLite error
        return cls(path)

    def save(self, path: str | Path) -> Path:
        """Copy the store to ``path`` consistently, even while a run is writing to it (SQLite backup API)."""
        path = Path(path)
        if path.resolve() == self.path.resolve():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        target = sqlite3.connect(tmp)
        try:
            self._conn.backup(target)
        finally:
            target.close()
        shutil.move(tmp, path)
        return path

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RolloutStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RolloutStore({str(self.path)!r}, {self.count()} rollouts, {len(self.trace_ids())} traces)"

    # ------------------------------------------------------------------ traces

    def register_trace(self, trace_id: str, sentences: list[str], settings: dict | None = None) -> str | None:
        """Record a trace's sentences (refusing other sentences under a known trace_id).

        With ``settings``, also registers them (``register_settings``) and returns their ``settings_id``.
        Other settings for a known trace are fine: their rollouts are kept apart under another id.
        """
        sentences_json = json.dumps(list(sentences), ensure_ascii=False)
        with self._transaction():
            row = self._conn.execute("SELECT sentences FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO traces (trace_id, sentences, settings, created) VALUES (?, ?, ?, ?)",
                    (trace_id, sentences_json, json.dumps(settings or {}, sort_keys=True, default=str), time.time()),
                )
        if row is not None and json.loads(row[0]) != list(sentences):
            old = json.loads(row[0])
            raise StoreError(
                f"{self.path} already holds trace {trace_id!r} with other sentences ({len(old)} vs "
                f"{len(sentences)}); pass another trace_id or another store"
            )
        return None if settings is None else self.register_settings(trace_id, settings)

    def register_settings(self, trace_id: str, settings: dict) -> str:
        """Record the settings a trace's rollouts are made with; returns their ``settings_id`` (a hash).

        ``settings`` should hold everything that changes a rollout (sampler identity, temperature, top_p,
        max_tokens, prompt). The same settings always give the same id, so a resumed or larger run at
        the same settings finds its rollouts again.
        """
        if not isinstance(settings, dict):
            raise StoreError(f"settings must be a dict of JSON-able values, got {type(settings).__name__}")
        sid = settings_id(settings)
        with self._transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO settings (settings_id, trace_id, settings, created) VALUES (?, ?, ?, ?)",
                (sid, trace_id, json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str), time.time()),
            )
        return sid

    def settings(self, trace_id: str | None = None) -> dict[str, dict]:
        """``{settings_id: settings}`` registered (for one trace, or all), oldest first."""
        where, args = ("WHERE trace_id = ?", (trace_id,)) if trace_id is not None else ("", ())
        rows = self._conn.execute(f"SELECT settings_id, settings FROM settings {where} ORDER BY created, settings_id", args)
        return {sid: json.loads(text) for sid, text in rows}

    def trace_ids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT trace_id FROM traces ORDER BY created, trace_id")]

    def trace_info(self, trace_id: str) -> dict:
        """``{"sentences": [...], "settings": {settings_id: settings, ...}}``: the trace and every settings
        its rollouts were made with."""
        row = self._conn.execute("SELECT sentences FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no trace {trace_id!r}; it has {self.trace_ids()}")
        return {"sentences": json.loads(row[0]), "settings": self.settings(trace_id)}

    # ------------------------------------------------------------------ writing

    def add(self, rollout: Rollout, finish_reason: str | None = None, sampler: str | None = None,
            settings_id: str = "") -> bool:
        """Store one rollout in its own committed transaction. False if it was already stored (same key).

        ``finish_reason`` overrides ``rollout.finish_reason`` when given; ``settings_id`` is what
        ``register_settings`` returned for the settings the rollout was made with.
        """
        row = _row(rollout, finish_reason, sampler, settings_id)
        with self._transaction():
            cursor = self._conn.execute(_INSERT, row)
        return cursor.rowcount == 1

    def add_many(self, rollouts: Iterable[Rollout], settings_id: str = "") -> int:
        """Store many rollouts in one transaction (imports); returns how many were new."""
        rows = [_row(r, None, None, settings_id) for r in rollouts]
        with self._transaction():
            before = self._conn.total_changes
            self._conn.executemany(_INSERT, rows)
            return self._conn.total_changes - before

    # ------------------------------------------------------------------ reading

    def rollouts(self, trace_id: str | None = None, sentence_index: int | None = None, kind: str | None = None,
                 settings_id: str | None = None) -> list[Rollout]:
        """Stored rollouts, ordered by trace, sentence, kind and seed (filters optional; ``settings_id=None``
        returns the rollouts of every settings)."""
        where, args = _where(trace_id, sentence_index, kind, settings_id)
        rows = self._conn.execute(
            "SELECT trace_id, sentence_index, kind, seed, text, chunk_resampled, answer, is_correct, n_tokens, "
            f"finish_reason FROM rollouts{where} ORDER BY trace_id, sentence_index, kind, seed, settings_id",
            args,
        )
        return [
            Rollout(t, i, k, s, text, chunk, answer, None if ok is None else bool(ok), n, reason or "stop")
            for t, i, k, s, text, chunk, answer, ok, n, reason in rows
        ]

    def done(self, trace_id: str, settings_id: str | None = None) -> set[tuple[int, str, int]]:
        """The keys ``(sentence_index, kind, seed)`` already stored for a trace (at one settings_id, or any):
        what a resumed run skips."""
        where, args = _where(trace_id, None, None, settings_id)
        rows = self._conn.execute(f"SELECT sentence_index, kind, seed FROM rollouts{where}", args)
        return {(i, k, s) for i, k, s in rows}

    def count(self, trace_id: str | None = None, sentence_index: int | None = None, kind: str | None = None,
              settings_id: str | None = None) -> int:
        where, args = _where(trace_id, sentence_index, kind, settings_id)
        return self._conn.execute(f"SELECT COUNT(*) FROM rollouts{where}", args).fetchone()[0]

    def to_dataframe(self, trace_id: str | None = None):
        """One row per rollout, with settings id, finish reason, sampler and time."""
        import pandas as pd

        where, args = _where(trace_id, None, None)
        return pd.read_sql_query(
            "SELECT trace_id, settings_id, sentence_index, kind, seed, text, chunk_resampled, answer, is_correct, "
            f"n_tokens, finish_reason, sampler, created FROM rollouts{where} "
            "ORDER BY trace_id, sentence_index, kind, seed, settings_id",
            self._conn,
            params=args,
        )

    def plot(self, trace_id: str | None = None, ax=None):
        """Rollouts per sentence (bars, by kind) and the accuracy of resampled rollouts (line)."""
        import matplotlib.pyplot as plt

        trace_id = trace_id or (self.trace_ids() or [None])[0]
        frame = self.to_dataframe(trace_id)
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3))
        if frame.empty:
            ax.set_title(f"no rollouts for {trace_id!r}")
            return ax
        counts = frame.groupby(["sentence_index", "kind"]).size().unstack(fill_value=0)
        counts.plot.bar(ax=ax, alpha=0.6)
        ax.set_xlabel("sentence")
        ax.set_ylabel("rollouts")
        ax.set_title(f"rollouts of {trace_id}")
        resampled = frame[(frame.kind == RESAMPLE) & frame.is_correct.notna()]
        if not resampled.empty:
            accuracy = resampled.groupby("sentence_index").is_correct.mean()
            twin = ax.twinx()
            positions = [list(counts.index).index(i) for i in accuracy.index]
            twin.plot(positions, accuracy.values, "k.-", label="accuracy")
            twin.set_ylim(0, 1)
            twin.set_ylabel("accuracy (resampled)")
        return ax

    # ------------------------------------------------------------------ internals

    def _transaction(self):
        return _Transaction(self._conn)

    def _check_schema(self) -> None:
        with self._transaction():
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            if int(row[0]) == 1:
                self._migrate_from_1()
                return
        if int(row[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has rollout-store schema {row[0]}, this anchorlens reads schema {SCHEMA_VERSION}; "
                "use the anchorlens version that wrote it, or another store"
            )

    def _migrate_from_1(self) -> None:
        """Schema 1 (rollouts keyed on trace, sentence, kind, seed; one settings dict per trace) -> 2.

        Runs inside the caller's transaction: all or nothing. Each (trace, sampler) group of old rollouts gets
        the settings its trace recorded plus the sampler name and ``"migrated_from_schema": 1``. Their
        settings lacked the sampler's full identity (dtype, weights), so a new run never matches them: they
        stay readable (``rollouts(trace_id)``, ``settings``) but are not reused.
        """
        conn = self._conn
        conn.execute(_ROLLOUTS.format(table="rollouts_v2"))
        groups = conn.execute("SELECT DISTINCT r.trace_id, r.sampler, t.settings FROM rollouts r "
                              "LEFT JOIN traces t ON t.trace_id = r.trace_id").fetchall()
        for trace_id, sampler, old_settings in groups:
            settings = {**json.loads(old_settings or "{}"), "sampler": sampler, "migrated_from_schema": 1}
            sid = settings_id(settings)
            conn.execute("INSERT OR IGNORE INTO settings (settings_id, trace_id, settings, created) VALUES (?, ?, ?, ?)",
                         (sid, trace_id, json.dumps(settings, sort_keys=True, default=str), time.time()))
            conn.execute(
                "INSERT INTO rollouts_v2 (trace_id, settings_id, sentence_index, kind, seed, text, chunk_resampled, "
                "answer, is_correct, n_tokens, finish_reason, sampler, created) SELECT trace_id, ?, sentence_index, "
                "kind, seed, text, chunk_resampled, answer, is_correct, n_tokens, finish_reason, sampler, created "
                "FROM rollouts WHERE trace_id = ? AND sampler IS ?",
                (sid, trace_id, sampler),
            )
        conn.execute("DROP TABLE rollouts")
        conn.execute("ALTER TABLE rollouts_v2 RENAME TO rollouts")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


_INSERT = (
    "INSERT OR IGNORE INTO rollouts (trace_id, settings_id, sentence_index, kind, seed, text, chunk_resampled, "
    "answer, is_correct, n_tokens, finish_reason, sampler, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row(rollout: Rollout, finish_reason: str | None, sampler: str | None, settings_id: str = "") -> tuple:
    if not isinstance(rollout, Rollout):
        raise StoreError(f"the store keeps Rollout objects, got {type(rollout).__name__}")
    if rollout.kind not in KINDS:
        raise StoreError(f"rollout kind must be one of {KINDS}, got {rollout.kind!r}")
    if rollout.sentence_index < 0:
        raise StoreError(f"sentence_index must be >= 0, got {rollout.sentence_index}")
    if not isinstance(settings_id, str):
        raise StoreError(f"settings_id must be a string (from register_settings), got {settings_id!r}")
    correct = None if rollout.is_correct is None else int(bool(rollout.is_correct))
    return (
        rollout.trace_id, settings_id, int(rollout.sentence_index), rollout.kind, int(rollout.seed), rollout.text,
        rollout.chunk_resampled, rollout.answer, correct, int(rollout.n_tokens),
        finish_reason if finish_reason is not None else rollout.finish_reason, sampler, time.time(),
    )


def _where(trace_id, sentence_index, kind, settings_id=None) -> tuple[str, tuple]:
    clauses, args = [], []
    for column, value in (("trace_id", trace_id), ("sentence_index", sentence_index), ("kind", kind),
                          ("settings_id", settings_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error): one write lock, one commit."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
