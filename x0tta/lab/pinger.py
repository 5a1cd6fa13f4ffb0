"""A continuous ICMP echo sender that keeps every sample: ``python -m x0tta.lab.pinger DST INTERVAL_S OUT``.

Run inside a node's network namespace (``ip netns exec``) by the lab engine. Unlike ``ping`` it
records, for every sequence number, when the echo was sent and when its reply arrived, on the
guest's monotonic clock (the clock of the engine's timeline), so outages can be computed to the
resolution of the interval (:mod:`x0tta.lab.core.timeline`). Echoes go out on a fixed schedule
(``start + k * interval``) that does not drift when one send is late.

It prints ``ready`` once the socket is open, runs until SIGTERM or SIGINT, waits ``GRACE_S`` for
late replies, then writes ``[[seq, sent, received|null], ...]`` as JSON to OUT.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading
import time

GRACE_S = 1.0
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


def main(argv: list[str]) -> int:
    dst, interval, out = argv[0], float(argv[1]), argv[2]
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(0.2)
    stop = threading.Event()
    sent: list[float] = []
    received: dict[int, float] = {}
    lock = threading.Lock()

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

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    print("ready", flush=True)
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        target = start + k * interval
        delay = target - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        with lock:
            sent.append(time.monotonic())
        try:
            sock.sendto(echo(ident, k), (dst, 0))
        except OSError:
            pass  # no route right now: the echo counts as lost, as in ping
        k += 1
    time.sleep(GRACE_S)
    receiving.clear()
    thread.join(timeout=1.0)
    with lock:
        rows = [[i, round(t, 6), None if i not in received else round(received[i], 6)] for i, t in enumerate(sent)]
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(rows, fh)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
