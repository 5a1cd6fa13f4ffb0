"""One node's copy of the replicated mesh state: the pycrdt documents, the signed log, the sync.

The rules (who may write what, the signed update, the sync messages, compaction) are pure, in
:mod:`x0tta.fleet.core.state`; this module holds what has state: a pycrdt ``Doc`` per epoch (the
two newest), the log of signed updates each was built from (what a sync answer relays), and the
count of refused updates per reason. It does no I/O and reads no clock (``now`` is passed in);
signing and verifying cost milliseconds with ML-DSA-65, so a service calls it off the event loop.

A write (:meth:`Replica.write`) is one pycrdt transaction on the newest epoch's document, with
the node's client id; its Yjs update is signed into an :class:`~x0tta.fleet.core.state.Update`
and logged. A received update is verified, applied to a copy of the document and judged by what
it changed (:func:`~x0tta.fleet.core.state.check_changes`) before it touches the document itself:
a CRDT cannot take a merged update back.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from x0tta.fleet.core import state as st
from x0tta.fleet.core.state import Reason, Refusal
from x0tta.identity.core.types import Bundles, RevocationList


def _vector(doc: pycrdt.Doc) -> dict[int, int]:
    return st.decode_vector(doc.get_state())


def _snapshot(doc: pycrdt.Doc) -> dict[str, dict[str, Any]]:
    """The document's maps as plain data; an unknown root shows as a section of its own name. Read
    through Yrs' JSON encoding of each map: one call instead of a transaction per key."""
    out: dict[str, dict[str, Any]] = {}
    for name in set(doc.keys()) | set(st.SECTIONS):
        out[name] = json.loads(str(doc.get(name, type=pycrdt.Map))) if name in st.SECTIONS else {"": name}
    return out


def _copy(doc: pycrdt.Doc) -> pycrdt.Doc:
    twin: pycrdt.Doc = pycrdt.Doc()
    twin.apply_update(doc.get_update())
    return twin


@dataclass
class Epoch:
    number: int
    doc: pycrdt.Doc
    log: list[st.Update] = field(default_factory=list)
    log_bytes: int = 0

    def append(self, u: st.Update) -> None:
        self.log.append(u)
        self.log_bytes += u.size


@dataclass(frozen=True)
class Outcome:
    """What became of one received update: applied, a duplicate, or refused with its reason."""

    update: st.Update
    refusal: Refusal | None = None
    duplicate: bool = False

    @property
    def applied(self) -> bool:
        return self.refusal is None and not self.duplicate


class Replica:
    """The replicated state as one node holds it.

    ``key`` is the private key of the node's SVID and ``chain`` its certificate chain (DER, leaf
    first), ``author`` its SPIFFE ID; ``bundles`` and ``crls`` decide who is a member.
    """

    def __init__(self, author: str, key: Any, chain: Sequence[bytes], policy: st.Policy, bundles: Bundles,
                 *, crls: Sequence[RevocationList] = ()) -> None:
        self.author = author
        self.key = key
        self.chain = tuple(chain)
        self.policy = policy
        self.bundles = bundles
        self.crls = tuple(crls)
        self.client = st.client_id(author)
        self.epochs: dict[int, Epoch] = {}
        self.refused: Counter[Reason] = Counter()
        self.duplicates = 0
        self.applied = 0
        self._start_epoch(0)

    # ---- reading --------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return max(self.epochs)

    def _previous(self) -> Epoch | None:
        older = [e for e in self.epochs if e != self.epoch]
        return self.epochs[max(older)] if older else None

    def view(self) -> dict[str, dict[str, str]]:
        """Every section as this node sees it (the newest epoch, and what the one before still adds)."""
        prev = self._previous()
        return st.merge_epochs(_snapshot(self.epochs[self.epoch].doc),
                               _snapshot(prev.doc) if prev is not None else None)

    def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The view with every value decoded, and the revoked nodes' own entries left out."""
        view = self.view()
        gone = st.revoked(view, self.policy.revokers)
        return {section: {k: st.decode_value(section, v) for k, v in sorted(entries.items())
                          if section == "revocations" or st.owner_of(section, k) not in gone}
                for section, entries in view.items() if section != "heads"}

    def revocations(self) -> dict[str, dict[str, Any]]:
        """The revocations in force: written by one of the mesh's revokers (revoked ID -> value)."""
        return st.in_force(self.view(), self.policy.revokers)

    def log_bytes(self) -> int:
        return sum(e.log_bytes for e in self.epochs.values())

    # ---- writing --------------------------------------------------------------------------------

    def _start_epoch(self, number: int) -> Epoch:
        ep = Epoch(number, pycrdt.Doc(client_id=self.client))
        self.epochs[number] = ep
        for old in sorted(self.epochs)[: -st.MAX_EPOCHS]:
            del self.epochs[old]
        return ep

    def write(self, now: float, changes: Mapping[str, Mapping[str, Mapping[str, Any] | None]]) -> st.Update:
        """Set (a value) or delete (None) entries of this node, in one signed update of the newest
        epoch: ``{"registry": {my_id: {...}}, "quarantine": {f"{my_id} {target}": None}}``."""
        encoded = {}
        for section, entries in changes.items():
            for key, value in entries.items():
                if not st.owner_allows(section, key, self.author, self.policy):
                    raise st.StateError(f"{self.author} may not write {section}[{key!r}]")
                encoded[(section, key)] = None if value is None else st.encode_value(section, value)
        return self._commit(self.epochs[self.epoch], now, encoded)

    def _commit(self, ep: Epoch, now: float, encoded: Mapping[tuple[str, str], str | None]) -> st.Update:
        doc = ep.doc
        start = _vector(doc).get(self.client, 0)
        heads = doc.get("heads", type=pycrdt.Map)
        seq = st.decode_value("heads", heads[self.author])["seq"] + 1 if self.author in heads else 1
        # The transaction's own update, not a diff against ``before``: a diff carries the whole delete
        # set of the document, other nodes' deletions among them, which a receiver that has not yet
        # had them would judge as this node deleting their entries.
        made: list[bytes] = []
        sub = doc.observe(lambda event: made.append(event.update))
        try:
            with doc.transaction():
                for (section, key), text in encoded.items():
                    m = doc.get(section, type=pycrdt.Map)
                    if text is None:
                        if key in m:
                            del m[key]
                    else:
                        m[key] = text
                heads[self.author] = st.encode_value("heads", {"seq": seq, "at": now})
        finally:
            doc.unobserve(sub)
        end = _vector(doc)[self.client]
        update = made[0] if len(made) == 1 else pycrdt.merge_updates(*made)
        u = st.sign(st.Update(self.author, ep.number, start, end, now, update, self.chain), self.key)
        ep.append(u)
        return u

    def own(self, section: str) -> dict[str, dict[str, Any]]:
        """This node's own entries of ``section`` as it reads them, decoded."""
        return {k: st.decode_value(section, v) for k, v in self.view()[section].items()
                if st.owner_of(section, k) == self.author}

    def incident_changes(self, values: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The changes that write incident summaries (incident id -> value), with this node's
        summaries past :data:`MAX_INCIDENTS` deleted (:func:`~x0tta.fleet.core.state.incidents_to_drop`)."""
        keyed: dict[str, Any] = {f"{self.author} {i}": dict(v) for i, v in values.items()}
        changes: dict[str, Any] = dict.fromkeys(st.incidents_to_drop(self.own("incidents"), keyed))
        changes.update(keyed)
        return {"incidents": changes}

    def add_incident(self, now: float, incident_id: str, kind: str, summary: str, *, target: str = "",
                     severity: str = "warning", opened: float | None = None,
                     closed: float | None = None) -> st.Update:
        """Record an incident summary, dropping this node's closed, then oldest, past :data:`MAX_INCIDENTS`."""
        value = {"kind": kind, "target": target, "severity": severity, "opened": now if opened is None else opened,
                 "closed": closed, "summary": summary[: st.MAX_TEXT], "at": now}
        return self.write(now, self.incident_changes({incident_id: value}))

    def compact(self, now: float) -> st.Update:
        """Start the next epoch: a fresh document with this node's own entries written again."""
        return self._join(self.epoch + 1, now)

    def _join(self, number: int, now: float) -> st.Update:
        carry = st.own_entries(self.view(), self.author, self.policy)
        ep = self._start_epoch(number)
        encoded = {(s, k): v for s, entries in carry.items() for k, v in entries.items()}
        return self._commit(ep, now, encoded)

    def maybe_compact(self, now: float) -> st.Update | None:
        if st.should_compact(self.epochs[self.epoch].log_bytes, self.policy):
            return self.compact(now)
        return None

    # ---- sync -----------------------------------------------------------------------------------

    def step1(self) -> bytes:
        return st.encode(st.SyncStep1(tuple((e, _vector(ep.doc)) for e, ep in sorted(self.epochs.items()))))

    def missing(self, step1: st.SyncStep1) -> list[st.Update]:
        """Every logged update a peer that sent ``step1`` lacks, in the order it can apply them."""
        theirs = dict(step1.vectors)
        need: list[st.Update] = []
        for number, ep in sorted(self.epochs.items()):
            if theirs and number < min(theirs):
                continue  # the peer has moved past this epoch and would refuse it
            need += st.missing(ep.log, theirs.get(number))
        return need

    def answer(self, step1: st.SyncStep1, limit: int = st.MAX_MESSAGE) -> list[bytes]:
        """The sync answer to a peer's step 1: every logged update it lacks, as messages."""
        return [st.encode(m) for m in st.split(self.missing(step1), limit)]

    def page(self, step1: st.SyncStep1, limit: int) -> bytes:
        """The first message of the answer, at most ``limit`` bytes (an empty ``Updates`` when the
        peer lacks nothing): a peer that applies it and asks again gets the next."""
        pages = st.split(self.missing(step1), limit)
        return st.encode(pages[0] if pages else st.Updates())

    def restore(self, log: Sequence[st.Update], now: float) -> list[Outcome]:
        """Rebuild the documents from a persisted log (this node's own updates among them), epoch by
        epoch, every update checked again; joins no epoch and writes nothing."""
        for number in sorted({u.epoch for u in log}):
            if number not in self.epochs:
                self._start_epoch(number)
        return [self.apply(u, now) for u in sorted(log, key=lambda u: (u.epoch, u.author, u.start))]

    def receive(self, data: bytes, now: float) -> tuple[list[bytes], list[Outcome]]:
        """Handle one message from a peer: the replies to send back to it and what became of each
        update the message carried. A step 1 is answered with the updates the peer lacks; an
        update of a newer epoch makes this node join it (:meth:`compact` does the same), and its
        own update of the new epoch is among the replies (other peers get it at their next sync).
        Raises :class:`~x0tta.fleet.core.state.StateError` on a message that does not decode."""
        msg = st.decode(data)
        if isinstance(msg, st.SyncStep1):
            return self.answer(msg), []
        joined: list[st.Update] = []
        outcomes = [self.apply(u, now, joined.append) for u in msg.updates]
        return [st.encode(m) for m in st.split(joined)], outcomes

    def apply(self, u: st.Update, now: float,
              on_new_epoch: Callable[[st.Update], None] | None = None) -> Outcome:
        """Verify, judge and merge one update; a refused one is counted by reason. When it makes
        this node join a newer epoch, ``on_new_epoch`` gets the node's own first update there."""
        outcome = self._apply(u, now, on_new_epoch)
        if outcome.refusal is not None:
            self.refused[outcome.refusal.reason] += 1
        elif outcome.duplicate:
            self.duplicates += 1
        else:
            self.applied += 1
        return outcome

    def _apply(self, u: st.Update, now: float, on_new_epoch: Callable[[st.Update], None] | None) -> Outcome:
        if u.epoch < min(self.epochs):
            return Outcome(u, Refusal(Reason.STALE_EPOCH, f"epoch {u.epoch} is older than {min(self.epochs)}"))
        if u.epoch > self.epoch + st.MAX_EPOCH_STEP:
            return Outcome(u, Refusal(Reason.EPOCH_JUMP, f"epoch {u.epoch} is more than {st.MAX_EPOCH_STEP} "
                                                         f"ahead of {self.epoch}"))
        refusal = st.verify(u, self.bundles, now, revoked_ids=st.revoked(self.view(), self.policy.revokers),
                            crls=self.crls)
        if refusal is not None:
            return Outcome(u, refusal)
        if u.epoch > self.epoch:
            joined = self._join(u.epoch, now)  # a peer compacted: this node follows
            if on_new_epoch is not None:
                on_new_epoch(joined)
        ep = self.epochs.get(u.epoch)
        if ep is None:  # between the two held epochs: dropped already
            return Outcome(u, Refusal(Reason.STALE_EPOCH, f"epoch {u.epoch} is no longer held"))
        have = _vector(ep.doc).get(st.client_id(u.author), 0)
        if u.end <= have:
            return Outcome(u, duplicate=True)
        twin = _copy(ep.doc)
        before, vec_before = _snapshot(twin), _vector(twin)
        try:
            twin.apply_update(u.update)
            rest = pycrdt.get_update(u.update, twin.get_state())
        except Exception as exc:  # pycrdt raises ValueError on a bad update; it is the author's, signed
            return Outcome(u, Refusal(Reason.MALFORMED, f"the Yjs update does not apply: {str(exc)[:80]}"))
        if rest[:1] != b"\x00":  # structs left pending: they wait on items this node lacks
            return Outcome(u, Refusal(Reason.GAP, "the update depends on items this node lacks"))
        refusal = st.check_clients(u.author, vec_before, _vector(twin), u.start, u.end) or st.check_changes(
            u.author, before, _snapshot(twin), self.policy)
        if refusal is not None:
            return Outcome(u, refusal)
        ep.doc.apply_update(u.update)
        ep.append(u)
        return Outcome(u)
