"""Operator commands: the signed envelope, its strict decoder, and the decision to run one or not.

An operator tells nodes what to do by publishing an envelope on the fleet's command topic
(docs/fleet.md). The envelope is one JSON object::

    {"schema": "x0tta.fleet.command/1",
     "command": "<the canonical JSON text of the command, exactly the signed bytes>",
     "signature": {"ed25519": <base64>, "mldsa65": <base64>}}

The command travels as text so that a node verifies the very bytes the operator signed (no
re-encoding to agree on); the operator's CLI writes it canonically (sorted keys, no spaces,
ASCII) and the decoder refuses any other spelling. Its fields:

==============  ===========================================================================
``id``          the command's id (16-64 of ``[A-Za-z0-9_-]``): the result names it
``operator``    the key id of the signing operator key (:mod:`x0tta.identity.core.operator`)
``counter``     per operator, strictly growing: a node refuses one not above the last it took
``issued_at``   unix seconds, when it was signed
``expires_at``  unix seconds; after it the command is refused (and MQTT 5 message expiry drops it)
``target``      ``{"ids": [SPIFFE IDs]}`` or ``{"pattern": "spiffe://td/node/*"}`` (a glob)
``action``      one of :data:`ACTIONS`
``args``        the action's arguments, typed by :data:`ACTIONS`
==============  ===========================================================================

:func:`check` decides, in this order, and the first failing rule names the refusal
(:class:`Reason`): ``malformed`` (the decoder refused it), ``unsigned``, ``unknown_operator``
(its key id is not among the authorized operators), ``bad_ed25519`` / ``bad_mldsa`` (that half
of the hybrid signature does not verify; when both fail, ``bad_ed25519``), ``wrong_target``,
``expired`` (also issued more than :data:`MAX_SKEW` in the future), ``replayed`` (counter not
above the operator's last). Nothing before the signature is trusted, and a refused command
does not move the counter. ``unsupported`` is the service's: the node has no handler for the action.

Pure: bytes, keys and ``now`` in, a decision out. :func:`decode` raises only
:class:`CommandError` (a DecodeError); ``tests/fuzz/test_fleet_command_fuzz.py`` holds it to that.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from x0tta.common.errors import DecodeError
from x0tta.common.spiffe_id import SCHEME_PREFIX, SpiffeId, SpiffeIdError
from x0tta.identity.core.operator import (
    ED25519,
    KEY_ID_PATTERN,
    HybridSignature,
    OperatorKey,
    OperatorKeyError,
    OperatorPublicKey,
    SignatureInvalid,
    verify,
)

SCHEMA = "x0tta.fleet.command/1"
MAX_ENVELOPE = 64 * 1024  # bytes: an ML-DSA-65 signature is 3309 of them; commands are small
MAX_LIFETIME = 7 * 86400.0  # s: expires_at - issued_at; a command is not a standing order
MAX_SKEW = 300.0  # s: a command issued further in the future than this is refused as expired
MAX_TARGETS = 1000
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
IFACE_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # IFNAMSIZ - 1
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Reason(enum.StrEnum):
    """Why a node refused a command. Stable: a metric label, in the result payload and the docs."""

    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    UNKNOWN_OPERATOR = "unknown_operator"
    BAD_ED25519 = "bad_ed25519"
    BAD_MLDSA = "bad_mldsa"
    WRONG_TARGET = "wrong_target"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    UNSUPPORTED = "unsupported"


class CommandError(DecodeError):
    """An envelope or command that does not follow x0tta.fleet.command/1."""


# Each action's arguments: name -> (accepted JSON types, required). Values are checked below.
_STR = (str,)
_SCALAR = (str, int, float, bool)
ACTIONS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "drain": {"interface": (_STR, True)},  # take a hard interface out of batman-adv
    "undrain": {"interface": (_STR, True)},  # put it back
    "set_mesh": {"setting": (_STR, True), "value": (_SCALAR, True)},  # a batman-adv mesh setting
    "release_mesh": {"setting": (_STR, True)},  # stop holding it: [mesh]'s value again
    "heal": {"action": (_STR, True), "target": (_STR, False)},  # a named healing action
    "diagnostics": {"incidents": ((int,), False)},  # status and recent incidents
    "quarantine": {"node": (_STR, True)},
    "release": {"node": (_STR, True)},
}
COMMAND_FIELDS = {"id", "operator", "counter", "issued_at", "expires_at", "target", "action", "args"}


@dataclass(frozen=True)
class Target:
    """Who a command is for: exact SPIFFE IDs, or a glob over the ID's text (``*``, ``?``, ``[..]``)."""

    ids: frozenset[str] = frozenset()
    pattern: str = ""

    def matches(self, spiffe_id: str) -> bool:
        if self.pattern:
            return fnmatch.fnmatchcase(spiffe_id, self.pattern)
        return spiffe_id in self.ids

    def to_json(self) -> dict[str, Any]:
        return {"pattern": self.pattern} if self.pattern else {"ids": sorted(self.ids)}


@dataclass(frozen=True)
class Command:
    id: str
    operator: str
    counter: int
    issued_at: float
    expires_at: float
    target: Target
    action: str
    args: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "operator": self.operator, "counter": self.counter, "issued_at": self.issued_at,
                "expires_at": self.expires_at, "target": self.target.to_json(), "action": self.action,
                "args": dict(self.args)}


@dataclass(frozen=True)
class Envelope:
    command: Command
    signed: bytes  # the exact bytes the signature covers
    signature: HybridSignature | None


@dataclass(frozen=True)
class Accepted:
    command: Command


@dataclass(frozen=True)
class Refused:
    reason: Reason
    message: str
    command: Command | None = None  # None when it could not be decoded


Decision = Accepted | Refused


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _checked_args(action: str, args: Any) -> dict[str, Any]:
    if action not in ACTIONS:
        raise CommandError(f"unknown action {str(action)[:40]!r}: one of {sorted(ACTIONS)}")
    if not isinstance(args, dict):
        raise CommandError("args is an object")
    spec = ACTIONS[action]
    unknown = set(args) - set(spec)
    if unknown:
        raise CommandError(f"{action}: unknown arguments {sorted(unknown)[:5]}")
    for name, (types, required) in spec.items():
        if name not in args:
            if required:
                raise CommandError(f"{action}: argument {name!r} missing")
            continue
        v = args[name]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise CommandError(f"{action}: argument {name!r} has the wrong type ({type(v).__name__})")
        if isinstance(v, float) and not math.isfinite(v):
            raise CommandError(f"{action}: argument {name!r} is not finite")
        if isinstance(v, str) and len(v) > 256:
            raise CommandError(f"{action}: argument {name!r} longer than 256 characters")
    if "interface" in args and not IFACE_PATTERN.fullmatch(args["interface"]):
        raise CommandError(f"{action}: {args['interface'][:40]!r} is not an interface name")
    for name in ("setting", "action"):
        if name in args and not NAME_PATTERN.fullmatch(args[name]):
            raise CommandError(f"{action}: {name} {args[name][:40]!r} is not a name (a-z, 0-9, _)")
    if "node" in args:
        _spiffe(args["node"])
    if "incidents" in args and not 0 <= args["incidents"] <= 1000:
        raise CommandError("diagnostics: incidents is between 0 and 1000")
    return dict(args)


def _spiffe(text: Any) -> str:
    try:
        return str(SpiffeId.parse(text))
    except SpiffeIdError as exc:
        raise CommandError(f"not a SPIFFE ID: {exc}") from None


def _target(obj: Any) -> Target:
    if not isinstance(obj, dict) or len(obj) != 1 or not ({"ids", "pattern"} & set(obj)):
        raise CommandError("target is {\"ids\": [...]} or {\"pattern\": \"...\"}")
    if "pattern" in obj:
        p = obj["pattern"]
        if not isinstance(p, str) or not p.startswith(SCHEME_PREFIX) or not 10 <= len(p) <= 2048:
            raise CommandError("target pattern is a glob over spiffe://... IDs")
        return Target(pattern=p)
    ids = obj["ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_TARGETS:
        raise CommandError(f"target ids is a list of 1 to {MAX_TARGETS} SPIFFE IDs")
    return Target(ids=frozenset(_spiffe(i) for i in ids))


def _time(obj: Mapping[str, Any], name: str) -> float:
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v < 1e11:
        raise CommandError(f"{name} is unix seconds")
    return float(v)


def parse_command(obj: Any) -> Command:
    """A command from its decoded JSON object; :class:`CommandError` if it is not one."""
    if not isinstance(obj, dict) or set(obj) != COMMAND_FIELDS:
        got = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CommandError(f"a command is an object with exactly {sorted(COMMAND_FIELDS)} (got {got})")
    cid, operator, counter, action = obj["id"], obj["operator"], obj["counter"], obj["action"]
    if not isinstance(cid, str) or not ID_PATTERN.fullmatch(cid):
        raise CommandError("id: 16 to 64 of A-Z a-z 0-9 _ -")
    if not isinstance(operator, str) or not KEY_ID_PATTERN.fullmatch(operator):
        raise CommandError("operator is an operator key id (32 hex digits)")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 0 < counter < 2**63:
        raise CommandError("counter is a positive integer below 2^63")
    issued, expires = _time(obj, "issued_at"), _time(obj, "expires_at")
    if not issued < expires <= issued + MAX_LIFETIME:
        raise CommandError(f"expires_at is after issued_at, by at most {MAX_LIFETIME:g} s")
    if not isinstance(action, str):
        raise CommandError("action is a name")
    return Command(cid, operator, counter, issued, expires, _target(obj["target"]), action,
                   _checked_args(action, obj["args"]))


def _loads(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CommandError(f"{what} is not JSON: {str(exc)[:80]}") from None


def decode(data: bytes) -> Envelope:
    """Parse an envelope received from the broker, strictly; :class:`CommandError` on anything else."""
    if len(data) > MAX_ENVELOPE:
        raise CommandError(f"envelope of {len(data)} bytes, above {MAX_ENVELOPE}")
    env = _loads(data, "the envelope")
    if not isinstance(env, dict) or env.get("schema") != SCHEMA or not set(env) <= {"schema", "command", "signature"}:
        raise CommandError(f"not an {SCHEMA} envelope")
    text = env.get("command")
    if not isinstance(text, str):
        raise CommandError("command is the signed JSON text")
    obj = _loads(text, "the command")
    cmd = parse_command(obj)
    signed = text.encode("ascii", "replace")
    try:
        spelled = canonical(obj)
    except ValueError:  # NaN or Infinity somewhere the checks above do not look
        raise CommandError("the command holds a number JSON cannot carry") from None
    if spelled != signed:
        raise CommandError("the command is not in canonical form (sorted keys, no spaces, ASCII)")
    sig = env.get("signature")
    try:
        signature = None if sig is None else HybridSignature.from_json(sig)
    except OperatorKeyError as exc:
        raise CommandError(f"signature: {exc}") from None
    return Envelope(cmd, signed, signature)


def sign(key: OperatorKey, command: Command) -> bytes:
    """The envelope of ``command`` signed by ``key`` (whose key id must be the command's operator)."""
    if command.operator != key.key_id:
        raise ValueError(f"the command names operator {command.operator}, the key is {key.key_id}")
    text = canonical(command.to_json())
    return canonical({"schema": SCHEMA, "command": text.decode(), "signature": key.sign(text).to_json()})


def unsigned(command: Command) -> bytes:
    return canonical({"schema": SCHEMA, "command": canonical(command.to_json()).decode()})


def check(data: bytes | Envelope, now: float, node_spiffe_id: str,
          authorized_operators: Mapping[str, OperatorPublicKey], last_counter: Mapping[str, int]) -> Decision:
    """Should this node run the command? ``authorized_operators`` by key id; ``last_counter`` the
    highest counter taken per operator. The rules and their order are in the module doc."""
    try:
        env = data if isinstance(data, Envelope) else decode(data)
    except CommandError as exc:
        return Refused(Reason.MALFORMED, str(exc))
    cmd = env.command
    if env.signature is None:
        return Refused(Reason.UNSIGNED, f"command {cmd.id} carries no signature", cmd)
    public = authorized_operators.get(cmd.operator)
    if public is None:
        return Refused(Reason.UNKNOWN_OPERATOR, f"operator {cmd.operator} is not authorized on this node", cmd)
    try:
        verify(public, env.signed, env.signature)
    except SignatureInvalid as exc:
        return Refused(Reason.BAD_ED25519 if ED25519 in exc.halves else Reason.BAD_MLDSA, str(exc), cmd)
    if not cmd.target.matches(node_spiffe_id):
        return Refused(Reason.WRONG_TARGET, f"command {cmd.id} is not for {node_spiffe_id}", cmd)
    if now >= cmd.expires_at:
        return Refused(Reason.EXPIRED, f"command {cmd.id} expired {now - cmd.expires_at:.1f} s ago", cmd)
    if cmd.issued_at > now + MAX_SKEW:
        return Refused(Reason.EXPIRED, f"command {cmd.id} is issued {cmd.issued_at - now:.0f} s in the future", cmd)
    last = last_counter.get(cmd.operator, 0)
    if cmd.counter <= last:
        return Refused(Reason.REPLAYED, f"counter {cmd.counter} of operator {cmd.operator} is not above {last}", cmd)
    return Accepted(cmd)
