"""MeshClient over a kernel that answers with real captured replies (tests/kit/batadv.py).

The whole path runs as against batman-adv: family resolution through nlctrl, request encoding,
sequence numbers, reply assembly, decoding; only the socket's far end is a recording.
"""

from __future__ import annotations

import errno

import pytest

from tests.kit.batadv import GoldenKernel, family, golden_socket, replay
from x0tta.common.errors import DecodeError, TemporaryError
from x0tta.mesh.client import MeshClient
from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.genl import MeshError

BAT0 = 3  # the captured node's mesh interface index (golden/x0m1_iv_ifnames.json)


def kernel_of(client: MeshClient) -> GoldenKernel:
    return client._sock.sock  # type: ignore[return-value]


async def test_the_family_resolves_through_nlctrl_and_a_snapshot_decodes_the_kernels_tables():
    async with MeshClient(sock=golden_socket()) as mesh:
        fam = mesh.family
        assert fam.name == "batadv" and fam.id == family()["id"] and fam.mcast_groups == family()["groups"]
        snap = await mesh.snapshot(BAT0)
        assert snap.originators == replay("x0m1_iv_originators")
        assert snap.neighbors == replay("x0m1_iv_neighbors")
        assert snap.hardifs == replay("x0m1_iv_hardifs")
        assert snap.info == replay("x0m1_iv_mesh", dump=False)[0]
        asked = [cmd for cmd, _ in kernel_of(mesh).requests]
        assert asked == [Cmd.GET_MESH, Cmd.GET_HARDIF, Cmd.GET_ORIGINATORS, Cmd.GET_NEIGHBORS, Cmd.GET_GATEWAYS]
        assert all(a.get("mesh_ifindex") == BAT0 for _, a in kernel_of(mesh).requests)


async def test_settings_go_out_encoded_and_the_ack_completes_them():
    async with MeshClient(sock=golden_socket()) as mesh:
        await mesh.set_mesh(BAT0, {"orig_interval": 250, "aggregated_ogms_enabled": False})
        await mesh.set_hardif(BAT0, 2, {"hop_penalty": 255})
        (m, mv), (h, hv) = kernel_of(mesh).settings
        assert m == Cmd.SET_MESH and mv["orig_interval"] == 250 and mv["aggregated_ogms_enabled"] in (0, False)
        assert h == Cmd.SET_HARDIF and hv["hard_ifindex"] == 2 and hv["hop_penalty"] == 255


async def test_a_refusal_a_silence_and_garbage_each_raise_the_projects_typed_error():
    async with MeshClient(sock=golden_socket()) as mesh:
        k = kernel_of(mesh)
        k.refuse[Cmd.SET_HARDIF] = errno.EPERM
        with pytest.raises(MeshError) as refused:
            await mesh.set_hardif(BAT0, 2, {"hop_penalty": 255})
        assert refused.value.errno == errno.EPERM
        k.mute.add(Cmd.GET_GATEWAYS)
        with pytest.raises(TemporaryError):
            await mesh.gateways(BAT0)
        k.mute.clear()
        k.mangle = lambda cmd, d: d[:-6] if cmd == Cmd.GET_ORIGINATORS else d
        with pytest.raises(DecodeError):
            await mesh.originators(BAT0)
        # the garbled reply's rest was dropped with its socket: the next request gets a clean one
        assert k.closed
        k.mangle = None
        assert [o.orig_address for o in await mesh.originators(BAT0)] == [
            o.orig_address for o in replay("x0m1_iv_originators") if isinstance(o, batadv.Originator)]


async def test_periodic_reads_go_on_the_loop_and_an_answer_not_queued_yet_goes_to_the_thread():
    """snapshot() and tables() read through the non-blocking socket on the loop; when its kernel has
    not queued an answer (never seen: batman-adv answers in the call that asks), that socket is
    closed with whatever might still come, and the thread's socket reads the whole snapshot again."""
    quick, slow = golden_socket(), golden_socket()
    mesh = MeshClient(sock=slow, quick=quick)
    snap = await mesh.snapshot(BAT0)
    assert snap.originators == replay("x0m1_iv_originators") and (mesh.quick_reads, mesh.slow_reads) == (1, 0)
    assert slow.sock is None  # the thread's socket was never even opened
    held = quick.sock
    held.nonblocking = True
    held.mute.add(Cmd.GET_ORIGINATORS)
    snap = await mesh.snapshot(BAT0)
    assert snap.originators == replay("x0m1_iv_originators") and (mesh.quick_reads, mesh.slow_reads) == (1, 1)
    assert held.closed
    assert [cmd for cmd, _ in slow.sock.requests] == [
        Cmd.GET_MESH, Cmd.GET_HARDIF, Cmd.GET_ORIGINATORS, Cmd.GET_NEIGHBORS, Cmd.GET_GATEWAYS]
    held.mute.clear()
    got = await mesh.tables(BAT0, (Cmd.GET_NEIGHBORS, Cmd.GET_GATEWAYS))
    assert got[Cmd.GET_NEIGHBORS] == replay("x0m1_iv_neighbors") and (mesh.quick_reads, mesh.slow_reads) == (2, 1)
    await mesh.close()
