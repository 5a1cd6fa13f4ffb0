"""Liveness probes on the wire: one UDP socket per hard interface, IPv6 link-local multicast.

The wire format and the loss accounting are in :mod:`x0tta.heal.core.liveness`; this adapter only
moves bytes. For each hard interface it opens a datagram socket bound to that device
(``SO_BINDTODEVICE``) on ``[::]:probe_port``, sends a probe to ``ff02::1`` (all nodes on the link,
from the interface's fe80:: address) every ``probe_interval`` and reads what arrives without
blocking (``loop.add_reader``). Probes keep flowing on an interface the loop has detached from the
mesh - that is how it sees the link heal and restores it.

After each send it looks at the stats; when a link starts losing probes it calls ``wake`` so the
loop runs a cycle at once instead of at its next idle poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from x0tta.heal.core.liveness import Tracker
from x0tta.heal.core.model import ProbeStats

ALL_NODES = "ff02::1"
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def read_mac(ifname: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    except OSError:
        return None


def read_rx_packets(ifname: str) -> int | None:
    try:
        with open(f"/sys/class/net/{ifname}/statistics/rx_packets", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def open_link_socket(name: str, port: int) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to interface ``name`` on ``[::]:port``, sending to
    ``ff02::1`` there (one hop, not looped back); returns it and the interface index."""
    index = socket.if_nametoindex(name)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        s.bind(("::", port))
        group = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", index)
        with contextlib.suppress(OSError):  # every interface is in ff02::1 already
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s, index


class _Iface:
    def __init__(self, name: str, index: int, mac: str, sock: socket.socket) -> None:
        self.name = name
        self.index = index
        self.mac = mac
        self.sock = sock
        self.send_errors = 0
        self.probes_rx = 0  # datagrams read on this interface's socket
        self.rx_packets: int | None = None  # the interface counter at the last tick
        self.probes_at_tick = 0
        self.other_rx_at: float | None = None  # when frames other than probes last arrived


class Prober:
    def __init__(
        self,
        tracker: Tracker,
        port: int,
        interval: float,
        *,
        wake: Callable[[], None] | None = None,
        suspect_run: int = 1,
        log: Any = None,
    ) -> None:
        self.tracker = tracker
        self.port = port
        self.interval = interval
        self.wake = wake
        self.suspect_run = suspect_run
        self.log = log
        self.ifaces: dict[str, _Iface] = {}
        self.sent = 0
        self.received = 0

    def _open(self, name: str, mac: str) -> _Iface:
        s, index = open_link_socket(name, self.port)
        iface = _Iface(name, index, mac, s)
        asyncio.get_running_loop().add_reader(s.fileno(), self._readable, iface)
        return iface

    def _close(self, iface: _Iface) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(iface.sock.fileno())
        iface.sock.close()

    def _readable(self, iface: _Iface) -> None:
        while True:
            try:
                data = iface.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = time.monotonic()
            self.received += 1
            iface.probes_rx += 1
            self.tracker.receive(iface.name, iface.mac, data, now, int(now * 1e9))

    async def sync(self, names: Iterable[str]) -> None:
        """Probe exactly on ``names`` (interfaces that vanished are closed)."""
        want = set(names)
        for name in list(self.ifaces):
            if name not in want:
                self._close(self.ifaces.pop(name))
        for name in sorted(want - set(self.ifaces)):
            mac = await asyncio.to_thread(read_mac, name)
            if mac is None:
                continue
            try:
                self.ifaces[name] = self._open(name, mac)
            except OSError as exc:
                if self.log is not None:
                    self.log.warning("probe_socket_failed", hardif=name, error=str(exc))

    def _sample_rx(self, now: float) -> None:
        """Did frames other than probes arrive since the last tick (sysfs counter, no disk)?"""
        for iface in self.ifaces.values():
            self._readable(iface)
            count = read_rx_packets(iface.name)
            if count is None:
                continue
            if iface.rx_packets is not None and count - iface.rx_packets > iface.probes_rx - iface.probes_at_tick:
                iface.other_rx_at = now
            iface.rx_packets, iface.probes_at_tick = count, iface.probes_rx

    def link_rx(self) -> dict[str, float]:
        return {i.name: i.other_rx_at for i in self.ifaces.values() if i.other_rx_at is not None}

    def send_bye(self) -> None:
        now = time.monotonic()
        for iface in self.ifaces.values():
            with contextlib.suppress(OSError):
                iface.sock.sendto(self.tracker.bye(iface.name, iface.mac, int(now * 1e9)),
                                  (ALL_NODES, self.port, 0, iface.index))

    def send_all(self) -> None:
        now = time.monotonic()
        for iface in self.ifaces.values():
            data = self.tracker.next_probe(iface.name, iface.mac, now, int(now * 1e9))
            try:
                iface.sock.sendto(data, (ALL_NODES, self.port, 0, iface.index))
                self.sent += 1
            except OSError:  # no link-local address yet, link down: the peer counts the loss
                iface.send_errors += 1

    def stats(self, carrier: Mapping[str, bool] | None = None) -> tuple[ProbeStats, ...]:
        """``carrier``: hard interface -> carrier up, as the caller just read it (a link that came
        back up restarts its loss accounting, see :meth:`Tracker.link`)."""
        for iface in self.ifaces.values():  # what has arrived counts, even if not yet read
            self._readable(iface)
        return self.tracker.stats(time.monotonic(), self.link_rx(), carrier)

    async def run(self, names: Callable[[], Iterable[str]]) -> None:
        """Send every interval until cancelled; re-reads the interface list each second."""
        next_sync = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_sync:
                    await self.sync(names())
                    next_sync = now + 1.0
                self.tracker.tick(now)
                self._sample_rx(now)
                self.send_all()
                if self.wake is not None and any(s.lost_run >= self.suspect_run for s in self.stats()):
                    self.wake()
                await asyncio.sleep(self.interval)
        finally:
            self.send_bye()
            for iface in self.ifaces.values():
                self._close(iface)
            self.ifaces.clear()
