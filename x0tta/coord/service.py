"""The coord subsystem: this node's part in coordinated rollouts, as a client of the etcd cluster.

Runs once ``[coord] endpoints`` is set (docs/coordination.md). Every ``poll_interval`` it
registers the node (``nodes/<node>`` under a lease of its own), reads the rollouts
(:class:`x0tta.coord.store.RolloutStore`) and, for each one whose operator signature verifies:

* **its turn**: when the state machine lets it (:func:`x0tta.coord.core.rollout.may_take_turn`),
  it grants a lease of ``turn_ttl``, creates a free turn key under it (the revision of that
  create is the turn's token), and then, every write fenced by the token: records the start of
  its apply interval and ``applying``; samples its health; applies the change through the
  handler the wiring gave it, but only while the lease is certainly held (its local deadline, on
  the monotonic clock, which runs on while the process is stopped, is checked just before);
  ``soaking``; soaks ``soak`` seconds; judges its health against the sample before
  (:func:`~x0tta.coord.core.rollout.judge`); records the report and the end of the interval;
  deletes its turn key. If the turn is lost on the way (the lease expired: the node was frozen or
  cut off), the store refuses its writes; the node undoes its change, notes the refusal
  (``fenced/<node>/<token>``, unfenced) and takes a turn again later.
* **a stale turn**: a node the state shows in turn whose turn key is gone (its lease expired) is
  put back in the queue by whoever sees it first, so a dead holder does not stop the rollout.
* **a change it refuses**: a handler that raises a ``PermanentError`` (a setting this node does
  not manage, a value of the wrong type) changed nothing; the node reports itself worse at once
  (no soak), so the abort criteria decide, and has nothing to undo on rollback.
* **rollback**: while the rollout is aborting, the node that applied last among those still
  changed undoes its change and records it; then the one before it, down to the first.

When etcd is unreachable the node reports ``coord_etcd_unreachable`` and keeps polling; nothing
else of the agent depends on it.

Metrics: ``x0tta_coord_etcd_up``, ``x0tta_coord_turns_total{outcome}``,
``x0tta_coord_fenced_writes_total``, ``x0tta_coord_applied_total``,
``x0tta_coord_rolled_back_total``, ``x0tta_coord_etcd_requests_total``,
``x0tta_coord_etcd_failovers_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from x0tta.clock import SYSTEM, Clock
from x0tta.common.errors import CapabilityMissing, PermanentError, X0ttaError
from x0tta.common.health import Condition
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.coord import CoordSettings
from x0tta.config.schema import AgentSettings
from x0tta.coord.conditions import (
    COORD_CERTIFICATE_UNUSABLE,
    COORD_CONNECTING,
    COORD_ETCD_UNREACHABLE,
    COORD_ROLLOUT_UNVERIFIED,
    COORD_TURN_LOST,
)
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import FINAL, Change, Phase, Rollout, Sample
from x0tta.coord.etcd import (
    CertificateRefused,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    LeaseLost,
    absent,
    delete,
    mod_revision_is,
    put,
)
from x0tta.coord.store import RolloutStore, TurnLost, View

DEADLINE_MARGIN = 0.25  # share of the TTL kept in reserve: apply only with this much lease left


class ChangeHandler(Protocol):
    """How a change reaches this node; the wiring provides it."""

    async def apply(self, change: Change) -> Any:
        """Apply ``change``; return what :meth:`rollback` needs (JSON-able: the previous value)."""

    async def rollback(self, change: Change, previous: Any) -> None:
        """Undo ``change``, given what :meth:`apply` returned."""

    async def sample(self) -> Sample:
        """This node's health as the rollout compares it before and after the change."""


class Verifier(Protocol):
    """The operator signature check (the fleet commands' hybrid Ed25519 + ML-DSA-65)."""

    def __call__(self, public: bytes, data: bytes, signature: bytes) -> bool: ...


def operator_verifier(public: bytes, data: bytes, signature: bytes) -> bool:
    """The :class:`Verifier` of the deployed agent: ``public`` is the operator's public key file
    (``x0tta fleet keygen``), ``signature`` the JSON ``x0tta rollout sign`` prints; both halves
    (Ed25519 and ML-DSA-65) must verify, as for fleet commands. Blocking (CPU): call it in a thread."""
    from x0tta.common.errors import X0ttaError
    from x0tta.identity.core.operator import HybridSignature, load_public, verify

    try:
        verify(load_public(public), data, HybridSignature.from_json(json.loads(signature)))
    except (X0ttaError, ValueError, TypeError):
        return False
    return True


class _Metrics:
    def __init__(self, r: CollectorRegistry, service: CoordService) -> None:
        self.up = Gauge("x0tta_coord_etcd_up", "1 while the last request to the etcd cluster was answered",
                        registry=r)
        self.turns = Counter("x0tta_coord_turns_total", "Rollout turns this node took, by how they ended",
                             ["outcome"], registry=r)
        self.fenced = Counter("x0tta_coord_fenced_writes_total",
                              "Writes etcd refused because this node's turn was gone", registry=r)
        self.applied = Counter("x0tta_coord_applied_total", "Changes applied by rollouts", registry=r)
        self.rolled_back = Counter("x0tta_coord_rolled_back_total", "Changes undone by rollouts", registry=r)
        self.requests = Counter("x0tta_coord_etcd_requests_total", "Requests sent to etcd members", registry=r)
        self.failovers = Counter("x0tta_coord_etcd_failovers_total",
                                 "Requests a member did not answer, asked of the next one", registry=r)
        self.counted = (0, 0)  # the client's counts already added

    def count(self, client: EtcdClient) -> None:
        self.requests.inc(client.requests - self.counted[0])
        self.failovers.inc(client.failovers - self.counted[1])
        self.counted = (client.requests, client.failovers)


class CoordService(Subsystem):
    name = "coord"

    def __init__(self, settings: CoordSettings | None = None, *, handler: ChangeHandler | None = None,
                 verifier: Verifier | None = None, clock: Clock = SYSTEM) -> None:
        self.settings = settings or CoordSettings()
        self.handler = handler
        self.verifier = verifier
        self.clock = clock
        self.client: EtcdClient | None = None
        self.store: RolloutStore | None = None
        self.node = ""
        self.operator_key = b""
        self._verified: dict[tuple[str, int], bool] = {}
        self._previous: dict[str, Any] = {}  # rollout id -> what the handler needs to undo
        self._node_lease = 0
        self._conditions: dict[str, Condition] = {}
        self._metrics: _Metrics | None = None
        self._registry_id: int | None = None
        self._ctx: Context | None = None
        self.fenced_writes = 0

    # -- the subsystem ------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        s = self.settings = ctx.settings.coord
        self.node, self._ctx = ctx.node_id, ctx
        if s.operator_key_file:
            try:
                self.operator_key = await asyncio.to_thread(_read, s.operator_key_file)
            except OSError as exc:
                raise CapabilityMissing(COORD_ROLLOUT_UNVERIFIED,
                                        f"cannot read the operator key {s.operator_key_file}: {exc}") from exc
        self.client = EtcdClient(s.endpoints, cert_file=s.cert_file, key_file=s.key_file, ca_file=s.ca_file,
                                 timeout=s.request_timeout)
        self.store = RolloutStore(self.client, s.prefix)
        self._register(ctx)
        ctx.health.set(COORD_CONNECTING(f"connecting to {', '.join(s.endpoints)}"))
        try:
            try:
                await self.client.open()
            except EtcdError as exc:
                raise CapabilityMissing(COORD_CERTIFICATE_UNUSABLE, str(exc)) from exc
            ctx.admin.register("coord.status", self._admin_status)
            ctx.log.info("coord_started", endpoints=list(s.endpoints), prefix=s.prefix)
            while True:
                await self.round(ctx)
                await self.clock.sleep(s.poll_interval)
        finally:
            with contextlib.suppress(X0ttaError, OSError):
                if self._node_lease:
                    await self.client.lease_revoke(self._node_lease)
            self._node_lease = 0
            await self.client.close()
            if self._metrics:
                self._metrics.up.set(0)

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        return settings.coord == self.settings

    def _register(self, ctx: Context) -> None:
        if self._registry_id != id(ctx.registry):
            self._metrics = _Metrics(ctx.registry, self)
            self._registry_id = id(ctx.registry)

    def _report(self) -> None:
        if self._ctx is not None:
            self._ctx.health.set(*self._conditions.values())

    async def _admin_status(self, args: dict[str, Any]) -> Any:
        assert self.store is not None
        return [{"id": v.id, "phase": v.state.phase.value if v.state else None,
                 "verified": self._verified.get((v.id, v.doc_revision))} for v in await self.store.list()]

    # -- one round ----------------------------------------------------------------------------

    async def round(self, ctx: Context) -> None:
        """Register, then look at every rollout once; etcd failures are reported, not raised."""
        assert self.store is not None and self._metrics is not None
        try:
            await self._keep_registered()
            views = await self.store.list()
            self._metrics.up.set(1)
            for spec in (COORD_ETCD_UNREACHABLE, COORD_CONNECTING, COORD_CERTIFICATE_UNUSABLE):
                self._conditions.pop(spec.code, None)
            unverified = []
            for view in views:
                if view.rollout is None or view.state is None or view.state.phase in FINAL:
                    continue
                if not await self._verify(view):
                    unverified.append(view.id)
                    continue
                await self._act(ctx, view)
            if unverified:
                self._conditions[COORD_ROLLOUT_UNVERIFIED.code] = COORD_ROLLOUT_UNVERIFIED(
                    f"ignored, signature not verified: {', '.join(unverified)}")
            else:
                self._conditions.pop(COORD_ROLLOUT_UNVERIFIED.code, None)
        except CertificateRefused as exc:
            self._metrics.up.set(0)
            self._conditions.pop(COORD_CONNECTING.code, None)
            self._conditions[COORD_CERTIFICATE_UNUSABLE.code] = COORD_CERTIFICATE_UNUSABLE(str(exc))
            ctx.log.warning("coord_certificate_refused", error=str(exc))
        except EtcdUnavailable as exc:
            self._metrics.up.set(0)
            self._conditions[COORD_ETCD_UNREACHABLE.code] = COORD_ETCD_UNREACHABLE(str(exc))
            ctx.log.warning("coord_etcd_unreachable", error=str(exc))
        except X0ttaError as exc:  # a refused request or a bad document: reported, retried next round
            ctx.log.warning("coord_round_failed", error=str(exc), kind=type(exc).__name__)
        if self.client is not None:
            self._metrics.count(self.client)
        self._report()

    async def _keep_registered(self) -> None:
        assert self.client is not None and self.store is not None
        ttl = max(2, int(self.settings.poll_interval * 3 + self.settings.request_timeout * 2))
        if self._node_lease:
            try:
                await self.client.lease_keepalive(self._node_lease)
                return
            except LeaseLost:
                self._node_lease = 0
        lease, _ = await self.client.lease_grant(ttl)
        self._node_lease = lease
        await self.client.put(self.store.node_key(self.node),
                              json.dumps({"node": self.node, "segment": self.settings.segment}), lease)

    async def _verify(self, view: View) -> bool:
        key = (view.id, view.doc_revision)
        if key not in self._verified:
            ok = False
            if self.verifier is not None and self.operator_key and view.rollout is not None:
                try:
                    ok = bool(await asyncio.to_thread(self.verifier, self.operator_key,
                                                      core.signed_bytes(view.rollout), view.signature))
                except Exception:  # a verifier that raises has not verified
                    ok = False
            self._verified[key] = ok
        return self._verified[key]

    async def _act(self, ctx: Context, view: View) -> None:
        assert self.store is not None and view.rollout is not None and view.state is not None
        st, ro = view.state, view.rollout
        holders = {who for who, _ in view.turns.values()}
        stale = [n for n in st.in_turn() if n not in holders]
        for n in stale:  # its lease expired: back in the queue (it undoes its change when it can)
            if n == self.node and ro.id in self._previous:
                await self._undo(ctx, ro)
            with contextlib.suppress(X0ttaError):
                # only while it still holds no turn key: it may have taken a new turn since this view
                await self.store.update(ro.id, lambda s, n=n: core.turn_lost(s, n, self.clock.time()),
                                        when=lambda v, n=n: v.holder_slot(n) is None)
                ctx.log.info("coord_turn_cleared", rollout=ro.id, holder=n)
            return
        if self.handler is None:  # a node given no way to apply a change only watches
            return
        if core.next_to_roll_back(st) == self.node and view.holder_slot(self.node) is None:
            await self._roll_back(ctx, view)
        elif core.may_take_turn(st, ro, self.node) and ro.selects(self.node):
            await self._turn(ctx, view)

    # -- a turn -------------------------------------------------------------------------------

    async def _turn(self, ctx: Context, view: View) -> None:
        assert self.client is not None and self.store is not None and self._metrics is not None
        ro = view.rollout
        assert ro is not None and self.handler is not None
        s = self.settings
        lease, ttl = await self.client.lease_grant(s.turn_ttl)
        granted = self.clock.monotonic()
        slot, token = -1, 0
        for k in range(ro.wave):
            key = self.store.turn_key(ro.id, k)
            try:
                r = await self.client.txn([absent(key)], [put(key, self.node, lease)])
            except EtcdUnavailable:
                break
            if r.succeeded:
                slot, token = k, r.revision
                break
        if slot < 0:
            with contextlib.suppress(X0ttaError):
                await self.client.lease_revoke(lease)
            return
        holding = _Holding(self.client, lease, ttl, granted, self.clock)
        keeper = asyncio.create_task(holding.keep(), name="coord-turn-keepalive")
        fence = (slot, token)
        record_key = self.store.record_key(ro.id, self.node, token)
        record: dict[str, Any] = {"node": self.node, "token": token, "slot": slot}
        applied = False
        outcome = "lost"
        ctx.log.info("coord_turn_taken", rollout=ro.id, slot=slot, token=token)
        me = self.node

        def step_is(*steps: core.Step) -> Any:
            return lambda st: me in st.nodes and st.nodes[me].step in steps

        async def write(change: Any, landed: Any) -> core.RolloutState:
            return await self._fenced(ro.id, fence, holding, change, landed,
                                      [put(record_key, json.dumps(record, sort_keys=True))])

        try:
            record["start"] = self.clock.time()
            await write(lambda st: core.applying(st, ro, me, self.clock.time()), step_is(core.Step.APPLYING))
            before = await self.handler.sample()
            if not holding.certain(DEADLINE_MARGIN):
                raise TurnLost("the turn's lease may have expired before the change was applied")
            try:
                previous = await self.handler.apply(ro.change)
            except PermanentError as exc:
                # This node refuses the change (a setting it does not manage, a value of the wrong
                # type, a subsystem it does not run): nothing changed. Reported worse at once, so
                # the criteria decide, rather than the turn being taken again and again.
                record["refused"] = str(exc)
                await write(lambda st: core.soaking(st, me, self.clock.time()), step_is(core.Step.SOAKING))
                report = core.Report(True, detail=f"change refused: {exc}")
                record["end"], record["outcome"], record["report"] = self.clock.time(), "worse", report.detail
                await write(lambda st: core.reported(st, ro, me, report, self.clock.time()),
                            step_is(core.Step.DONE, core.Step.WORSE))
                outcome = "worse"
                ctx.log.warning("coord_change_refused", rollout=ro.id, setting=ro.change.setting, error=str(exc))
                return
            self._previous[ro.id] = previous
            applied = True
            self._metrics.applied.inc()
            record["previous"] = previous
            state = await write(lambda st: core.soaking(st, me, self.clock.time()), step_is(core.Step.SOAKING))
            ctx.log.info("coord_applied", rollout=ro.id, setting=ro.change.setting, token=token)
            end = self.clock.monotonic() + ro.soak
            # soak; once aborting, wait (holding the turn) until this node is the next to roll back
            while (self.clock.monotonic() < end and state.phase != Phase.ABORTING) or (
                    state.phase == Phase.ABORTING and core.next_to_roll_back(state) != me):
                await self.clock.sleep(min(s.poll_interval, max(0.01, end - self.clock.monotonic())))
                if not holding.certain(0.0):
                    raise TurnLost("the turn's lease was lost (or may have expired) during the soak")
                with contextlib.suppress(EtcdUnavailable):  # the lease, not one read, decides
                    current = await self.store.load(ro.id)
                    if current is not None and current.state is not None:
                        state = current.state
            if state.phase == Phase.ABORTING:  # aborted by another node's report or the operator
                await self.handler.rollback(ro.change, previous)
                self._previous.pop(ro.id, None)
                applied = False
                self._metrics.rolled_back.inc()
                record["end"] = record["rolled_back_at"] = self.clock.time()
                record["outcome"] = "rolled_back"
                await write(lambda st: core.rolled_back(st, me, self.clock.time()), step_is(core.Step.ROLLED_BACK))
                outcome = "rolled_back"
                return
            report = core.judge(before, await self.handler.sample())
            record["end"], record["outcome"], record["report"] = (
                self.clock.time(), "worse" if report.worse else "done", report.detail)
            await write(lambda st: core.reported(st, ro, me, report, self.clock.time()),
                        step_is(core.Step.DONE, core.Step.WORSE))
            outcome = record["outcome"]
            ctx.log.info("coord_reported", rollout=ro.id, worse=report.worse, detail=report.detail)
        except X0ttaError as exc:
            # The turn is lost (etcd refused a fenced write, or the lease is in doubt), or the
            # rollout moved where this node's next step is refused: never keep a change the store
            # does not show as this node's, undo it.
            lost = isinstance(exc, TurnLost)
            if lost:
                self.fenced_writes += 1
                self._metrics.fenced.inc()
            elif not applied:
                raise  # nothing changed here: the round reports it
            if applied:
                await self._undo(ctx, ro)
            self._conditions[COORD_TURN_LOST.code] = COORD_TURN_LOST(f"rollout {ro.id}: {exc}")
            ctx.log.warning("coord_turn_lost", rollout=ro.id, token=token, error=str(exc), undone=applied,
                            refused=lost)
            with contextlib.suppress(X0ttaError):
                await self.client.put(self.store.fenced_key(ro.id, me, token),
                                      json.dumps({"node": me, "token": token, "noticed": self.clock.time(),
                                                  "undone": applied, "why": str(exc)}))
                await self.store.update(ro.id, lambda st: core.turn_lost(st, me, self.clock.time()))
        finally:
            self._metrics.turns.labels(outcome).inc()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(X0ttaError):  # release: delete our turn key only if it is still ours
                await self.client.txn([mod_revision_is(self.store.turn_key(ro.id, slot), token)],
                                      [delete(self.store.turn_key(ro.id, slot))])
                await self.client.lease_revoke(lease)
        if outcome in ("done", "worse", "rolled_back"):
            self._conditions.pop(COORD_TURN_LOST.code, None)

    async def _fenced(self, rid: str, fence: tuple[int, int], holding: _Holding, change: Any, landed: Any,
                      extra: list[Any]) -> core.RolloutState:
        """A fenced state update under this node's turn. A request whose outcome is unknown (etcd
        unreachable, an answer lost) is settled by reading back: done if ``landed(state)``, else
        tried again, for as long as the lease is certainly held; then the turn counts as lost."""
        assert self.store is not None
        while True:
            try:
                return await self.store.update(rid, change, fence=fence, extra=extra)
            except EtcdUnavailable as exc:
                last = exc
            while True:
                if not holding.certain(0.0):
                    raise TurnLost(f"etcd did not answer while this node held its turn ({last})")
                await self.clock.sleep(min(self.settings.poll_interval, 0.5))
                try:
                    view = await self.store.load(rid)
                    break
                except EtcdUnavailable as exc:
                    last = exc
            if view is not None and view.state is not None and landed(view.state):
                return view.state

    async def _undo(self, ctx: Context, ro: Rollout) -> None:
        assert self.handler is not None and self._metrics is not None
        previous = self._previous.pop(ro.id, None)
        await self.handler.rollback(ro.change, previous)
        self._metrics.rolled_back.inc()
        ctx.log.info("coord_undone", rollout=ro.id, setting=ro.change.setting)

    async def _roll_back(self, ctx: Context, view: View) -> None:
        """This node is next in the reverse order: undo, then record it (a CAS on the state)."""
        assert self.store is not None and self.handler is not None and self._metrics is not None
        ro = view.rollout
        assert ro is not None
        mine = sorted((r for k, r in view.records.items() if k.startswith(f"{self.node}/")),
                      key=lambda r: int(r.get("token", 0)))
        previous = self._previous.get(ro.id)
        if previous is None and mine:  # after a restart: what it needs was recorded with the apply interval
            previous = mine[-1].get("previous")
        if not (mine and "refused" in mine[-1]):  # a change this node refused left nothing to undo
            await self.handler.rollback(ro.change, previous)
            self._metrics.rolled_back.inc()
        self._previous.pop(ro.id, None)
        extra = []
        if mine:  # the rollback goes into the node's last apply record, in the same txn as the state
            rec = {**mine[-1], "rolled_back_at": self.clock.time()}
            key = self.store.record_key(ro.id, self.node, int(rec["token"]))
            extra.append(put(key, json.dumps(rec, sort_keys=True)))
        await self.store.update(ro.id, lambda st: core.rolled_back(st, self.node, self.clock.time()), extra=extra)
        ctx.log.info("coord_rolled_back", rollout=ro.id, setting=ro.change.setting)


class _Holding:
    """A turn's lease, renewed every third of its TTL. ``certain(margin)``: the lease is held for
    at least ``margin`` of its TTL more, counted from the last renewal *sent* (the monotonic
    clock runs on while the process is stopped, so a node woken past its lease knows it)."""

    def __init__(self, client: EtcdClient, lease: int, ttl: int, granted: float, clock: Clock) -> None:
        self.client, self.lease, self.ttl, self.clock = client, lease, ttl, clock
        self.deadline = granted + ttl
        self.lost = False

    def certain(self, margin: float) -> bool:
        return not self.lost and self.clock.monotonic() < self.deadline - margin * self.ttl

    async def keep(self) -> None:
        while not self.lost:
            await self.clock.sleep(self.ttl / 3)
            sent = self.clock.monotonic()
            try:
                ttl = await self.client.lease_keepalive(self.lease)
                self.deadline = sent + ttl
            except LeaseLost:
                self.lost = True
            except EtcdUnavailable:
                continue  # the deadline is not moved: certain() turns false in time


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
