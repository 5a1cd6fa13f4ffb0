"""Operator commands on the node: the authorized keys, the durable replay counters, the handlers.

* :func:`load_operators` reads the ``[fleet] operator_keys`` files (and directories of them) into
  ``{key id: public key}``; a file that is not an operator public key is reported, not fatal.
* :class:`Counters` keeps the highest counter taken per operator in SQLite
  (:mod:`x0tta.durable`: WAL, ``synchronous=FULL``), written **before** the command runs, so a
  command cannot run twice, not even across a crash and restart in the middle of it.
* :class:`Actions` is the handler registry. The fleet plane imports no other subsystem: the
  wiring (``x0tta/agent/wiring.py``) registers a handler per action name for what the agent runs
  (drain and undrain through the mesh subsystem, a healing action through the heal loop's
  executor, ...). An action without a handler is refused with ``unsupported``, and so is one
  whose handler raises :class:`Unsupported` (the subsystem it needs does not run on this node).

The decision itself is pure (:mod:`x0tta.fleet.core.command`). Blocking calls (files, SQLite,
signature checks) are made by the service off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from x0tta.common.errors import PermanentError
from x0tta.durable import open_durable
from x0tta.fleet.core.command import ACTIONS, Command
from x0tta.identity.core.operator import OperatorKeyError, OperatorPublicKey, load_public


class Unsupported(PermanentError):
    """A handler cannot run its action on this node: what it needs (a subsystem) does not run here.
    The command is refused with ``unsupported``, as one without a handler is."""


Handler = Callable[[Command], Awaitable[Mapping[str, Any]]]  # the accepted command -> the result's detail
KEY_SUFFIXES = (".pub.pem", ".pub.json")  # in a directory: public keys only, never a private one



def load_operators(sources: tuple[str, ...]) -> tuple[dict[str, OperatorPublicKey], list[str]]:
    """``({key id: key}, [problems])`` from files and directories of public keys. Reads files."""
    keys: dict[str, OperatorPublicKey] = {}
    problems: list[str] = []
    for source in sources:
        p = Path(source)
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(KEY_SUFFIXES)) if p.is_dir() else [p]
        for f in files:
            try:
                key = load_public(f.read_bytes())
            except (OSError, OperatorKeyError) as exc:
                problems.append(f"{f}: {exc}")
                continue
            keys[key.key_id] = key
    return keys, problems


_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    operator TEXT PRIMARY KEY,
    counter  INTEGER NOT NULL
);
"""


class Counters:
    """The highest command counter taken per operator, durable. Every method runs on one dedicated
    thread (a sqlite3 connection belongs to its thread), so the event loop never waits on the disk."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-commands")

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_durable(self.path, _SCHEMA, 1)
        return self._db

    async def load(self) -> dict[str, int]:
        return await self._run(lambda: dict(self._conn().execute("SELECT operator, counter FROM counters")))  # type: ignore[no-any-return]

    def _take(self, operator: str, counter: int) -> bool:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT counter FROM counters WHERE operator = ?", (operator,)).fetchone()
            if row is not None and row[0] >= counter:
                db.execute("ROLLBACK")
                return False
            db.execute("INSERT OR REPLACE INTO counters (operator, counter) VALUES (?, ?)", (operator, counter))
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        return True

    async def take(self, operator: str, counter: int) -> bool:
        """Record ``counter`` if it is above the stored one (on disk when this returns); False otherwise."""
        return await self._run(lambda: self._take(operator, counter))  # type: ignore[no-any-return]

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._run(close)
        finally:
            self._pool.shutdown(wait=False)


class Actions:
    """Action name -> handler; the names are those of :data:`x0tta.fleet.core.command.ACTIONS`."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if name not in ACTIONS:
            raise ValueError(f"no such command action {name!r}: one of {sorted(ACTIONS)}")
        self._handlers[name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)
