"""The replicated mesh state over real PQ peer sessions on loopback (ML-DSA-65 SVIDs, X25519MLKEM768):
two nodes write while partitioned (no session), a third joins them through itself and all three
converge; a new write is pushed at once; a member's forged update is refused and counted; a
restarted node rebuilds its state from its log on disk. No root needed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pycrdt
import pytest

from tests.kit.pki import Leaf, TestCA
from tests.kit.wait import until
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica
from x0tta.fleet.statesync import PUSH, StateSync
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, StaticIdentity
from x0tta.telemetry.testing import running

pytestmark = pytest.mark.integration

TD = "mesh.test"


def settings(peers=()):
    return build(AgentSettings, {
        "identity": {"trust_domain": TD},
        "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": list(peers), "heartbeat_interval": 0.5,
                 "idle_timeout": 5.0, "reconnect_min_delay": 0.05},
    })


def node(ca: TestCA, leaf: Leaf, name: str, tmp_path) -> StateSync:
    replica = Replica(f"spiffe://{TD}/node/{name}", leaf.key, st.chain_der([leaf.cert]), st.Policy(TD),
                      {TD: ca.bundle()})
    return StateSync(replica, tmp_path / f"{name}.db", interval=0.2, request_timeout=5.0)


def registry(sync: StateSync, mac: str) -> dict:
    at = sync.clock.time()
    return {"registry": {sync.replica.author: {"macs": [mac], "role": "node", "version": "1", "at": at}}}


async def same(syncs, entries: int) -> bool:
    """Do all ``syncs`` read one state, with ``entries`` registry entries?"""
    states = [await s.state() for s in syncs]
    return all(x == states[0] for x in states) and len(states[0]["registry"]) == entries


@contextlib.asynccontextmanager
async def serving(sync: StateSync, ca: TestCA, leaf: Leaf, name: str, peers=()):
    """A peer subsystem with ``leaf``'s SVID carrying ``sync``, and the periodic pull."""
    peer = PeerService(StaticIdentity(ca.credentials(leaf)))
    sync.attach(peer)
    async with running(peer, FakeContext(settings(peers), node_id=name)):
        task = asyncio.create_task(sync.run())
        try:
            yield peer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_partitioned_writes_converge_over_peer_sessions(tmp_path):
    ca = TestCA(TD)
    leaves = {n: ca.issue(path=f"/node/{n}") for n in ("a", "b", "c", "m")}
    nodes = {n: node(ca, leaves[n], n, tmp_path) for n in ("a", "b", "c")}
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    # partitioned: no sessions at all; a and c write on their own
    await a.write(registry(a, "02:00:00:00:00:0a"))
    await c.write(registry(c, "02:00:00:00:00:0c"))
    await c.write({"quarantine": {f"{c.replica.author} spiffe://{TD}/node/x": {
        "target": f"spiffe://{TD}/node/x", "macs": [], "reason": "replayed probes", "until": c.clock.time() + 600,
        "at": c.clock.time()}}})
    assert await a.state() != await c.state()
    async with serving(b, ca, leaves["b"], "b") as peer_b:
        hub = [f"127.0.0.1:{peer_b.port}"]
        healed = time.monotonic()
        async with serving(a, ca, leaves["a"], "a", hub), serving(c, ca, leaves["c"], "c", hub):
            # healed: a and c reach each other only through b
            await until(lambda: same(nodes.values(), 2), 30)
            print(f"converged {time.monotonic() - healed:.2f} s after the partition healed (PQ handshakes "
                  f"included, pull interval {a.interval} s)")
            # a new write is pushed to b at once, and pulled from b by c
            await b.write(registry(b, "02:00:00:00:00:0b"))
            await until(lambda: same(nodes.values(), 3), 30)
            # a member forging: m (a valid SVID of the mesh) pushes an update writing a's entry
            m = node(ca, leaves["m"], "m", tmp_path)
            doc = pycrdt.Doc(client_id=st.client_id(m.replica.author))
            with doc.transaction():
                doc.get("registry", type=pycrdt.Map)[a.replica.author] = st.canonical(
                    {"macs": ["02:66:66:66:66:66"], "role": "gateway", "version": "9", "at": m.clock.time()})
                doc.get("heads", type=pycrdt.Map)[m.replica.author] = st.canonical({"seq": 1, "at": m.clock.time()})
            forged = st.sign(st.Update(m.replica.author, 0, 0, 2, m.clock.time(), doc.get_update(),
                                       m.replica.chain), leaves["m"].key)
            peer_m = PeerService(StaticIdentity(ca.credentials(leaves["m"])))
            async with running(peer_m, FakeContext(settings(hub), node_id="m")):
                assert await peer_m.request(hub[0], PUSH, st.encode(st.Updates((forged,))), timeout=10) == b""
            assert b.replica.refused[st.Reason.FOREIGN_WRITE] == 1
            assert (await b.state())["registry"][a.replica.author]["macs"] == ["02:00:00:00:00:0a"]
    # b restarts from its log on disk: the same state, and it can write on
    held = await b.state()
    await b.close()
    again = node(ca, leaves["b"], "b", tmp_path)
    assert await again.restore() >= 4
    assert await again.state() == held
    await again.write(registry(again, "02:00:00:00:00:bb"))
    assert not again.replica.refused  # nothing of its log refused
    for s in (a, c, again, m):
        await s.close()


async def test_the_meshstate_subsystem_registers_every_node(tmp_path):
    """The agent's subsystem: two nodes, each with its SVID and peer subsystem, find each other's
    registry entries, with their MACs, and show them on the admin API."""
    from x0tta.fleet.stateservice import MeshStateService
    from x0tta.peer.testing import sample

    ca = TestCA(TD)
    cfg = {"identity": {"trust_domain": TD}, "meshstate": {"enabled": True, "interval": 0.2, "role": "gateway"}}

    def ctx(name: str, peers=()) -> FakeContext:
        s = build(AgentSettings, {**cfg, "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": list(peers),
                                                  "reconnect_min_delay": 0.05}})
        return FakeContext(s, name="meshstate", node_id=name, state_dir=tmp_path / name)

    ids = {n: StaticIdentity(ca.credentials(ca.issue(path=f"/node/{n}"))) for n in ("a", "b")}
    peer_b = PeerService(ids["b"])
    svc_b, ctx_b = MeshStateService(ids["b"], peer_b, macs=lambda: ["02:00:00:00:00:0B"]), ctx("b")
    async with running(peer_b, ctx("b")), running(svc_b, ctx_b):
        hub = [f"127.0.0.1:{peer_b.port}"]
        peer_a = PeerService(ids["a"])
        svc_a, ctx_a = MeshStateService(ids["a"], peer_a, macs=lambda: ["02:00:00:00:00:0a"]), ctx("a")
        async with running(peer_a, ctx("a", hub)), running(svc_a, ctx_a):
            await until(lambda: svc_a.sync is not None and svc_b.sync is not None, 30)
            await until(lambda: same((svc_a.sync, svc_b.sync), 2), 30)
            shown = await ctx_b.admin.handlers["meshstate.show"]({})
            entry = shown["state"]["registry"][f"spiffe://{TD}/node/a"]
            assert entry["macs"] == ["02:00:00:00:00:0a"] and entry["role"] == "gateway"
            assert shown["refused"] == {} and shown["epoch"] == 0
            await until(lambda: sample(ctx_b, "x0tta_meshstate_nodes") == 2, 30)
            assert sample(ctx_b, "x0tta_meshstate_updates_total", result="applied") >= 1
    assert (tmp_path / "b" / "meshstate" / "state.db").exists()


async def test_a_session_that_comes_up_is_pulled_from_at_once(tmp_path):
    """A healed link: two nodes that wrote and pulled while they had no session, with a pull
    interval longer than the test, hold each other's entries soon after their session comes up."""
    from x0tta.fleet.stateservice import MeshStateService
    from x0tta.peer.testing import sample

    ca = TestCA(TD)
    ids = {n: StaticIdentity(ca.credentials(ca.issue(path=f"/node/{n}"))) for n in ("a", "b")}

    def ctx(name: str) -> FakeContext:
        s = build(AgentSettings, {"identity": {"trust_domain": TD},
                                  "meshstate": {"enabled": True, "interval": 600.0},
                                  "peer": {"listen_address": "127.0.0.1", "port": 0, "neighbour_refresh": 0.1,
                                           "reconnect_min_delay": 0.05}})
        return FakeContext(s, name="meshstate", node_id=name, state_dir=tmp_path / name)

    link: list[str] = []  # the neighbour a dials: none until the link "heals"
    peer_b, peer_a = PeerService(ids["b"]), PeerService(ids["a"], neighbours=lambda: list(link))
    svc_b, svc_a = MeshStateService(ids["b"], peer_b), MeshStateService(ids["a"], peer_a)
    ctx_a, ctx_b = ctx("a"), ctx("b")
    async with running(peer_b, ctx("b")), running(svc_b, ctx_b), running(peer_a, ctx("a")), running(svc_a, ctx_a):
        # each wrote its entry and finished its first round alone
        await until(lambda: sample(ctx_a, "x0tta_meshstate_nodes") == 1 and sample(ctx_b, "x0tta_meshstate_nodes") == 1,
                    30)
        healed = time.monotonic()
        link.append(f"127.0.0.1:{peer_b.port}")
        await until(lambda: same((svc_a.sync, svc_b.sync), 2), 30)
        print(f"both entries on both nodes {time.monotonic() - healed:.2f} s after the session could come up "
              f"(pull interval 600 s)")


async def test_a_revocation_by_the_ca_node_reaches_another_node_which_refuses_the_revoked_peer(tmp_path):
    """The CA's revocations in the state, acted on: three nodes with the agent's wiring of the
    meshstate subsystem (the built-in CA's revocations on the CA node, the deny-list of the peer
    subsystem on every node). `x0tta ca revoke` of b on the CA node reaches a through the state, and
    a sends b's session away and refuses the ones b dials again; the CRL a holds says nothing of it."""
    from x0tta.agent.wiring import ca_revocations, revocation_denier
    from x0tta.common.spiffe_id import AuthorizationPolicy
    from x0tta.fleet.stateservice import MeshStateService
    from x0tta.identity.ca import CertificateAuthority
    from x0tta.peer.testing import sample
    from x0tta.peer.tls import Credentials

    ca = await asyncio.to_thread(CertificateAuthority.init, tmp_path / "ca", TD)
    ids = {n: f"spiffe://{TD}/node/{n}" for n in ("ca", "a", "b")}

    def identity(name: str) -> StaticIdentity:
        svid = ca.issue(ids[name], 3600)
        return StaticIdentity(Credentials(svid, {TD: ca.bundle()}, AuthorizationPolicy.build(TD), ()))

    def ctx(name: str, sub: str, peers=()) -> FakeContext:
        ident = {"trust_domain": TD, **({"ca_dir": str(tmp_path / "ca")} if name == "ca" else {})}
        s = build(AgentSettings, {"identity": ident,
                                  "meshstate": {"enabled": True, "interval": 0.2, "revokers": [ids["ca"]]},
                                  "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": list(peers),
                                           "reconnect_min_delay": 0.05, "reconnect_max_delay": 0.5}})
        return FakeContext(s, name=sub, node_id=name, state_dir=tmp_path / name)

    peers: dict[str, PeerService] = {}
    svcs: dict[str, MeshStateService] = {}
    ctxs: dict[str, FakeContext] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, dials in (("ca", ()), ("a", ("ca",)), ("b", ("ca", "a"))):
            ident = identity(name)
            peers[name] = PeerService(ident)
            svcs[name] = MeshStateService(ident, peers[name])
            if name == "ca":  # what wiring.py does on the node holding the built-in CA
                svcs[name].ca_revocations = ca_revocations(str(tmp_path / "ca"))
            svcs[name].on_revocations.append(revocation_denier(peers[name]))  # ... and on every node
            ctxs[name] = ctx(name, "peer", [f"127.0.0.1:{peers[d].port}" for d in dials])
            await stack.enter_async_context(running(peers[name], ctxs[name]))
            await stack.enter_async_context(running(svcs[name], ctx(name, "meshstate")))
        await until(lambda: all(s.sync is not None for s in svcs.values()), 30)
        await until(lambda: same([s.sync for s in svcs.values()], 3), 30)

        def sessions_with_b() -> list:
            return [s for _d, s in peers["a"].sessions() if str(s.peer.spiffe_id) == ids["b"]]

        await until(sessions_with_b, 30, what="a session between a and b")
        revoked = await asyncio.to_thread(ca.revoke, None, ids["b"])
        started = time.monotonic()
        await until(lambda: ids["b"] in svcs["a"].revocations, 30, what="the revocation at a")
        entry = svcs["a"].revocations[ids["b"]]
        assert entry["by"] == ids["ca"] and entry["serials"] == [f"{s:x}" for s in revoked]
        # sent away, and b's next sessions refused: a second "revoked" close is a refused redial
        await until(lambda: sample(ctxs["a"], "x0tta_peer_sessions_closed_total", reason="revoked") >= 2, 30,
                    what="b's session sent away and its redial refused")
        print(f"b refused by a {time.monotonic() - started:.2f} s after the CA revoked it")
        # a session sent away is counted when the send-away starts and listed until it has drained:
        # wait for it to go (on a busy CI machine it was still listed when the count was reached)
        await until(lambda: not sessions_with_b(), 30, what="b's sessions at a gone")
        assert peers["a"].denied.refusal(ids["b"])
        assert sample(ctxs["a"], "x0tta_peer_sessions_closed_total", reason="revoked") >= 2
        await until(lambda: not [s for _d, s in peers["ca"].sessions() if str(s.peer.spiffe_id) == ids["b"]], 30,
                    what="b's sessions at the CA node gone")
        assert not sessions_with_b()  # and none came back: b's redials are refused
        assert [s for _d, s in peers["a"].sessions() if str(s.peer.spiffe_id) == ids["ca"]]  # the others stay
