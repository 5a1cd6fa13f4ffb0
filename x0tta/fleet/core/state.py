"""The replicated mesh state: its shape, who may write what, signed updates and the sync messages.

Every node holds one CRDT document (a Yjs document, kept by :mod:`x0tta.fleet.replica` with
pycrdt) with five maps, each value the canonical JSON text of an object:

================  ==========================  ==================================================  ================
map               key                         value                                               written by
================  ==========================  ==================================================  ================
``registry``      the node's SPIFFE ID        ``{"macs": [...], "role": .., "version": .., "at"}``  that node only
``heads``         the node's SPIFFE ID        ``{"seq": n, "at": ..}``: bumped by every write      that node only
``quarantine``    ``"<author> <target>"``     ``{"target": <SPIFFE ID or MAC>, "macs", "reason",``  the author
                                              ``"until", "at"}``
``incidents``     ``"<author> <id>"``         ``{"kind", "target", "severity", "opened",``         the author
                                              ``"closed": null or a time, "summary", "at"}``
``revocations``   the revoked SPIFFE ID       ``{"by": <author>, "reason": .., "at": ..,``         a revoker
                                              ``"serials": [hex, ...]}``
================  ==========================  ==================================================  ================

A node writes with a Yjs client id derived from its SPIFFE ID (:func:`client_id`), so its items
carry its name; each write is one transaction, and the transaction's Yjs update travels as an
:class:`Update`: author, epoch, the author's clock range ``[start, end)`` the update fills, the
time, the update bytes, the author's certificate chain and its signature, by the key of the
author's X509-SVID, over everything but the chain (:func:`signed_bytes`). Every write bumps the
author's ``heads`` entry so that every update advances its clock: a state vector then tells which
of an author's updates a node lacks, deletions included.

An author holds at most :data:`MAX_INCIDENTS` incidents (:func:`incidents_to_drop`: closed ones go
first, then the oldest) and :data:`MAX_QUARANTINE` quarantine entries (:func:`quarantine_changes`
keeps them equal to what its guard holds). A receiver checks, in this order, and the first failing
rule is the :class:`Reason` it refuses with (and counts): ``malformed`` (the message does not
decode); ``stale_epoch`` (older than the epochs it holds); ``epoch_jump`` (more than
:data:`MAX_EPOCH_STEP` epochs ahead of its newest: a member cannot throw the mesh's state far
forward, and a sync answer brings a peer's older epoch first); ``not_member`` (the chain is not an
X509-SVID of a trust domain the node trusts, valid when the update says it was made, or it names
another author); ``revoked`` (the author is in the revocations map or a CRL); ``bad_signature``;
``future`` (made more than :data:`MAX_SKEW` ahead of the receiver's clock); then, once the update is
applied to a copy of the document: ``gap`` (it does not follow the author's last update: asked for
again at the next sync), ``foreign_client`` (it carries items of another client id),
``unknown_section``, ``bad_value``, ``not_revoker`` (it sets or deletes a revocation and its
author is not one of :attr:`Policy.revokers`), ``foreign_write`` (it changes a key the author does
not own, :func:`owner_allows`), ``over_bound``. Only then is it applied to the document itself.

The sync is the Yjs protocol's two steps with signed updates in place of Yjs' computed diff: a
node sends :class:`SyncStep1`, the state vector of each epoch it holds; the other answers with
:class:`Updates`, the logged updates whose clock range the vector does not cover (every one of an
epoch the asker does not hold). A diff computed by the answering node would be signed by nobody;
relaying the authors' own updates keeps every byte of the state signed by its author, across
any number of hops.

Compaction: when an epoch's log passes ``compact_at_bytes`` a node starts the next epoch, a
fresh document into which it writes its own entries again (:func:`own_entries`); a node that
receives an update of a newer epoch joins it the same way. A node keeps the two newest epochs; its
view (:func:`merge_epochs`) is the newest plus, from the one before, the entries of authors that
have not written in the newest yet.

Pure: bytes, snapshots (plain dicts of the maps) and ``now`` in, data or a reason out.
:func:`decode` raises only :class:`StateError`, a DecodeError; ``tests/fuzz/test_fleet_state_fuzz.py``
holds it to that.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from x0tta.common.errors import DecodeError
from x0tta.common.spiffe_id import SpiffeId, SpiffeIdError
from x0tta.identity.core.types import Bundles, RevocationList, validate_x509_svid

SECTIONS = ("registry", "heads", "quarantine", "incidents", "revocations")
DOMAIN = b"x0tta-fleet-state/1\x00"
MAGIC = b"X0RS"
VERSION = 1
KIND_STEP1 = 1
KIND_UPDATES = 2
MAX_MESSAGE = 4 * 1024 * 1024  # bytes; a sync answer is split into messages below this
MAX_UPDATE = 64 * 1024  # bytes of one Yjs update: a node writes a few entries at a time
MAX_SIGNATURE = 8 * 1024  # ML-DSA-65: 3309 bytes; ECDSA P-256: ~72
MAX_CERT = 16 * 1024
MAX_CHAIN = 4
MAX_CHAINS = 1024  # distinct chains in one message
MAX_UPDATES = 4096  # updates in one message
MAX_VECTOR = 4096  # clients in one state vector
MAX_EPOCHS = 2  # epochs a node holds, hence announces
MAX_EPOCH_STEP = 2  # a newer epoch is joined only this far ahead: a peer holds two, the older comes first
MAX_CLOCK = 2**53  # Yjs clocks and client ids stay below (JavaScript's safe integers)
MAX_VALUE = 2048  # bytes of one value's JSON text
MAX_MACS = 16
MAX_TEXT = 200
MAX_INCIDENTS = 16  # per author: a node drops its oldest summary to add one
MAX_QUARANTINE = 64  # per author
MAX_SERIALS = 16  # revoked certificate serials in one revocation entry (its most recent)
SERIAL_PATTERN = re.compile(r"[0-9a-f]{1,40}")  # an X.509 serial, lower-case hex without leading zeros
MAX_SKEW = 300.0  # s: an update made further ahead of the receiver's clock is refused
MAC_PATTERN = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
INCIDENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Snapshot = Mapping[str, Mapping[str, Any]]
"""A document read out as plain data: section -> key -> value (the JSON text of each value)."""


class StateError(DecodeError):
    """A sync message, update or value that does not follow x0tta-fleet-state/1."""


class Reason(enum.StrEnum):
    """Why a node refused an update. Stable: a metric label and a log field."""

    MALFORMED = "malformed"
    NOT_MEMBER = "not_member"
    REVOKED = "revoked"
    BAD_SIGNATURE = "bad_signature"
    FUTURE = "future"
    STALE_EPOCH = "stale_epoch"
    EPOCH_JUMP = "epoch_jump"
    GAP = "gap"
    FOREIGN_CLIENT = "foreign_client"
    UNKNOWN_SECTION = "unknown_section"
    BAD_VALUE = "bad_value"
    NOT_REVOKER = "not_revoker"
    FOREIGN_WRITE = "foreign_write"
    OVER_BOUND = "over_bound"


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Policy:
    """The rules one mesh agrees on: who may revoke, and when an epoch is compacted."""

    trust_domain: str
    revokers: frozenset[str] = frozenset()
    compact_at_bytes: int = 1024 * 1024


def client_id(author: str) -> int:
    """The Yjs client id ``author`` writes with: 48 bits of SHA-256 over its SPIFFE ID (a
    collision among a mesh's nodes is ~n^2/2^49: 2e-8 for a thousand nodes)."""
    return int.from_bytes(hashlib.sha256(author.encode()).digest()[:6], "big")


def canonical(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# ---- values -------------------------------------------------------------------------------------

_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "registry": {"macs": (list,), "role": (str,), "version": (str,), "at": (int, float)},
    "heads": {"seq": (int,), "at": (int, float)},
    "quarantine": {"target": (str,), "macs": (list,), "reason": (str,), "until": (int, float), "at": (int, float)},
    "incidents": {"kind": (str,), "target": (str,), "severity": (str,), "opened": (int, float),
                  "closed": (int, float, type(None)), "summary": (str,), "at": (int, float)},
    "revocations": {"by": (str,), "reason": (str,), "at": (int, float), "serials": (list,)},
}


def _spiffe(text: Any, what: str) -> SpiffeId:
    try:
        return SpiffeId.parse(text)
    except SpiffeIdError as exc:
        raise StateError(f"{what} is not a SPIFFE ID: {exc}") from None


def decode_value(section: str, text: Any) -> dict[str, Any]:
    """A value of ``section`` from its JSON text; :class:`StateError` if it is not one."""
    if section not in _FIELDS:
        raise StateError(f"no section {str(section)[:40]!r}: one of {SECTIONS}")
    if not isinstance(text, str) or len(text) > MAX_VALUE:
        raise StateError(f"a {section} value is JSON text of at most {MAX_VALUE} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StateError(f"a {section} value is not JSON: {str(exc)[:60]}") from None
    spec = _FIELDS[section]
    if not isinstance(obj, dict) or set(obj) != set(spec):
        raise StateError(f"a {section} value is an object with exactly {sorted(spec)}")
    for name, types in spec.items():
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, types):
            raise StateError(f"{section}.{name} has the wrong type ({type(v).__name__})")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise StateError(f"{section}.{name} is longer than {MAX_TEXT} characters")
    for name in ("at", "until", "opened", "closed"):
        t = obj.get(name)
        if name in spec and t is not None and (not math.isfinite(t) or not 0 <= t < 1e11):
            raise StateError(f"{section}.{name} is unix seconds")
    if section == "registry":
        macs = obj["macs"]
        if len(macs) > MAX_MACS or not all(isinstance(m, str) and MAC_PATTERN.fullmatch(m) for m in macs):
            raise StateError(f"registry.macs is a list of at most {MAX_MACS} lower-case MAC addresses")
        if not NAME_PATTERN.fullmatch(obj["role"]):
            raise StateError("registry.role is a name (a-z, 0-9, _ . -)")
    elif section == "heads" and not 0 <= obj["seq"] < MAX_CLOCK:
        raise StateError("heads.seq is a count")
    elif section == "quarantine":
        if not MAC_PATTERN.fullmatch(obj["target"]):
            _spiffe(obj["target"], "quarantine.target")
        macs = obj["macs"]
        if len(macs) > MAX_MACS or not all(isinstance(m, str) and MAC_PATTERN.fullmatch(m) for m in macs):
            raise StateError(f"quarantine.macs is a list of at most {MAX_MACS} lower-case MAC addresses")
    elif section == "incidents" and not (NAME_PATTERN.fullmatch(obj["kind"]) and NAME_PATTERN.fullmatch(
            obj["severity"])):
        raise StateError("incidents.kind and incidents.severity are names (a-z, 0-9, _ . -)")
    elif section == "revocations":
        _spiffe(obj["by"], "revocations.by")
        serials = obj["serials"]
        if len(serials) > MAX_SERIALS or not all(isinstance(x, str) and SERIAL_PATTERN.fullmatch(x)
                                                 for x in serials):
            raise StateError(f"revocations.serials is a list of at most {MAX_SERIALS} lower-case hex serials")
    return obj


def encode_value(section: str, obj: Mapping[str, Any]) -> str:
    """The JSON text of a value, checked as a receiver will check it."""
    text = canonical(obj)
    decode_value(section, text)
    return text


# ---- who may write what -------------------------------------------------------------------------

def owner_of(section: str, key: str, value: Mapping[str, Any] | None = None) -> str:
    """The SPIFFE ID whose entry ``key`` is (for a revocation: the revoker that wrote it)."""
    if section in ("registry", "heads"):
        return key
    if section in ("quarantine", "incidents"):
        return key.split(" ", 1)[0]
    return str((value or {}).get("by", ""))


def owner_allows(section: str, key: str, author: str, policy: Policy) -> bool:
    """May ``author`` set or delete ``key`` of ``section``?"""
    if section in ("registry", "heads"):
        return key == author
    if section in ("quarantine", "incidents"):
        return key.startswith(author + " ")
    if section == "revocations":
        return author in policy.revokers
    return False


def _key_is_well_formed(section: str, key: str, value: Mapping[str, Any]) -> bool:
    if section == "quarantine":
        return key == f"{owner_of(section, key)} {value['target']}"
    if section == "incidents":
        return bool(INCIDENT_ID_PATTERN.fullmatch(key.split(" ", 1)[-1]))
    if section == "revocations":
        return key != value["by"]
    return True


def check_changes(author: str, before: Snapshot, after: Snapshot, policy: Policy) -> Refusal | None:
    """Judge what an update of ``author`` changed: ``before`` and ``after`` are the document read
    out before and after applying it (to a copy). None when every change is the author's to make."""
    unknown = set(after) - set(SECTIONS)
    if unknown:
        return Refusal(Reason.UNKNOWN_SECTION, f"sections {sorted(unknown)[:3]} are not part of the state")
    for section in SECTIONS:
        old, new = before.get(section, {}), after.get(section, {})
        for key in set(old) | set(new):
            if old.get(key) == new.get(key):
                continue
            if not owner_allows(section, key, author, policy):
                if section == "revocations":
                    return Refusal(Reason.NOT_REVOKER, f"{author} is not one of the mesh's revokers")
                return Refusal(Reason.FOREIGN_WRITE, f"{author} may not write {section}[{key[:80]!r}]")
            if key in new:
                try:
                    value = decode_value(section, new[key])
                    _spiffe(owner_of(section, key, value), f"the owner of {section}[{key[:80]!r}]")
                    if section == "revocations":
                        _spiffe(key, "a revoked node")
                except StateError as exc:
                    return Refusal(Reason.BAD_VALUE, f"{section}[{key[:80]!r}]: {exc}")
                if not _key_is_well_formed(section, key, value) or (
                        section == "revocations" and value["by"] != author):
                    return Refusal(Reason.BAD_VALUE, f"{section}[{key[:80]!r}] does not match its value")
    for section, bound in (("incidents", MAX_INCIDENTS), ("quarantine", MAX_QUARANTINE)):
        mine = sum(1 for k in after.get(section, {}) if k.startswith(author + " "))
        if mine > bound:
            return Refusal(Reason.OVER_BOUND, f"{author} holds {mine} {section} entries, at most {bound}")
    return None


def check_clients(author: str, before: Mapping[int, int], after: Mapping[int, int], start: int,
                  end: int) -> Refusal | None:
    """Did the update fill exactly the author's clock range ``[start, end)`` and nothing else?
    ``before``/``after`` are the state vectors of the copy it was applied to."""
    own = client_id(author)
    moved = {c for c in set(before) | set(after) if before.get(c, 0) != after.get(c, 0)}
    if moved - {own}:
        return Refusal(Reason.FOREIGN_CLIENT, f"the update of {author} carries items of other clients")
    if before.get(own, 0) != start or after.get(own, 0) != end:
        return Refusal(Reason.GAP, f"{author}'s update fills [{start}, {end}) but the document went "
                                   f"from {before.get(own, 0)} to {after.get(own, 0)}")
    return None


def own_entries(view: Snapshot, author: str, policy: Policy) -> dict[str, dict[str, str]]:
    """What ``author`` writes again into a new epoch: its own entries, and every revocation if it
    is a revoker (``heads`` are not carried: each epoch counts from zero)."""
    out: dict[str, dict[str, str]] = {}
    for section in SECTIONS:
        if section == "heads":
            continue
        for key, text in view.get(section, {}).items():
            if section == "revocations" and author in policy.revokers:
                value = dict(decode_value(section, text), by=author)
                out.setdefault(section, {})[key] = canonical(value)
            elif section != "revocations" and owner_of(section, key) == author:
                out.setdefault(section, {})[key] = text
    return out


def incidents_to_drop(mine: Mapping[str, Mapping[str, Any]], adding: Iterable[str]) -> list[str]:
    """The keys of an author's incidents (``mine``: key -> value) to delete so that, with the keys
    ``adding`` written, it holds at most :data:`MAX_INCIDENTS`: closed ones first, oldest first."""
    new = set(adding)
    kept = [k for k in mine if k not in new]
    over = len(kept) + len(new) - MAX_INCIDENTS
    if over <= 0:
        return []
    kept.sort(key=lambda k: (mine[k].get("closed") is None, mine[k].get("at", 0)))
    return kept[:over]


def incident_value(name: str, data: Mapping[str, Any], now: float) -> dict[str, Any] | None:
    """The ``incidents`` value a heal loop event stands for: ``incident_opened`` (``kind``,
    ``target``, ``severity``, ``opened``) or ``incident_closed`` (``incident``: the closed
    incident's record); None for any other event or one that lacks these fields."""
    try:
        if name == "incident_opened":
            return {"kind": str(data["kind"]), "target": str(data["target"])[:MAX_TEXT],
                    "severity": str(data.get("severity", "warning")), "opened": float(data.get("opened", now)),
                    "closed": None, "summary": "open", "at": now}
        if name == "incident_closed":
            inc = data["incident"]
            return {"kind": str(inc["symptom"]["kind"]), "target": str(inc["symptom"]["target"])[:MAX_TEXT],
                    "severity": str(inc["severity"]), "opened": float(inc["opened"]),
                    "closed": float(inc["closed"] if inc.get("closed") is not None else now),
                    "summary": str(inc.get("resolution") or "closed")[:MAX_TEXT], "at": now}
    except (KeyError, TypeError, ValueError):
        return None
    return None


def quarantine_changes(author: str, mine: Mapping[str, Mapping[str, Any]], held: Iterable[Mapping[str, Any]],
                       now: float) -> dict[str, dict[str, Any] | None]:
    """The ``quarantine`` changes that make an author's entries (``mine``: key -> value) what its
    guard holds now (``held``: ``target``, ``macs``, ``reason``, ``until``): an entry set where it
    is new or changed (an expiry that moved by less than a second is the same: the guard counts on
    the monotonic clock), deleted where the guard no longer holds it or its time is up."""
    want: dict[str, dict[str, Any]] = {}
    for q in sorted(held, key=lambda q: -float(q["until"]))[:MAX_QUARANTINE]:
        if float(q["until"]) <= now:
            continue
        want[f"{author} {q['target']}"] = {"target": q["target"], "macs": sorted(q["macs"])[:MAX_MACS],
                                           "reason": str(q["reason"])[:MAX_TEXT], "until": float(q["until"]),
                                           "at": now}
    out: dict[str, dict[str, Any] | None] = {k: None for k in mine if k not in want}
    for key, value in want.items():
        old = mine.get(key)
        if old is None or any(old.get(f) != value[f] for f in ("target", "macs", "reason")) or abs(
                float(old.get("until", 0)) - value["until"]) >= 1.0:
            out[key] = value
    return out


def authors(snapshot: Snapshot) -> frozenset[str]:
    """The nodes that wrote in an epoch (each write bumps its ``heads``)."""
    return frozenset(snapshot.get("heads", {}))


def merge_epochs(current: Snapshot, previous: Snapshot | None) -> dict[str, dict[str, str]]:
    """A node's view: the newest epoch, plus the previous epoch's entries of authors that have not
    written in the newest yet (they join it at their next sync)."""
    view = {s: dict(current.get(s, {})) for s in SECTIONS}
    if previous is None:
        return view
    moved = authors(current)
    for section in SECTIONS:
        for key, text in previous.get(section, {}).items():
            try:
                owner = owner_of(section, key, decode_value(section, text) if section == "revocations" else None)
            except StateError:
                continue
            if owner not in moved and key not in view[section]:
                view[section][key] = text
    return view


def in_force(view: Snapshot, revokers: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The revocations written by one of the mesh's revokers, decoded: revoked SPIFFE ID ->
    ``by``, ``reason``, ``at``, ``serials``. What every node acts on."""
    allowed = set(revokers)
    out = {}
    for key, text in view.get("revocations", {}).items():
        try:
            value = decode_value("revocations", text)
        except StateError:
            continue
        if value["by"] in allowed:
            out[key] = value
    return out


def revoked(view: Snapshot, revokers: Iterable[str]) -> frozenset[str]:
    """The SPIFFE IDs revoked by one of the mesh's revokers."""
    return frozenset(in_force(view, revokers))


def revocation_changes(author: str, mine: Mapping[str, Mapping[str, Any]], records: Iterable[Mapping[str, Any]],
                       now: float) -> dict[str, dict[str, Any] | None]:
    """The ``revocations`` changes that make a CA node's entries (``mine``: revoked ID -> value)
    what its CA holds revoked (``records``: ``serial`` (int or hex), ``spiffe_id`` (None when the
    CA did not issue that serial: not written, the CRL carries it), ``reason`` (None: unspecified),
    ``at`` (when revoked), ``not_after`` (None or when the certificate expires)): one entry per
    SPIFFE ID with its unexpired revoked serials (the :data:`MAX_SERIALS` most recent), the latest
    revocation's reason and time; an entry deleted once none of its certificates is valid any
    more (the CA drops them from its CRL too, and a re-enrolled node is let in again)."""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        sid, not_after = r.get("spiffe_id"), r.get("not_after")
        if not sid or (not_after is not None and float(not_after) <= now):
            continue
        try:
            sid = str(SpiffeId.parse(sid))
        except SpiffeIdError:
            continue
        if sid != author:  # a CA node does not shut itself out of the mesh it serves
            by_id.setdefault(sid, []).append(r)
    want: dict[str, dict[str, Any]] = {}
    for sid, recs in by_id.items():
        recs.sort(key=lambda r: float(r["at"]), reverse=True)
        serials = sorted({_serial_hex(r["serial"]) for r in recs[:MAX_SERIALS]})
        want[sid] = {"by": author, "reason": str(recs[0].get("reason") or "unspecified")[:MAX_TEXT],
                     "at": float(recs[0]["at"]), "serials": serials}
    out: dict[str, dict[str, Any] | None] = {k: None for k in mine if k not in want}
    out.update({k: v for k, v in want.items() if dict(mine.get(k) or {}) != v})
    return out


def _serial_hex(serial: int | str) -> str:
    return f"{serial:x}" if isinstance(serial, int) else f"{int(str(serial), 16):x}"


def should_compact(log_bytes: int, policy: Policy) -> bool:
    return log_bytes > policy.compact_at_bytes


# ---- signed updates -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Update:
    """One write of one node, as it travels: see the module doc."""

    author: str
    epoch: int
    start: int
    end: int
    at: float
    update: bytes
    chain: tuple[bytes, ...]  # the author's X509-SVID chain, DER, leaf first
    signature: bytes = b""

    @property
    def size(self) -> int:
        return len(self.update) + len(self.signature)


def signed_bytes(u: Update) -> bytes:
    author = u.author.encode()
    return (DOMAIN + struct.pack(">H", len(author)) + author + struct.pack(">IQQd", u.epoch, u.start, u.end, u.at)
            + struct.pack(">I", len(u.update)) + u.update)


def sign(u: Update, key: Any) -> Update:
    """``u`` signed with the private key of the author's SVID (ML-DSA-65, ECDSA P-256 or Ed25519)."""
    data = signed_bytes(u)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(data)
    return Update(u.author, u.epoch, u.start, u.end, u.at, u.update, u.chain, sig)


_CERT_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension)


def verify(u: Update, bundles: Bundles, now: float, *, revoked_ids: Iterable[str] = (),
           crls: Sequence[RevocationList] = ()) -> Refusal | None:
    """Is ``u`` its member author's own? None if so (its effect is judged after applying it to a copy)."""
    try:
        chain = [x509.load_der_x509_certificate(der) for der in u.chain]
        key = chain[0].public_key()
        verdict = validate_x509_svid(chain, bundles, u.at, revocations=crls)
    except _CERT_ERRORS as exc:  # a certificate from the wire, parsed lazily
        return Refusal(Reason.NOT_MEMBER, f"unreadable certificate: {type(exc).__name__}: {str(exc)[:80]}")
    if not verdict.ok:
        reason = Reason.REVOKED if verdict.reason == "revoked" else Reason.NOT_MEMBER
        return Refusal(reason, f"{verdict.reason}: {verdict.detail}")
    if str(verdict.spiffe_id) != u.author:
        return Refusal(Reason.NOT_MEMBER, f"the certificate is {verdict.spiffe_id}'s, the update says {u.author}")
    if u.author in set(revoked_ids):
        return Refusal(Reason.REVOKED, f"{u.author} is revoked")
    data = signed_bytes(u)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(u.signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(u.signature, data)  # type: ignore[union-attr,call-arg]
    except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError):
        return Refusal(Reason.BAD_SIGNATURE, f"the signature is not {u.author}'s")
    if u.at > now + MAX_SKEW:
        return Refusal(Reason.FUTURE, f"made {u.at - now:.0f} s ahead of this node's clock")
    return None


def chain_der(chain: Iterable[x509.Certificate]) -> tuple[bytes, ...]:
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)


# ---- sync messages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncStep1:
    """What the sender holds: the state vector (client id -> clock) of each epoch."""

    vectors: tuple[tuple[int, Mapping[int, int]], ...]


@dataclass(frozen=True)
class Updates:
    """Signed updates: a sync answer, or one node's new write."""

    updates: tuple[Update, ...] = field(default_factory=tuple)


Message = SyncStep1 | Updates


def _varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_vector(vector: Mapping[int, int]) -> bytes:
    """A state vector in Yjs' encoding: count, then (client, clock) pairs, all var-uints."""
    return _varuint(len(vector)) + b"".join(_varuint(c) + _varuint(k) for c, k in sorted(vector.items()))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise StateError(f"truncated: {what} needs {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def blob(self, fmt: str, limit: int, what: str) -> bytes:
        (n,) = self.unpack(fmt, what)
        if n > limit:
            raise StateError(f"{what} of {n} bytes, above {limit}")
        return self.take(n, what)

    def varuint(self, what: str) -> int:
        data, pos = self.data, self.pos  # read byte by byte in place: state vectors hold thousands
        n = shift = 0
        while True:
            if pos >= len(data):
                raise StateError(f"truncated: {what} at offset {self.pos}")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 56:
                raise StateError(f"{what}: a var-uint longer than 8 bytes")
        self.pos = pos
        if n >= MAX_CLOCK:
            raise StateError(f"{what}: {n} is above 2^53")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise StateError(f"{len(self.data) - self.pos} bytes after the message")


def decode_vector(data: bytes) -> dict[int, int]:
    r = _Reader(data)
    out = _vector(r)
    r.end()
    return out


def _vector(r: _Reader) -> dict[int, int]:
    n = r.varuint("state vector length")
    if n > MAX_VECTOR:
        raise StateError(f"a state vector of {n} clients, above {MAX_VECTOR}")
    out: dict[int, int] = {}
    for _ in range(n):
        client = r.varuint("client id")
        if client in out:
            raise StateError(f"client {client} twice in a state vector")
        out[client] = r.varuint("clock")
    return out


def _header(kind: int) -> bytes:
    return MAGIC + bytes((VERSION, kind))


def encode(msg: Message) -> bytes:
    if isinstance(msg, SyncStep1):
        if len(msg.vectors) > MAX_EPOCHS:
            raise ValueError(f"at most {MAX_EPOCHS} epochs")
        return _header(KIND_STEP1) + bytes((len(msg.vectors),)) + b"".join(
            struct.pack(">I", e) + encode_vector(v) for e, v in msg.vectors)
    chains: list[tuple[bytes, ...]] = []
    index: dict[tuple[bytes, ...], int] = {}
    body = bytearray()
    for u in msg.updates:
        if u.chain not in index:
            index[u.chain] = len(chains)
            chains.append(u.chain)
        author = u.author.encode()
        body += struct.pack(">HH", index[u.chain], len(author)) + author
        body += struct.pack(">IQQd", u.epoch, u.start, u.end, u.at)
        body += struct.pack(">I", len(u.update)) + u.update + struct.pack(">H", len(u.signature)) + u.signature
    head = bytearray(_header(KIND_UPDATES) + struct.pack(">H", len(chains)))
    for chain in chains:
        head.append(len(chain))
        for der in chain:
            head += struct.pack(">H", len(der)) + der
    return bytes(head) + struct.pack(">H", len(msg.updates)) + bytes(body)


def decode(data: bytes) -> Message:
    """A sync message from a peer, strictly; :class:`StateError` on anything else."""
    if not isinstance(data, (bytes, bytearray)):
        raise StateError("a sync message is bytes")
    if len(data) > MAX_MESSAGE:
        raise StateError(f"a message of {len(data)} bytes, above {MAX_MESSAGE}")
    r = _Reader(bytes(data))
    if r.take(4, "magic") != MAGIC:
        raise StateError("not an x0tta-fleet-state message")
    version, kind = r.unpack(">BB", "header")
    if version != VERSION:
        raise StateError(f"version {version}: this node reads {VERSION}")
    if kind == KIND_STEP1:
        msg: Message = _step1(r)
    elif kind == KIND_UPDATES:
        msg = _updates(r)
    else:
        raise StateError(f"unknown message kind {kind}")
    r.end()
    return msg


def _step1(r: _Reader) -> SyncStep1:
    (n,) = r.unpack(">B", "epoch count")
    if n > MAX_EPOCHS:
        raise StateError(f"{n} epochs, at most {MAX_EPOCHS}")
    vectors = []
    for _ in range(n):
        (epoch,) = r.unpack(">I", "epoch")
        if any(e == epoch for e, _ in vectors):
            raise StateError(f"epoch {epoch} twice")
        vectors.append((epoch, _vector(r)))
    return SyncStep1(tuple(vectors))


def _updates(r: _Reader) -> Updates:
    (nchains,) = r.unpack(">H", "chain count")
    if nchains > MAX_CHAINS:
        raise StateError(f"{nchains} certificate chains, at most {MAX_CHAINS}")
    chains = []
    for _ in range(nchains):
        (length,) = r.unpack(">B", "chain length")
        if not 1 <= length <= MAX_CHAIN:
            raise StateError(f"a chain of {length} certificates: 1 to {MAX_CHAIN}")
        chains.append(tuple(r.blob(">H", MAX_CERT, "certificate") for _ in range(length)))
    (n,) = r.unpack(">H", "update count")
    if n > MAX_UPDATES:
        raise StateError(f"{n} updates, at most {MAX_UPDATES}")
    out = []
    for _ in range(n):
        ci, alen = r.unpack(">HH", "update head")
        if ci >= nchains:
            raise StateError(f"chain {ci} of {nchains}")
        try:
            author = r.take(alen, "author").decode()
        except UnicodeDecodeError:
            raise StateError("the author is not UTF-8") from None
        if str(_spiffe(author, "the author")) != author:
            raise StateError("the author is not a SPIFFE ID in its normal form")
        epoch, start, end, at = r.unpack(">IQQd", "update range")
        if not start < end < MAX_CLOCK or not math.isfinite(at) or not 0 <= at < 1e11:
            raise StateError(f"clock range [{start}, {end}) or time {at} out of range")
        update = r.blob(">I", MAX_UPDATE, "update")
        signature = r.blob(">H", MAX_SIGNATURE, "signature")
        out.append(Update(author, epoch, start, end, at, update, chains[ci], signature))
    return Updates(tuple(out))


def missing(log: Iterable[Update], vector: Mapping[int, int] | None) -> list[Update]:
    """The updates of ``log`` whose range a node with ``vector`` lacks (all of them when it does not
    hold the epoch), in an order it can apply them: by author, then clock."""
    need = [u for u in log if vector is None or u.end > vector.get(client_id(u.author), 0)]
    return sorted(need, key=lambda u: (u.author, u.start))


def split(updates: Sequence[Update], limit: int = MAX_MESSAGE) -> list[Updates]:
    """``updates`` as messages each encoding to at most ``limit`` bytes (each chain counted once
    per message). An update too large for ``limit`` on its own is left out: it cannot be sent."""
    out: list[Updates] = []
    batch: list[Update] = []
    chains: set[tuple[bytes, ...]] = set()
    size = _EMPTY_UPDATES
    for u in updates:
        cost = _update_cost(u) + (0 if u.chain in chains else _chain_cost(u.chain))
        if batch and (size + cost > limit or len(batch) >= MAX_UPDATES):
            out.append(Updates(tuple(batch)))
            batch, chains, size = [], set(), _EMPTY_UPDATES
            cost = _update_cost(u) + _chain_cost(u.chain)
        if size + cost > limit:
            continue
        batch.append(u)
        chains.add(u.chain)
        size += cost
    if batch:
        out.append(Updates(tuple(batch)))
    return out


_EMPTY_UPDATES = len(MAGIC) + 2 + 2 + 2  # header, chain count, update count


def _update_cost(u: Update) -> int:
    return 4 + len(u.author.encode()) + 28 + 4 + len(u.update) + 2 + len(u.signature)


def _chain_cost(chain: tuple[bytes, ...]) -> int:
    return 1 + sum(2 + len(der) for der in chain)
