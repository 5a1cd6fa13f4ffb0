"""The ``meshstate`` subsystem: this node's copy of the replicated mesh state, in the agent.

It waits for the node's SVID (the identity subsystem's source), builds the
:class:`~x0tta.fleet.replica.Replica` with the SVID's key, rebuilds it from its log on disk
(``<state_dir>/meshstate/state.db``), hands the sync's two methods to the peer subsystem (given by
the composition root as ``carrier``) and writes the node's registry entry; then it pulls from every
peer session every ``[meshstate] interval``, and from a session as soon as it comes up (the
carrier's ``subscribe``, when it has one). A rotated SVID, bundle or revocation list is taken at
the next round. docs/fleet.md, "Replicated mesh state", says how the state converges.

What else it writes comes from the other subsystems through the composition root, never blocking
them: :meth:`MeshStateService.heal_event` (a heal loop listener) takes the opening and closing of
each incident, :meth:`MeshStateService.quarantine_changed` (the guard's quarantines and releases)
asks for this node's quarantine entries to be made what :attr:`MeshStateService.quarantines`
returns, and :meth:`MeshStateService.revocations_changed` (on the CA node: the built-in CA's
revocations, read by :attr:`MeshStateService.ca_revocations`) asks for this node's revocation
entries to be made what its CA holds revoked. Each only notes the write for the writer task
(incident summaries by id, at most :data:`MAX_PENDING`; the quarantines and the revocations each
as one "look again"), which makes one signed update of what is pending on the sync's worker
thread; the quarantines and the CA's revocations are looked at again every round too, so a
quarantine that ran out leaves the state within an ``interval``, and a revocation made with
``x0tta ca revoke`` enters it within one. A write noted while the subsystem
is not running is dropped and counted.

What it acts on: the revocations in force (written by one of the mesh's revokers,
:func:`revokers`) go to every listener of :attr:`MeshStateService.on_revocations` (the composition
root feeds the peer subsystem's deny-list) whenever they change: at start (from the log on disk),
after received updates applied, and every round. A revocation written by any other node is refused
by the rules (``not_revoker``) and counted.

Metrics (``x0tta_meshstate_``): ``updates_total{result}`` (``applied``, ``duplicate`` or the
refusal's reason), ``epoch``, ``log_bytes``, ``nodes`` (registry entries),
``writes_total{kind}`` (signed writes of this node: ``registry``, ``incident``, ``quarantine``,
``revocation``), ``writes_dropped_total{kind}`` (writes noted while not running, past
:data:`MAX_PENDING`, or refused by the rules) and ``revocations`` (the revocations in force this
node acts on). Admin command ``meshstate.show``: the state as this node reads it, its epoch
and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter, Gauge

from x0tta import __version__
from x0tta.clock import SYSTEM, Clock
from x0tta.common.spiffe_id import SpiffeId
from x0tta.common.subsystem import Context, Subsystem
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica
from x0tta.fleet.statesync import Carrier, StateSync

MAX_PENDING = 4 * st.MAX_INCIDENTS  # incident summaries waiting for the writer; the oldest goes past it
KINDS = ("registry", "incident", "quarantine", "revocation")
Revocations = Mapping[str, Mapping[str, Any]]  # revoked SPIFFE ID -> by, reason, at, serials


def revokers(settings: Any) -> frozenset[str]:
    """Whose revocations this node takes (docs/fleet.md, "Revocations"): ``[meshstate] revokers``;
    when empty, the CA nodes ``[identity] ca_ids`` names (those it renews through). Configured, so
    the same on every node: a CA node writes only when it is on its own list, since a node whose
    list lacks it would refuse its revocation and then every later update of it (a gap). A peer's
    Hello capability never makes it a revoker: anyone can claim one."""
    named = settings.meshstate.revokers or settings.identity.ca_ids
    return frozenset(str(SpiffeId.parse(x)) for x in named)


def holds_ca(settings: Any) -> bool:
    """This node holds the built-in CA: it writes the CA's revocations into the state."""
    return bool(settings.identity.ca_dir) and settings.identity.source == "builtin"


class MeshStateService(Subsystem):
    name = "meshstate"

    def __init__(self, identity: Any, carrier: Carrier, *, macs: Callable[[], Iterable[str]] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.identity = identity  # has ``async wait_source()``: the identity subsystem
        self.carrier = carrier  # has ``register_method`` and ``sessions``: the peer subsystem
        self.macs = macs
        self.clock = clock
        self.sync: StateSync | None = None
        self._counted: Tally[str] = Tally()
        # Set by the composition root: the quarantines this node's guard holds now, each a dict of
        # ``target`` (SPIFFE ID, else the MAC), ``macs``, ``reason``, ``until`` (unix seconds).
        self.quarantines: Callable[[], list[dict[str, Any]]] | None = None
        # Set by the composition root on the CA node: the built-in CA's revoked certificates, each a
        # dict of ``serial``, ``spiffe_id``, ``reason``, ``at``, ``not_after`` (blocking: a file).
        self.ca_revocations: Callable[[], list[dict[str, Any]]] | None = None
        # Called (on the loop, must not block) with the revocations in force whenever they change.
        self.on_revocations: list[Callable[[Revocations], None]] = []
        self.revocations: dict[str, dict[str, Any]] = {}  # the revocations last acted on
        self._ca_writes = False  # ca_revocations set and this node one of the mesh's revokers
        self.written: Tally[str] = Tally()  # signed writes by kind, since start
        self.dropped: Tally[str] = Tally()  # writes dropped by kind, since start
        self._pending: dict[str, dict[str, Any]] = {}  # incident id -> its summary, oldest first
        # what the writer is to look at: "incidents", "quarantines", "revocations" (the CA's), "in_force"
        self._due: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        """Whether writes handed over now are kept (the subsystem runs, its SVID there or awaited)."""
        return self._loop is not None

    # ---- what the other subsystems hand over (through the composition root) ---------------------

    def heal_event(self, name: str, incident: str | None, data: Any) -> None:
        """The heal loop's listener: an incident opened or closed becomes this node's summary of it."""
        if name not in ("incident_opened", "incident_closed") or not incident:
            return
        value = st.incident_value(name, data, self.clock.time())
        try:
            if value is None or not st.INCIDENT_ID_PATTERN.fullmatch(incident):
                raise st.StateError(f"{name} of {incident[:64]!r} is not an incident summary")
            st.encode_value("incidents", value)  # checked here, so that one bad value spoils no batch
        except st.StateError:
            self.dropped["incident"] += 1
            return
        self._note("incident", lambda: self._add_incident(incident, value))

    def quarantine_changed(self, *_args: Any) -> None:
        """The guard quarantined or released a neighbour: make this node's entries what it holds."""
        self._note("quarantine", lambda: self._mark("quarantines"))

    def revocations_changed(self) -> None:
        """The CA's revocations may have changed: make this node's revocation entries what it holds."""
        if self._ca_writes:
            self._note("revocation", lambda: self._mark("revocations"))

    def _applied(self) -> None:
        """Received updates were applied: look at the revocations in force again."""
        self._mark("in_force")

    def _mark(self, what: str) -> None:
        self._due.add(what)
        if self._wake is not None:
            self._wake.set()

    def _note(self, kind: str, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.dropped[kind] += 1
            return
        loop.call_soon_threadsafe(fn)  # the listeners may be called off the loop

    def _add_incident(self, incident: str, value: dict[str, Any]) -> None:
        self._pending.pop(incident, None)
        self._pending[incident] = value
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
            self.dropped["incident"] += 1
        self._mark("incidents")

    async def _writer(self, ctx: Context, sync: StateSync) -> None:
        """Write what is noted, one signed update at a time, on the sync's worker thread."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush(ctx, sync)
            if "in_force" in self._due:
                await self.act(ctx, sync)

    async def flush(self, ctx: Context, sync: StateSync) -> None:
        """Write the pending incident summaries and, when asked, the quarantines, in one update."""
        incidents, self._pending = self._pending, {}
        self._due.discard("incidents")
        held = None
        if "quarantines" in self._due and self.quarantines is not None:
            held = self.quarantines()
        self._due.discard("quarantines")
        revoked = None
        if "revocations" in self._due and self.ca_revocations is not None:
            self._due.discard("revocations")
            try:
                revoked = await asyncio.to_thread(self.ca_revocations)
            except Exception as exc:  # the CA directory unreadable: the next round tries again
                ctx.log.warning("meshstate_ca_unreadable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        if not incidents and held is None and revoked is None:
            return
        now = self.clock.time()

        def plan(replica: Replica) -> dict[str, dict[str, Any]]:
            changes: dict[str, dict[str, Any]] = replica.incident_changes(incidents) if incidents else {}
            if held is not None:
                changes["quarantine"] = st.quarantine_changes(replica.author, replica.own("quarantine"), held, now)
            if revoked is not None:
                mine = {k: v for k, v in replica.revocations().items() if v["by"] == replica.author}
                changes["revocations"] = st.revocation_changes(replica.author, mine, revoked, now)
            return {k: v for k, v in changes.items() if v}

        changes = await sync.call(plan, sync.replica)
        if not changes:
            return
        try:
            await sync.write(changes)
        except st.StateError as exc:  # a value the rules refuse (the heal loop's names are checked here)
            self.dropped["incident"] += len(incidents)
            self.dropped["quarantine"] += "quarantine" in changes
            self.dropped["revocation"] += "revocations" in changes
            ctx.log.warning("meshstate_write_refused", error=str(exc)[:200])
            return
        if "incidents" in changes:
            self.written["incident"] += 1
        if "quarantine" in changes:
            self.written["quarantine"] += 1
        if "revocations" in changes:
            self.written["revocation"] += 1
            ctx.log.info("meshstate_revocations_written", changed=sorted(changes["revocations"])[:20])
            await self.act(ctx, sync)

    async def act(self, ctx: Context, sync: StateSync) -> None:
        """Hand the revocations in force to :attr:`on_revocations` when they changed."""
        self._due.discard("in_force")
        now = await sync.call(sync.replica.revocations)
        if now == self.revocations:
            return
        added = sorted(set(now) - set(self.revocations))
        self.revocations = now
        ctx.log.warning("meshstate_revocations_in_force", revoked=len(now), new=added[:20])
        for listener in list(self.on_revocations):
            try:
                listener(now)
            except Exception:  # one broken consumer must not stop the others
                ctx.log.exception("meshstate_revocation_listener_failed", listener=repr(listener))

    async def run(self, ctx: Context) -> None:
        s = ctx.settings.meshstate
        # running from here: writes handed over while the SVID is awaited wait for the writer
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        source = await self.identity.wait_source()
        while not source.has_svid():
            await self.clock.sleep(1.0)
        svid = source.svid()
        key = await asyncio.to_thread(serialization.load_pem_private_key, svid.private_key_pem, None)
        policy = st.Policy(svid.spiffe_id.trust_domain, revokers(ctx.settings), s.compact_at_bytes)
        self._ca_writes = self.ca_revocations is not None and str(svid.spiffe_id) in policy.revokers
        if self.ca_revocations is not None and not self._ca_writes:  # refused everywhere: not written
            ctx.log.warning("meshstate_ca_not_revoker", author=str(svid.spiffe_id),
                            revokers=sorted(policy.revokers),
                            fix="list this CA node in [meshstate] revokers on every node, itself included")
        replica = Replica(str(svid.spiffe_id), key, st.chain_der(svid.cert_chain), policy, source.bundles(),
                          crls=source.revocations())
        page = max(16 * 1024, ctx.settings.peer.frame_max_size - 4096)  # a response frame's head and room
        sync = StateSync(replica, ctx.state_dir / "meshstate" / "state.db", clock=self.clock, interval=s.interval,
                         page_bytes=page, logger=ctx.log)
        self.sync = sync
        sync.on_applied = self._applied
        updates = Counter("x0tta_meshstate_updates_total", "Signed updates received, by what became of them",
                          ["result"], registry=ctx.registry)
        epoch = Gauge("x0tta_meshstate_epoch", "The newest epoch this node holds", registry=ctx.registry)
        log_bytes = Gauge("x0tta_meshstate_log_bytes", "Bytes of signed updates held", registry=ctx.registry)
        nodes = Gauge("x0tta_meshstate_nodes", "Registry entries this node reads", registry=ctx.registry)
        in_force = Gauge("x0tta_meshstate_revocations", "Revocations in force this node acts on",
                         registry=ctx.registry)
        writes = Counter("x0tta_meshstate_writes_total", "Signed writes of this node, by what they wrote",
                         ["kind"], registry=ctx.registry)
        dropped = Counter("x0tta_meshstate_writes_dropped_total", "Writes handed over but not made, by kind",
                          ["kind"], registry=ctx.registry)
        for kind in KINDS:
            writes.labels(kind=kind)
            dropped.labels(kind=kind)
        written_seen: Tally[str] = Tally()
        dropped_seen: Tally[str] = Tally()
        ctx.admin.register("meshstate.show", self._show)
        writer: asyncio.Task[None] | None = None
        unsubscribe: Callable[[], Any] | None = None
        pull_now = asyncio.Event()
        try:
            restored = await sync.restore()
            sync.attach(self.carrier)
            macs = await asyncio.to_thread(lambda: list(self.macs()) if self.macs is not None else [])
            await sync.write(self._entry(ctx, svid, macs))
            self.written["registry"] += 1
            ctx.log.info("meshstate_started", author=replica.author, restored=restored, epoch=replica.epoch)
            ctx.health.ok()
            writer = asyncio.create_task(self._writer(ctx, sync), name="meshstate-writer")
            # a session that comes up (a healed link, a new neighbour) is pulled from at once, not a
            # round later: what heals a partition then waits only for the peer link's redial
            subscribe = getattr(self.carrier, "subscribe", None)
            unsubscribe = subscribe(lambda change: pull_now.set() if getattr(change, "up", False) else None) \
                if subscribe is not None else None
            while True:
                pull_now.clear()
                if writer.done():
                    writer.result()  # the writer ends only by raising (the disk): the supervisor restarts
                self.quarantine_changed()  # a quarantine that ran out leaves within a round
                self.revocations_changed()  # the CA node: x0tta ca revoke enters the state within a round
                await self._refresh(source, sync)
                await sync.sync_all()
                await self.act(ctx, sync)
                in_force.set(len(self.revocations))
                counts, number, size, entries = await sync.call(self._read, replica)
                self._counted = _grow(counts, self._counted, updates, "result")
                written_seen = _grow(self.written, written_seen, writes, "kind")
                dropped_seen = _grow(self.dropped, dropped_seen, dropped, "kind")
                epoch.set(number)
                log_bytes.set(size)
                nodes.set(entries)
                with contextlib.suppress(TimeoutError):
                    await self.clock.wait_for(pull_now.wait(), s.interval)
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            self._loop = self._wake = None
            self._ca_writes = False
            sync.on_applied = None
            self.dropped["incident"] += len(self._pending)
            self._pending = {}
            await sync.close()

    def _entry(self, ctx: Context, svid: Any, found: Iterable[str]) -> dict[str, Any]:
        macs = sorted(m.lower() for m in found if st.MAC_PATTERN.fullmatch(m.lower()))[: st.MAX_MACS]
        value = {"macs": macs, "role": ctx.settings.meshstate.role, "version": __version__, "at": self.clock.time()}
        return {"registry": {str(svid.spiffe_id): value}}

    async def _refresh(self, source: Any, sync: StateSync) -> None:
        """Take a rotated SVID, bundle or revocation list (on the sync's worker thread)."""
        svid, bundles, crls = source.svid(), source.bundles(), tuple(source.revocations())

        def take(replica: Replica) -> None:
            chain = st.chain_der(svid.cert_chain)
            if chain != replica.chain:
                replica.key = serialization.load_pem_private_key(svid.private_key_pem, None)
                replica.chain = chain
            replica.bundles, replica.crls = bundles, crls

        await sync.call(take, sync.replica)

    @staticmethod
    def _read(replica: Replica) -> tuple[Tally[str], int, int, int]:
        counts: Tally[str] = Tally({str(k): v for k, v in replica.refused.items()})
        counts["applied"], counts["duplicate"] = replica.applied, replica.duplicates
        return counts, replica.epoch, replica.log_bytes(), len(replica.view()["registry"])

    async def _show(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.sync is None:
            return {"ready": False}

        def show(r: Replica) -> dict[str, Any]:
            return {"ready": True, "author": r.author, "epoch": r.epoch, "epochs": sorted(r.epochs),
                    "log_bytes": r.log_bytes(), "applied": r.applied, "duplicates": r.duplicates,
                    "refused": {str(k): v for k, v in r.refused.items()}, "revokers": sorted(r.policy.revokers),
                    "acted_on": sorted(self.revocations), "malformed": self.sync.malformed
                    if self.sync is not None else 0, "written": dict(self.written), "dropped": dict(self.dropped),
                    "state": r.state()}

        return await self.sync.call(show, self.sync.replica)  # type: ignore[no-any-return]


def _grow(now: Tally[str], seen: Tally[str], counter: Any, label: str) -> Tally[str]:
    """Add to ``counter`` what ``now`` counts beyond ``seen`` (a count kept since start, exported by
    its growth); returns the new ``seen``."""
    for value, n in now.items():
        if n > seen[value]:
            counter.labels(**{label: value}).inc(n - seen[value])
    return Tally(now)
