"""Topics and payloads of the fleet plane: every payload versioned, built and checked here.

Topics (``prefix`` is ``[fleet] topic_prefix``, ``node`` the node id, which is also the user the
broker maps the node's client certificate to, so an ACL pattern ``x0tta/nodes/%u/#`` confines
each node to its own subtree):

==================================  ========  =======================================================
topic                               retained  payload
==================================  ========  =======================================================
``{prefix}/nodes/{node}/status``    yes       ``birth/1`` on each connection; ``death/1`` as the Last
                                              Will (connection lost) or sent on a clean shutdown
``{prefix}/nodes/{node}/state``     yes       ``state/1``: health per subsystem; the latest only
``{prefix}/nodes/{node}/events/{source}``  no ``event/1``: incidents, actions, ... of subsystem ``source``
``{prefix}/nodes/{node}/result``    yes       ``result/1``: what became of an operator command
``{prefix}/commands``               no        operator commands (:mod:`x0tta.fleet.core.command`), read
                                              by every node; the envelope names its targets
==================================  ========  =======================================================

Every payload is one JSON object, the envelope::

    {"schema": "x0tta.fleet.<kind>/<version>", "id": <idempotency key>, "node": <node id>,
     "at": <unix seconds>, "body": {...}}

``id`` is the outbox's idempotency key: QoS 1 may deliver a message twice (a PUBACK lost in a
reconnection), and a receiver drops the second by its ``id``. A new version of a kind gets a new
schema string; a receiver reads the versions it knows and leaves the others (docs/fleet.md).

:func:`decode` is what a receiver (and the tests) use: it raises :class:`PayloadError` (a
:class:`~x0tta.common.errors.DecodeError`) and nothing else on bytes that are not a valid payload.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from x0tta.common.errors import DecodeError

SCHEMA_PREFIX = "x0tta.fleet."
STATES = ("ok", "starting", "degraded", "failing")
DEATH_REASONS = ("lost", "shutdown")
OUTCOMES = ("executed", "failed", "refused")
NODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
MAX_PAYLOAD = 256 * 1024  # bytes; far above any payload the node builds, a bound for receivers


class PayloadError(DecodeError):
    """A fleet payload that is not valid JSON or does not follow its schema."""


# Each body field: name -> (accepted JSON types, required). Lists are checked item by item below.
_TEXT = (str,)
_NUMBER = (int, float)
_INT = (int,)
BODIES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "birth/1": {"session": (_INT, True), "version": (_TEXT, True), "started": (_NUMBER, True)},
    "death/1": {"session": (_INT, True), "reason": (_TEXT, True)},
    "state/1": {"version": (_TEXT, True), "state": (_TEXT, True), "subsystems": ((list,), True)},
    "event/1": {"source": (_TEXT, True), "name": (_TEXT, True), "incident": ((str, type(None)), False),
                "data": ((dict,), True)},
    "result/1": {"command": ((str, type(None)), True), "operator": ((str, type(None)), True),
                 "action": ((str, type(None)), True), "outcome": (_TEXT, True),
                 "reason": ((str, type(None)), True), "message": (_TEXT, True), "detail": ((dict,), True)},
}
SUBSYSTEM_FIELDS = {"subsystem": _TEXT, "state": _TEXT, "conditions": (list,)}
ENVELOPE = {"schema": _TEXT, "id": _TEXT, "node": _TEXT, "at": _NUMBER, "body": (dict,)}


@dataclass(frozen=True)
class Topics:
    """The topics of one node."""

    prefix: str
    node: str

    def __post_init__(self) -> None:
        if not NODE_PATTERN.fullmatch(self.node):
            raise ValueError(f"node id {self.node!r} cannot be a topic level (letters, digits, . _ -)")
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.startswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r}: no wildcards, no leading /")

    @property
    def root(self) -> str:
        return f"{self.prefix}/nodes/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def result(self) -> str:
        return f"{self.root}/result"

    @property
    def commands(self) -> str:
        return f"{self.prefix}/commands"

    def events(self, source: str) -> str:
        if not NAME_PATTERN.fullmatch(source):
            raise ValueError(f"event source {source!r}: lower-case letters, digits, . _ -")
        return f"{self.root}/events/{source}"


def envelope(kind: str, key: str, node: str, at: float, body: Mapping[str, Any]) -> dict[str, Any]:
    """A payload as a JSON object; ``kind`` is one of :data:`BODIES` (``"state/1"``)."""
    obj = {"schema": SCHEMA_PREFIX + kind, "id": key, "node": node, "at": round(at, 6), "body": dict(body)}
    validate(obj)
    return obj


def encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str).encode()


def birth(key: str, node: str, at: float, session: int, version: str, started: float) -> dict[str, Any]:
    return envelope("birth/1", key, node, at, {"session": session, "version": version, "started": started})


def death(key: str, node: str, at: float, session: int, reason: str) -> dict[str, Any]:
    return envelope("death/1", key, node, at, {"session": session, "reason": reason})


def state(key: str, node: str, at: float, version: str, subsystems: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``subsystems`` as the agent's status lists them; the node's state is the worst of theirs."""
    subs = [
        {"subsystem": str(s["subsystem"]), "state": str(s["state"]),
         "conditions": [str(c["code"]) if isinstance(c, Mapping) else str(c) for c in s.get("conditions", ())]}
        for s in subsystems
    ]
    worst = max((STATES.index(s["state"]) for s in subs if s["state"] in STATES), default=0)
    return envelope("state/1", key, node, at, {"version": version, "state": STATES[worst], "subsystems": subs})


def event(key: str, node: str, at: float, source: str, name: str, incident: str | None,
          data: Mapping[str, Any]) -> dict[str, Any]:
    # The data of an event comes from a subsystem's records; round-trip it through JSON so that the
    # stored payload is exactly what a receiver decodes (tuples become lists, others their str).
    plain = json.loads(json.dumps(dict(data), default=str))
    return envelope("event/1", key, node, at, {"source": source, "name": name, "incident": incident, "data": plain})


def result(key: str, node: str, at: float, command: str | None, operator: str | None, action: str | None,
           outcome: str, reason: str | None, message: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    """What became of an operator command: ``executed`` (``detail`` is the action's), ``failed`` or
    ``refused`` (``reason`` is a :class:`~x0tta.fleet.core.command.Reason`)."""
    plain = json.loads(json.dumps(dict(detail), default=str))
    return envelope("result/1", key, node, at, {"command": command, "operator": operator, "action": action,
                                                "outcome": outcome, "reason": reason, "message": message,
                                                "detail": plain})


def _check(obj: Mapping[str, Any], spec: Mapping[str, tuple[type, ...]], where: str, required: bool = True) -> None:
    for name, types in spec.items():
        if name not in obj:
            if required:
                raise PayloadError(f"{where}: {name!r} missing")
            continue
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise PayloadError(f"{where}: {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"{where}: {name!r} is not finite")


def validate(obj: Any) -> str:
    """Check a decoded payload against its schema; returns its kind (``"state/1"``)."""
    if not isinstance(obj, dict):
        raise PayloadError("a payload is a JSON object")
    _check(obj, ENVELOPE, "envelope")
    if "sig" in obj and not isinstance(obj["sig"], dict):  # birth and death: core/signing.py checks it
        raise PayloadError("envelope: sig is an object")
    schema = obj["schema"]
    kind = schema[len(SCHEMA_PREFIX):] if schema.startswith(SCHEMA_PREFIX) else ""
    if kind not in BODIES:
        raise PayloadError(f"unknown schema {schema[:80]!r}")
    if not NODE_PATTERN.fullmatch(obj["node"]) or not obj["id"] or len(obj["id"]) > 128:
        raise PayloadError("envelope: bad node or id")
    body = obj["body"]
    spec = BODIES[kind]
    _check(body, {k: t for k, (t, req) in spec.items() if req}, kind)
    _check(body, {k: t for k, (t, req) in spec.items() if not req}, kind, required=False)
    unknown = set(body) - set(spec)
    if unknown:
        raise PayloadError(f"{kind}: unknown fields {sorted(unknown)[:5]}")
    if kind == "state/1":
        if body["state"] not in STATES:
            raise PayloadError(f"state/1: state {body['state'][:40]!r} is not one of {STATES}")
        for sub in body["subsystems"]:
            if not isinstance(sub, dict):
                raise PayloadError("state/1: a subsystem is an object")
            _check(sub, SUBSYSTEM_FIELDS, "state/1 subsystem")
            if not all(isinstance(c, str) for c in sub["conditions"]):
                raise PayloadError("state/1: conditions are condition codes")
    elif kind == "death/1" and body["reason"] not in DEATH_REASONS:
        raise PayloadError(f"death/1: reason {body['reason'][:40]!r} is not one of {DEATH_REASONS}")
    elif kind == "event/1" and not NAME_PATTERN.fullmatch(body["source"]):
        raise PayloadError("event/1: bad source")
    elif kind == "result/1" and body["outcome"] not in OUTCOMES:
        raise PayloadError(f"result/1: outcome {body['outcome'][:40]!r} is not one of {OUTCOMES}")
    return kind


def decode(data: bytes) -> dict[str, Any]:
    """Parse and check a payload received from the broker."""
    if len(data) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(data)} bytes, above {MAX_PAYLOAD}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PayloadError(f"not JSON: {str(exc)[:80]}") from None
    validate(obj)
    return obj  # type: ignore[no-any-return]
