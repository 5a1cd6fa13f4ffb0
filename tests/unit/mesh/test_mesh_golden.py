"""Golden tests: kernel replies captured from batman-adv 2022.3 (UML, Linux 6.1) decode exactly.

The fixtures in golden/ were written by ``python -m tests.lab.mesh_guest capture OUT`` (a lab run, into
``OUT/golden``): ``<node>_<algo>_<table>.hex``
holds the raw datagrams of one reply (one per line, as recv() returned them), and
``.batctl.json`` what ``batctl meshif X <table>_json`` printed right after, on the same node.
Every decoded record is compared with batctl's view of it; a few are also pinned to literal values.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kit.batadv import GOLDEN, family, replay
from x0tta.common.errors import DecodeError
from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.core.views import as_batctl
from x0tta.mesh.core.views import from_batctl as flatten

FAMILY = family()["id"]


def batctl(stem: str) -> Any:
    return json.loads((GOLDEN / f"{stem}.batctl.json").read_text())


# batctl adds names it looks up itself (mesh_ifname of a hard interface); we report indexes.
DERIVED_BY_BATCTL = {"mesh_ifname"}
# Captured a moment apart: ages move on.
MOVING = {"last_seen_msecs"}


def same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    theirs = flatten(theirs)
    for key, value in theirs.items():
        if key in DERIVED_BY_BATCTL and key not in ours:
            continue
        assert key in ours, f"batctl shows {key}={value!r}, we do not"
        if key in MOVING:
            assert abs(ours[key] - value) < 1500, (key, ours[key], value)
        else:
            assert ours[key] == value, (key, ours[key], value)
    hidden_by_batctl = {k for k in ours if k not in theirs and k not in ("best",)}
    # batctl hides a false "best" and our optional fields it has no column for
    assert hidden_by_batctl <= {"hard_ifname", "mesh_ifindex", "log_level", "tt_last_ttvn"} | {
        k for k in ours if ours[k] in (False, None)
    }, hidden_by_batctl


def key_of(entry: dict[str, Any]) -> tuple[Any, ...]:
    e = flatten(entry)
    fields = ("orig_address", "neigh_address", "hard_ifindex", "tt_address", "tt_vid", "bla_address",
              "bla_backbone", "bla_vid", "dat_cache_ip4address", "vlanid")
    return tuple(e.get(f) for f in fields)


# Replies with batctl's view of the same moment (events and the tp meter have none).
STEMS = sorted(p.name.split(".")[0] for p in GOLDEN.glob("*.batctl.json") if batctl(p.name.split(".")[0]) is not None)


@pytest.mark.parametrize("stem", [s for s in STEMS if not s.endswith(("_mesh", "_vlan"))])
def test_dumps_match_batctl(stem: str) -> None:
    ours = sorted((as_batctl(r) for r in replay(stem)), key=key_of)
    theirs = sorted(batctl(stem), key=key_of)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        same(a, b)


@pytest.mark.parametrize("stem", ["x0m1_iv_mesh", "x0m1_v_mesh", "x0m3_iv_mesh", "x0m1_iv_vlan"])
def test_single_gets_match_batctl(stem: str) -> None:
    (rec,) = replay(stem, dump=False)
    same(as_batctl(rec), batctl(stem))


def test_originators_iv_exact() -> None:
    recs = replay("x0m1_iv_originators")
    assert recs == [
        batadv.Originator(
            orig_address="aa:ea:51:1f:7e:ed",
            neigh_address="2e:fa:3c:40:1d:0a",
            hard_ifindex=2,
            last_seen_msecs=recs[0].last_seen_msecs,
            hard_ifname="v40a",
            flag_best=True,
            tq=6,
        ),
        batadv.Originator(
            orig_address="2e:fa:3c:40:1d:0a",
            neigh_address="2e:fa:3c:40:1d:0a",
            hard_ifindex=2,
            last_seen_msecs=recs[1].last_seen_msecs,
            hard_ifname="v40a",
            flag_best=True,
            tq=55,
        ),
    ]
    assert recs[0].next_hop == "2e:fa:3c:40:1d:0a" and recs[0].link_quality == 6


def test_originators_v_carry_throughput_not_tq() -> None:
    recs = replay("x0m1_v_originators")
    assert {r.orig_address: r.throughput for r in recs} == {
        "56:ec:8d:3e:01:94": 10_000_000,
        "46:2d:d8:e0:6e:a2": 8_823_500,
    }
    assert all(r.tq is None for r in recs)


def test_mesh_info_exact_settings() -> None:
    (mesh,) = replay("x0m1_iv_mesh", dump=False)
    assert isinstance(mesh, batadv.MeshInfo)
    assert (mesh.mesh_ifname, mesh.algo_name, mesh.version, mesh.hard_ifname) == (
        "bat0",
        "BATMAN_IV",
        "2022.3",
        "v40a",
    )
    assert mesh.active
    assert mesh.settings() == {
        "aggregated_ogms_enabled": True,
        "ap_isolation_enabled": False,
        "isolation_mark": 0,
        "isolation_mask": 0,
        "bonding_enabled": False,
        "bridge_loop_avoidance_enabled": True,
        "distributed_arp_table_enabled": True,
        "fragmentation_enabled": True,
        "gw_bandwidth_down": 100,
        "gw_bandwidth_up": 20,
        "gw_mode": batadv.GwMode.CLIENT,
        "gw_sel_class": 20,
        "hop_penalty": 30,
        "multicast_forceflood_enabled": False,
        "network_coding_enabled": False,
        "orig_interval": 1000,
        "multicast_fanout": 16,
    }


def test_gateway_and_hardif_exact() -> None:
    (gw,) = replay("x0m1_iv_gateways")
    assert gw == batadv.Gateway(
        orig_address="aa:ea:51:1f:7e:ed",
        router="2e:fa:3c:40:1d:0a",
        hard_ifname="v40a",
        hard_ifindex=2,
        bandwidth_down=500,
        bandwidth_up=100,
        flag_best=True,
        tq=6,
    )
    (hif,) = replay("x0m1_v_hardifs")
    assert hif == batadv.HardIf(
        hard_ifindex=4,
        hard_ifname="v50a",
        hard_address="8e:93:75:8a:7c:ce",
        mesh_ifindex=5,
        active=True,
        hop_penalty=0,
        elp_interval=500,
        throughput_override=0,
    )


def test_vlan_and_routing_algos() -> None:
    (vlan,) = replay("x0m1_iv_vlan", dump=False)
    assert vlan == batadv.Vlan(mesh_ifindex=3, vlanid=5, ap_isolation_enabled=False)
    algos = replay("x0m1_iv_routing_algos")
    assert [a.algo_name for a in algos] == ["BATMAN_IV", "BATMAN_V"]


def test_unknown_attribute_is_skipped() -> None:
    (mesh,) = replay("x0m1_iv_mesh", dump=False)
    raw = bytes.fromhex((GOLDEN / "x0m1_iv_mesh.hex").read_text().split()[0])
    extra = batadv.attr(200, b"\x01\x02\x03")  # an attribute of a newer kernel
    grown = raw + extra
    grown = len(grown).to_bytes(4, "little") + grown[4:]
    (again,) = batadv.decode_message(grown, FAMILY)
    assert again == mesh


def test_truncated_reply_raises_decode_error() -> None:
    raw = bytes.fromhex((GOLDEN / "x0m1_iv_originators.hex").read_text().split()[0])
    with pytest.raises(DecodeError):
        batadv.decode_message(raw[:-3], FAMILY)


def test_requests_round_trip() -> None:
    req = batadv.encode_set_mesh(FAMILY, 3, 7, {"orig_interval": 5000, "gw_mode": 2, "bonding_enabled": True})
    (msg,) = batadv.split_messages(req)
    gm = batadv.parse_genl(msg)
    assert gm.cmd == Cmd.SET_MESH and msg.seq == 7
    assert batadv.decode_attrs(gm.attrs) == {
        "mesh_ifindex": 3,
        "orig_interval": 5000,
        "gw_mode": 2,
        "bonding_enabled": True,
    }
    with pytest.raises(ValueError, match="cannot set"):
        batadv.encode_set_hardif(FAMILY, 3, 2, 8, {"orig_interval": 1})
    vreq = batadv.encode_set_vlan(FAMILY, 3, 5, 9, {"ap_isolation_enabled": True})
    assert batadv.decode_attrs(batadv.parse_genl(batadv.split_messages(vreq)[0]).attrs)["vlanid"] == 5


def event(stem: str) -> batadv.Record:
    (rec,) = batadv.decode_message(bytes.fromhex((GOLDEN / f"{stem}.hex").read_text().split()[0]), FAMILY)
    return rec


def test_config_events_carry_the_whole_new_state() -> None:
    # batctl meshif bat0 orig_interval 1500 -> SET_MESH on the "config" group with every setting
    mesh = event("x0m1_iv_event_set_mesh")
    assert isinstance(mesh, batadv.MeshInfo)
    assert (mesh.mesh_ifname, mesh.orig_interval, mesh.hop_penalty, mesh.gw_mode) == ("bat0", 1500, 30, 1)
    # batctl hardif v40a hop_penalty 42 -> SET_HARDIF
    assert event("x0m1_iv_event_set_hardif") == batadv.HardIf(
        hard_ifindex=2, hard_ifname="v40a", hard_address="52:b7:88:25:12:6b", mesh_ifindex=3, active=True,
        hop_penalty=42, elp_interval=500, throughput_override=0,
    )
    # batctl meshif bat0 vid 5 ap_isolation 1 -> SET_VLAN
    assert event("x0m1_iv_event_set_vlan") == batadv.Vlan(mesh_ifindex=3, vlanid=5, ap_isolation_enabled=True)


def test_tp_meter_reply_and_result() -> None:
    meta = json.loads((GOLDEN / "x0m1_iv_tp_meter.json").read_text())
    (reply,) = replay("x0m1_iv_tp_meter_reply", dump=False)
    assert reply == batadv.TpMeter(tpmeter_cookie=meta["cookie"])
    result = event("x0m1_iv_tp_meter_result")
    assert isinstance(result, batadv.TpMeter)
    assert (result.tpmeter_cookie, result.orig_address, result.tpmeter_result) == (
        meta["cookie"], meta["dst"], batadv.TpMeterReason.COMPLETE
    )
    assert (result.tpmeter_test_time, result.tpmeter_bytes) == (510, 300_808_800)
    assert result.throughput_kbit is not None and round(result.throughput_kbit) == 4_718_569


def test_bla_and_dat_with_a_lan_behind_two_nodes() -> None:
    # x0m1 and x0m2 bridge bat0 into one LAN: each sees the other as a backbone gateway
    assert replay("x0m1_iv_lan_bla_claim") == [
        batadv.BlaClaim(bla_address="4e:ec:b1:19:8e:91", bla_vid=0, bla_backbone="7e:44:5d:6c:ec:f1", bla_crc=52940)
    ]
    backbones = replay("x0m1_iv_lan_bla_backbone")
    assert [(b.bla_backbone, b.bla_own, b.bla_crc, batadv.vid_of(b.bla_vid)) for b in backbones] == [
        ("7e:44:5d:6c:ec:f1", False, 52940, -1),
        ("ee:48:d3:cc:2e:b0", True, 0, -1),
    ]
    dat = replay("x0m1_iv_lan_dat_cache")
    assert {(d.dat_cache_ip4address, d.dat_cache_hwaddress) for d in dat} == {
        ("10.77.0.1", "7a:d3:1a:14:80:6d"),
        ("10.77.0.2", "72:ef:a7:20:3b:e9"),
        ("10.77.0.3", "4e:ec:b1:19:8e:91"),
    }
