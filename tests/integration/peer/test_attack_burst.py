"""The attack suite's failed-handshake burst (``x0tta.lab.attacks.handshake_burst``, the peer
transport's own refused clients) against a real peer service: every attempt refused, each outcome
handed to the guard as the wiring hands it over, and one look of the guard reports
``handshake_burst`` about the attacker's address - the host-side half of that lab attack."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.agent.wiring import guard_observer, handshake_recorder
from x0tta.config.fields import build
from x0tta.config.guard import GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.service import GuardService
from x0tta.lab.attacks import handshake_burst
from x0tta.lab.core.attacks import score
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, StaticIdentity, sample
from x0tta.telemetry.testing import running

pytestmark = pytest.mark.integration


async def test_a_burst_of_refused_handshakes_is_reported_by_the_guard():
    ca = TestCA("mesh.test")
    settings = build(AgentSettings, {"identity": {"trust_domain": "mesh.test"},
                                     "peer": {"listen_address": "127.0.0.1", "port": 0}})
    server, ctx = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b")))), FakeContext(settings)
    outcomes: deque = deque(maxlen=10_000)
    server.on_handshake(handshake_recorder(outcomes))
    guard = GuardService(settings=GuardSettings(mode="observe"))
    guard.observe = guard_observer({}, outcomes)
    limit = guard.settings.detect.handshake_failures
    async with running(server, ctx):
        counts = await asyncio.to_thread(handshake_burst, "127.0.0.1", server.port, limit + 5)
        started = counts.pop("first_wall")
        assert counts == {"refused": limit + 5, "not_refused": 0, "error": 0} and started <= time.time()
        await until(lambda: sample(ctx, "x0tta_peer_handshakes_total", role="server", result="refused",
                                   reason="no_certificate") == limit + 5, 10)
        [threat] = guard.look(ctx, time.monotonic())
    b = threat["batman"]
    assert (b["detector"], b["subject"], b["evidence"]["failures"]) == ("handshake_burst", "127.0.0.1", limit + 5)
    assert b["evidence"]["reasons"] == {"no_certificate": limit + 5}
    assert score("handshake_burst", 0, 0.0, [("b", 1.0, threat)], ("127.0.0.1",)).detected
