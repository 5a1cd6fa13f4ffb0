"""The ``meshstate`` subsystem: this node's copy of the replicated mesh state, in the agent.

It waits for the node's SVID (the identity subsystem's source), builds the
:class:`~x0tta.fleet.replica.Replica` with the SVID's key, rebuilds it from its log on disk
(``<state_dir>/meshstate/state.db``), hands the sync's two methods to the peer subsystem (given by
the composition root as ``carrier``) and writes the node's registry entry; then it pulls from every
peer session every ``[meshstate] interval``. A rotated SVID, bundle or revocation list is taken at
the next round. docs/fleet.md, "Replicated mesh state", says how the state converges.

Metrics (``x0tta_meshstate_``): ``updates_total{result}`` (``applied``, ``duplicate`` or the
refusal's reason), ``epoch``, ``log_bytes``, ``nodes`` (registry entries). Admin command
``meshstate.show``: the state as this node reads it, its epoch and counts.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter, Gauge

from x0tta import __version__
from x0tta.clock import SYSTEM, Clock
from x0tta.common.subsystem import Context, Subsystem
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica
from x0tta.fleet.statesync import Carrier, StateSync


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

    async def run(self, ctx: Context) -> None:
        s = ctx.settings.meshstate
        source = await self.identity.wait_source()
        while not source.has_svid():
            await self.clock.sleep(1.0)
        svid = source.svid()
        key = await asyncio.to_thread(serialization.load_pem_private_key, svid.private_key_pem, None)
        policy = st.Policy(svid.spiffe_id.trust_domain, frozenset(s.revokers), s.compact_at_bytes)
        replica = Replica(str(svid.spiffe_id), key, st.chain_der(svid.cert_chain), policy, source.bundles(),
                          crls=source.revocations())
        page = max(16 * 1024, ctx.settings.peer.frame_max_size - 4096)  # a response frame's head and room
        sync = StateSync(replica, ctx.state_dir / "meshstate" / "state.db", clock=self.clock, interval=s.interval,
                         page_bytes=page, logger=ctx.log)
        self.sync = sync
        updates = Counter("x0tta_meshstate_updates_total", "Signed updates received, by what became of them",
                          ["result"], registry=ctx.registry)
        epoch = Gauge("x0tta_meshstate_epoch", "The newest epoch this node holds", registry=ctx.registry)
        log_bytes = Gauge("x0tta_meshstate_log_bytes", "Bytes of signed updates held", registry=ctx.registry)
        nodes = Gauge("x0tta_meshstate_nodes", "Registry entries this node reads", registry=ctx.registry)
        ctx.admin.register("meshstate.show", self._show)
        try:
            restored = await sync.restore()
            sync.attach(self.carrier)
            macs = await asyncio.to_thread(lambda: list(self.macs()) if self.macs is not None else [])
            await sync.write(self._entry(ctx, svid, macs))
            ctx.log.info("meshstate_started", author=replica.author, restored=restored, epoch=replica.epoch)
            ctx.health.ok()
            while True:
                await self._refresh(source, sync)
                await sync.sync_all()
                counts, number, size, entries = await sync.call(self._read, replica)
                self._count(counts, updates)
                epoch.set(number)
                log_bytes.set(size)
                nodes.set(entries)
                await self.clock.sleep(s.interval)
        finally:
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

    def _count(self, now: Tally[str], counter: Any) -> None:
        for result, n in now.items():
            if n > self._counted[result]:
                counter.labels(result=result).inc(n - self._counted[result])
        self._counted = now

    async def _show(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.sync is None:
            return {"ready": False}

        def show(r: Replica) -> dict[str, Any]:
            return {"ready": True, "author": r.author, "epoch": r.epoch, "epochs": sorted(r.epochs),
                    "log_bytes": r.log_bytes(), "applied": r.applied, "duplicates": r.duplicates,
                    "refused": {str(k): v for k, v in r.refused.items()}, "state": r.state()}

        return await self.sync.call(show, self.sync.replica)  # type: ignore[no-any-return]
