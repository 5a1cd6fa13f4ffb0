"""A mesh of in-process agents on loopback that renew their SVIDs through a CA node, watched.

Node ``n0`` is the CA node (``[identity] ca_dir``: it renews itself and signs its peers'
renewals); every other node starts with an SVID of ``ttl`` seconds from the same CA and renews
through the mesh only. Each node runs the real identity and peer subsystems, joined by the agent's
own ``wire_renewal``; sessions are real PQ mTLS (ML-DSA-65, X25519MLKEM768). Node ``i`` dials the
CA node and node ``i-1``, so there are sessions between plain nodes too.

While it runs, :class:`RenewalMesh` watches: every ``interval`` seconds each node sends a
``peer.echo`` over each of its links (a failure is counted), the least remaining validity of any
node's SVID is kept, and every session that went down is recorded with its reason. A session going
down because it was replaced by a re-authenticated one is planned; anything else is a session lost.

Used by ``tests/integration/identity/test_mesh_renewal.py`` (short) and
``tests/bench/bench_renewal.py`` (5 nodes, TTL 60 s, 10 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kit.wait import until
from x0tta.agent.wiring import wire_renewal
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.service import IdentityService
from x0tta.peer.service import PeerChange, PeerService
from x0tta.peer.testing import FakeContext
from x0tta.telemetry.testing import running

TD = "mesh.test"
PLANNED = frozenset({"reauthenticated", "drained"})
"""Why a session may end in a renewal: the one that replaced it is up (either end's view)."""


@dataclass
class Node:
    name: str
    identity: IdentityService
    peer: PeerService
    identity_ctx: FakeContext
    peer_ctx: FakeContext

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.peer.port}"

    def renewals(self) -> int:
        inner = self.identity.inner
        mesh = self.identity.renewer.renewals if self.identity.renewer is not None else 0
        return mesh + int(getattr(inner, "renewals", 0))  # the CA node renews itself


@dataclass
class RenewalMesh:
    ca: CertificateAuthority
    nodes: list[Node] = field(default_factory=list)
    downs: list[tuple[str, PeerChange]] = field(default_factory=list)
    echo_ok: int = 0
    echo_failed: list[str] = field(default_factory=list)
    min_left: float = float("inf")
    expired_seen: list[str] = field(default_factory=list)
    watching: bool = False

    def renewals(self) -> int:
        return sum(n.renewals() for n in self.nodes)

    def sessions_lost(self) -> list[tuple[str, PeerChange]]:
        return [(name, c) for name, c in self.downs if c.reason not in PLANNED]

    def all_linked(self) -> bool:
        return all(link.current is not None for n in self.nodes for link in n.peer.links.values())

    async def watch(self, interval: float) -> None:
        """Echo over every link and look at every SVID, every ``interval`` s, until cancelled."""
        while True:
            now = time.time()
            for node in self.nodes:
                left = node.identity.source.svid().seconds_to_expiry(now)
                self.min_left = min(self.min_left, left)
                codes = [c.code for c in node.identity_ctx.health.conditions]
                if "svid_expired" in codes or left <= 0:
                    self.expired_seen.append(node.name)
            results = await asyncio.gather(*(self._echo(n, a) for n in self.nodes for a in list(n.peer.links)))
            for r in results:
                if r:
                    self.echo_failed.append(r)
                else:
                    self.echo_ok += 1
            await asyncio.sleep(interval)

    async def _echo(self, node: Node, address: str) -> str:
        try:
            body = await node.peer.request(address, "peer.echo", node.name.encode(), timeout=10.0)
        except Exception as exc:  # counted, with what failed: the test names it
            return f"{node.name}->{address}: {exc!r}"
        return "" if body == node.name.encode() else f"{node.name}->{address}: echo {body!r}"


def _settings(state_dir: Path, port_peers: list[str], ttl: float, **identity: Any) -> AgentSettings:
    return build(AgentSettings, {  # type: ignore[no-any-return]
        "node": {"state_dir": str(state_dir)},
        "identity": {"trust_domain": TD, "poll_interval": 0.5, "svid_ttl": ttl, "renewal_retry_max": 5.0,
                     **identity},
        "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": port_peers, "heartbeat_interval": 1.0,
                 "idle_timeout": 15.0, "neighbour_refresh": 0.5, "reconnect_min_delay": 0.05},
    })


@contextlib.asynccontextmanager
async def renewal_mesh(directory: Path, n: int, ttl: float, *, interval: float = 0.5) -> AsyncIterator[RenewalMesh]:
    """Start ``n`` nodes (``n0`` the CA node) with SVIDs of ``ttl`` s; yields once every link is up,
    with the watch running."""
    ca = CertificateAuthority.init(directory / "ca", TD)
    mesh = RenewalMesh(ca)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(n):
            name = f"n{i}"
            state = directory / name
            if i == 0:
                s = _settings(state, [], ttl, ca_dir=str(ca.directory))
            else:
                ca.issue_to(state / "identity", f"spiffe://{TD}/node/{name}", ttl)
                peers = sorted({mesh.nodes[0].address, mesh.nodes[i - 1].address})
                s = _settings(state, peers, ttl)
            identity = IdentityService()
            peer = PeerService(identity)
            wire_renewal(identity, peer, s.identity)
            ictx = FakeContext(s, name="identity", node_id=name)
            pctx = FakeContext(s, name="peer", node_id=name)
            node = Node(name, identity, peer, ictx, pctx)
            peer.subscribe(lambda c, nm=name: mesh.watching and not c.up and mesh.downs.append((nm, c)))
            await stack.enter_async_context(running(identity, ictx))
            await identity.wait_source(30.0)
            await stack.enter_async_context(running(peer, pctx))
            mesh.nodes.append(node)
        await until(mesh.all_linked, 60.0)
        mesh.watching = True
        watcher = asyncio.create_task(mesh.watch(interval))
        try:
            yield mesh
        finally:
            mesh.watching = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
