"""Liveness probes on the wire: one UDP socket per hard interface, IPv6 link-local multicast.

The wire format and the loss accounting are in :mod:`x0tta.heal.core.liveness`; this adapter only
moves bytes. For each hard interface it opens a datagram socket bound to that device
(``SO_BINDTODEVICE``) on ``[::]:probe_port``, sends a probe to ``ff02::1`` (all nodes on the link,
from the interface's fe80:: address) every ``probe_interval``, and at the start of each round reads
what arrived since the last one, each datagram with the kernel's receive timestamp. One read per
round instead of a loop wake-up per datagram (the neighbours' probes come ten times a second on
every link): loss, acknowledgements and round-trip times are counted from when a probe arrived,
not from when it was read. Hop-by-hop alerts come to the same port; a socket filter (classic BPF
on the datagram's first word) gives them a second socket, which the loop watches, so an alert is
passed on at once. Where the kernel refuses the filter, alerts come with the probes and wait for
the round: up to one probe interval per hop. The sockets, the MACs and the receive counters come
through the :class:`~x0tta.heal.datagrams.Datagrams` it is given (the host's by default; a test's
fake net in the unit tests), and its time through its :class:`~x0tta.clock.Clock`. Probes keep
flowing on an interface the loop has detached from the mesh - that is how it sees the link heal
and restores it.

After each send it looks at the stats; when a link starts losing probes it calls ``wake`` so the
loop runs a cycle at once instead of at its next idle poll.

Kernel echo: beside the probe socket, a raw ICMPv6 socket on each interface (CAP_NET_RAW, which
the unit grants) sends an echo request to a peer whose probe is overdue, to the link-local address
its probes come from; the peer's kernel answers even while its agent is starved or stopped, so a
late agent is not taken for a dead link (:class:`~x0tta.heal.core.liveness.Tracker`). Without the
raw socket the prober works on probes alone and says so (``echo`` is False).

Other traffic: a peer whose probe is overdue may still be sending batman-adv frames (its agent
starved, its link alive). When the wiring hands the prober ``neighbour_rx`` (the probes
subsystem's ``last_rx(ifindex, mac)``: one eBPF map lookup, the last batman-adv frame from that
MAC on that interface), the prober asks it for each overdue peer and the tracker takes that peer's
own figure. Otherwise, or while the eBPF object is not loaded, it falls back to the interface's
``rx_packets`` counter minus the probes it read, where frames from any neighbour on the interface
count. The counter is read with ``pread`` on a file kept open, not opened and closed ten times a
second per interface. Both are read only while a peer is overdue: a quiet round makes no system
call for them.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from x0tta.clock import SYSTEM, Clock
from x0tta.heal.core.liveness import MAGIC as PROBE_MAGIC
from x0tta.heal.core.liveness import RxTimes, Tracker
from x0tta.heal.core.model import ProbeStats

# the host's side of the endpoints moved to x0tta.heal.datagrams; the names stay importable here
from x0tta.heal.datagrams import (  # noqa: F401 - re-exported for the tests and the lab checks
    ALL_NODES,
    ECHO_REPLY,
    ECHO_REQUEST,
    HOST,
    Datagrams,
    Endpoint,
    RxCounter,
    open_echo_socket,
    open_link_socket,
    read_mac,
    read_rx_packets,
)

ECHO_MAGIC = b"X0LE"
ALERT_MAGIC = b"X0MA"  # x0tta.heal.core.alert.MAGIC: a hop-by-hop alert on a probe socket
IDLE_EVERY = 10  # an interface where no peer was ever heard is probed every 10th round
DRAIN_MAX = 256  # datagrams read per interface in one drain (a bound, not an expected count)
# How an overdue peer's silence is corroborated (``Prober.corroboration``, ``heal.state``).
BY_NEIGHBOUR = "ebpf_neighbour"  # batman-adv frames from that peer's MAC (the eBPF counters)
BY_INTERFACE = "interface_counter"  # any frame on its interface (sysfs rx_packets)
_ECHO = struct.Struct("!BBHHH4s")  # type, code, checksum (the kernel fills it), id, seq, magic


class _Iface:
    def __init__(self, name: str, index: int, mac: str, sock: Endpoint) -> None:
        self.name = name
        self.index = index
        self.mac = mac
        self.sock = sock
        self.echo: Endpoint | None = None
        self.alerts: Endpoint | None = None  # hop-by-hop alerts only (a socket filter), watched
        # the probe endpoint's drop count as last seen (the kernel sends none until the first drop)
        self.drops = 0
        self.addr_of: dict[str, str] = {}  # peer MAC -> the link-local address its probes come from
        self.mac_of: dict[str, str] = {}
        self.rx: RxCounter | None = None
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
        neighbour_rx: Callable[[int, str], float | None] | None = None,
        datagrams: Datagrams = HOST,
        clock: Clock = SYSTEM,
    ) -> None:
        self.datagrams = datagrams  # where the endpoints come from: the host's sockets, or a test's net
        self.clock = clock  # every time read and the sleep between rounds
        self.tracker = tracker
        self.port = port
        self.interval = interval
        self.wake = wake
        self.suspect_run = suspect_run
        self.log = log
        self.ifaces: dict[str, _Iface] = {}
        self.sent = 0
        self.received = 0
        self.echo = True  # False once an echo socket could not be opened (no CAP_NET_RAW)
        self.echo_error: str | None = None
        self.echoes_sent = 0
        self._echo_id = os.getpid() & 0xFFFF
        self._echo_seq = 0
        self._round = 0
        self._heard_on: set[str] = set()  # interfaces where a peer was heard since the start
        self._lag = 0.0  # s: the latest a round woke after its planned time, since take_lag()
        # hop-by-hop mesh alerts share the probe sockets (x0tta.heal.alerts.Alerter.hop_receive)
        self.on_alert: Callable[[str, bytes, str], None] | None = None
        # (ifindex, peer MAC) -> CLOCK_MONOTONIC s of its last batman-adv frame, None if unknown
        self.neighbour_rx = neighbour_rx
        self._peer_rx: dict[tuple[str, str], float] = {}  # overdue peers' own figures, this round
        self._fell_back = False  # the latest lookup round had a peer without its own figure
        self._drained_at = float("-inf")  # monotonic time of the latest drain
        self.overruns = 0  # probes the kernel dropped on full probe sockets (SO_RXQ_OVFL)
        self._overrun_logged = float("-inf")
        self.take_errors = 0  # datagrams whose handling raised (logged, dropped)

    def _open(self, name: str, mac: str) -> _Iface:
        # Hop-by-hop alerts come to the probe port too. Socket filters give probes and alerts an
        # endpoint each and keep anything else out: alerts are rare and watched by the loop, passed
        # on at once, while the probes wait for the round. Without the filters both come on one
        # endpoint, read at the round.
        alerts: Endpoint | None = None
        try:
            alerts = self.datagrams.link(name, self.port, ALERT_MAGIC, match=True)
            s = self.datagrams.link(name, self.port, PROBE_MAGIC, match=True, stamps=True)
        except OSError as exc:
            if alerts is not None:
                alerts.close()
                alerts = None
            s = self.datagrams.link(name, self.port, stamps=True)
            if self.log is not None:
                self.log.warning("probe_alert_filter_unavailable", hardif=name, error=str(exc))
        iface = _Iface(name, s.index, mac, s)
        if alerts is not None:
            iface.alerts = alerts
            alerts.watch(lambda: self._read_one(iface, alerts))
        if not s.stamped:
            # no receive timestamps: read each probe as it comes, dated by its read (each a loop
            # wake-up, as before the timestamps); the rounds read whatever is left
            if self.log is not None:
                self.log.warning("probe_timestamps_unavailable", hardif=name)
            s.watch(lambda: self._read_one(iface, s))
        try:
            echo = iface.echo = self.datagrams.echo(name)
            echo.watch(lambda: self._echo_readable(iface))
        except OSError as exc:
            self.echo, self.echo_error = False, f"{name}: {exc.strerror or exc}"
            if self.log is not None:
                self.log.warning("probe_echo_unavailable", hardif=name, error=str(exc))
        iface.rx = self.datagrams.rx_counter(name)
        return iface

    def _close(self, iface: _Iface) -> None:
        for sock in (iface.sock, iface.alerts, iface.echo):
            if sock is not None:
                sock.close()
        if iface.rx is not None:
            iface.rx.close()
            iface.rx = None

    def drain(self, now: float | None = None, to_monotonic: float | None = None) -> int:
        """Read everything waiting on the probe sockets; how many datagrams. Each round does, before
        its probes go out: their acknowledgements count the peers' probes that arrived since.

        A datagram counts from its kernel receive timestamp, moved from the wall clock to the
        monotonic one (the two read together) and kept between the previous drain and ``now`` (a
        wall clock stepped in between cannot date a probe before the round that could not have
        read it, or after now); without a timestamp, from ``now``. When the kernel dropped
        datagrams on a probe socket for lack of room (a flood), the probes it dropped are not loss
        on the link: the tracker holds its loss counting as after a stall of this agent.

        ``now`` and ``to_monotonic`` (monotonic minus wall time), when both are given, are the
        round's: the clocks are not read again (each read is a system call on some kernels, and a
        round comes ten times a second)."""
        if now is None or to_monotonic is None:
            mono = self.clock.monotonic()
            to_monotonic = mono - self.clock.time()
            now = mono if now is None else min(now, mono)
        floor = min(self._drained_at, now)
        self._drained_at = max(self._drained_at, now)
        n = 0
        for iface in list(self.ifaces.values()):
            for _ in range(DRAIN_MAX):
                try:
                    data, addr, wall, drops = iface.sock.recv_stamped(4096)
                except OSError:  # BlockingIOError: all read; anything else: try again next round
                    break
                n += 1
                if drops is not None and drops != iface.drops:  # the kernel's count moved
                    self._overrun(iface, now, (drops - iface.drops) & 0xFFFFFFFF)
                    iface.drops = drops
                self._take(iface, data, addr, now if wall is None else min(now, max(floor, wall + to_monotonic)))
        return n

    def _overrun(self, iface: _Iface, now: float, dropped: int) -> None:
        self.overruns += dropped
        self.tracker.hold(now)
        if self.log is not None and now - self._overrun_logged >= 60.0:  # a flood: once a minute
            self._overrun_logged = now
            self.log.warning("probe_socket_overrun", hardif=iface.name, dropped=dropped, total=self.overruns)

    def _read_one(self, iface: _Iface, endpoint: Endpoint) -> None:
        """A watched endpoint (the alerts', or probes without timestamps): one datagram per call,
        dated now (the loop calls again while more wait)."""
        try:
            data, addr = endpoint.recvfrom(4096)
        except OSError:
            return
        self._take(iface, data, addr, self.clock.monotonic())

    def _take(self, iface: _Iface, data: bytes, addr: Any, now: float) -> None:
        """One datagram: a probe to the tracker, an alert to ``on_alert``. A failure is logged and
        the datagram dropped; the next one and the round go on."""
        try:
            self._handle(iface, data, addr, now)
        except Exception as exc:
            self.take_errors += 1
            if self.log is not None:
                self.log.error("probe_datagram_failed", hardif=iface.name, source=str(addr[0]),
                               error=f"{type(exc).__name__}: {exc}")

    def _handle(self, iface: _Iface, data: bytes, addr: Any, now: float) -> None:
        iface.probes_rx += 1
        if data[:4] == ALERT_MAGIC:
            if self.on_alert is not None:
                self.on_alert(iface.name, data, str(addr[0]))
            return
        self.received += 1
        probe = self.tracker.receive(iface.name, iface.mac, data, now, int(now * 1e9))
        if probe is not None and not probe.bye:
            self._heard_on.add(iface.name)
        if probe is not None and not probe.bye and iface.addr_of.get(probe.sender) != addr[0]:
            iface.addr_of[probe.sender] = addr[0]
            iface.mac_of = {a: m for m, a in iface.addr_of.items()}

    def _echo_readable(self, iface: _Iface) -> None:
        assert iface.echo is not None
        try:
            data, addr = iface.echo.recvfrom(256)
        except OSError:
            return
        if len(data) < _ECHO.size:
            return
        kind, _code, _sum, ident, _seq, magic = _ECHO.unpack_from(data)
        peer = iface.mac_of.get(addr[0].split("%", 1)[0])
        if kind == ECHO_REPLY and ident == self._echo_id and magic == ECHO_MAGIC and peer is not None:
            self.tracker.echo_reply(iface.name, peer, self.clock.monotonic())

    def send_echoes(self, now: float, late: Iterable[tuple[str, str]]) -> None:
        """An echo request to every peer whose probe is overdue (``late``)."""
        for hardif, peer in late:
            iface = self.ifaces.get(hardif)
            addr = iface.addr_of.get(peer) if iface is not None else None
            if iface is None or iface.echo is None or addr is None:
                continue
            self._echo_seq = (self._echo_seq + 1) & 0xFFFF
            try:
                iface.echo.sendto(_ECHO.pack(ECHO_REQUEST, 0, 0, self._echo_id, self._echo_seq, ECHO_MAGIC),
                                  (addr, 0, 0, iface.index))
            except OSError:
                continue
            self.echoes_sent += 1
            self.tracker.echo_sent(hardif, peer, now)

    async def sync(self, names: Iterable[str]) -> None:
        """Probe exactly on ``names`` (interfaces that vanished are closed)."""
        want = set(names)
        for name in list(self.ifaces):
            if name not in want:
                self._close(self.ifaces.pop(name))
        for name in sorted(want - set(self.ifaces)):
            mac = await self.datagrams.mac(name)
            if mac is None:
                continue
            try:
                self.ifaces[name] = self._open(name, mac)
            except OSError as exc:
                if self.log is not None:
                    self.log.warning("probe_socket_failed", hardif=name, error=str(exc))

    def _sample_rx(self, now: float, late: Iterable[tuple[str, str]]) -> None:
        """Did frames other than probes arrive from the overdue peers (``late``)? For each, its own
        figure when ``neighbour_rx`` answers (one map lookup); else the counter of its interface
        (sysfs, no disk), read once per such interface. Nothing is read for peers on time: nobody
        asks, and the first counter read after a quiet spell is only the baseline."""
        peer_rx: dict[tuple[str, str], float] = {}
        counted: set[str] = set()
        for hardif, peer in late:
            iface = self.ifaces.get(hardif)
            if iface is None:
                continue
            heard = self.neighbour_rx(iface.index, peer) if self.neighbour_rx is not None else None
            if heard is None:
                counted.add(hardif)
            else:
                peer_rx[(hardif, peer)] = heard
        if peer_rx or counted:
            self._fell_back = bool(counted)
        self._peer_rx = peer_rx
        for iface in self.ifaces.values():
            if iface.name not in counted:
                iface.rx_packets = None
                continue
            count = iface.rx.read() if iface.rx is not None else None
            if count is None:
                continue
            if iface.rx_packets is not None and count - iface.rx_packets > iface.probes_rx - iface.probes_at_tick:
                iface.other_rx_at = now
            iface.rx_packets, iface.probes_at_tick = count, iface.probes_rx

    def flood(self, build: Callable[[str], bytes | None], skip: str | None = None) -> int:
        """Send ``build(interface)`` to ``ff02::1`` on every interface but ``skip`` (None: not there);
        how many went out."""
        sent = 0
        for iface in self.ifaces.values():
            if iface.name == skip:
                continue
            data = build(iface.name)
            if data is None:
                continue
            try:
                iface.sock.sendto(data, (ALL_NODES, self.port, 0, iface.index))
                sent += 1
            except OSError:
                iface.send_errors += 1
        return sent

    def take_lag(self) -> float:
        """How much later than planned the latest round ran since the last call (this process's
        event-loop lag as the probes feel it; :mod:`x0tta.heal.core.strain`)."""
        lag, self._lag = self._lag, 0.0
        return lag

    def link_rx(self) -> dict[str, float]:
        """Hard interface -> when its counter last showed frames other than probes."""
        return {i.name: i.other_rx_at for i in self.ifaces.values() if i.other_rx_at is not None}

    def rx_times(self) -> RxTimes:
        """What the tracker corroborates silence with: the interfaces' figures, and the overdue
        peers' own (keyed (hard interface, peer)), which win over their interface's."""
        return {**self.link_rx(), **self._peer_rx}

    @property
    def corroboration(self) -> str:
        """:data:`BY_NEIGHBOUR` while the eBPF figures are wired and the latest peers looked up
        all had one (before any: what is wired); :data:`BY_INTERFACE` otherwise."""
        return BY_INTERFACE if self.neighbour_rx is None or self._fell_back else BY_NEIGHBOUR

    def send_bye(self) -> None:
        now = self.clock.monotonic()
        for iface in self.ifaces.values():
            with contextlib.suppress(OSError):
                iface.sock.sendto(self.tracker.bye(iface.name, iface.mac, int(now * 1e9)),
                                  (ALL_NODES, self.port, 0, iface.index))

    def send_all(self, now: float | None = None) -> None:
        """A probe on every interface; on one where no peer was ever heard (a dummy primary, an
        unused radio), every ``IDLE_EVERY`` rounds only - enough for a new neighbour to find us
        within a second. Once a peer was heard there, always every round: a peer forgotten for a
        moment (a carrier restart) must not make the other end count our quiet rounds as loss."""
        now = self.clock.monotonic() if now is None else now
        self._round += 1
        for iface in self.ifaces.values():
            if iface.name not in self._heard_on and self._round % IDLE_EVERY:
                continue
            data = self.tracker.next_probe(iface.name, iface.mac, now, int(now * 1e9))
            try:
                iface.sock.sendto(data, (ALL_NODES, self.port, 0, iface.index))
                self.sent += 1
            except OSError:  # no link-local address yet, link down: the peer counts the loss
                iface.send_errors += 1

    def stats(self, carrier: Mapping[str, bool] | None = None) -> tuple[ProbeStats, ...]:
        """``carrier``: hard interface -> carrier up, as the caller just read it (a link that came
        back up restarts its loss accounting, see :meth:`Tracker.link`). What arrived since the last
        round is read first: between rounds, a probe waiting unread would count as lost."""
        now = self.clock.monotonic()
        self.drain(now)
        return self.tracker.stats(now, self.rx_times(), carrier)

    async def run(self, names: Callable[[], Iterable[str]]) -> None:
        """Send every interval until cancelled; re-reads the interface list each second."""
        next_sync = 0.0
        planned: float | None = None
        to_monotonic = 0.0
        try:
            while True:
                now = self.clock.monotonic()  # the round's one clock read
                if planned is not None and now - planned > self._lag:
                    self._lag = now - planned
                if now >= next_sync:
                    await self.sync(names())
                    now = self.clock.monotonic()  # the sync may have waited for a thread
                    # once a second: the wall clock moves against the monotonic one only by a slew
                    # (well under a millisecond a second) or a step, and a probe's time is kept
                    # between the previous round and this one whatever it reads
                    to_monotonic = now - self.clock.time()
                    next_sync = now + 1.0
                # what arrived since the last round, before our acknowledgements
                self.drain(now, to_monotonic)
                self.tracker.tick(now)
                late = self.tracker.overdue(now)
                self._sample_rx(now, late)
                self.send_all(now)
                self.send_echoes(now, late)
                if self.wake is not None:
                    if self.tracker.worst_run(now, self.rx_times()) >= self.suspect_run:
                        self.wake()
                planned = now + self.interval  # the round's own work counts as lag: a few ms
                await self.clock.sleep(self.interval)
        finally:
            self.send_bye()
            for iface in self.ifaces.values():
                self._close(iface)
            self.ifaces.clear()
