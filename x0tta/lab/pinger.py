"""A continuous ICMP echo sender that keeps every sample: ``python -m x0tta.lab.pinger DST INTERVAL_S OUT``.

Run inside a node's network namespace (``ip netns exec``) by the lab engine. Unlike ``ping`` it
records, for every sequence number, when the echo was sent and when its reply arrived, on the
guest's monotonic clock (the clock of the engine's timeline), so outages can be computed to the
resolution of the interval (:mod:`x0tta.lab.core.timeline`). Echoes go out on a fixed schedule
(``start + k * interval``) that does not drift when one send is late.

It prints ``ready`` once the socket is open and runs until SIGTERM or SIGINT, then waits
``GRACE_S`` for late replies. Samples are written to OUT as they are taken, one line each -
``s SEQ SENT`` for an echo sent, ``r SEQ RECEIVED`` for its reply - and flushed every
``FLUSH_S``: a pinger killed because it did not stop in time (a saturated guest) leaves what it
measured up to its last flush. :func:`read_samples` turns the file into ``[[seq, sent,
received|null], ...]``.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import threading
import time

GRACE_S = 1.0
FLUSH_S = 0.25  # one write a quarter second, not one per sample: writes cost the guest too
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo(ident: int, seq: int) -> bytes:
    payload = b"x0tta-lab" + bytes(23)
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq & 0xFFFF) + payload


def read_samples(path: str | os.PathLike[str]) -> list[list[float | int | None]]:
    """``[[seq, sent, received|null], ...]`` from a pinger's sample file (a cut last line is skipped)."""
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 3 or parts[0] not in ("s", "r") or not line.endswith("\n"):
                continue
            try:
                seq, t = int(parts[1]), float(parts[2])
            except ValueError:
                continue
            (sent if parts[0] == "s" else got)[seq] = t
    return [[i, sent[i], got.get(i)] for i in sorted(sent)]


def main(argv: list[str]) -> int:
    dst, interval, out = argv[0], float(argv[1]), argv[2]
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(0.2)
    stop = threading.Event()
    sent: list[float] = []
    received: dict[int, float] = {}
    lock = threading.Lock()
    fh = open(out, "w", encoding="utf-8")
    pending: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiving = threading.Event()
    receiving.set()

    def receiver() -> None:
        while receiving.is_set():
            try:
                packet = sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            ihl = (packet[0] & 0x0F) * 4
            if len(packet) < ihl + 8:
                continue
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
            if kind != ICMP_ECHO_REPLY or rid != ident:
                continue
            with lock:
                # the newest echo with these 16 low bits (the counter wraps after 65536 echoes)
                n = len(sent) - 1
                seq = n - ((n - rseq) & 0xFFFF)
                if 0 <= seq and seq not in received:
                    received[seq] = now
                    pending.append(f"r {seq} {now:.6f}\n")

    def flush() -> None:
        with lock:
            lines = "".join(pending)
            pending.clear()
        if lines:
            fh.write(lines)
            fh.flush()

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    print("ready", flush=True)
    start = time.monotonic()
    next_flush = start + FLUSH_S
    k = 0
    while not stop.is_set():
        target = start + k * interval
        delay = target - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        with lock:
            t = time.monotonic()
            sent.append(t)
            pending.append(f"s {k} {t:.6f}\n")
        if t >= next_flush:
            flush()
            next_flush = t + FLUSH_S
        try:
            sock.sendto(echo(ident, k), (dst, 0))
        except OSError:
            pass  # no route right now: the echo counts as lost, as in ping
        k += 1
    flush()
    time.sleep(GRACE_S)
    receiving.clear()
    thread.join(timeout=1.0)
    flush()
    fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
