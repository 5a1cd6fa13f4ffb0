"""The mesh subsystem's operator controls refuse what they cannot do, before touching the kernel,
and the operator's drains and settings join heal's overrides for the reconcile."""

from __future__ import annotations

import pytest

from x0tta.config.mesh import MeshSettings
from x0tta.mesh.genl import MeshError
from x0tta.mesh.service import MeshService


def svc() -> MeshService:
    heal = {"detached": {"eth9"}, "mesh": {"hop_penalty": 30}}
    return MeshService(MeshSettings(hard_interfaces=("eth1",)), overrides=heal)


async def test_unknown_interfaces_and_settings_are_refused():
    s = svc()
    with pytest.raises(MeshError, match=r"not one of mesh\.hard_interfaces"):
        await s.drain("eth7")
    with pytest.raises(MeshError, match="not drained"):
        await s.undrain("eth1")
    with pytest.raises(MeshError, match="not a mesh setting"):
        await s.set_setting("reboot", 1)
    with pytest.raises(MeshError, match="takes a int"):
        await s.set_setting("orig_interval", "fast")


def test_operator_and_heal_overrides_combine_with_heal_winning():
    s = svc()
    s.operator["detached"].add("eth1")
    s.operator["mesh"].update({"hop_penalty": 60, "orig_interval": 500})
    ov = s._in_force()
    assert ov["detached"] == {"eth1", "eth9"}
    assert ov["mesh"] == {"hop_penalty": 30, "orig_interval": 500}


async def test_a_flag_is_no_number_and_a_number_no_flag():
    s = svc()
    with pytest.raises(MeshError, match="takes a int"):
        await s.set_setting("orig_interval", True)
    with pytest.raises(MeshError, match="takes a bool"):
        await s.set_setting("aggregated_ogms_enabled", 1)


async def test_drain_detaches_an_attached_interface_and_holds_it_out():
    from types import SimpleNamespace

    calls = []

    class Client:
        async def hardifs(self, meshif):
            return [SimpleNamespace(hard_ifname="eth1")]

    class Links:
        async def detach(self, hardif):
            calls.append(("detach", hardif))

    s = svc()
    s.client, s._links = Client(), Links()  # stand-ins for generic netlink and rtnetlink (no batman-adv here)
    out = await s.drain("eth1")
    assert out == {"interface": "eth1", "drained": True, "was_attached": True} and calls == [("detach", "eth1")]
    assert "eth1" in s._in_force()["detached"]  # the reconcile leaves it out
