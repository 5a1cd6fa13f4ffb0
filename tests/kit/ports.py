"""Free loopback ports for the servers a test starts (brokers, etcd members, Prometheus, agents).

Picked at run time by binding port 0, because other test runs share the machine: held together
while picked, so ``free_ports(n)`` never returns one twice. A port is free when picked, not
reserved: start the server at once.
"""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held together while picked, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    (port,) = free_ports(1)
    return port
