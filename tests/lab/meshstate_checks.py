"""Guest-side checks of the replicated mesh state's lab (tests/lab/test_meshstate_lab.py).

Every node's agent runs the ``meshstate`` subsystem; these checks read its state through the admin
API (``meshstate.show``, what ``x0tta meshstate`` prints) and time how long the nodes take to hold
one state. :func:`forge` is the non-member: an SVID of a CA the mesh does not trust, in the mesh's
own trust domain. It dials a node itself (the PQ mTLS handshake refuses it), then has a member
carry its signed update over the member's own session, as a compromised or careless relay would
(the receiving node's replica refuses it as ``not_member`` and counts it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
from cryptography.hazmat.primitives import serialization

from x0tta.lab.core.agentconf import LAB_TRUST_DOMAIN
from x0tta.lab.core.topology import veth_mac

POLL_S = 0.2


def _shown(lab: Any, node: str) -> dict[str, Any]:
    return lab.agent_call(node, "meshstate.show")  # type: ignore[no-any-return]


def _state(lab: Any, node: str) -> dict[str, Any] | None:
    try:
        shown = _shown(lab, node)
    except Exception:
        return None
    return shown.get("state") if shown.get("ready") else None


def _digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def registered(lab: Any, node: str, timeout: float = 120.0) -> float:
    """Seconds until ``node`` reads a registry entry of every node of the lab."""
    want = len(lab.topology.nodes)
    start = time.monotonic()
    while True:
        state = _state(lab, node)
        if state is not None and len(state["registry"]) == want:
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{node}: {len((state or {}).get('registry', {}))} of {want} registry entries "
                                 f"after {timeout} s")
        time.sleep(0.5)


def view(lab: Any, node: str) -> dict[str, Any]:
    """What ``node`` holds now: the digest of its state, its incident summaries (key -> opened,
    closed), the registry's and quarantine claims' keys, and the updates it refused by reason."""
    shown = _shown(lab, node)
    state = shown["state"]
    return {"digest": _digest(state), "t": round(lab.now(), 3),
            "incidents": {k: [v["opened"], v["closed"]] for k, v in state["incidents"].items()},
            "registry": sorted(state["registry"]), "quarantine": sorted(state["quarantine"]),
            "refused": shown["refused"], "written": shown["written"]}


def same_state(lab: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll every node's state until all hold the same; ``at``: when they first did, on the run's
    timeline (the events' ``t``)."""
    nodes = [n.name for n in lab.topology.nodes]
    start, polls = time.monotonic(), 0
    last: dict[str, str] = {}
    while True:
        polls += 1
        states = {n: _state(lab, n) for n in nodes}
        if all(s is not None for s in states.values()):
            last = {n: _digest(s) for n, s in states.items()}  # type: ignore[arg-type]
            if len(set(last.values())) == 1:
                one = next(iter(states.values()))
                assert one is not None
                authors = sorted({k.split(" ", 1)[0] for k in one["incidents"]})
                return {"at": round(lab.now(), 3), "polls": polls, "digest": next(iter(last.values())),
                        "registry": len(one["registry"]), "incidents": len(one["incidents"]),
                        "incident_authors": authors}
        if time.monotonic() - start > timeout:
            raise AssertionError(f"no common state after {timeout} s: {last}")
        time.sleep(POLL_S)


def forge(lab: Any, node: str, victim: str) -> dict[str, Any]:
    """The non-member, from ``node``'s namespace against ``victim`` (its neighbour)."""
    before = _shown(lab, victim)["refused"].get("not_member", 0)
    topo = lab.topology
    mac = veth_mac(topo.node(victim), topo.link(f"{node}-{victim}"))
    from x0tta.guard.core import link_local_from_mac

    address = f"[{link_local_from_mac(mac, f'to-{victim}')}]:7443"
    with lab.netns(node):
        out = asyncio.run(_forge(Path(lab.out), node, address))
    deadline = time.monotonic() + 20
    while True:
        after = _shown(lab, victim)["refused"].get("not_member", 0)
        if after > before or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    return {**out, "not_member_before": before, "not_member_after": after}


async def _forge(out: Path, node: str, address: str) -> dict[str, Any]:
    from x0tta.common.spiffe_id import AuthorizationPolicy
    from x0tta.config.fields import build
    from x0tta.config.schema import AgentSettings
    from x0tta.fleet.core import state as st
    from x0tta.fleet.statesync import PUSH
    from x0tta.identity.builtin import BuiltinPaths, BuiltinSource
    from x0tta.identity.ca import CertificateAuthority
    from x0tta.peer.service import PeerService
    from x0tta.peer.testing import FakeContext, StaticIdentity
    from x0tta.peer.tlspolicy import Credentials
    from x0tta.telemetry.testing import running

    td = LAB_TRUST_DOMAIN
    settings = build(AgentSettings, {
        "identity": {"trust_domain": td},
        "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": [address], "dial_neighbors": False,
                 "reconnect_min_delay": 0.2, "reconnect_max_delay": 1.0},
    })
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        rogue_ca = CertificateAuthority.init(Path(scratch) / "rogue-ca", td)
        rogue = rogue_ca.issue(f"spiffe://{td}/node/rogue", 3600.0)
        author = str(rogue.spiffe_id)
        policy = AuthorizationPolicy.build(td)
        # 1. the non-member dials the victim itself
        alone = PeerService(StaticIdentity(Credentials(rogue, {td: rogue_ca.bundle()}, policy)))
        async with running(alone, FakeContext(settings, node_id="rogue")):
            try:
                await alone.request(address, PUSH, b"", timeout=8.0)
                result["own_session"] = "accepted"
            except Exception as exc:
                result["own_session"] = f"refused: {type(exc).__name__}: {str(exc)[:160]}"
        # 2. a member (this node's own SVID) carries the non-member's signed update
        now = time.time()
        doc = pycrdt.Doc(client_id=st.client_id(author))
        with doc.transaction():
            doc.get("registry", type=pycrdt.Map)[author] = st.canonical(
                {"macs": ["02:66:66:66:66:66"], "role": "gateway", "version": "9", "at": now})
            doc.get("heads", type=pycrdt.Map)[author] = st.canonical({"seq": 1, "at": now})
        key = serialization.load_pem_private_key(rogue.private_key_pem, None)
        forged = st.sign(st.Update(author, 0, 0, 2, now, doc.get_update(), st.chain_der(rogue.cert_chain)), key)
        source = BuiltinSource(BuiltinPaths.in_dir(out / "input" / "identity" / node), td, request_renewal=False)
        await source.start()
        try:
            member = Credentials(source.svid(), source.bundles(), policy, tuple(source.revocations()))
            relay = PeerService(StaticIdentity(member))
            async with running(relay, FakeContext(settings, node_id=node)):
                answer = await relay.request(address, PUSH, st.encode(st.Updates((forged,))), timeout=20.0)
                result["relayed"] = "answered" if answer == b"" else f"answered {answer[:40]!r}"
        finally:
            await source.close()
    result["author"] = author
    return result
