"""SQLite files that keep what they were told once a write returns: the heal knowledge store and
the fleet outbox open theirs here.

WAL mode (readers never block the writer, a crash leaves the last committed transaction) with
``synchronous=FULL`` (a commit returns only once the WAL is on disk, so a write that returned
survives ``kill -9`` and power loss). The connection is in autocommit mode: callers group their
writes with ``BEGIN IMMEDIATE`` ... ``COMMIT`` themselves.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path, schema: str, version: int) -> sqlite3.Connection:
    """Open (creating it and its directory) a WAL database with ``schema`` applied. Raises sqlite3.Error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    db.execute(f"PRAGMA user_version={version}")
    return db
