"""Two peer subsystems on loopback: sessions both ways, peers.list, metrics, rotation without loss."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.kit.clock import ManualClock
from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, StaticIdentity, sample
from x0tta.telemetry.testing import running

pytestmark = pytest.mark.integration


def settings(port: int, peers=(), **peer):
    return build(AgentSettings, {
        "identity": {"trust_domain": "mesh.test"},
        "peer": {"listen_address": "127.0.0.1", "port": port, "peers": list(peers), "heartbeat_interval": 0.5,
                 "idle_timeout": 3.0, "neighbour_refresh": 0.2, "reconnect_min_delay": 0.05, **peer},
    })


async def test_two_nodes_session_and_listing():
    ca = TestCA("mesh.test")
    id_a = StaticIdentity(ca.credentials(ca.issue(path="/node/a")))
    id_b = StaticIdentity(ca.credentials(ca.issue(path="/node/b")))
    b, ctx_b = PeerService(id_b), FakeContext(settings(0), node_id="b")
    changes = []
    b.subscribe(changes.append)
    async with running(b, ctx_b):
        a, ctx_a = PeerService(id_a), FakeContext(settings(0, [f"127.0.0.1:{b.port}"]), node_id="a")
        changes_a = []
        a.subscribe(changes_a.append)
        async with running(a, ctx_a):
            address = f"127.0.0.1:{b.port}"
            assert await a.request(address, "peer.echo", b"over pq tls") == b"over pq tls"
            rows = await ctx_a.admin.handlers["peers.list"]({})
            (row,) = rows
            assert row["spiffe_id"] == "spiffe://mesh.test/node/b" and row["node"] == "b"
            assert row["group"] == "X25519MLKEM768" and row["signature_algorithm"] == "ML-DSA-65"
            assert 3000 < row["svid_expires_in"] <= 3660
            await until(lambda: a.links[address].current.core.rtt is not None)
            (row,) = await ctx_a.admin.handlers["peers.list"]({})
            assert row["rtt_ms"] is not None and row["rtt_ms"] < 1000
            (inb,) = await ctx_b.admin.handlers["peers.list"]({})
            assert inb["direction"] == "in" and inb["spiffe_id"] == "spiffe://mesh.test/node/a"
            assert sample(ctx_b, "x0tta_peer_handshakes_total", role="server", result="ok", reason="ok") == 1
            assert sample(ctx_b, "x0tta_peer_negotiated_groups_total", group="X25519MLKEM768") == 1
            assert sample(ctx_a, "x0tta_peer_sessions", direction="out") == 1
            await until(lambda: ctx_a.health.conditions == ())
            (up,) = changes
            assert up.up and up.host == "127.0.0.1" and up.spiffe_id == "spiffe://mesh.test/node/a"
            assert up.direction == "in"
            # both ends derive the same link key from the session (the TLS exporter), and only they
            (out,) = changes_a
            assert out.direction == "out" and len(out.link_key) == 32 and out.link_key == up.link_key
        await until(lambda: len(changes) == 2)  # a stopped: its session to b went down
        assert not changes[1].up and changes[1].spiffe_id == "spiffe://mesh.test/node/a"
        assert changes[1].link_key == up.link_key  # the down change names the key to retire


async def test_rotation_reauthenticates_without_losing_a_request():
    """Both SVIDs (4 s lifetime) rotate every 1.5 s, like SPIRE at a shorter scale, while requests
    flow: sessions re-authenticate before expiry and drain, and not one request fails.

    On the manual clock: the services decide from it when to re-authenticate and when an SVID has
    run out, and the test moves it 50 ms at a time, each step once requests flow and no handshake
    is under way (a handshake takes no time on this clock, as the services' decisions see it).
    OpenSSL checks the certificates against the host's time, so each is valid in real time from a
    second ago until 4 s after the clock's now."""
    clock = ManualClock(wall=time.time())
    ca = TestCA("mesh.test", clock=clock)

    def creds(path):
        since = time.time() - 1  # never ahead of the clock, which only runs ahead of the host's
        return ca.credentials(ca.issue(path=path, not_before=since, ttl=clock.time() + 4 - since))

    id_a, id_b = StaticIdentity(creds("/node/a")), StaticIdentity(creds("/node/b"))
    b, ctx_b = PeerService(id_b, clock=clock), FakeContext(settings(0, reauth_fraction=0.3), node_id="b")
    keys = []
    b.subscribe(lambda c: c.up and keys.append(c.link_key))
    async with running(b, ctx_b):
        a = PeerService(id_a, clock=clock)
        ctx_a = FakeContext(settings(0, [f"127.0.0.1:{b.port}"], reauth_fraction=0.3), node_id="a")
        async with running(a, ctx_a):
            address = f"127.0.0.1:{b.port}"
            ok = 0
            failures = []
            stop = clock.monotonic() + 7.0
            rotations = 0

            async def rotate():
                nonlocal rotations
                while clock.monotonic() < stop:
                    await clock.sleep(0.75)
                    (id_a if rotations % 2 else id_b).rotate(creds("/node/a" if rotations % 2 else "/node/b"))
                    rotations += 1

            async def client(i):
                nonlocal ok
                while clock.monotonic() < stop:
                    try:
                        assert await a.request(address, "peer.echo", b"%d" % i) == b"%d" % i
                        ok += 1
                    except Exception as exc:
                        failures.append(repr(exc))

            def settled(since):
                link = a.links.get(address)
                flowing = ok > since + 8 or clock.monotonic() >= stop  # the clients are done at stop
                return (flowing and link is not None and link.current is not None and link.current.usable
                        and a.endpoint.active_handshakes == 0 and b.endpoint.active_handshakes == 0)

            async def drive():
                while not rotator.done():
                    since = ok
                    await clock.pass_time(0.05)
                    await until(lambda since=since: settled(since) or rotator.done(), interval=0.002,
                                what="requests flowing and no handshake under way")

            rotator = asyncio.ensure_future(rotate())
            await asyncio.gather(rotator, drive(), *(client(i) for i in range(4)))
            assert failures == [] and ok > 100
            assert rotations >= 8
            assert len(keys) >= 4 and len(set(keys)) == len(keys)  # every re-authentication: a new link key
            assert sample(ctx_a, "x0tta_peer_rotations_total", kind="svid") >= 4
            assert sample(ctx_b, "x0tta_peer_rotations_total", kind="svid") >= 4
            assert sample(ctx_a, "x0tta_peer_reauthentications_total", result="ok") >= 4
            # each before its SVID ran out: no session had to be sent away for an expired peer SVID
            assert sample(ctx_b, "x0tta_peer_sessions_closed_total", reason="peer_svid_expired") == 0
            (row,) = [r for r in await ctx_a.admin.handlers["peers.list"]({}) if r["direction"] == "out"]
            assert row["svid_expires_in"] > 0


async def test_links_follow_the_neighbour_source():
    """On the manual clock: the table is asked again when ``neighbour_refresh`` has passed, not before."""
    clock = ManualClock(wall=time.time())  # OpenSSL checks the chain against the host's time too
    ca = TestCA("mesh.test", clock=clock)
    b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))), clock=clock)
    async with running(b, FakeContext(settings(0), node_id="b")):
        current = [f"127.0.0.1:{b.port}"]
        a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))), neighbours=lambda: current,
                        clock=clock)
        ctx_a = FakeContext(settings(0), node_id="a")
        async with running(a, ctx_a):
            await until(lambda: [r for r in a.sessions() if r[0] == "out"])
            assert list(a.links) == [f"127.0.0.1:{b.port}"]
            current = []  # the neighbour left the table
            await clock.pass_time(0.1)
            assert list(a.links) == [f"127.0.0.1:{b.port}"]  # not asked again yet
            await clock.pass_time(0.15)  # neighbour_refresh (0.2 s) has passed
            await until(lambda: not a.links and not [r for r in a.sessions() if r[0] == "out"])
            await until(lambda: not b.inbound)


async def test_a_quarantined_peer_is_sent_away_and_refused():
    """The gate the wiring sets from the guard's quarantine: an established session is sent away
    (``send_away_where``), and a new one is closed right after its handshake, before anyone hears
    of it coming up."""
    ca = TestCA("mesh.test")
    b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))))
    changes = []
    b.subscribe(changes.append)
    refused: set[str] = set()
    b.gate = lambda host, who: f"{who} is quarantined" if who in refused else ""
    ctx_b = FakeContext(settings(0), node_id="b")
    async with running(b, ctx_b):
        a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))))
        async with running(a, FakeContext(settings(0, [f"127.0.0.1:{b.port}"]), node_id="a")):
            await until(lambda: b.inbound)
            a_id = "spiffe://mesh.test/node/a"
            refused.add(a_id)
            assert b.send_away_where(lambda host, who: who == a_id, "quarantined") == 1
            await until(lambda: [c for c in changes if not c.up])
            assert [c.up for c in changes] == [True, False] and changes[1].reason == "quarantined"
            # a reconnects (its link backs off and dials again): every new session is refused
            await until(lambda: sample(ctx_b, "x0tta_peer_sessions_closed_total", reason="quarantined") >= 1)
            assert not b.inbound and [c.up for c in changes] == [True, False]
            refused.clear()  # released: the next session is taken
            await until(lambda: b.inbound, timeout=30)
            await until(lambda: [c.up for c in changes] == [True, False, True])


async def test_a_link_refused_after_every_handshake_backs_off_instead_of_redialling_in_a_loop(monkeypatch):
    """A peer that completes the handshake and then refuses the session (it quarantined or revoked
    us) closes each one at once. The link counts that as a failed attempt and waits its backoff
    before the next dial: redialling at once ran PQ handshakes in a loop, 20 a second between two
    lab nodes that had quarantined each other. On the manual clock, without jitter: the link
    sleeps 1 s, then 2 s, then 4 s between refused sessions, dials nothing before the test moves
    time, and redials at once when a session that held for longer than the backoff's cap drops."""
    import x0tta.peer.service as peer_service

    monkeypatch.setattr(peer_service.random, "uniform", lambda a, b: 1.0)
    ca = TestCA("mesh.test")
    b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))))
    refusing = {"on": True}
    b.gate = lambda host, who: "quarantined" if refusing["on"] else ""
    ctx_b = FakeContext(settings(0), node_id="b")
    clock = ManualClock(wall=time.time())  # the certificates were issued on the host's clock
    async with running(b, ctx_b):
        def refusals() -> float:
            return sample(ctx_b, "x0tta_peer_sessions_closed_total", reason="quarantined")

        a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))), clock=clock)
        ctx_a = FakeContext(settings(0, [f"127.0.0.1:{b.port}"], reconnect_min_delay=1.0, reconnect_max_delay=8.0),
                            node_id="a")
        async with running(a, ctx_a):
            link = None

            def sleeping(seconds: float) -> bool:  # the link is down and its redial sleep waits
                return (link is not None and link.current is None
                        and any(abs(left - seconds) < 1e-6 for left in clock.pending()))

            await until(lambda: refusals() == 1)
            link = next(iter(a.links.values()))
            for n, delay in ((1, 1.0), (2, 2.0), (3, 4.0)):
                await until(lambda delay=delay: sleeping(delay))
                assert refusals() == n  # nothing dialled while the clock stands
                await clock.pass_time(delay - 0.1)
                assert refusals() == n and link.current is None  # not before the delay
                if n == 3:
                    refusing["on"] = False  # released: the next dial holds
                await clock.pass_time(0.1)
                await until(lambda n=n: refusals() == n + 1 or link.current is not None)
            await until(lambda: link.current is not None)
            assert refusals() == 3 and "after it came up" not in link.last_error
            # a session that held longer than the cap drops: redialled at once, no sleep first
            await clock.pass_time(9.0, step=1.0)
            held = link.current
            assert held is not None and not held.closed.is_set()
            first = next(iter(b.inbound))
            await b.send_away(first, "drained")  # the clock stands: a link that slept first never dials
            await until(lambda: any(s is not first for s in b.inbound))
            await until(lambda: link.current is not None and link.current is not held)


async def test_a_peer_revoked_mid_session_goes_down_as_revoked():
    """A new revocation list sends the revoked peer's session away; its down change says
    ``revoked`` (not how the session drained), which ends its guard admission at once."""
    ca = TestCA("mesh.test")
    b_leaf = ca.issue(path="/node/b")
    id_b = StaticIdentity(ca.credentials(b_leaf))
    b = PeerService(id_b)
    changes = []
    b.subscribe(changes.append)
    async with running(b, FakeContext(settings(0), node_id="b")):
        a_leaf = ca.issue(path="/node/a")
        a = PeerService(StaticIdentity(ca.credentials(a_leaf)))
        async with running(a, FakeContext(settings(0, [f"127.0.0.1:{b.port}"], reconnect_min_delay=5.0),
                                          node_id="a")):
            await until(lambda: b.inbound)
            id_b.rotate(ca.credentials(b_leaf, revoked=(a_leaf,)))
            await until(lambda: [c for c in changes if not c.up])
            assert [(c.up, c.reason) for c in changes] == [(True, ""), (False, "revoked")]
