"""The lab's attacker on a mesh link: sends the attack suite's frames (:mod:`x0tta.lab.core.attacks`)
on an interface, and hears the honest OGMs it needs to aim them.

Frames go out through an ``AF_PACKET`` raw socket bound to the interface (``packet(7)``: the frame
is sent as given, Ethernet header included, past batman-adv and the guard's egress hook alike -
what a device spliced into the cable would put on it), opened in the namespace of the node it
attacks from (``netns``: the socket stays there). :meth:`Injector.start` paces an attack's frames at
its rate in a thread of its own, so the lab's check steps and tests go on meanwhile;
:meth:`Injector.stop` ends it and says how many went out.

The failed-handshake burst is not frames: :func:`handshake_burst` runs the peer transport's own
refused clients (:mod:`x0tta.peer.attack`) against a neighbour's peer port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from x0tta.clock import SYSTEM
from x0tta.common.errors import TemporaryError
from x0tta.lab.core.attacks import ETH_P_BATMAN, Attack, AttackDecodeError, OgmHeader, decode_frame

PACKET_OUTGOING = 4  # packet(7): sll_pkttype of a frame this host sent


class InjectorError(TemporaryError):
    """The attacker's socket could not be opened or used (no such interface, no CAP_NET_RAW)."""


@dataclass
class Sending:
    """An attack under way in its thread: what went out so far, when the first frame did."""

    attack: Attack
    sent: int = 0
    failed: int = 0
    first_at: float | None = None  # time.monotonic() of the first frame sent
    first_wall: float | None = None  # time.time() of it, for the lab's timeline
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Injector:
    """Raw batman-adv frames out of ``ifname`` (in network namespace ``netns``, or this one)."""

    def __init__(self, ifname: str, netns: str | None = None) -> None:
        self.ifname, self.netns = ifname, netns
        self._sock = self._open(0)
        self._running: list[Sending] = []

    def _open(self, proto: int) -> socket.socket:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
            try:
                s.bind((self.ifname, proto))
            except OSError:
                s.close()
                raise
            return s

        try:
            if self.netns is None:
                return make()
            from x0tta.lab.netns import netns

            with netns(self.netns):
                return make()
        except OSError as exc:
            where = f" in namespace {self.netns}" if self.netns else ""
            raise InjectorError(f"cannot open a packet socket on {self.ifname}{where}: {exc} "
                                "(the interface must exist; the attacker needs CAP_NET_RAW)") from exc

    def send(self, frames: Iterable[bytes]) -> int:
        """Send ``frames`` at once, in order; returns how many went out."""
        n = 0
        for frame in frames:
            try:
                self._sock.send(frame)
                n += 1
            except OSError as exc:
                raise InjectorError(f"sending on {self.ifname}: {exc}") from exc
        return n

    def start(self, attack: Attack, clock: Callable[[], float] = time.monotonic) -> Sending:
        """Send ``attack``'s frames at its rate in a thread; returns at once."""
        job = Sending(attack)
        job.thread = threading.Thread(target=self._pace, args=(job, clock), name=f"attack-{attack.kind}", daemon=True)
        self._running.append(job)
        job.thread.start()
        return job

    def _pace(self, job: Sending, clock: Callable[[], float]) -> None:
        gap = 1.0 / job.attack.rate if job.attack.rate > 0 else 0.0
        t0 = clock()
        for i, frame in enumerate(job.attack.frames):
            wait = t0 + i * gap - clock()
            if (wait > 0 and job.stop.wait(wait)) or job.stop.is_set():
                return
            try:
                self._sock.send(frame)
            except OSError:  # a full queue (ENOBUFS) or the link went down: counted, the attack goes on
                job.failed += 1
                continue
            if job.first_at is None:
                job.first_at, job.first_wall = clock(), time.time()
            job.sent += 1

    def wait(self, job: Sending, timeout: float | None = None) -> Sending:
        """Wait for ``job`` to have sent everything (or ``timeout``)."""
        if job.thread is not None:
            job.thread.join(timeout)
        return job

    def stop(self, job: Sending) -> Sending:
        """End ``job`` now; returns it with its counts."""
        job.stop.set()
        return self.wait(job, 5.0)

    def hear(self, want: Callable[[str, OgmHeader], bool], timeout: float) -> tuple[str, OgmHeader] | None:
        """The first OGM arriving on the interface (not one sent here) for which ``want(source MAC,
        ogm)`` holds, within ``timeout`` seconds; None when none came. Frames that are not OGMs are
        skipped."""
        rx = self._open(ETH_P_BATMAN)
        end = time.monotonic() + timeout
        try:
            while (left := end - time.monotonic()) > 0:
                rx.settimeout(left)
                try:
                    frame, addr = rx.recvfrom(65536)
                except TimeoutError:
                    return None
                if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                    continue
                with contextlib.suppress(AttackDecodeError):
                    _, src, ogms = decode_frame(frame)
                    for ogm in ogms:
                        if want(src, ogm):
                            return src, ogm
            return None
        finally:
            rx.close()

    def close(self) -> None:
        for job in self._running:
            job.stop.set()
        for job in self._running:
            if job.thread is not None:
                job.thread.join(5.0)
        self._sock.close()

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def handshake_burst(host: str, port: int, attempts: int = 30, case: str = "no_client_certificate",
                    netns: str | None = None) -> dict[str, Any]:
    """``attempts`` handshakes the peer transport must refuse (``case`` of :mod:`x0tta.peer.attack`
    that needs no CA: ``no_client_certificate``, ``tls12_client`` or ``garbage``) against ``host``
    (a neighbour's address, ``fe80::...%iface`` on a link) and ``port``, one after the other;
    returns how many were refused and how many errored (with the last error), and ``first_wall``, the
    time.time() at which the first connection was opened (after the imports and the thread's start,
    which take a second or two in the lab's guest). From namespace ``netns`` when given (the
    connections are made in a thread that enters it)."""
    from x0tta.peer.attack import run_case

    if case not in ("no_client_certificate", "tls12_client", "garbage"):
        raise ValueError(f"case {case!r} needs a CA: use no_client_certificate, tls12_client or garbage")
    counts = {"refused": 0, "not_refused": 0, "error": 0}
    last_error = [""]
    first_wall: list[float] = []

    async def burst() -> None:
        first_wall.append(time.time())
        for _ in range(attempts):
            try:
                seen = await SYSTEM.wait_for(run_case(case, host, port, None, wait=5.0), 10.0)  # type: ignore[arg-type]
            except ConnectionResetError:  # the server closed on what it had not read: refused
                seen = "refused: reset"
            except Exception as exc:  # unreachable, or a timeout: counted, the burst goes on
                counts["error"] += 1
                last_error[0] = f"{type(exc).__name__}: {exc}"
                continue
            counts["refused" if "refused" in seen or "closed" in seen else "not_refused"] += 1

    def run() -> None:
        if netns is None:
            asyncio.run(burst())
            return
        from x0tta.lab.netns import netns as enter

        nonlocal host
        with enter(netns):
            # asyncio resolves a scoped address (fe80::1%to-n3) with getaddrinfo in a worker
            # thread, outside the namespace this thread entered: name the zone by its index here
            addr, sep, zone = host.partition("%")
            if sep and not zone.isdigit():
                host = f"{addr}%{socket.if_nametoindex(zone)}"
            asyncio.run(burst())

    worker = threading.Thread(target=run, name="attack-handshake-burst")
    worker.start()
    worker.join()
    out: dict[str, Any] = {**counts, "last_error": last_error[0]} if counts["error"] else dict(counts)
    return {**out, "first_wall": first_wall[0]} if first_wall else out
