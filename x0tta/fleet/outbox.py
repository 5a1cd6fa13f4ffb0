"""The durable outbox: every fleet message is stored here before it is sent, and stays until acked.

SQLite in WAL mode with ``synchronous=FULL`` (:mod:`x0tta.durable`), the discipline of the heal
knowledge store (:mod:`x0tta.heal.store`): :meth:`Outbox.put` returns only once the message is on disk, so a
message whose ``put`` returned survives ``kill -9`` and power loss. The policy (order, superseding,
eviction when full, what a PUBACK reason code means) is pure, in :mod:`x0tta.fleet.core.outbox`;
this module only stores and reads.

Table ``outbox``: one row per message, ``seq`` (AUTOINCREMENT, so never reused: the order of
delivery), ``key`` (UNIQUE: the idempotency key), topic, payload, retain, priority, coalesce.
Table ``counters``: totals that must survive restarts (``dropped``, ``session`` - the birth/death
sequence number of :mod:`x0tta.fleet.service`).

All access from the event loop goes through :class:`AsyncOutbox`, which runs every statement on one
dedicated thread (a sqlite3 connection belongs to its thread), so the loop never waits on the
disk. :class:`Outbox` is the synchronous core.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from x0tta.common.errors import PermanentError
from x0tta.durable import open_durable
from x0tta.fleet.core.outbox import NEW, Candidate, Priority, evictions

T = TypeVar("T")

FILENAME = "fleet-outbox.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    coalesce INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_priority ON outbox(priority, seq);
CREATE INDEX IF NOT EXISTS outbox_coalesce ON outbox(topic) WHERE coalesce = 1;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class OutboxError(PermanentError):
    """The outbox cannot be opened or is damaged."""


@dataclass(frozen=True)
class Message:
    """One message to send: ``key`` is its idempotency key (also in the payload, ``id``)."""

    key: str
    topic: str
    payload: bytes
    priority: int = Priority.IMPORTANT
    retain: bool = False
    coalesce: bool = False  # carries state: replaces the undelivered message of its topic


@dataclass(frozen=True)
class Queued:
    """A stored message, with its place in the delivery order."""

    seq: int
    message: Message


@dataclass
class PutResult:
    stored: int = 0
    duplicates: int = 0  # keys already queued: nothing stored
    superseded: int = 0  # undelivered state replaced by newer state of the same topic
    dropped: dict[int, int] = field(default_factory=dict)  # priority -> messages dropped for room


class Outbox:
    """Synchronous access; one instance per thread, one writing process per file."""

    def __init__(self, path: str | Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an outbox holds at least one message")
        self.path = Path(path)
        self.capacity = capacity
        try:
            self.db = open_durable(self.path, SCHEMA, SCHEMA_VERSION)
            self._depth = int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the fleet outbox {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[], T]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            raise
        return out

    # --- writing -------------------------------------------------------------------------------
    def put(self, messages: Iterable[Message]) -> PutResult:
        """Store messages in one transaction (on disk when this returns), in the order given."""
        batch = list(messages)
        return self._tx(lambda: self._put(batch)) if batch else PutResult()

    def _put(self, batch: Sequence[Message]) -> PutResult:
        db, res = self.db, PutResult()
        for m in batch:
            if db.execute("SELECT 1 FROM outbox WHERE key=?", (m.key,)).fetchone():
                res.duplicates += 1
                continue
            if m.coalesce:
                gone = db.execute("DELETE FROM outbox WHERE topic=? AND coalesce=1", (m.topic,)).rowcount
                res.superseded += gone
                self._depth -= gone
            excess = self._depth + 1 - self.capacity
            victims = evictions(self._candidates(excess, m.priority), excess)
            for v in victims:
                res.dropped[v.priority] = res.dropped.get(v.priority, 0) + 1
            if any(v.seq == NEW for v in victims):
                continue  # the arriving message is the least worth keeping
            if victims:
                db.executemany("DELETE FROM outbox WHERE seq=?", [(v.seq,) for v in victims])
                self._depth -= len(victims)
            db.execute(
                "INSERT INTO outbox(key, topic, payload, retain, priority, coalesce) VALUES (?,?,?,?,?,?)",
                (m.key, m.topic, m.payload, int(m.retain), int(m.priority), int(m.coalesce)),
            )
            self._depth += 1
            res.stored += 1
        dropped = sum(res.dropped.values())
        if dropped:
            self._bump("dropped", dropped)
        return res

    def _candidates(self, excess: int, priority: int) -> list[Candidate]:
        if excess <= 0:
            return []
        out = [Candidate(NEW, priority)]
        for p in Priority:
            out += [Candidate(int(s), int(p)) for (s,) in self.db.execute(
                "SELECT seq FROM outbox WHERE priority=? ORDER BY seq LIMIT ?", (int(p), excess))]
        return out

    def remove(self, seqs: Iterable[int]) -> int:
        """Forget messages the broker acknowledged (or refused for good)."""
        rows = [(s,) for s in seqs]
        if not rows:
            return 0

        def go() -> int:
            n = sum(self.db.execute("DELETE FROM outbox WHERE seq=?", r).rowcount for r in rows)
            self._depth -= n
            return n

        return self._tx(go)

    def _bump(self, name: str, by: int) -> int:
        self.db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
            (name, by),
        )
        return int(self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0])

    def next_session(self) -> int:
        """A number that grows with every connection, across restarts (the birth/death ``session``)."""
        return self._tx(lambda: self._bump("session", 1))

    # --- reading -------------------------------------------------------------------------------
    def pending(self, limit: int, after: int = 0) -> list[Queued]:
        """Up to ``limit`` messages after sequence ``after``, oldest first."""
        return [
            Queued(int(seq), Message(key, topic, bytes(payload), int(prio), bool(retain), bool(coal)))
            for seq, key, topic, payload, retain, prio, coal in self.db.execute(
                "SELECT seq, key, topic, payload, retain, priority, coalesce FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (after, limit))
        ]

    def depth(self) -> int:
        return self._depth

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def keys(self) -> list[str]:
        return [k for (k,) in self.db.execute("SELECT key FROM outbox ORDER BY seq")]


class AsyncOutbox:
    """:class:`Outbox` on one dedicated thread; every method is awaitable and never blocks the loop."""

    def __init__(self, path: str | Path, capacity: int) -> None:
        self.path = Path(path)
        self.capacity = capacity
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-outbox")
        self._box: Outbox | None = None
        self.depth = 0  # as of the last call, for metrics read without touching the disk

    async def _run(self, fn: Callable[[Outbox], T]) -> T:
        def call() -> T:
            if self._box is None:
                self._box = Outbox(self.path, self.capacity)
            out = fn(self._box)
            self.depth = self._box.depth()
            return out

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> None:
        await self._run(lambda b: None)

    async def put(self, messages: Sequence[Message]) -> PutResult:
        return await self._run(lambda b: b.put(messages))

    async def pending(self, limit: int, after: int = 0) -> list[Queued]:
        return await self._run(lambda b: b.pending(limit, after))

    async def remove(self, seqs: Sequence[int]) -> int:
        return await self._run(lambda b: b.remove(seqs))

    async def next_session(self) -> int:
        return await self._run(Outbox.next_session)

    async def counter(self, name: str) -> int:
        return await self._run(lambda b: b.counter(name))

    async def close(self) -> None:
        if self._box is not None:
            await self._run(lambda b: b.close())
            self._box = None
        self._pool.shutdown(wait=True)
