"""The composition root connects what the subsystems cannot see of each other."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from x0tta.agent.wiring import factories
from x0tta.config.loader import parse_settings
from x0tta.guard.core import link_local_from_mac, mac_from_link_local


@dataclass
class _Neighbor:
    neigh_address: str
    hard_ifname: str | None


@dataclass
class _Seen:
    neighbors: list[_Neighbor]


def test_link_local_round_trip():
    addr = link_local_from_mac("02:ba:00:01:00:01", "eth0")
    assert addr == "fe80::ba:ff:fe01:1%eth0"
    assert mac_from_link_local(addr) == bytes.fromhex("02ba00010001")


def test_each_subsystem_built_once_and_shared():
    table = factories(parse_settings(""))
    assert list(table) == ["identity", "mesh", "heal", "guard", "peer", "probes"]
    settings = parse_settings("")
    mesh = table["mesh"](settings)
    assert table["mesh"](settings) is mesh
    peer = table["peer"](settings)
    # The peer subsystem dials batman-adv's neighbours at their link-local addresses...
    assert peer.peer_addresses() == []
    mesh.last_observation = _Seen([_Neighbor("02:ba:00:02:00:01", "veth1"), _Neighbor("02:ba:00:03:00:02", None)])
    assert peer.peer_addresses() == [("fe80::ba:ff:fe02:1%veth1", settings.peer.port)]
    # ...and admits each authenticated one into the guard of the one guard subsystem.
    guard = table["guard"](settings)
    assert any(type(cb).__name__ == "PeerAdmission" and cb.guard is guard.guard for cb in peer._subscribers)


def _loaded(probes):
    """What the probes do with their listeners once the object is loaded; the maps it hands out."""
    from x0tta.guard.testing import DictMap
    from x0tta.probes import core

    maps = {name: DictMap() for name in core.MAP_NAMES}
    for listener in probes._map_listeners:
        listener(maps)
    return maps


def test_the_guard_enforces_through_the_maps_the_probes_load():
    settings = parse_settings('[guard]\nmode = "enforce"\nadmitted_macs = ["02:00:00:00:00:0a"]\n')
    table = factories(settings)
    guard, probes = table["guard"](settings), table["probes"](settings)
    assert not guard.guard.bound
    maps = _loaded(probes)
    assert guard.guard.bound and maps["config"].data[b"\0\0\0\0"][:4] == (1).to_bytes(4, "little")
    assert list(maps["admitted"].data) == [bytes.fromhex("02000000000a")]
    guard.guard.admit("02:00:00:00:00:0b")
    assert len(maps["admitted"].data) == 2  # written at once
    for listener in probes._map_listeners:
        listener(None)  # the probes stop
    assert not guard.guard.bound and guard.guard.is_admitted("02:00:00:00:00:0b")


def test_without_the_guard_subsystem_the_kernel_guard_only_observes():
    settings = parse_settings('[guard]\nenabled = false\nmode = "enforce"\n')
    table = factories(settings)
    assert "guard" not in table
    assert not any(type(cb).__name__ == "PeerAdmission" for cb in table["peer"](settings)._subscribers)
    maps = _loaded(table["probes"](settings))
    assert maps["config"].data[b"\0\0\0\0"][:4] == (0).to_bytes(4, "little")  # observe: nothing dropped


def test_neighbour_dialling_can_be_turned_off():
    settings = parse_settings("[peer]\ndial_neighbors = false\n")
    table = factories(settings)
    mesh = table["mesh"](settings)
    mesh.last_observation = _Seen([_Neighbor("02:ba:00:02:00:01", "veth1")])
    assert table["peer"](settings).peer_addresses() == []


def test_with_an_identity_the_heal_loop_takes_probe_keys_from_peer_sessions():
    from x0tta.peer.service import PeerChange

    settings = parse_settings("")
    table = factories(settings)
    heal = table["heal"](settings)
    peer = table["peer"](settings)
    assert not heal.link_keys.required and not heal.session_keys_due()  # no SVID yet: nothing to key with
    table["identity"](settings)._ready.set()  # the source delivered one
    assert heal.session_keys_due() and heal.link_keys.required
    assert not heal.session_keys_due()  # once
    key = b"s" * 32
    peer._notify(PeerChange(True, "fe80::ba:ff:fe02:1%veth1", "spiffe://mesh.x0tta/node/b", "out", link_key=key))
    peer._notify(PeerChange(True, "10.0.0.2", "spiffe://mesh.x0tta/node/c", "out", link_key=b"r" * 32))  # routed
    assert [kid for kid, _k in heal.link_keys.signing("veth1")] and list(heal.link_keys.keys) == ["veth1"]
    peer._notify(PeerChange(False, "fe80::ba:ff:fe02:1%veth1", "spiffe://mesh.x0tta/node/b", "out", "eof",
                            link_key=key))
    assert heal.link_keys.signing("veth1") == []  # closed: verifies for the grace, signs no more


def test_without_an_identity_probes_are_not_session_keyed():
    settings = parse_settings("[identity]\nenabled = false\n")
    heal = factories(settings)["heal"](settings)
    assert not heal.session_keys_due() and not heal.link_keys.required


def test_the_fleet_plane_runs_only_with_a_broker_and_takes_the_heal_loops_events():
    assert "fleet" not in factories(parse_settings('[fleet]\nenabled = true\n'))
    settings = parse_settings('[fleet]\nbroker = "fleet.example"\n')
    table = factories(settings)
    assert list(table)[:2] == ["identity", "fleet"]
    fleet, heal = table["fleet"](settings), table["heal"](settings)
    assert heal.listeners == [fleet.heal_event]
    assert "fleet" not in factories(parse_settings('[fleet]\nbroker = "fleet.example"\nenabled = false\n'))


class _NeighborsMap:
    """The probes' ``neighbors`` map as a single-key lookup sees it."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def lookup(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def test_the_heal_prober_corroborates_with_the_probes_per_neighbour_figures():
    from types import SimpleNamespace

    from x0tta.probes import core

    settings = parse_settings("")
    table = factories(settings)
    heal, probes = table["heal"](settings), table["probes"](settings)
    assert heal.neighbour_rx == probes.last_rx  # handed over by the wiring, heal imports nothing of it
    assert heal.neighbour_rx(3, "02:00:00:00:00:0b") is None  # the object is not loaded yet
    value = core.NEIGH_VALUE.pack(9, 900, 0, 0, 0, 10**9, 42 * 10**9 + 5 * 10**8, 0)
    silent = core.NEIGH_VALUE.pack(0, 0, 4, 400, 0, 10**9, 0, 10**9)  # only our own frames to it
    maps = {core.MAP_NEIGHBORS: _NeighborsMap({
        core.neighbor_lookup_key(3, "02:00:00:00:00:0b"): value,
        core.neighbor_lookup_key(3, "02:00:00:00:00:0c"): silent,
    })}
    probes._probes = SimpleNamespace(obj=SimpleNamespace(maps=maps))
    assert heal.neighbour_rx(3, "02:00:00:00:00:0B") == 42.5
    assert heal.neighbour_rx(4, "02:00:00:00:00:0b") is None  # not heard on that interface
    assert heal.neighbour_rx(3, "02:00:00:00:00:0c") is None  # never received from
    assert heal.neighbour_rx(3, "not a mac") is None


def test_without_the_probes_heal_corroborates_with_the_interface_counter():
    settings = parse_settings("[probes]\nenabled = false\n")
    assert factories(settings)["heal"](settings).neighbour_rx is None


def test_the_guard_s_detectors_see_what_the_probes_and_the_mesh_last_saw():
    from types import SimpleNamespace

    from x0tta.mesh.core.batadv import Gateway, Neighbor, Originator
    from x0tta.probes import core

    settings = parse_settings("")
    table = factories(settings)
    guard, probes, mesh = table["guard"](settings), table["probes"](settings), table["mesh"](settings)
    empty = guard.observe(5.0)
    assert (empty.at, empty.heard, empty.routes, empty.flows) == (5.0, (), (), ())  # nothing polled yet
    rogue = "02:00:00:00:00:66"
    snap = core.Snapshot(
        taken_ns=10_000_000_000,
        flows={core.FlowKey(3, "ingress", 6, 6, "fd00::66", "fd00::1", 40000, 22):
               core.FlowStats(7, 700, 0, 1_000_000_000, 9_000_000_000)},
        neighbors={core.NeighborKey(3, rogue): core.NeighborStats(50, 5000, 0, 0, 40, 2_000_000_000, 9_500_000_000, 0)},
        stats={},
    )
    probes.last = SimpleNamespace(snapshot=snap, names={3: "wlan0"})
    mesh.last_observation = SimpleNamespace(
        originators=[Originator("02:00:00:00:00:0c", rogue, 3, 100, "wlan0", True, None, 900_000)],
        neighbors=[Neighbor(rogue, 3, 100, "wlan0", throughput=20_000)],
        gateways=[Gateway(rogue, rogue, "wlan0", 3, bandwidth_down=42_949_672, bandwidth_up=100)],
    )
    obs = guard.observe(10.0)
    [heard] = obs.heard
    assert (heard.interface, heard.mac, heard.rx_packets, heard.denied_packets) == ("wlan0", rogue, 50, 40)
    assert (heard.first_seen, heard.last_rx) == (2.0, 9.5)
    [flow] = obs.flows
    assert (flow.interface, flow.src, flow.dport, flow.packets, flow.first_seen) == ("wlan0", "fd00::66", 22, 7, 1.0)
    [route] = obs.routes
    assert (route.orig, route.neigh, route.interface, route.throughput, route.best) == (
        "02:00:00:00:00:0c", rogue, "wlan0", 900_000, True)
    assert [(m.mac, m.throughput) for m in obs.links] == [(rogue, 20_000)]
    assert [(g.orig, g.bandwidth_down, g.bandwidth_up) for g in obs.gateways] == [(rogue, 4_294_967_200, 10_000)]
    # and the detectors make sense of it: a hijacking gateway and a route faster than its first hop
    from x0tta.guard.core.detect import detect

    found = {f.signature.name for f in detect([obs], settings.guard.detect, 10.0)}
    assert found == {"gateway_bandwidth", "inflated_link_metric"}


def test_the_guard_s_detectors_see_the_handshakes_of_the_peer_subsystem():
    from x0tta.guard.core.detect import detect
    from x0tta.peer.tls import HandshakeResult

    settings = parse_settings("")
    table = factories(settings)
    guard, peer = table["guard"](settings), table["peer"](settings)
    rogue = "02:00:00:00:00:66"
    ll = link_local_from_mac(rogue, "wlan0")  # fe80::...%wlan0
    for i in range(25):  # accepted connections are host:port, dialled ones [host]:port
        peer._observe(HandshakeResult("server", False, "tls_error", f"{ll}:{40000 + i}"))
    assert guard._soon  # a refused handshake asked the guard to look soon
    guard._soon = False
    peer._observe(HandshakeResult("client", True, "ok", f"[{ll}]:7443", spiffe_id="spiffe://m/a"))
    peer._observe(HandshakeResult("server", True, "ok", f"{ll}:40100", spiffe_id="spiffe://m/b"))
    peer._observe(HandshakeResult("client", False, "unreachable", f"[{ll}]:7443"))
    assert not guard._soon  # nor does a dial that found no one
    obs = guard.observe(10.0)
    assert len(obs.handshakes) == 28 and {h.address for h in obs.handshakes} == {ll}
    assert guard.observe(11.0).handshakes == ()  # taken once
    found = {f.signature.name: f for f in detect([obs], settings.guard.detect, obs.handshakes[-1].at + 1)}
    assert set(found) == {"handshake_burst", "mac_two_identities"}
    assert found["handshake_burst"].macs == (rogue,) and found["mac_two_identities"].macs == (rogue,)


def test_the_guard_enforces_once_the_identity_is_there_and_quarantines_for_the_heal_loop():
    """mode auto follows the identity subsystem; the heal loop reads the guard's threats and
    quarantines through it; a quarantine closes the neighbour's peer sessions and the peer gate
    refuses new ones."""
    settings = parse_settings("[guard]\nenforce_grace = 0.0\nquarantine_share = 1.0\n")  # one neighbour, no other
    table = factories(settings)
    heal, guard, peer = table["heal"](settings), table["guard"](settings), table["peer"](settings)
    guard._started = 0.0
    assert guard.mode_now(1.0) == "observe"  # no SVID: it cannot admit anyone
    table["identity"](settings)._ready.set()
    assert guard.mode_now(2.0) == "enforce"
    assert heal.threats == guard.active_threats and heal.quarantine == guard.quarantine
    b_ll, b_id = "fe80::ba:ff:fe02:1%veth1", "spiffe://mesh.x0tta/node/b"
    assert peer.gate(b_ll, b_id) == ""
    closed = []
    peer.send_away_where = lambda match, reason: closed.append((match(b_ll, "x"), match("10.0.0.9", b_id), reason))
    assert heal.quarantine("02:ba:00:02:00:01", 60.0, "test") == ""
    assert list(heal.quarantined()) == ["02:ba:00:02:00:01"]
    assert closed == [(True, False, "quarantined")]  # its MAC; it had no binding, so no SPIFFE ID
    assert peer.gate(b_ll, b_id) == "02:ba:00:02:00:01 is quarantined"
    assert peer.gate("fe80::ba:ff:fe03:1%veth2", b_id) == ""


async def test_operator_quarantine_and_release_go_to_the_guard_by_mac_or_spiffe_id():
    import pytest

    from x0tta.agent.wiring import AgentHooks, fleet_actions
    from x0tta.common.errors import PermanentError
    from x0tta.fleet.commands import Actions, Unsupported

    class _Cmd:
        def __init__(self, action: str, node: str) -> None:
            self.id, self.action, self.args = "c1", action, {"node": node}

    class _Guard:
        def __init__(self) -> None:
            from x0tta.guard.core.binding import Binding, Bindings

            self.bindings = Bindings(bound={bytes.fromhex("02ba00010001"): Binding("spiffe://m/node/a", "e0", 0.0),
                                            bytes.fromhex("02ba00010002"): Binding("spiffe://m/node/a", "e1", 0.0),
                                            bytes.fromhex("02ba00020001"): Binding("spiffe://m/node/b", "e0", 0.0)})
            self.calls: list[tuple] = []

        def bound_macs(self, who):
            return self.bindings.bound_macs(who)

        def quarantine(self, mac, ttl, reason):
            self.calls.append(("q", mac.hex(), ttl, reason))
            return "share cap" if mac.hex().endswith("0002") else ""

        def release(self, who, by):
            self.calls.append(("r", who, by))
            return ["02:ba:00:01:00:01"] if who.endswith("/a") else []

    guard, actions = _Guard(), Actions()
    fleet_actions(actions, {"guard": guard}, AgentHooks())
    out = await actions.get("quarantine")(_Cmd("quarantine", "spiffe://m/node/a"))
    assert out["quarantined"] == ["02:ba:00:01:00:01"] and out["refused"] == {"02:ba:00:01:00:02": "share cap"}
    assert [c[1] for c in guard.calls] == ["02ba00010001", "02ba00010002"] and guard.calls[0][2] == 600.0
    await actions.get("quarantine")(_Cmd("quarantine", "02:ba:00:02:00:01"))
    assert guard.calls[-1][1] == "02ba00020001"
    with pytest.raises(PermanentError, match="no neighbour MAC"):
        await actions.get("quarantine")(_Cmd("quarantine", "spiffe://m/node/z"))
    assert (await actions.get("release")(_Cmd("release", "spiffe://m/node/a")))["released"]
    with pytest.raises(PermanentError, match="not quarantined"):
        await actions.get("release")(_Cmd("release", "spiffe://m/node/b"))
    bare = Actions()
    fleet_actions(bare, {}, AgentHooks())  # an agent without a guard: refused as unsupported
    with pytest.raises(Unsupported):
        await bare.get("quarantine")(_Cmd("quarantine", "spiffe://m/node/a"))


async def test_coord_runs_with_endpoints_and_samples_the_agent_health_heal_harm_and_originators(tmp_path):
    from x0tta.agent.wiring import AgentHooks

    health = [{"subsystem": "mesh", "state": "ok"}, {"subsystem": "probes", "state": "degraded"},
              {"subsystem": "coord", "state": "degraded"}]
    assert "coord" not in factories(parse_settings(""))
    settings = parse_settings(f'[node]\nstate_dir = "{tmp_path}"\n[coord]\nendpoints = ["https://127.0.0.1:2379"]\n')
    table = factories(settings, AgentHooks(subsystem_health=lambda: health))
    assert list(table).index("coord") < list(table).index("heal")
    coord = table["coord"](settings)
    from x0tta.coord.service import operator_verifier

    assert table["coord"](settings) is coord and coord.verifier is operator_verifier
    # originators with a best route, each counted once (the mesh subsystem does not run: its last dump)
    routes = [SimpleNamespace(orig_address=a, flag_best=best) for a, best in (("a", True), ("a", False), ("b", True),
                                                                              ("c", True), ("d", False))]
    table["mesh"](settings).last_observation = SimpleNamespace(originators=routes)
    for listener in table["heal"](settings).listeners:
        listener("harm", "i1", {"kind": "detach"})
    sample = await coord.handler.sample()
    assert (sample.unhealthy, sample.heal_harm, sample.originators) == (1, 1, 3)
    assert coord.handler.fallback.path == f"{tmp_path}/rollout-settings.json"


async def test_a_rollout_and_a_fleet_set_mesh_change_the_running_mesh_through_one_hold(tmp_path, monkeypatch):
    """A rollout of mesh.orig_interval reaches batman-adv (a kernel answering with captured replies)
    through the mesh subsystem's hold, as a fleet set_mesh command does; its rollback puts back what
    was before: the operator's earlier hold, or the [mesh] value."""
    from tests.kit.batadv import golden_ifindex, golden_socket
    from x0tta.agent.wiring import AgentHooks, fleet_actions
    from x0tta.coord.core.rollout import Change
    from x0tta.fleet.commands import Actions
    from x0tta.mesh import genl
    from x0tta.mesh.client import MeshClient
    from x0tta.mesh.core.batadv import Cmd
    from x0tta.mesh.genl import MeshError

    monkeypatch.setattr(genl, "ifindex", golden_ifindex())
    settings = parse_settings(f'[node]\nstate_dir = "{tmp_path}"\n[coord]\nendpoints = ["https://127.0.0.1:2379"]\n'
                              '[mesh]\ninterface = "bat0"\nhard_interfaces = ["v40a"]\norig_interval = 1000\n')
    table = factories(settings, AgentHooks())
    mesh, coord = table["mesh"](settings), table["coord"](settings)
    mesh.client = MeshClient(sock=golden_socket())
    await mesh.client.open()
    try:
        kernel = mesh.client._sock.sock

        def sent() -> list[int]:
            return [v["orig_interval"] for c, v in kernel.settings if c == Cmd.SET_MESH and "orig_interval" in v]

        change = Change("mesh.orig_interval", 5000)
        previous = await coord.handler.apply(change)
        assert previous == {"held": False, "was": 1000} and sent() == [5000]
        assert mesh.operator["mesh"] == {"orig_interval": 5000}
        await coord.handler.rollback(change, previous)
        assert mesh.operator["mesh"] == {}  # released: [mesh] says 1000, which the kernel has
        # an operator's fleet command held 250 before the rollout: the rollback holds 250 again
        actions = Actions()
        fleet_actions(actions, {"mesh": mesh}, AgentHooks())
        cmd = SimpleNamespace(id="c1", args={"setting": "orig_interval", "value": 250})
        assert (await actions.get("set_mesh")(cmd))["value"] == 250
        previous = await coord.handler.apply(change)
        assert previous == {"held": True, "was": 250}
        await coord.handler.rollback(change, previous)
        assert mesh.operator["mesh"] == {"orig_interval": 250} and sent()[-3:] == [250, 5000, 250]
        # a setting the mesh does not manage is refused, and other areas still go to the file
        with pytest.raises(MeshError, match="not a mesh setting"):
            await coord.handler.apply(Change("mesh.reboot", 1))
        assert await coord.handler.apply(Change("guard.mode", "enforce")) == {"absent": True}
        # mesh.drained: the hard interfaces held out of batman-adv; rollback holds the set before
        calls = []

        async def set_drained(patterns):
            calls.append(patterns)
            return {"drained": patterns, "was": ["x"]}

        mesh.set_drained = set_drained
        previous = await coord.handler.apply(Change("mesh.drained", ["to-*"]))
        await coord.handler.rollback(Change("mesh.drained", ["to-*"]), previous)
        await coord.handler.rollback(Change("mesh.drained", ["to-*"]), None)  # no record: none drained
        assert calls == [["to-*"], ["x"], []]
    finally:
        await mesh.client.close()


def test_the_rollout_verifier_is_the_operators_hybrid_signature(tmp_path):
    """Both halves must verify, as for fleet commands; anything else is not a signature."""
    import json

    from x0tta.coord.core import rollout as core
    from x0tta.coord.service import operator_verifier
    from x0tta.identity.core.operator import OperatorKey

    key, other = OperatorKey.generate(), OperatorKey.generate()
    data = b"x0tta-rollout/1\n{}"
    good = json.dumps(key.sign(data).to_json()).encode()
    assert operator_verifier(key.public.to_pem(), data, good)
    assert not operator_verifier(other.public.to_pem(), data, good)
    assert not operator_verifier(key.public.to_pem(), data + b" ", good)
    half = key.sign(data).to_json() | {"ed25519": other.sign(data).to_json()["ed25519"]}
    assert not operator_verifier(key.public.to_pem(), data, json.dumps(half).encode())
    assert not operator_verifier(key.public.to_pem(), data, b"not json")
    assert not operator_verifier(b"not a key", data, good)
    assert core.signed_bytes  # the bytes `x0tta rollout bytes` prints are what is signed


def test_meshstate_signs_with_the_identity_and_syncs_over_the_peer_sessions():
    assert "meshstate" not in factories(parse_settings(""))
    assert "meshstate" not in factories(parse_settings("[meshstate]\nenabled = true\n[peer]\nenabled = false\n"))
    settings = parse_settings("[meshstate]\nenabled = true\n")
    table = factories(settings)
    assert list(table).index("meshstate") > list(table).index("peer")
    service = table["meshstate"](settings)
    assert table["meshstate"](settings) is service
    assert service.identity is table["identity"](settings) and service.carrier is table["peer"](settings)


def test_meshstate_writes_the_ca_s_revocations_on_the_ca_node_and_feeds_the_peer_deny_list(tmp_path):
    """On the node holding the built-in CA the state reads the CA's revocations; on every node the
    revocations in force become the peer subsystem's deny-list."""
    from x0tta.identity.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")
    ca.issue("spiffe://mesh.x0tta/node/b", 3600)
    [serial] = ca.revoke(spiffe_id="spiffe://mesh.x0tta/node/b")
    settings = parse_settings(f"[meshstate]\nenabled = true\n[identity]\nca_dir = \"{tmp_path / 'ca'}\"\n")
    table = factories(settings)
    state, peer = table["meshstate"](settings), table["peer"](settings)
    [record] = state.ca_revocations()
    assert (record["serial"], record["spiffe_id"], record["reason"]) == (serial, "spiffe://mesh.x0tta/node/b",
                                                                       "keyCompromise")
    deny = state.on_revocations[0]  # the guard's unbinder comes after it
    deny({"spiffe://mesh.x0tta/node/b": {"by": "spiffe://mesh.x0tta/node/ca", "reason": "keyCompromise",
                                         "at": 1.0, "serials": [f"{serial:x}"]}})
    assert peer.denied.refusal("spiffe://mesh.x0tta/node/b") and peer.denied.refusal("x", serial)
    plain = parse_settings("[meshstate]\nenabled = true\n")
    assert factories(plain)["meshstate"](plain).ca_revocations is None  # not a CA node


def test_a_revocation_in_the_state_ends_the_guard_s_binding_of_the_identity():
    """Also where its session had gone already (it would pass frames for the rest of the grace)."""
    settings = parse_settings("[meshstate]\nenabled = true\n")
    table = factories(settings)
    state, guard = table["meshstate"](settings), table["guard"](settings)
    b, mac = "spiffe://mesh.x0tta/node/b", bytes.fromhex("02ba00020001")
    assert guard.guard.session_up(mac, b, "eth1", 1.0) == "" and guard.guard.is_admitted(mac)
    guard.guard.session_down(mac, 2.0, "eof")
    assert guard.bound_macs(b) == [mac] and guard.guard.is_admitted(mac)
    for listener in state.on_revocations:
        listener({b: {"by": "spiffe://mesh.x0tta/node/ca", "reason": "keyCompromise", "at": 1.0, "serials": []}})
    assert guard.bound_macs(b) == [] and not guard.guard.is_admitted(mac)
    assert table["peer"](settings).denied.refusal(b)


def test_meshstate_lists_the_macs_of_the_hard_interfaces_that_exist(tmp_path):
    from x0tta.agent.wiring import interface_macs

    (tmp_path / "eth1").mkdir()
    (tmp_path / "eth1" / "address").write_text("02:BA:00:01:00:01\n")
    assert interface_macs(("eth1", "wlan9"), sysfs=str(tmp_path)) == ["02:ba:00:01:00:01"]


def test_meshstate_hears_the_heal_loop_s_incidents_and_the_guard_s_quarantines():
    """The heal loop's listener and the guard's quarantine and release hooks reach the replicated
    state; not running, it drops and counts what it hears (nothing blocks the heal loop or the guard)."""
    import time

    settings = parse_settings("[meshstate]\nenabled = true\n[guard]\nquarantine_share = 1.0\n")
    table = factories(settings)
    heal, guard, state = table["heal"](settings), table["guard"](settings), table["meshstate"](settings)
    assert state.heal_event in heal.listeners
    assert "meshstate" not in factories(parse_settings("")) and not [
        x for x in factories(parse_settings(""))["heal"](parse_settings("")).listeners
        if getattr(x, "__name__", "") == "heal_event"]
    for listener in heal.listeners:
        listener("incident_opened", "x-i1", {"kind": "link_down", "target": "hardif:eth1", "severity": "critical",
                                            "opened": 1.0, "time_to_detect": 0.1})
    assert state.dropped["incident"] == 1
    assert guard.quarantine("02:ba:00:02:00:01", 60.0, "replayed OGMs") == ""
    assert state.dropped["quarantine"] == 1
    [claim] = state.quarantines()
    assert claim["target"] == "02:ba:00:02:00:01" and claim["macs"] == ["02:ba:00:02:00:01"]
    assert claim["reason"] == "replayed OGMs" and abs(claim["until"] - (time.time() + 60.0)) < 5
    assert guard.release("02:ba:00:02:00:01") == ["02:ba:00:02:00:01"]
    assert state.dropped["quarantine"] == 2 and state.quarantines() == []


def test_quarantine_claims_are_one_per_spiffe_id_or_per_mac():
    from x0tta.agent.wiring import quarantine_claims

    b = "spiffe://mesh.x0tta/node/b"
    held = [{"mac": "02:00:00:00:00:01", "spiffe_id": b, "reason": "r", "until": 10.0},
            {"mac": "02:00:00:00:00:02", "spiffe_id": b, "reason": "r", "until": 20.0},
            {"mac": "02:00:00:00:00:03", "spiffe_id": None, "reason": "s", "until": 5.0}]
    claims = quarantine_claims(SimpleNamespace(quarantines_held=lambda: held))()
    assert claims == [{"target": b, "macs": ["02:00:00:00:00:01", "02:00:00:00:00:02"], "reason": "r", "until": 20.0},
                      {"target": "02:00:00:00:00:03", "macs": ["02:00:00:00:00:03"], "reason": "s", "until": 5.0}]
