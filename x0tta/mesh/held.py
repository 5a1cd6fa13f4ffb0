"""What operators' fleet commands hold on this node's mesh, kept across agent restarts.

A ``drain`` takes a hard interface out of batman-adv and a ``set_mesh`` holds a mesh setting until
an operator gives it back (``undrain``, ``release_mesh``; docs/fleet.md). Before this file, both
were forgotten when the agent restarted: the first reconcile attached the drained interface again
and put the setting back to ``[mesh]``, which no operator asked for. The mesh subsystem now writes
what is held here **before** it acts on it, and reads it back at start, before its first
reconcile.

One SQLite file (``<state_dir>/mesh-operator.sqlite3``), opened with :func:`x0tta.durable.open_durable`
(WAL, ``synchronous=FULL``: a save that returned survives ``kill -9`` and power loss). Each save
replaces the whole held state in one transaction, so a reader never sees half of one. Operator
commands are rare: every call opens the file, does its work and closes it, on a worker thread
(:func:`asyncio.to_thread`), never on the event loop.

Rows: ``(kind, name, value)`` with ``kind`` ``drain`` (``name`` the interface, ``value`` ``true``)
or ``mesh`` (``name`` the batman-adv setting, ``value`` its JSON). :func:`decode` checks what it
reads against the settings of the moment: an interface no longer in ``mesh.hard_interfaces``, a
setting the mesh subsystem no longer manages, or a value of the wrong type is dropped and named in
the problems, not applied.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from x0tta.common.errors import TemporaryError
from x0tta.config.mesh import MeshSettings
from x0tta.durable import open_durable
from x0tta.mesh.core.reconcile import desired_mesh

FILENAME = "mesh-operator.sqlite3"
VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"""


class HeldStateError(TemporaryError):
    """The file of what operators hold cannot be read or written (a disk error, a damaged file)."""


def decode(rows: Iterable[tuple[str, str, str]], settings: MeshSettings) -> tuple[dict[str, Any], list[str]]:
    """``({"detached": set, "mesh": dict}, [problems])`` from the stored rows, checked against
    ``settings``: what no longer fits is left out and named in the problems."""
    held: dict[str, Any] = {"detached": set(), "mesh": {}}
    problems: list[str] = []
    known = desired_mesh(settings)
    for kind, name, text in rows:
        if kind == "drain":
            if name in settings.hard_interfaces:
                held["detached"].add(name)
            else:
                problems.append(f"drained {name!r} is not one of mesh.hard_interfaces any more")
            continue
        if kind != "mesh":
            problems.append(f"unknown kind {kind!r} of {name!r}")
            continue
        try:
            value = json.loads(text)
        except ValueError:
            problems.append(f"setting {name!r}: {text[:40]!r} is not JSON")
            continue
        if name not in known:
            problems.append(f"setting {name!r} is not one the mesh subsystem manages")
        elif type(value) is not type(known[name]):
            problems.append(f"setting {name!r} takes a {type(known[name]).__name__}, not {value!r}")
        else:
            held["mesh"][name] = value
    return held, problems


def _rows(held: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return ([("drain", h, "true") for h in sorted(held["detached"])]
            + [("mesh", k, json.dumps(v)) for k, v in sorted(held["mesh"].items())])


class HeldStore:
    """Load and save what operators hold; every call runs on a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> list[tuple[str, str, str]]:
        db = open_durable(self.path, _SCHEMA, VERSION)
        try:
            return [tuple(r) for r in db.execute("SELECT kind, name, value FROM held ORDER BY kind, name")]
        finally:
            db.close()

    def _save(self, rows: list[tuple[str, str, str]]) -> None:
        db = open_durable(self.path, _SCHEMA, VERSION)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM held")
                db.executemany("INSERT INTO held (kind, name, value) VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    async def load(self, settings: MeshSettings) -> tuple[dict[str, Any], list[str]]:
        """What was held when the agent stopped, checked against ``settings`` (see :func:`decode`)."""
        try:
            rows = await asyncio.to_thread(self._load)
        except (sqlite3.Error, OSError) as exc:
            raise HeldStateError(f"cannot read what operators hold from {self.path}: {exc}") from None
        return decode(rows, settings)

    async def save(self, held: Mapping[str, Any]) -> None:
        """Replace what is stored by ``held`` (``{"detached": set, "mesh": dict}``); on disk when
        this returns."""
        rows = _rows(held)
        try:
            await asyncio.to_thread(self._save, rows)
        except (sqlite3.Error, OSError) as exc:
            raise HeldStateError(f"cannot write what operators hold to {self.path}: {exc}") from None
