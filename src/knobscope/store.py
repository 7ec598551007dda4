"""The run store: one SQLite file (``results.db``) per run directory.

Tables: ``meta`` (schema version), ``runs`` (one row per invocation: spec and provenance),
``trials`` (one row per configuration identity: config, status, owner, error, timing,
summary) and ``samples`` (every per-sample record of a finished trial).

Concurrency: any number of processes, on one machine or sharing a file system that supports
SQLite locking, may work on one store. A trial is *claimed* by a single atomic ``UPDATE ...
WHERE status = 'pending'``, so two processes never run the same trial; its samples and its
``done`` status are written in one transaction, so a killed process never leaves half a
trial. A claim whose owner died (same host, process gone) or stopped heartbeating for longer
than the lease is returned to ``pending`` and runs again.

JSON columns are strict JSON, so any reader parses them (SQLite's ``json_extract`` before 3.42,
``jq``, a browser): a NaN or infinite number (an interval end that does not exist, say) is
written as ``null``, and the object lists it under ``"_nonfinite"`` as ``[path, "NaN" |
"Infinity" | "-Infinity"]`` pairs, from which :class:`Store` restores it. In SQL, a null is
skipped by ``AVG`` and the like where a NaN would poison the result. (Stores written before
this held bare ``NaN`` / ``Infinity`` tokens; they are still read.)
"""

from __future__ import annotations

import functools
import json
import math
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from knobscope.errors import StoreError

__all__ = ["Store", "TrialRow", "STATUSES", "SCHEMA_VERSION", "DB_NAME", "owner_id", "merge_stores"]

SCHEMA_VERSION = 1
DB_NAME = "results.db"
STATUSES = ("pending", "running", "done", "failed")

NON_FINITE = "_nonfinite"


def _dumps(obj: Any, **options: Any) -> str:
    """Strict JSON of ``obj``; its NaN and infinite floats as null, listed under ``"_nonfinite"``."""
    try:
        return json.dumps(obj, allow_nan=False, **options)
    except ValueError:  # a non-finite float somewhere (rare): the slow path
        pass
    found: list[list[Any]] = []

    def finite(value: Any, path: list[Any]) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append([path, "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"])
            return None
        if isinstance(value, dict):
            return {k: finite(v, [*path, k]) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v, [*path, i]) for i, v in enumerate(value)]
        return value

    out = finite(obj, [])
    if not isinstance(out, dict):
        return json.dumps(obj, **options)
    return json.dumps({**out, NON_FINITE: found}, allow_nan=False, **options)


# One object each, as json.loads gives: two reads of a NaN compare equal inside containers.
_NON_FINITE_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _loads(text: str) -> Any:
    """The object :func:`_dumps` wrote, its non-finite floats restored (an older store's bare
    ``NaN`` / ``Infinity`` tokens parse as they are)."""
    obj = json.loads(text)
    if isinstance(obj, dict) and NON_FINITE in obj:
        for path, word in obj.pop(NON_FINITE):
            if not path:
                continue
            target = obj
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = _NON_FINITE_VALUES[word]
    return obj


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,            -- the spec as given (JSON)
    provenance TEXT NOT NULL,      -- versions, device, git hash, seeds, time (JSON)
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY,     -- hash of canonical config + workload + workload args
    seq INTEGER NOT NULL,          -- order of first insertion
    config TEXT NOT NULL,          -- canonical JSON
    workload TEXT NOT NULL,
    workload_args TEXT NOT NULL,   -- canonical JSON
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    owner TEXT,                    -- host:pid:start-time of the claiming process
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER,                -- the run that finished it
    error TEXT,
    started REAL,
    finished REAL,
    summary TEXT,                  -- JSON, derived from the samples
    measure TEXT                   -- JSON, the measurement settings used
);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
CREATE TABLE IF NOT EXISTS samples (
    trial_id TEXT NOT NULL REFERENCES trials (trial_id),
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,          -- JSON: sample_id, repeat, every metric
    PRIMARY KEY (trial_id, idx)
);
"""


def owner_id() -> str:
    """``host:pid:create_time`` of this process (create time guards against PID reuse)."""
    proc = psutil.Process()
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.0f}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere (cannot tell)."""
    try:
        host, pid, created = owner.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.0f}" == created
    except (psutil.NoSuchProcess, ValueError):
        return False


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    seq: int
    config: dict[str, Any]
    workload: str
    workload_args: dict[str, Any]
    status: str
    owner: str | None
    attempts: int
    run_id: int | None
    error: str | None
    started: float | None
    finished: float | None
    summary: dict[str, Any] | None
    measure: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TrialRow:
        loads = lambda s: _loads(s) if s else None  # noqa: E731
        return cls(
            trial_id=row["trial_id"], seq=row["seq"], config=json.loads(row["config"]),
            workload=row["workload"], workload_args=json.loads(row["workload_args"]),
            status=row["status"], owner=row["owner"], attempts=row["attempts"], run_id=row["run_id"],
            error=row["error"], started=row["started"], finished=row["finished"],
            summary=loads(row["summary"]), measure=loads(row["measure"]),
        )  # fmt: skip


def _damage_is_one_line(method: Any) -> Any:
    """A store damaged where SQLite's structural check cannot see it (garbage inside a stored
    record) raises a StoreError naming the file, not a traceback."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (json.JSONDecodeError, UnicodeDecodeError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"{str(self.path)!r} is damaged ({type(exc).__name__}: {exc}); "
                             "it was left untouched: restore it from a copy") from None  # fmt: skip

    return wrapper


class Store:
    """Access to one ``results.db``. Open with :meth:`open`; safe to use from many processes."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False) -> Store:
        """Open the store at ``path`` (a run directory or the ``.db`` file itself).

        Raises:
            StoreError: the store does not exist (and ``create`` is false), is not a knobscope
                store, or has a newer schema.
        """
        p = Path(path)
        db = p / DB_NAME if p.suffix != ".db" else p
        if db.exists():
            cls.check(db)  # read-only: a damaged or foreign file is refused before anything is written to it
        elif not create:
            raise StoreError(f"no knobscope store at {str(db)!r}; run 'knobscope run SPEC' to create one")
        else:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(db, timeout=120, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 120000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = cls._init_schema(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{str(db)!r} is not a readable knobscope store ({exc}); it was left untouched") from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{str(db)!r} has schema version {version}; this knobscope reads version {SCHEMA_VERSION}"
            )
        return cls(db, conn)

    @staticmethod
    def check(db: Path) -> None:
        """Refuse a file that is not a sound knobscope store, opening it read-only (its bytes stay
        as they are): SQLite's structural check (``PRAGMA quick_check``, ~60 ms for 50 MB), then
        the knobscope tables.

        Raises:
            StoreError: one line naming the file and what is wrong with it.
        """
        try:
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=120)
        except sqlite3.Error as exc:
            raise StoreError(f"{str(db)!r} cannot be opened ({exc})") from None
        try:
            conn.execute("PRAGMA busy_timeout = 120000")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                what = " ".join(problems[0].replace("***", "").split())  # SQLite's report spans lines
                what = what if len(what) <= 120 else what[:120] + "..."
                raise StoreError(f"{str(db)!r} is damaged ({what}); it was left untouched: restore it from a copy")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"meta", "trials", "samples", "runs"} <= tables:
                raise StoreError(f"{str(db)!r} is not a knobscope store (its tables: {', '.join(sorted(tables))}); "
                                 "it was left untouched")  # fmt: skip
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{str(db)!r} is not a readable knobscope store ({exc}); it was left untouched") from None
        finally:
            conn.close()

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> int:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise sqlite3.DatabaseError("it has tables but no knobscope 'meta' table")
        if not tables:
            # One script, one immediate transaction: processes creating the store at once serialize here.
            conn.executescript(
                "BEGIN IMMEDIATE;" + _SCHEMA
                + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise sqlite3.DatabaseError("its 'meta' table has no schema_version")
        return int(row[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success, rolled back on error."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- runs -------------------------------------------------------------------------------

    def begin_run(self, name: str, spec: dict[str, Any], provenance: dict[str, Any]) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (name, spec, provenance, started) VALUES (?, ?, ?, ?)",
                (name, _dumps(spec, default=str), _dumps(provenance, default=str), time.time()),
            )
            return int(cur.lastrowid)

    @_damage_is_one_line
    def runs(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        return [
            {"run_id": r["run_id"], "name": r["name"], "spec": _loads(r["spec"]),
             "provenance": _loads(r["provenance"]), "started": r["started"]}
            for r in rows
        ]  # fmt: skip

    # -- trials -----------------------------------------------------------------------------

    def add_trials(self, trials: Iterable[tuple[str, str, str, str]]) -> int:
        """Insert ``(trial_id, config_json, workload, args_json)`` rows not yet present; returns how many were new."""
        with self.transaction() as c:
            start = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM trials").fetchone()[0]
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO trials (trial_id, seq, config, workload, workload_args, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                [(tid, start + i, cfg, wl, args) for i, (tid, cfg, wl, args) in enumerate(trials)],
            )
            return c.total_changes - before

    def claim(self, trial_id: str, owner: str) -> bool:
        """Atomically take a pending trial; False if another process has it or it is finished."""
        cur = self._conn.execute(
            "UPDATE trials SET status = 'running', owner = ?, heartbeat = ?, started = ?, "
            "attempts = attempts + 1, error = NULL WHERE trial_id = ? AND status = 'pending'",
            (owner, time.time(), time.time(), trial_id),
        )
        return cur.rowcount == 1

    def heartbeat(self, trial_id: str, owner: str) -> None:
        self._conn.execute(
            "UPDATE trials SET heartbeat = ? WHERE trial_id = ? AND owner = ? AND status = 'running'",
            (time.time(), trial_id, owner),
        )

    def complete(
        self,
        trial_id: str,
        owner: str,
        *,
        records: Sequence[dict[str, Any]],
        summary: dict[str, Any],
        measure: dict[str, Any],
        run_id: int,
    ) -> bool:
        """Write a trial's samples and mark it done, in one transaction.

        Returns False (and writes nothing) if this process no longer owns the claim, e.g.
        because it was presumed dead and the trial was handed to another process.
        """
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE trials SET status = 'done', finished = ?, summary = ?, measure = ?, run_id = ?, "
                "error = NULL WHERE trial_id = ? AND owner = ? AND status = 'running'",
                (time.time(), _dumps(summary), _dumps(measure), run_id, trial_id, owner),
            )
            if cur.rowcount != 1:
                return False
            c.execute("DELETE FROM samples WHERE trial_id = ?", (trial_id,))
            c.executemany(
                "INSERT INTO samples (trial_id, idx, record) VALUES (?, ?, ?)",
                [(trial_id, i, _dumps(r)) for i, r in enumerate(records)],
            )
            return True

    def add_pass(self, trial_id: str, records: Sequence[dict[str, Any]], summary: dict[str, Any], *,
                 passes_before: int | None = None) -> bool:  # fmt: skip
        """Append another pass of records to a finished trial and replace its summary, in one
        transaction (interleaved repeats, ``knobscope refine-measurements``). With
        ``passes_before``, only if the stored summary still counts that many passes, so two
        processes measuring the same pass store it once. Returns False, writing nothing, otherwise
        or unless the trial is done."""
        with self.transaction() as c:  # write-locked: the check and the write are one step for other processes
            row = c.execute("SELECT status, summary FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
            if row is None or row["status"] != "done":
                return False
            stored = _loads(row["summary"]) if row["summary"] else {}
            if passes_before is not None and int((stored.get("repeats") or {}).get("passes", 1)) != passes_before:
                return False
            c.execute("UPDATE trials SET summary = ?, finished = ? WHERE trial_id = ?", (_dumps(summary), time.time(), trial_id))
            start = c.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM samples WHERE trial_id = ?", (trial_id,)).fetchone()[0]
            c.executemany(
                "INSERT INTO samples (trial_id, idx, record) VALUES (?, ?, ?)",
                [(trial_id, start + i, _dumps(r)) for i, r in enumerate(records)],
            )
            return True

    def fail(self, trial_id: str, owner: str, error: str, *, run_id: int) -> None:
        self._conn.execute(
            "UPDATE trials SET status = 'failed', error = ?, finished = ?, run_id = ? "
            "WHERE trial_id = ? AND owner = ? AND status = 'running'",
            (error, time.time(), run_id, trial_id, owner),
        )

    def release(self, trial_id: str, owner: str) -> None:
        """Give a claimed trial back (interrupted before it finished)."""
        self._conn.execute(
            "UPDATE trials SET status = 'pending', owner = NULL WHERE trial_id = ? AND owner = ? AND status = 'running'",
            (trial_id, owner),
        )

    def release_owned(self, owner: str) -> list[str]:
        """Give back every trial ``owner`` has claimed and not finished; their ids."""
        with self.transaction() as c:
            ids = [r["trial_id"] for r in c.execute("SELECT trial_id FROM trials WHERE owner = ? AND status = 'running'", (owner,))]
            c.execute("UPDATE trials SET status = 'pending', owner = NULL WHERE owner = ? AND status = 'running'", (owner,))
        return ids

    def recover_stale(self, *, lease_s: float) -> int:
        """Return to ``pending`` the running trials whose owner is dead or silent for ``lease_s``."""
        now = time.time()
        stale = []
        for r in self._conn.execute("SELECT trial_id, owner, heartbeat FROM trials WHERE status = 'running'"):
            alive = _owner_alive(r["owner"] or "")
            if alive is False or (alive is None and now - (r["heartbeat"] or 0) > lease_s):
                stale.append((r["trial_id"], r["owner"]))
        for trial_id, owner in stale:
            self.release(trial_id, owner)
        return len(stale)

    def retry_failed(self, trial_ids: Iterable[str]) -> int:
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "UPDATE trials SET status = 'pending', owner = NULL WHERE trial_id = ? AND status = 'failed'",
                [(t,) for t in trial_ids],
            )
            return c.total_changes - before

    @_damage_is_one_line
    def trials(self, *, status: str | None = None, ids: Iterable[str] | None = None) -> list[TrialRow]:
        sql, args = "SELECT * FROM trials", []
        if status is not None:
            sql, args = sql + " WHERE status = ?", [status]
        wanted = None if ids is None else set(ids)
        return [TrialRow.from_row(r) for r in self._conn.execute(sql + " ORDER BY seq", args)
                if wanted is None or r["trial_id"] in wanted]  # fmt: skip

    @_damage_is_one_line
    def summary_fields(self, paths: Mapping[str, Sequence[str]], *, status: str = "done",
                       ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:  # fmt: skip
        """``(trial_id, config, {name: value})`` of each trial with ``status``, in store order: the
        summary's field at each of ``paths`` (its keys from the top), read by SQLite's JSON
        functions without parsing whole summaries in Python. None where there is none, where it is
        NaN or infinite (stored as null), or where a key has a double quote (SQLite's JSON paths
        cannot name it)."""
        names = [n for n in paths if not any('"' in k for k in paths[n])]
        # An older store's bare NaN / Infinity tokens, which SQLite's JSON before 3.42 refuses, as
        # null; a summary that is valid JSON (every one written now) is read as it is: the
        # replacements cost more than a parse (30 ms instead of 75 for 384 summaries of 21 kB).
        finite = ("CASE WHEN json_valid(summary) THEN summary ELSE replace(replace(replace(summary, '-Infinity', "
                  "'null'), 'Infinity', 'null'), 'NaN', 'null') END")
        extract = f", json_extract({finite}{', ?' * len(names)})" if names else ""
        rows = self._conn.execute(f"SELECT trial_id, config{extract} FROM trials WHERE status = ? ORDER BY seq",
                                  ["$" + "".join(f'."{k}"' for k in paths[n]) for n in names] + [status])  # fmt: skip
        out = []
        for trial_id, config, *found in rows:
            # json_extract gives one path's value, or a JSON array of several paths' values
            values = found if len(names) <= 1 else json.loads(found[0]) if found[0] is not None else [None] * len(names)
            out.append((trial_id, json.loads(config), {**dict.fromkeys(paths), **dict(zip(names, values))}))
        return out

    @_damage_is_one_line
    def first_summary(self, *, status: str = "done") -> dict[str, Any] | None:
        """The summary of the first trial with ``status`` in store order (None: there is none)."""
        row = self._conn.execute("SELECT summary FROM trials WHERE status = ? AND summary IS NOT NULL ORDER BY seq "
                                 "LIMIT 1", (status,)).fetchone()  # fmt: skip
        return _loads(row[0]) if row else None

    @_damage_is_one_line
    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """``trial_id -> status`` for those of ``ids`` already in the store."""
        wanted = set(ids)
        return {r[0]: r[1] for r in self._conn.execute("SELECT trial_id, status FROM trials") if r[0] in wanted}

    @_damage_is_one_line
    def status_counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        if ids is None:
            for r in self._conn.execute("SELECT status, COUNT(*) AS n FROM trials GROUP BY status"):
                counts[r["status"]] = r["n"]
            return counts
        wanted = set(ids)
        for r in self._conn.execute("SELECT trial_id, status FROM trials"):
            if r["trial_id"] in wanted:
                counts[r["status"]] += 1
        return counts

    @_damage_is_one_line
    def samples(self, trial_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(trial_id, record)`` pairs, in trial then sample order."""
        sql = "SELECT s.trial_id, s.record FROM samples s JOIN trials t USING (trial_id)"
        args: list[Any] = []
        if trial_id is not None:
            sql, args = sql + " WHERE s.trial_id = ?", [trial_id]
        rows = self._conn.execute(sql + " ORDER BY t.seq, s.idx", args)
        return [(r[0], _loads(r[1])) for r in rows]

    def count_samples(self, trial_id: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM samples WHERE trial_id = ?", (trial_id,)).fetchone()[0]


_RANK = {"done": 3, "failed": 2, "running": 1, "pending": 0}


def merge_stores(sources: Sequence[str | Path], out: str | Path) -> dict[str, int]:
    """Merge run stores (e.g. made on different GPUs or machines) into ``out``.

    Trials are matched by identity. A finished trial beats a failed one, which beats an
    unfinished one; between two finished copies the one already in ``out`` (then the earlier
    source) is kept and the other counted as a duplicate. Sources are only read.

    Returns:
        counts: ``added``, ``replaced``, ``duplicates``, ``runs`` copied.
    """
    stores = [Store.open(s) for s in sources]  # opening all first: a bad source fails before writing
    dest = Store.open(out, create=True)
    counts = {"added": 0, "replaced": 0, "duplicates": 0, "runs": 0}
    try:
        for src in stores:
            run_map: dict[int, int] = {}
            for run in src.runs():
                run_map[run["run_id"]] = dest.begin_run(run["name"], run["spec"], run["provenance"])
                counts["runs"] += 1
            existing = {t.trial_id: t for t in dest.trials()}
            with dest.transaction() as c:
                seq = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM trials").fetchone()[0]
                for t in src.trials():
                    old = existing.get(t.trial_id)
                    if old is not None and _RANK[t.status] <= _RANK[old.status]:
                        counts["duplicates"] += 1
                        continue
                    status = t.status if t.status in ("done", "failed") else "pending"
                    c.execute("DELETE FROM samples WHERE trial_id = ?", (t.trial_id,))
                    c.execute("DELETE FROM trials WHERE trial_id = ?", (t.trial_id,))
                    c.execute(
                        "INSERT INTO trials (trial_id, seq, config, workload, workload_args, status, attempts, "
                        "run_id, error, started, finished, summary, measure) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            t.trial_id, old.seq if old else seq, json.dumps(t.config, sort_keys=True,
                            separators=(",", ":")), t.workload, json.dumps(t.workload_args, sort_keys=True,
                            separators=(",", ":")), status, t.attempts, run_map.get(t.run_id or -1),
                            t.error, t.started, t.finished, _dumps(t.summary) if t.summary else None,
                            _dumps(t.measure) if t.measure else None,
                        ),
                    )  # fmt: skip
                    seq += old is None
                    c.executemany(
                        "INSERT INTO samples (trial_id, idx, record) VALUES (?, ?, ?)",
                        [(t.trial_id, i, _dumps(rec)) for i, (_, rec) in enumerate(src.samples(t.trial_id))],
                    )
                    counts["replaced" if old else "added"] += 1
    finally:
        for s in stores:
            s.close()
        dest.close()
    return counts
