"""The mesh subsystem's operator controls refuse what they cannot do, before touching the kernel,
and the operator's drains and settings join heal's overrides for the reconcile; they are kept on
disk and in force again after a restart, until undrain or release_mesh gives them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from x0tta.common.errors import TemporaryError
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


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.lines.append((event, kw))


def kernel(attached: set[str], calls: list):
    """Stand-ins for generic netlink and rtnetlink: ``attached`` are the hard interfaces batman-adv has."""
    from types import SimpleNamespace

    class Client:
        async def hardifs(self, meshif):
            return [SimpleNamespace(hard_ifname=h) for h in sorted(attached)]

    class Links:
        async def detach(self, hardif):
            calls.append(("detach", hardif))
            attached.discard(hardif)

    return Client(), Links()


def running(tmp_path: Path, attached: set[str], calls: list) -> MeshService:
    from types import SimpleNamespace

    from x0tta.mesh.held import HeldStore

    s = MeshService(MeshSettings(hard_interfaces=("eth1", "eth2")), overrides={})
    s.client, s._links = kernel(attached, calls)
    s.held = HeldStore(tmp_path / "mesh-operator.sqlite3")
    s._ctx = SimpleNamespace(log=Log())

    async def reconcile_now():
        calls.append(("reconcile", dict(s.operator["mesh"]), set(s.operator["detached"])))
        return []

    s.reconcile_now = reconcile_now  # type: ignore[method-assign]
    return s


async def test_drains_and_held_settings_survive_a_restart_and_are_applied_again(tmp_path):
    calls: list = []
    first = running(tmp_path, {"eth1", "eth2"}, calls)
    await first.drain("eth1")
    await first.set_setting("orig_interval", 500)
    # the agent restarts; meanwhile something attached eth1 again
    calls.clear()
    again = running(tmp_path, {"eth1", "eth2"}, calls)
    log = Log()
    await again._restore_held(type("Ctx", (), {"log": log})())
    assert again.operator == {"detached": {"eth1"}, "mesh": {"orig_interval": 500}}
    assert calls == [("detach", "eth1")]  # held settings: the first reconcile applies them from _in_force
    assert again._in_force()["mesh"] == {"orig_interval": 500} and "eth1" in again._in_force()["detached"]
    assert [e for e, _ in log.lines] == ["mesh_operator_restored"]


async def test_undrain_and_release_clear_what_is_held_on_disk(tmp_path):
    calls: list = []
    s = running(tmp_path, {"eth1"}, calls)
    await s.drain("eth1")
    await s.set_setting("hop_penalty", 60)
    await s.undrain("eth1")
    out = await s.release_setting("hop_penalty")
    assert out["was"] == 60 and out["value"] == 30
    assert (await s.release_setting("hop_penalty"))["released"] is False  # not held: nothing to give back
    later = running(tmp_path, set(), [])
    await later._restore_held(type("Ctx", (), {"log": Log()})())
    assert later.operator == {"detached": set(), "mesh": {}}


async def test_what_no_longer_fits_the_settings_is_dropped_and_a_damaged_file_holds_nothing(tmp_path):
    from x0tta.mesh.held import HeldStore

    store = HeldStore(tmp_path / "held.sqlite3")
    await store.save({"detached": {"eth1", "eth7"}, "mesh": {"orig_interval": 500, "hop_penalty": 60}})
    held, problems = await store.load(MeshSettings(hard_interfaces=("eth1",)))
    assert held == {"detached": {"eth1"}, "mesh": {"orig_interval": 500, "hop_penalty": 60}}
    assert problems == ["drained 'eth7' is not one of mesh.hard_interfaces any more"]
    from x0tta.mesh.held import decode

    held, problems = decode([("mesh", "orig_interval", '"fast"'), ("mesh", "reboot", "1"), ("mesh", "hop_penalty", "{"),
                             ("x", "y", "1")], MeshSettings())
    assert held == {"detached": set(), "mesh": {}} and len(problems) == 4
    (tmp_path / "dir.sqlite3").mkdir()  # not a database: unreadable
    s = running(tmp_path, set(), [])
    s.held = HeldStore(tmp_path / "dir.sqlite3")
    log = Log()
    await s._restore_held(type("Ctx", (), {"log": log})())
    assert s.operator == {"detached": set(), "mesh": {}} and log.lines[0][0] == "mesh_operator_state_unreadable"
    with pytest.raises(TemporaryError, match="cannot write"):
        await s.drain("eth1")
    assert s.operator["detached"] == set()  # not kept: not held either


async def test_set_drained_drains_what_matches_and_gives_back_what_no_longer_does(tmp_path):
    from x0tta.mesh.held import HeldStore

    calls: list = []
    attached = {"primary0", "to-n2", "to-n5"}
    s = MeshService(MeshSettings(hard_interfaces=("primary0", "to-n2", "to-n5")), overrides={})
    s.client, s._links = kernel(attached, calls)  # no batman-adv here
    s.held = HeldStore(tmp_path / "mesh-operator.sqlite3")

    async def reconcile_now():
        calls.append(("reconcile", sorted(s.operator["detached"])))
        return []

    s.reconcile_now = reconcile_now  # type: ignore[method-assign]
    out = await s.set_drained(["to-*"])
    assert out == {"drained": ["to-n2", "to-n5"], "was": []}
    assert [c for c in calls if c[0] == "detach"] == [("detach", "to-n2"), ("detach", "to-n5")]
    held, _ = await s.held.load(s.settings)
    assert held["detached"] == {"to-n2", "to-n5"}  # on disk, as a drain command's
    out = await s.set_drained([])  # what a rollback holds: the set before
    assert out == {"drained": [], "was": ["to-n2", "to-n5"]} and calls[-1] == ("reconcile", [])
    held, _ = await s.held.load(s.settings)
    assert held["detached"] == set()
    with pytest.raises(MeshError, match="match none"):
        await s.set_drained(["wlan*"])
    with pytest.raises(MeshError, match="takes a list"):
        await s.set_drained("to-n2")
