"""The fake datagram net of the test kit (``tests.kit.datanet``): what it delivers, drops, delays,
duplicates and corrupts, on the manual clock."""

from __future__ import annotations

import asyncio
import errno

import pytest

from tests.kit.clock import ManualClock
from tests.kit.datanet import FakeNet
from x0tta.heal.datagrams import ALL_NODES, ECHO_REPLY, ECHO_REQUEST

PORT = 4305


def line(clock: ManualClock) -> FakeNet:
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    return net


async def test_a_datagram_reaches_every_other_end_of_its_segment_from_the_next_loop_turn():
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/bat0", "b/bat0", "c/bat0")
    ea, eb, ec = (net.node(n).link("bat0", PORT) for n in "abc")
    other_port = net.node("c").link("bat0", PORT + 1)
    heard: list[str] = []
    eb.watch(lambda: heard.append("b"))
    ec.watch(lambda: heard.append("c"))
    assert ea.sendto(b"hello", (ALL_NODES, PORT, 0, ea.index)) == 5
    assert heard == []  # like a socket's reader: called from the loop, not inside sendto
    await asyncio.sleep(0)
    assert sorted(heard[:2]) == ["b", "c"]
    data, src = eb.recvfrom(4096)
    assert data == b"hello" and src == (net.ifaces["a/bat0"].address, PORT, 0, eb.index)
    assert ec.recvfrom(4096)[0] == b"hello"
    with pytest.raises(BlockingIOError):
        ea.recvfrom(4096)  # not looped back to the sender
    with pytest.raises(BlockingIOError):
        other_port.recvfrom(4096)
    # unicast: only the interface with that address
    eb.sendto(b"to-c", (net.ifaces["c/bat0"].address, PORT, 0, eb.index))
    assert ec.recvfrom(4096)[0] == b"to-c"
    with pytest.raises(BlockingIOError):
        ea.recvfrom(4096)
    assert net.ifaces["c/bat0"].rx == 2 and net.node("c").rx_counter("bat0").read() == 2
    assert await net.node("a").mac("bat0") == net.mac("a/bat0") and await net.node("a").mac("eth9") is None
    with pytest.raises(OSError) as exc:
        net.node("a").link("eth9", PORT)
    assert exc.value.errno == errno.ENODEV


async def test_faults_drop_delay_duplicate_and_corrupt_one_direction():
    clock = ManualClock()
    net = line(clock)
    ea, eb = net.node("a").link("eth0", PORT), net.node("b").link("eth0", PORT)

    def got(ep):
        out = []
        while True:
            try:
                out.append(ep.recvfrom(4096)[0])
            except BlockingIOError:
                return out

    net.cut("a/eth0", "b/eth0")
    ea.sendto(b"x", (ALL_NODES, PORT, 0, 0))
    eb.sendto(b"y", (ALL_NODES, PORT, 0, 0))
    assert got(eb) == [] and got(ea) == [] and net.dropped == 2
    net.restore("a/eth0", "b/eth0")
    net.fault("a/eth0", "b/eth0", delay=0.05, duplicate=1, corrupt=True)
    ea.sendto(b"abc", (ALL_NODES, PORT, 0, 0))
    eb.sendto(b"back", (ALL_NODES, PORT, 0, 0))  # the other way: untouched
    assert got(ea) == [b"back"]
    await clock.pass_time(0.04)
    assert got(eb) == []
    await clock.pass_time(0.02)
    assert got(eb) == [b"abb", b"abb"]  # two copies, the last byte flipped
    # a share of drops, drawn from the seeded generator: the same run gives the same losses
    def lossy_run():
        run_net = line(ManualClock())
        run_net.fault("a/eth0", "b/eth0", drop=0.5)
        tx, rx = run_net.node("a").link("eth0", PORT), run_net.node("b").link("eth0", PORT)
        for i in range(200):
            tx.sendto(bytes([i]), (ALL_NODES, PORT, 0, 0))
        return got(rx), run_net.dropped

    first, dropped = lossy_run()
    assert 60 < len(first) < 140 and len(first) + dropped == 200
    assert lossy_run() == (first, dropped)


async def test_a_held_agent_reads_and_sends_nothing_but_its_kernel_answers_echoes():
    clock = ManualClock()
    net = line(clock)
    ea, eb = net.node("a").link("eth0", PORT), net.node("b").link("eth0", PORT)
    echo_a = net.node("a").echo("eth0")
    net.node("b").echo("eth0")
    with pytest.raises(PermissionError):
        net.node("b", echo=False).echo("eth0")  # no CAP_NET_RAW
    calls = []
    eb.watch(lambda: calls.append(eb.recvfrom(4096)[0]))
    net.hold("b")
    ea.sendto(b"probe", (ALL_NODES, PORT, 0, 0))
    eb.sendto(b"from-b", (ALL_NODES, PORT, 0, 0))
    await asyncio.sleep(0)
    assert calls == []
    with pytest.raises(BlockingIOError):
        ea.recvfrom(4096)  # b sent nothing while held
    request = bytes([ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1]) + b"X0LE"
    echo_a.sendto(request, (net.ifaces["b/eth0"].address, 0, 0, echo_a.index))
    reply, src = echo_a.recvfrom(256)
    assert reply == bytes([ECHO_REPLY]) + request[1:] and src[0] == net.ifaces["b/eth0"].address
    net.release("b")
    await asyncio.sleep(0)
    assert calls == [b"probe"]  # what waited is read once it runs again
    eb.close()
    with pytest.raises(OSError):
        eb.sendto(b"late", (ALL_NODES, PORT, 0, 0))
