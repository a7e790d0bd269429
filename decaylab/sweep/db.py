"""The results database of a sweep: ``DIR/results.sqlite`` (stdlib sqlite3), safe with parallel workers.

Tables
    runs         one row per run directory: run_id, config (JSON), seed, status
                 (pending|running|finished|failed|interrupted), started_at/finished_at (unix s), attempts, pid,
                 error (the traceback of the last failure)
    memberships  which table rows a run fills: (study, label, seed) -> run_id, plus the point's spec position
    metrics      final scalars per run: val_ppl, test_ppl, num_params, tokens, tokens_per_s, mqar_accuracy, ...
    curves       (run_id, curve, x, value): train loss and val loss by step, ppl by length, loss by position
    decay_stats  (run_id, layer, stat, value): per-layer statistics of lambda; layer 0 holds the all-layers pool
    meta         key -> value: the schema version and the spec the memberships came from

Every write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two writers never
deadlock upgrading read locks); the journal is in WAL mode, so readers never block writers, and a busy
timeout makes concurrent writers wait for each other instead of failing. A run's results are replaced
whole, so ingesting a run twice gives the same rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    host TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS memberships (
    study TEXT NOT NULL, label TEXT NOT NULL, seed INTEGER NOT NULL, run_id TEXT NOT NULL, point_index INTEGER,
    PRIMARY KEY (study, label, seed)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL, curve TEXT NOT NULL, x REAL NOT NULL, value REAL, PRIMARY KEY (run_id, curve, x)
);
CREATE TABLE IF NOT EXISTS decay_stats (
    run_id TEXT NOT NULL, layer INTEGER NOT NULL, stat TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, layer, stat)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

STATUSES = ("pending", "running", "finished", "failed", "interrupted")


class ResultsDB:
    """A connection to one ``results.sqlite``; open one per process (connections are not shared across forks)."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} does not exist: run `decaylab sweep SPEC --out {self.path.parent}` first"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each write is exactly one transaction.
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._set_busy_timeout(BUSY_TIMEOUT_S)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps it consistent
        with self.transaction() as c:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                c.execute(statement)
            c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def _set_busy_timeout(self, seconds: float) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultsDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator["_Cursor"]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); waits up to BUSY_TIMEOUT_S for the write lock.

        SQLite's own busy handler backs off to 100 ms sleeps, which starves writers under steady contention;
        a short handler plus our own jittered retry keeps parallel workers' writes flowing.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.002
        self._set_busy_timeout(0.005)
        try:
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(2 * delay, 0.05)
        finally:
            self._set_busy_timeout(BUSY_TIMEOUT_S)
        try:
            yield _Cursor(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------ plan and status

    def set_plan(self, spec: Mapping[str, Any], runs: Iterable[Any]) -> None:
        """Record a sweep's planned runs (``PlannedRun``s).

        The memberships of the studies planned now are replaced (the latest --set wins); other studies keep
        theirs, so ``--study`` runs one table without dropping the others from the report. Runs already known
        keep their status and results, so a re-run of the same spec skips them.
        """
        runs = list(runs)
        with self.transaction() as c:
            for study in sorted({m.study for run in runs for m in run.memberships}):
                c.execute("DELETE FROM memberships WHERE study=?", (study,))
            for run in runs:
                seed = run.memberships[0].seed
                c.execute(
                    "INSERT OR IGNORE INTO runs (run_id, config, seed) VALUES (?, ?, ?)",
                    (run.run_id, json.dumps(run.config, sort_keys=True), seed),
                )
                for m in run.memberships:
                    c.execute(
                        "INSERT INTO memberships VALUES (?, ?, ?, ?, ?)",
                        (m.study, m.label, m.seed, run.run_id, m.point_index),
                    )
            c.execute("INSERT OR REPLACE INTO meta VALUES ('spec', ?)", (json.dumps(spec, sort_keys=True),))

    def mark_running(self, run_id: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET status='running', started_at=?, finished_at=NULL, error=NULL, pid=?, host=?, "
                "attempts=attempts+1 WHERE run_id=?",
                (time.time(), os.getpid(), socket.gethostname(), run_id),
            )

    def mark_failed(self, run_id: str, error: str, status: str = "failed") -> None:
        if status not in ("failed", "interrupted"):
            raise ValueError(f"mark_failed status must be 'failed' or 'interrupted', got {status!r}")
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET status=?, finished_at=?, error=? WHERE run_id=?", (status, time.time(), error, run_id)
            )

    def mark_finished(self, run_id: str, results: Mapping[str, Any]) -> None:
        """Store a run's results (``ingest.read_run`` output) and mark it finished, in one transaction."""
        with self.transaction() as c:
            for table in ("metrics", "curves", "decay_stats"):
                c.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            c.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?)", [(run_id, k, v) for k, v in results["metrics"].items()]
            )
            c.executemany(
                "INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?)",
                [(run_id, name, x, y) for name, points in results["curves"].items() for x, y in points],
            )
            c.executemany(
                "INSERT INTO decay_stats VALUES (?, ?, ?, ?)",
                [
                    (run_id, layer, stat, value)
                    for layer, stats in results["decay_stats"].items()
                    for stat, value in stats.items()
                ],
            )
            c.execute(
                "UPDATE runs SET status='finished', finished_at=?, error=NULL WHERE run_id=?", (time.time(), run_id)
            )

    # ------------------------------------------------------------ queries

    def status(self, run_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return row[0] if row else None

    def runs(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        out = [dict(zip(names, row)) for row in cur.fetchall()]
        for row in out:
            row["config"] = json.loads(row["config"])
        return out

    def memberships(self) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT study, label, seed, run_id, point_index FROM memberships ORDER BY point_index, seed"
        )
        return [dict(zip(("study", "label", "seed", "run_id", "point_index"), row)) for row in cur.fetchall()]

    def metrics(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for run_id, name, value in self.conn.execute("SELECT run_id, name, value FROM metrics"):
            out.setdefault(run_id, {})[name] = value
        return out

    def curves(self, curve: str) -> dict[str, list[tuple[float, float]]]:
        """``{run_id: [(x, value), ...]}`` of one curve, sorted by x."""
        out: dict[str, list[tuple[float, float]]] = {}
        rows = self.conn.execute("SELECT run_id, x, value FROM curves WHERE curve=? ORDER BY run_id, x", (curve,))
        for run_id, x, value in rows:
            out.setdefault(run_id, []).append((x, value))
        return out

    def decay_stats(self) -> dict[str, dict[int, dict[str, float]]]:
        """``{run_id: {layer: {stat: value}}}``; layer 0 is the pool over all layers."""
        out: dict[str, dict[int, dict[str, float]]] = {}
        for run_id, layer, stat, value in self.conn.execute("SELECT run_id, layer, stat, value FROM decay_stats"):
            out.setdefault(run_id, {}).setdefault(layer, {})[stat] = value
        return out

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def spec(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='spec'").fetchone()
        return json.loads(row[0]) if row else None


class _Cursor:
    """The subset of a connection used inside a transaction (keeps callers from committing by accident)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)
