"""The knowledge store: incidents, symptoms, actions, outcomes and durations in SQLite.

Why SQLite in WAL mode: one file in the state directory, atomic transactions that survive
``kill -9`` and power loss (``synchronous=FULL``: a commit returns only once the WAL is on disk),
readers (``x0tta incidents`` with no agent running) that never block the writer.

What is written when (the service drives it, see :mod:`x0tta.heal.service`):

* an incident row when it opens, and again whenever it changes;
* an action row **before** the executor is called (state ``planned``), and again with the result
  and after verification - so after a crash an action whose result is unknown is still known to
  have been attempted, and :func:`x0tta.heal.core.loop.resume` treats it as applied;
* an append-only event row per symptom raised/cleared, decision (with its reasons), execution
  and verification: the reasoning shown by ``x0tta incident ID``;
* the success statistics per (symptom kind, action kind) that rank actions.

Retention is bounded: closed incidents older than ``retention_days`` and beyond the newest
``retention_max_incidents`` are deleted with their actions and events.

All access goes through :class:`AsyncStore`, which runs every statement on one dedicated thread
(sqlite3 connections belong to their thread), so the event loop never waits on the disk.
:class:`Store` is the synchronous core, also used directly by the CLI.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from x0tta.common.errors import PermanentError
from x0tta.durable import open_durable

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    opened REAL NOT NULL,
    onset REAL NOT NULL,
    healed REAL,
    closed REAL,
    resolution TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents(status, opened);
CREATE TABLE IF NOT EXISTS actions (
    id TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    undo_state TEXT,
    decided REAL NOT NULL,
    applied REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_incident ON actions(incident);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    at REAL NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_incident ON events(incident, seq);
CREATE TABLE IF NOT EXISTS stats (
    symptom TEXT NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (symptom, action)
);
"""

FILENAME = "heal.sqlite3"


class StoreError(PermanentError):
    """The knowledge store cannot be opened or is damaged."""


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str, separators=(",", ":"), sort_keys=True)


class Store:
    """Synchronous access; one instance per thread."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
            else:
                self.db = open_durable(self.path, SCHEMA, SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open knowledge store {self.path}: {exc}") from None
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # --- writing -------------------------------------------------------------------------------
    def write(self, ops: Iterable[tuple[str, Any]]) -> None:
        """Apply a batch of writes in one transaction: ``("incident", json)``, ``("action", json)``,
        ``("event", (incident, at, name, data))``, ``("stats", {(symptom, action): (ok, failed)})``."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for op, arg in ops:
                getattr(self, f"_w_{op}")(arg)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _w_incident(self, inc: Mapping[str, Any]) -> None:
        data = {k: v for k, v in inc.items() if k != "actions"}
        self.db.execute(
            "INSERT INTO incidents(id, kind, target, status, opened, onset, healed, closed, resolution, data) "
            "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET status=excluded.status, "
            "healed=excluded.healed, closed=excluded.closed, resolution=excluded.resolution, data=excluded.data",
            (
                inc["id"], inc["symptom"]["kind"], inc["symptom"]["target"], inc["status"], inc["opened"],
                inc["onset"], inc.get("healed"), inc.get("closed"), inc.get("resolution", ""), _dumps(data),
            ),
        )
        for a in inc.get("actions", ()):
            self._w_action(a)

    def _w_action(self, a: Mapping[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO actions(id, incident, kind, target, state, undo_state, decided, applied, data) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET incident=excluded.incident, "
            "state=excluded.state, undo_state=excluded.undo_state, applied=excluded.applied, data=excluded.data",
            (
                a["id"], a["incident"], a["action"]["kind"], a["action"]["target"], a["state"],
                a.get("undo_state"), a["decided"], a.get("applied"), _dumps(a),
            ),
        )

    def _w_event(self, ev: tuple[str, float, str, Any]) -> None:
        incident, at, name, data = ev
        self.db.execute(
            "INSERT INTO events(incident, at, name, data) VALUES (?,?,?,?)", (incident, at, name, _dumps(data))
        )

    def _w_stats(self, stats: Mapping[tuple[str, str], tuple[int, int]]) -> None:
        self.db.executemany(
            "INSERT INTO stats(symptom, action, ok, failed) VALUES (?,?,?,?) "
            "ON CONFLICT(symptom, action) DO UPDATE SET ok=excluded.ok, failed=excluded.failed",
            [(s, a, ok, bad) for (s, a), (ok, bad) in stats.items()],
        )

    def prune(self, now: float, retention_days: float, max_incidents: int) -> int:
        """Delete old closed incidents with their actions and events; returns how many."""
        cutoff = now - retention_days * 86400.0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            old = [r[0] for r in db.execute(
                "SELECT id FROM incidents WHERE status='closed' AND closed < ?", (cutoff,))]
            total = db.execute("SELECT count(*) FROM incidents").fetchone()[0] - len(old)
            if total > max_incidents:
                old += [r[0] for r in db.execute(
                    "SELECT id FROM incidents WHERE status='closed' AND closed >= ? ORDER BY closed LIMIT ?",
                    (cutoff, total - max_incidents))]
            for i in range(0, len(old), 500):
                chunk = old[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for table, col in (("events", "incident"), ("actions", "incident"), ("incidents", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)  # noqa: S608 - names from the tuple above, values bound
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(old)

    # --- reading -------------------------------------------------------------------------------
    def _actions(self, incident: str) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in self.db.execute(
            "SELECT data FROM actions WHERE incident=? ORDER BY decided, id", (incident,))]

    def load_open(self) -> list[dict[str, Any]]:
        """Open incidents with their actions, as :meth:`Knowledge.incident_json` wrote them."""
        out = []
        for r in self.db.execute("SELECT id, data FROM incidents WHERE status='open' ORDER BY opened"):
            inc = json.loads(r["data"])
            inc["actions"] = self._actions(r["id"])
            out.append(inc)
        return out

    def load_undone_steer_offs(self, since: float) -> list[dict[str, Any]]:
        """Steer-off records (as :meth:`Record.to_json` wrote them) whose undo was applied at or
        after ``since``, of open and closed incidents alike (a restore usually closes its incident):
        what :func:`x0tta.heal.core.loop.remember_reattached` rebuilds the reattach guard from."""
        return [json.loads(r["data"]) for r in self.db.execute(
            "SELECT data FROM actions WHERE kind='steer_off' AND json_extract(data, '$.undo_applied') >= ? "
            "ORDER BY decided, id", (since,))]

    def load_stats(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {(r["symptom"], r["action"]): (r["ok"], r["failed"]) for r in self.db.execute("SELECT * FROM stats")}

    def incidents(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, kind, target, status, opened, onset, healed, closed, resolution FROM incidents"
        args: list[Any] = []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        sql += " ORDER BY opened DESC LIMIT ?"
        args.append(limit)
        rows = []
        for r in self.db.execute(sql, args):
            row = dict(r)
            row["actions"] = [
                {"kind": a["kind"], "state": a["state"], "undo_state": a["undo_state"]}
                for a in self.db.execute(
                    "SELECT kind, state, undo_state FROM actions WHERE incident=? ORDER BY decided", (r["id"],))
            ]
            rows.append(row)
        return rows

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        r = self.db.execute("SELECT data FROM incidents WHERE id=?", (incident_id,)).fetchone()
        if r is None:
            return None
        inc = json.loads(r["data"])
        inc["actions"] = self._actions(incident_id)
        inc["events"] = [
            {"at": e["at"], "name": e["name"], "data": json.loads(e["data"])}
            for e in self.db.execute("SELECT at, name, data FROM events WHERE incident=? ORDER BY seq", (incident_id,))
        ]
        return inc

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - t from the fixed tuple
                for t in ("incidents", "actions", "events")}

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])


class AsyncStore:
    """:class:`Store` on one dedicated thread; every method is awaitable and never blocks the loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heal-store")
        self._store: Store | None = None

    async def _run(self, fn: Callable[[Store], T]) -> T:
        def call() -> T:
            if self._store is None:
                self._store = Store(self.path)
            return fn(self._store)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> None:
        await self._run(lambda s: None)

    async def write(self, ops: list[tuple[str, Any]]) -> None:
        if ops:
            await self._run(lambda s: s.write(ops))

    async def load_open(self) -> list[dict[str, Any]]:
        return await self._run(Store.load_open)

    async def load_undone_steer_offs(self, since: float) -> list[dict[str, Any]]:
        return await self._run(lambda s: s.load_undone_steer_offs(since))

    async def load_stats(self) -> dict[tuple[str, str], tuple[int, int]]:
        return await self._run(Store.load_stats)

    async def incidents(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        return await self._run(lambda s: s.incidents(limit, status))

    async def incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._run(lambda s: s.incident(incident_id))

    async def prune(self, now: float, retention_days: float, max_incidents: int) -> int:
        return await self._run(lambda s: s.prune(now, retention_days, max_incidents))

    async def close(self) -> None:
        def shut(s: Store) -> None:
            s.close()

        if self._store is not None:
            await self._run(shut)
            self._store = None
        self._pool.shutdown(wait=True)
