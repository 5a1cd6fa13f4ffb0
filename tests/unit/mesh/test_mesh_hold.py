"""The operator's hold on a mesh setting, on the mesh subsystem running over a kernel that answers
with real captured replies (tests/kit/batadv.py): held, the value goes to batman-adv at once and
the reconcile keeps it; released, the ``[mesh]`` value goes back."""

from __future__ import annotations

import pytest

from tests.kit.batadv import GoldenKernel, golden_ifindex, golden_socket
from x0tta.config.mesh import MeshSettings
from x0tta.mesh import genl
from x0tta.mesh.client import MeshClient
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.genl import MeshError
from x0tta.mesh.service import MeshService

# the captured node: bat0 over v40a, BATMAN_IV, orig_interval 1000 (golden/x0m1_iv_mesh.batctl.json)
CAPTURED = MeshSettings(interface="bat0", hard_interfaces=("v40a",), orig_interval=1000)


@pytest.fixture
async def mesh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(genl, "ifindex", golden_ifindex())
    service = MeshService(CAPTURED, overrides={})
    service.client = MeshClient(sock=golden_socket())
    await service.client.open()
    yield service
    await service.client.close()


def orig_intervals(service: MeshService) -> list[int]:
    kernel: GoldenKernel = service.client._sock.sock  # type: ignore[union-attr,assignment]
    return [v["orig_interval"] for cmd, v in kernel.settings if cmd == Cmd.SET_MESH and "orig_interval" in v]


async def test_a_held_setting_reaches_the_kernel_and_a_release_puts_the_configured_value_back(mesh):
    out = await mesh.set_setting("orig_interval", 5000)
    assert out["held"] is False and out["was"] == 1000 and orig_intervals(mesh) == [5000]
    await mesh.reconcile_now()  # the kernel still says 1000 (a recording): the hold is put back, not the config
    assert orig_intervals(mesh) == [5000, 5000]
    again = await mesh.set_setting("orig_interval", 250)
    assert again["held"] is True and again["was"] == 5000
    out = await mesh.release_setting("orig_interval")
    assert out["released"] is True and out["value"] == 1000 and out["was"] == 250
    assert "orig_interval" not in mesh.operator["mesh"]
    n = len(orig_intervals(mesh))
    await mesh.reconcile_now()  # the kernel reports the configured value: nothing more to set
    assert len(orig_intervals(mesh)) == n


async def test_releasing_what_is_not_held_changes_nothing_and_unknown_names_are_refused(mesh):
    assert (await mesh.release_setting("hop_penalty"))["released"] is False
    with pytest.raises(MeshError, match="not a mesh setting"):
        await mesh.release_setting("reboot")


async def test_a_release_the_reconcile_cannot_make_keeps_the_hold():
    service = MeshService(CAPTURED, overrides={})  # not running: no client
    service.operator["mesh"]["orig_interval"] = 5000
    with pytest.raises(Exception, match="not running"):
        await service.release_setting("orig_interval")
    assert service.operator["mesh"] == {"orig_interval": 5000}
