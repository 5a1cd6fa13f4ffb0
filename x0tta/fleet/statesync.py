"""The replicated mesh state on a node: its log on disk, and its sync over the PQ peer sessions.

:class:`StateLog` keeps every signed update the node holds in SQLite (the durable discipline of
:mod:`x0tta.durable`: WAL, ``synchronous=FULL``), so a restarted node rebuilds its documents
(:meth:`~x0tta.fleet.replica.Replica.restore`) instead of fetching them again. :class:`StateSync`
holds the :class:`~x0tta.fleet.replica.Replica` and speaks the sync over whatever carries peer
requests - the peer subsystem's sessions (``register_method``, ``sessions``), handed over by the
composition root. Two methods:

``fleet.state.sync``
    the body is the asker's step 1; the answer is the first page (one message under the frame
    size) of the updates it lacks. The asker applies it and asks again until a page is empty or
    brings nothing new: pull, stateless on the answering side, bounded per request.
``fleet.state.push``
    the body is an ``Updates`` message: a node's new write, or its first update in an epoch it
    joined, sent to every session at once; the answer is empty.

Every node also pulls from every session every ``interval`` seconds, which is what heals a
partition: one session across carries everything either side wrote. The replica's work
(signing, verifying, merging) and the disk run on one worker thread of its own, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from x0tta.clock import SYSTEM, Clock
from x0tta.common.errors import TemporaryError
from x0tta.durable import open_durable
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Outcome, Replica

SYNC = "fleet.state.sync"
PUSH = "fleet.state.push"
MAX_ROUNDS = 64  # pages pulled in one sync with one peer; the next sync goes on
EMPTY = st.encode(st.Updates())  # the answer of a peer that has nothing this node lacks
_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    epoch INTEGER NOT NULL, author TEXT NOT NULL, start INTEGER NOT NULL, message BLOB NOT NULL,
    PRIMARY KEY (epoch, author, start)
);
"""


class StateLogError(TemporaryError):
    """The state's SQLite file cannot be read or written."""


class StateLog:
    """The signed updates a node holds, one row each (its ``Updates`` message of one). Blocking:
    call it from a worker thread."""

    def __init__(self, path: Path) -> None:
        try:
            self.db = open_durable(path, _SCHEMA, 1)
        except sqlite3.Error as exc:
            raise StateLogError(f"cannot open the replicated state at {path}: {exc}") from None

    def append(self, updates: Iterable[st.Update]) -> None:
        rows = [(u.epoch, u.author, u.start, st.encode(st.Updates((u,)))) for u in updates]
        if not rows:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR IGNORE INTO updates VALUES (?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise StateLogError(f"cannot write the replicated state: {exc}") from None

    def keep(self, epochs: Iterable[int]) -> None:
        """Forget the updates of epochs the replica no longer holds."""
        keep = sorted(set(epochs))
        marks = ",".join("?" * len(keep))
        try:
            self.db.execute(f"DELETE FROM updates WHERE epoch NOT IN ({marks})", keep)  # noqa: S608 - only "?" marks
        except sqlite3.Error as exc:
            raise StateLogError(f"cannot write the replicated state: {exc}") from None

    def load(self) -> tuple[list[st.Update], int]:
        """Every stored update, and how many rows did not decode (left out)."""
        out, bad = [], 0
        try:
            rows = self.db.execute("SELECT message FROM updates ORDER BY epoch, author, start").fetchall()
        except sqlite3.Error as exc:
            raise StateLogError(f"cannot read the replicated state: {exc}") from None
        for (message,) in rows:
            try:
                msg = st.decode(bytes(message))
            except st.StateError:
                bad += 1
                continue
            if isinstance(msg, st.Updates):
                out += msg.updates
        return out, bad

    def close(self) -> None:
        self.db.close()


class Session(Protocol):
    async def request(self, method: str, body: bytes = b"", *, timeout: float | None = None) -> bytes: ...


class Carrier(Protocol):
    """What carries the sync: the peer subsystem (``PeerService``) has these."""

    def register_method(self, name: str, handler: Callable[[Any, bytes], Any]) -> None: ...

    def sessions(self) -> list[tuple[str, Any]]: ...


class StateSync:
    """One node's replicated state, persisted and synced over its peer sessions."""

    def __init__(self, replica: Replica, path: Path | None = None, *, clock: Clock = SYSTEM,
                 page_bytes: int = 60 * 1024, interval: float = 10.0, request_timeout: float = 10.0,
                 logger: Any = None) -> None:
        self.replica = replica
        self.path = path  # the StateLog's file; None keeps the state in memory only
        self.store: StateLog | None = None  # opened on the worker thread: a sqlite3 connection is its thread's
        self.clock = clock
        self.page_bytes = page_bytes  # under the peer protocol's 64 KiB frame, with room for the request
        self.interval = interval
        self.request_timeout = request_timeout
        self.log = logger
        self.carrier: Carrier | None = None
        self.malformed = 0
        self.on_applied: Callable[[], None] | None = None  # called on the loop when received updates applied
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-state")  # one at a time, in order
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, carrier: Carrier) -> None:
        self.carrier = carrier
        carrier.register_method(SYNC, self._serve_sync)
        carrier.register_method(PUSH, self._serve_push)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread, after what is queued there: everything that touches
        the replica goes through here (a pycrdt document is not for two threads at once)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> None:
        if self.store is None and self.path is not None:
            self.store = StateLog(self.path)

    async def close(self) -> None:
        """Close the log on disk and the worker thread."""
        await self.call(lambda: self.store.close() if self.store is not None else None)
        self._pool.shutdown(wait=True)

    # ---- start, write, read ---------------------------------------------------------------------

    async def restore(self) -> int:
        """Rebuild the replica from the log on disk; returns how many updates it took back."""
        if self.path is None:
            return 0
        updates, bad = await self.call(self._load)
        outcomes = await self.call(self.replica.restore, updates, self.clock.time())
        self._event("state_restored", updates=len(updates), unreadable=bad,
                    refused=sum(1 for o in outcomes if o.refusal is not None))
        return sum(1 for o in outcomes if o.applied)

    async def write(self, changes: Mapping[str, Mapping[str, Mapping[str, Any] | None]]) -> st.Update:
        """Write this node's entries (:meth:`Replica.write`), keep the update and push it to every peer."""
        made = await self.call(self._write, changes, self.clock.time())
        self._push_all(st.encode(st.Updates(tuple(made))))
        return made[0]  # type: ignore[no-any-return]

    def _write(self, changes: Mapping[str, Mapping[str, Mapping[str, Any] | None]], now: float) -> list[st.Update]:
        """The write, and the first update of a new epoch when it passed the compaction bound."""
        made = [self.replica.write(now, changes)]
        compacted = self.replica.maybe_compact(now)
        self._persist(made)
        if compacted is not None:
            made.append(compacted)
            self._persist([compacted], epochs_changed=True)
        return made

    def _load(self) -> tuple[list[st.Update], int]:
        self._open()
        assert self.store is not None
        return self.store.load()

    async def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The state as this node reads it (:meth:`Replica.state`)."""
        return await self.call(self.replica.state)  # type: ignore[no-any-return]

    # ---- the two methods ------------------------------------------------------------------------

    async def _serve_sync(self, _session: Any, body: bytes) -> bytes:
        try:
            msg = st.decode(body)
        except st.StateError as exc:
            return self._malformed(exc)
        if not isinstance(msg, st.SyncStep1):
            return self._malformed(st.StateError("fleet.state.sync carries a step 1"))
        return await self.call(self.replica.page, msg, self.page_bytes)  # type: ignore[no-any-return]

    async def _serve_push(self, _session: Any, body: bytes) -> bytes:
        await self._receive(body)
        return b""

    def _malformed(self, exc: st.StateError) -> bytes:
        self.malformed += 1
        self._event("state_message_refused", reason="malformed", detail=str(exc)[:200])
        return st.encode(st.Updates())

    async def _receive(self, body: bytes) -> list[Outcome]:
        if body == EMPTY:  # a peer that has nothing this node lacks (most answers): no thread hop
            return []
        try:
            replies, outcomes = await self.call(self._apply, body, self.clock.time())
        except st.StateError as exc:
            self._malformed(exc)
            return []
        for o in outcomes:
            if o.refusal is not None and o.refusal.reason is not st.Reason.GAP:
                self._event("state_update_refused", author=o.update.author, reason=str(o.refusal.reason),
                            detail=o.refusal.detail[:200])
        for reply in replies:  # this node joined a newer epoch: its entries there go to everyone
            self._push_all(reply)
        if self.on_applied is not None and any(o.applied for o in outcomes):
            self.on_applied()
        return outcomes  # type: ignore[no-any-return]

    def _apply(self, body: bytes, now: float) -> tuple[list[bytes], list[Outcome]]:
        before = set(self.replica.epochs)
        replies, outcomes = self.replica.receive(body, now)
        own = [u for r in replies for u in st.decode(r).updates]  # type: ignore[union-attr]
        self._persist([o.update for o in outcomes if o.applied] + own,
                      epochs_changed=set(self.replica.epochs) != before)
        return replies, outcomes

    def _persist(self, updates: list[st.Update], *, epochs_changed: bool = False) -> None:
        self._open()
        if self.store is None:
            return
        if updates:
            self.store.append(updates)
        if epochs_changed:
            self.store.keep(self.replica.epochs)

    # ---- talking to peers -----------------------------------------------------------------------

    def _sessions(self) -> list[Any]:
        return [s for _direction, s in self.carrier.sessions()] if self.carrier is not None else []

    def _push_all(self, message: bytes) -> None:
        for session in self._sessions():
            task = asyncio.get_running_loop().create_task(self._push(session, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _push(self, session: Session, message: bytes) -> None:
        try:
            await session.request(PUSH, message, timeout=self.request_timeout)
        except Exception as exc:  # a session going away: the next periodic sync carries it
            self._event("state_push_failed", error=f"{type(exc).__name__}: {str(exc)[:120]}")

    async def sync_with(self, session: Session, step1: bytes | None = None) -> tuple[int, bytes | None]:
        """Pull from one peer until it has nothing this node lacks: the updates applied, and this
        node's step 1 if it still holds (nothing applied). ``step1``: one that still holds, so the
        worker thread is not asked for it again."""
        applied = 0
        for _ in range(MAX_ROUNDS):
            reused = step1 is not None
            if step1 is None:
                step1 = await self.call(self.replica.step1)
            page = await session.request(SYNC, step1, timeout=self.request_timeout)
            outcomes = await self._receive(page)
            if outcomes:  # refused or applied, the state may have moved: ask for a new step 1
                step1 = None
            got = sum(1 for o in outcomes if o.applied)
            applied += got
            # a page of what this node had already (an older step 1 was used) may hide what comes
            # after it: ask again with this node's step 1 as it is now
            if not got and not (reused and outcomes):
                break
        return applied, step1

    async def sync_all(self) -> int:
        """Pull from every peer; one step 1 serves every peer while nothing arrives (the replica
        changes only on the worker thread, by what this loop applies or a write meanwhile - the
        write pushes itself to every peer)."""
        total, step1 = 0, None
        for session in self._sessions():
            try:
                got, step1 = await self.sync_with(session, step1)
                total += got
            except Exception as exc:  # one peer failing must not stop the others
                step1 = None
                self._event("state_sync_failed", error=f"{type(exc).__name__}: {str(exc)[:120]}")
        return total

    async def run(self) -> None:
        """Pull from every peer every ``interval`` seconds, until cancelled."""
        try:
            while True:
                await self.sync_all()
                await self.clock.sleep(self.interval)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _event(self, name: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.info(name, **fields)
