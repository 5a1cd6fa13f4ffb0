"""A session over a neighbour's link-local address names the link it runs over, and keys it.

Two peer subsystems in one network namespace, at the two ends of a veth pair, the client dialling
the server's ``fe80::...%if`` address as the agent dials batman-adv's neighbours: both ends' changes
carry the peer's address with the *local* interface as scope (Python leaves it out of the peer
name), and the same link key, which the heal loop then holds for exactly that interface.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import require_root
from tests.kit.netns import run_script, scratch_netns, sh

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    r"""
    import asyncio, json
    from x0tta.config.fields import build
    from x0tta.config.schema import AgentSettings
    from x0tta.guard.core import link_local_from_mac
    from x0tta.heal.service import HealService
    from x0tta.heal.liveness import read_mac
    from x0tta.peer.service import PeerService
    from x0tta.peer.testing import FakeContext, StaticIdentity
    from x0tta.telemetry.testing import running
    from tests.kit.pki import TestCA

    def settings(port, peers=()):
        return build(AgentSettings, {"identity": {"trust_domain": "mesh.test"},
                                     "peer": {"port": port, "peers": list(peers), "reconnect_min_delay": 0.05}})

    async def main():
        ca = TestCA("mesh.test")
        changes = {"a": [], "b": []}
        heal = HealService()
        heal.link_keys.required = True
        b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))))
        b.subscribe(changes["b"].append)
        b.subscribe(heal.peer_changed)
        async with running(b, FakeContext(settings(7911), node_id="b")):
            target = link_local_from_mac(read_mac("x0lB"), "x0lA")  # b listens on x0lB; a dials from x0lA
            a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))))
            a.subscribe(changes["a"].append)
            async with running(a, FakeContext(settings(0, [f"[{target}]:7911"]), node_id="a")):
                for _ in range(500):
                    if changes["a"] and changes["b"]:
                        break
                    await asyncio.sleep(0.02)
                out = {n: [[c.up, c.host, c.direction, c.link_key.hex()] for c in cs] for n, cs in changes.items()}
                out["heal_keys"] = {h: len(ks) for h, ks in heal.link_keys.keys.items()}
                print(json.dumps(out))

    import os
    import uvloop
    (uvloop.run if os.environ.get("X0TTA_TEST_UVLOOP") else asyncio.run)(main())
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the agent runs on uvloop, which drops scopes itself
def test_a_link_local_session_names_its_interface_and_keys_it(loop):
    require_root()
    with scratch_netns("x0ll") as ns:
        sh(f"ip netns exec {ns} sysctl -q -w net.ipv6.conf.default.accept_dad=0")
        sh(f"ip -n {ns} link add x0lA type veth peer name x0lB")
        for dev in ("x0lA", "x0lB", "lo"):
            sh(f"ip -n {ns} link set {dev} up")
        out = run_script(ns, SCRIPT, env={"X0TTA_TEST_UVLOOP": "1" if loop == "uvloop" else ""})
        ((a_up, a_host, a_dir, a_key),) = out["a"]
        ((b_up, b_host, b_dir, b_key),) = out["b"]
        assert a_up and a_dir == "out" and a_host.endswith("%x0lA"), out  # dialled from x0lA
        assert b_up and b_dir == "in" and b_host.startswith("fe80:") and b_host.endswith("%x0lB"), out
        assert a_key == b_key and len(a_key) == 64
        assert out["heal_keys"] == {"x0lB": 1}
