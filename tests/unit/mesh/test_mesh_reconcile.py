"""The reconcile planner: from settings and the kernel's state to SET actions, idempotently."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kit.batadv import replay
from x0tta.config.fields import build
from x0tta.config.mesh import HardIfSettings, MeshSettings
from x0tta.mesh.core import batadv
from x0tta.mesh.core.reconcile import Action, desired_mesh, plan

MESH = replay("x0m1_iv_mesh", dump=False)[0]
HARDIFS = replay("x0m1_iv_hardifs")


def apply(mesh: batadv.MeshInfo, hardifs: list[batadv.HardIf], actions: list[Action]):
    for a in actions:
        if a.kind == "set_mesh":
            mesh = dataclasses.replace(mesh, **a.values)
        elif a.kind == "set_hardif":
            hardifs = [dataclasses.replace(h, **a.values) if h.hard_ifname == a.target else h for h in hardifs]
    return mesh, hardifs


def test_defaults_only_undo_what_differs_from_batman_adv_defaults() -> None:
    # the captured node was made a gateway client by hand: the default config puts gw_mode back
    actions = plan(MeshSettings(), MESH, HARDIFS)
    assert actions == [
        Action("set_mesh", "bat0", {"gw_mode": 0}, {"gw_mode": (1, 0)}, reason="settings differ"),
    ]


def test_plan_is_idempotent_once_applied() -> None:
    s = build(
        MeshSettings,
        {"orig_interval": 250, "hop_penalty": 60, "gw_mode": "server", "gw_bandwidth_down": 50_000,
         "bonding": True, "hardif": {"v40a": {"hop_penalty": 10, "elp_interval": 200}}},
    )
    actions = plan(s, MESH, HARDIFS)
    kinds = [a.kind for a in actions]
    assert kinds == ["set_mesh", "set_hardif"]
    assert actions[0].values["gw_bandwidth_down"] == 500  # 100 kbit/s units
    mesh, hardifs = apply(MESH, HARDIFS, actions)
    assert plan(s, mesh, hardifs) == []


def test_missing_interface_is_created_attached_and_set() -> None:
    s = MeshSettings(interface="bat9", routing_algo="BATMAN_V", hard_interfaces=("eth1", "eth2"))
    kinds = [(a.kind, a.target) for a in plan(s, None, [])]
    assert kinds == [("create_mesh", "bat9"), ("attach", "eth1"), ("attach", "eth2"), ("up", "bat9"),
                     ("set_mesh", "bat9")]
    assert [a.kind for a in plan(dataclasses.replace(s, create=False), None, [])] == ["warn"]


def test_algorithm_mismatch_is_reported_not_forced() -> None:
    actions = plan(MeshSettings(routing_algo="BATMAN_V", gw_mode="client"), MESH, HARDIFS)
    assert [a.kind for a in actions] == ["warn"]
    assert actions[0].drift == {"routing_algo": ("BATMAN_IV", "BATMAN_V")}


def test_unattached_listed_interface_is_attached_and_unknown_kernel_values_left_alone() -> None:
    s = MeshSettings(hard_interfaces=("v40a", "wlan0"), gw_mode="client")
    assert [(a.kind, a.target) for a in plan(s, MESH, HARDIFS)] == [("attach", "wlan0")]
    old_kernel = dataclasses.replace(MESH, multicast_fanout=None)
    assert desired_mesh(s)["multicast_fanout"] == 16
    assert plan(dataclasses.replace(s, multicast_fanout=3), old_kernel, HARDIFS)[1:] == []


@settings(max_examples=60, deadline=None)
@given(
    orig=st.integers(1, 60_000),
    hop=st.integers(0, 255),
    gw=st.sampled_from(["off", "client", "server"]),
    flags=st.lists(st.booleans(), min_size=6, max_size=6),
    hp=st.integers(0, 255),
    order=st.randoms(),
)
def test_any_settings_converge_in_one_pass_in_any_order(orig, hop, gw, flags, hp, order) -> None:
    s = MeshSettings(
        orig_interval=orig, hop_penalty=hop, gw_mode=gw, bridge_loop_avoidance=flags[0],
        distributed_arp_table=flags[1], aggregation=flags[2], fragmentation=flags[3], bonding=flags[4],
        ap_isolation=flags[5], hardif={"v40a": HardIfSettings(hop_penalty=hp)},
    )
    actions = plan(s, MESH, HARDIFS)
    order.shuffle(actions)
    mesh, hardifs = apply(MESH, HARDIFS, actions)
    assert plan(s, mesh, hardifs) == []


def test_heal_overrides_are_not_drift() -> None:
    s = MeshSettings(hard_interfaces=("v40a", "wlan0"), gw_mode="client", hardif={"v40a": HardIfSettings()})
    # heal took wlan0 out on purpose, slowed OGMs, and raised v40a's hop penalty: all left alone
    ov = {"detached": {"wlan0"}, "mesh": {"orig_interval": 1000}, "hardif": {"v40a": {"hop_penalty": 0}}}
    assert plan(s, MESH, HARDIFS, overrides=ov) == []
    ov = {"detached": {"wlan0"}, "mesh": {"orig_interval": 400}, "hardif": {"v40a": {"hop_penalty": 90}}}
    actions = plan(s, MESH, HARDIFS, overrides=ov)
    assert [(a.kind, dict(a.values)) for a in actions] == [
        ("set_mesh", {"orig_interval": 400}),
        ("set_hardif", {"hop_penalty": 90}),
    ]
    # once heal lets go, the config is the truth again
    mesh, hardifs = apply(MESH, HARDIFS, actions)
    assert [(a.kind, a.target) for a in plan(s, mesh, hardifs)] == [
        ("attach", "wlan0"), ("set_mesh", "bat0"), ("set_hardif", "v40a"),
    ]
