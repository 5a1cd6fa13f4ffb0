"""The CA's revocations in the replicated mesh state, and acted on: the CA node makes its revocation
entries what its CA holds revoked (one per SPIFFE ID, with the serials, the reason and the time;
gone once every revoked certificate expired); only the mesh's revokers' entries are in force; the
revocations in force become the peer subsystem's deny-list (by ID and by serial) through the
composition root. The rules are pure; the subsystem writes on the CA node and tells its listeners
on every node."""

from __future__ import annotations

import time

import pycrdt
import pytest
from structlog.testing import capture_logs

from tests.kit.pki import TestCA
from tests.kit.wait import until
from tests.unit.fleet.test_fleet_state import REVOKER, forge, nid, replica, sync
from tests.unit.fleet.test_fleet_state_writes import NoPeers, shown
from x0tta.agent.wiring import revocation_denier
from x0tta.config.fields import ConfigError, build
from x0tta.config.schema import AgentSettings
from x0tta.fleet.core import state as st
from x0tta.fleet.core.state import Reason
from x0tta.fleet.stateservice import MeshStateService, revokers
from x0tta.peer.core.deny import DenyList
from x0tta.peer.testing import FakeContext, StaticIdentity, sample
from x0tta.telemetry.testing import running

TD = "mesh.test"
NOW = 1_800_000_000.0


def record(serial: int, name: str | None, at: float = NOW - 100, reason: str | None = "keyCompromise",
           not_after: float | None = NOW + 3600) -> dict:
    return {"serial": serial, "spiffe_id": nid(name) if name else None, "reason": reason, "at": at,
            "not_after": not_after}


def test_the_ca_node_writes_one_entry_per_revoked_node_with_its_serials():
    records = [record(0x1F, "b", at=NOW - 50), record(0x2A, "b", at=NOW - 10, reason="superseded"),
               record(0x3, "c", reason=None),
               record(0x4, "d", not_after=NOW - 1),  # expired: the CRL drops it, so does the state
               record(0x5, None),  # a serial the CA has no record of: its CRL carries it, the state cannot
               record(0x6, "ca")]  # the CA node itself: it does not shut itself out
    changes = st.revocation_changes(REVOKER, {}, records, NOW)
    assert changes == {
        nid("b"): {"by": REVOKER, "reason": "superseded", "at": NOW - 10, "serials": ["1f", "2a"]},
        nid("c"): {"by": REVOKER, "reason": "unspecified", "at": NOW - 100, "serials": ["3"]},
    }
    for value in changes.values():
        st.encode_value("revocations", value)  # what a receiver checks
    # written: nothing more to do; the last certificate of b expired: its entry goes
    assert st.revocation_changes(REVOKER, changes, records, NOW) == {}
    later = st.revocation_changes(REVOKER, changes, records, NOW + 7200)
    assert later == {nid("b"): None, nid("c"): None}
    many = [record(i, "b", at=NOW - 1000 + i) for i in range(1, 40)]
    assert len(st.revocation_changes(REVOKER, {}, many, NOW)[nid("b")]["serials"]) == st.MAX_SERIALS


@pytest.fixture(scope="module")
def pki() -> tuple[TestCA, dict]:
    ca = TestCA(TD, kind="p256")  # ECDSA keeps it fast; the integration test signs with ML-DSA-65
    return ca, {name: ca.issue(path=f"/node/{name}") for name in ("a", "b", "ca")}


def test_only_a_revokers_entries_are_in_force_and_others_are_refused_and_counted(pki):
    ca, leaves = pki
    now = ca.cert.not_valid_before_utc.timestamp() + 3600 + 120  # inside every leaf's validity
    a, b, rev = (replica(ca, leaves[n], n) for n in ("a", "b", "ca"))
    rev.write(now, {"revocations": st.revocation_changes(rev.author, {}, [record(0x1F, "c")], now)})
    sync(a, rev, now)
    assert a.revocations() == {nid("c"): {"by": REVOKER, "reason": "keyCompromise", "at": NOW - 100,
                                          "serials": ["1f"]}}
    assert st.in_force(a.view(), revokers=()) == {}  # a node whose policy names no revoker acts on none
    # b is no revoker: its revocation of a is refused by a with its own reason, and counted
    value = st.canonical({"by": b.author, "reason": "x", "at": now, "serials": []})
    forged = forge(leaves["b"], b.author, st.client_id(b.author),
                   lambda d: d.get("revocations", type=pycrdt.Map).__setitem__(a.author, value), now)
    outcome = a.receive(st.encode(st.Updates((forged,))), now)[1][0]
    assert outcome.refusal is not None and outcome.refusal.reason is Reason.NOT_REVOKER
    assert a.refused[Reason.NOT_REVOKER] == 1 and a.author not in a.revocations()


def test_the_deny_list_refuses_by_id_and_by_serial():
    denied = DenyList({nid("b"): "keyCompromise"}, {0x2A: "superseded"})
    assert "revoked" in denied.refusal(nid("b"), 0x99)
    assert "2a is revoked" in denied.refusal(nid("c"), 0x2A)
    assert denied.refusal(nid("c"), 0x2B) == "" and denied.refusal(nid("c")) == ""
    assert denied and not DenyList()


def test_the_revocations_in_force_become_the_peer_subsystem_s_deny_list():
    class Peer:
        denied = DenyList()

        def deny(self, d: DenyList) -> int:
            self.denied = d
            return 0

    peer = Peer()
    revocation_denier(peer)({nid("b"): {"by": REVOKER, "reason": "keyCompromise", "at": NOW,
                                        "serials": ["1f", "2a"]}})
    assert peer.denied.refusal(nid("b"))
    assert peer.denied.refusal(nid("x"), 0x2A) and not peer.denied.refusal(nid("x"), 0x2B)
    revocation_denier(peer)({})  # the revocation ended (its certificates expired): nobody denied
    assert not peer.denied


def settings(**over) -> AgentSettings:
    return build(AgentSettings, {"identity": {"trust_domain": TD, **over.get("identity", {})},
                                 "meshstate": {"enabled": True, "interval": 0.2, **over.get("meshstate", {})}})


def test_whose_revocations_a_node_takes():
    assert revokers(settings()) == frozenset()  # nobody: the revocations map stays empty
    assert revokers(settings(identity={"ca_ids": [nid("ca")]})) == {nid("ca")}  # the CA nodes it renews through
    named = settings(identity={"ca_ids": [nid("ca")]}, meshstate={"revokers": [nid("ca2")]})
    assert revokers(named) == {nid("ca2")}  # the configured list wins
    # holding the CA makes no revoker: every node's list must name it, or they refuse its writes
    assert revokers(settings(identity={"ca_dir": "/var/lib/x0tta/ca"})) == frozenset()
    with pytest.raises(ConfigError, match=r"meshstate\.revokers: scheme"):
        settings(meshstate={"revokers": ["not-an-id"]})


async def test_the_ca_node_writes_what_its_ca_revoked_and_acts_on_it(tmp_path):
    ca = TestCA(TD)
    svc = MeshStateService(StaticIdentity(ca.credentials(ca.issue(path="/node/ca"))), NoPeers())
    held: list[dict] = []
    svc.ca_revocations = lambda: list(held)
    told: list[dict] = []
    svc.on_revocations.append(told.append)
    ctx = FakeContext(settings(identity={"ca_dir": str(tmp_path / "ca")}, meshstate={"revokers": [REVOKER]}),
                      name="meshstate", node_id="ca", state_dir=tmp_path)
    async with running(svc, ctx):
        await until(lambda: svc.written["registry"] == 1, 30)
        now = time.time()
        held.append(record(0x1F, "b", at=now - 5, not_after=now + 3600))
        svc.revocations_changed()
        await until(lambda: told and nid("b") in told[-1], 30)
        assert told[-1][nid("b")]["serials"] == ["1f"] and told[-1][nid("b")]["by"] == REVOKER
        state = (await shown(ctx))["state"]
        assert state["revocations"][nid("b")]["reason"] == "keyCompromise"
        await until(lambda: sample(ctx, "x0tta_meshstate_revocations") == 1
                    and sample(ctx, "x0tta_meshstate_writes_total", kind="revocation") == 1, 30)
        held.clear()  # every revoked certificate of b expired: the entry goes, b is let in again
        await until(lambda: told[-1] == {}, 30)  # within a round, without being told
        assert (await shown(ctx))["state"]["revocations"] == {}


async def test_a_ca_node_that_is_no_revoker_writes_no_revocation(tmp_path):
    """Its revocation would be refused by every node (not_revoker), and every later update of it
    with it (a gap): it says so and writes none."""
    ca = TestCA(TD)
    svc = MeshStateService(StaticIdentity(ca.credentials(ca.issue(path="/node/ca"))), NoPeers())
    svc.ca_revocations = lambda: [record(0x1F, "b", at=time.time(), not_after=time.time() + 3600)]
    ctx = FakeContext(settings(identity={"ca_dir": str(tmp_path / "ca")}), name="meshstate", node_id="ca",
                      state_dir=tmp_path)
    with capture_logs() as logs:
        async with running(svc, ctx):
            await until(lambda: sample(ctx, "x0tta_meshstate_nodes") == 1, 30)  # a round went by
            svc.revocations_changed()
            await until(lambda: svc.written["registry"] == 1, 30)
            assert (await shown(ctx))["state"]["revocations"] == {} and not svc.written["revocation"]
    assert "meshstate_ca_not_revoker" in [e["event"] for e in logs]
