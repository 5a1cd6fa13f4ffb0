"""Check functions that measure CPU inside the lab guest (run by ``bench_heal_cpu.py``).

The guest has one CPU. ``/proc/stat``'s first line gives the guest's busy and idle time in clock
ticks, ``/proc/PID/stat`` fields 14 and 15 (utime, stime) each agent's own, so one window of N
seconds gives the guest's busy share and every agent's share of the guest's CPU.

The kernel charges user and system time by its tick (100 Hz in the guest): the task running at a
tick is charged the whole tick. Its idle time, on a tickless kernel such as the lab's, is measured
exactly (the time spent in the idle loop). So ``guest_busy_exact_pct``, one less the idle time over
the window's wall time, is exact, while the tick-charged figures are samples: fair on average for
processes that wake at random against the tick, and far off for one that would keep a fixed phase
of it (charged nearly every wake's tick, or nearly none). The agents' exact cost is the exact busy
share with agents less the one without, over the number of agents.
"""

from __future__ import annotations

import os
import time

TICK = os.sysconf("SC_CLK_TCK")


def _guest() -> tuple[int, int, int]:
    """Busy ticks, all ticks, idle ticks (idle + iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8]), idle


def _proc(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15 of the whole line)


def _switches(pid: int) -> int | None:
    """Voluntary context switches of every thread of ``pid``: how often it went to sleep, so how
    often something woke it."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    except (OSError, ValueError):
        return None
    return total


def cpu(lab, seconds=20.0):
    """Guest busy share and each running agent's share of the guest CPU over ``seconds``."""
    pids = {n: p.pid for n, p in lab.agents.procs.items() if p.poll() is None}
    busy0, total0, idle0 = _guest()
    own0 = {n: _proc(pid) for n, pid in pids.items()}
    woke0 = {n: _switches(pid) for n, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(float(seconds))
    busy1, total1, idle1 = _guest()
    wall = time.monotonic() - t0
    own1 = {n: _proc(pid) for n, pid in pids.items()}
    woke1 = {n: _switches(pid) for n, pid in pids.items()}
    span = max(1, total1 - total0)
    agents = {n: round(100.0 * (own1[n] - own0[n]) / span, 2) for n in pids
              if own0[n] is not None and own1[n] is not None}
    return {
        "seconds": round(wall, 2),
        "guest_busy_pct": round(100.0 * (busy1 - busy0) / span, 2),
        "guest_busy_exact_pct": round(100.0 * (1.0 - (idle1 - idle0) / (wall * TICK)), 2),
        "agents_pct": agents,
        "agents_total_pct": round(sum(agents.values()), 2),
        "agents_wakeups_per_s": {n: round((woke1[n] - woke0[n]) / wall, 1) for n in pids
                                 if woke0[n] is not None and woke1[n] is not None},
    }


def start_servers(lab, node, address, argvs, ports, timeout=60.0):
    """Start the fleet plane's servers (mosquitto, etcd: ``argvs``) in ``node``'s namespace and wait
    until each listens on ``address`` at its port of ``ports``. They run until the guest shuts down."""
    import socket
    import subprocess

    procs = []
    with lab.netns(node):
        for argv in argvs:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
    deadline = time.monotonic() + float(timeout)
    waiting = list(ports)
    while waiting and time.monotonic() < deadline:
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"server exited: {dead}")
        with lab.netns(node):
            for port in list(waiting):
                try:
                    with socket.create_connection((address, port), timeout=0.5):
                        waiting.remove(port)
                except OSError:
                    pass
        time.sleep(0.5)
    if waiting:
        raise RuntimeError(f"not listening within {timeout} s: ports {waiting}")
    return {"pids": [p.pid for p in procs]}


def planes(lab, node):
    """The agent's fleet connection, its coordination rounds and the replicated state it reads, as
    its admin API says."""
    fleet = lab.agent_call(node, "fleet.status")
    rollouts = lab.agent_call(node, "coord.status")
    state = lab.agent_call(node, "meshstate.show")
    registry = (state.get("state") or {}).get("registry") or {}
    return {"fleet_connected": fleet.get("connected"), "coord_rollouts": len(rollouts),
            "meshstate_nodes": len(registry), "meshstate_refused": state.get("refused")}


def costs(lab, node="n1", n=3000):
    """CPU per call, in microseconds, of what an agent's steady state is made of, in ``node``'s
    namespace (see :func:`measure_costs`)."""
    with lab.netns(node):
        return measure_costs(n)


def measure_costs(n=3000):
    """CPU per call (``time.process_time``), in microseconds, of the pieces of an agent's steady
    state: a clock read, ``getpid``, a datagram sent, a probe socket read as a round does it (one
    datagram and the read that finds the socket empty; an empty socket), an event-loop turn
    (``await sleep(0)``) and a worker-thread hop (``asyncio.to_thread``) on the agent's loop. Runs
    on loopback."""
    import asyncio
    import socket

    from x0tta.heal.datagrams import SO_RXQ_OVFL, SO_TIMESTAMPNS, SocketEndpoint

    def per_call(fn, k=n):
        t0 = time.process_time()
        for _ in range(k):
            fn()
        return (time.process_time() - t0) / k * 1e6

    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        rx.bind(("::1", 0))
        rx.setblocking(False)
        addr, ep, probe = rx.getsockname(), SocketEndpoint(rx, 1), b"x" * 86

        def sent_then(read):
            def step():
                tx.sendto(probe, addr)
                read()
            return step

        out = {
            "a Python call (baseline)": per_call(lambda: None),
            "clock read (time.monotonic)": per_call(time.monotonic),
            "getpid": per_call(os.getpid),
            "datagram sent (sendto)": per_call(lambda: tx.sendto(probe, addr)),
        }
        def drain():
            while True:
                try:
                    ep.recv_stamped(4096)
                except BlockingIOError:
                    return

        drain()
        out["probe socket read, one datagram (recvmsg, then the read that finds it empty)"] = (
            per_call(sent_then(drain)) - out["datagram sent (sendto)"])
        out["probe socket read, empty (recvmsg)"] = per_call(drain)
    finally:
        rx.close()
        tx.close()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run

    async def turns(k):
        t0 = time.process_time()
        for _ in range(k):
            await asyncio.sleep(0)
        return (time.process_time() - t0) / k * 1e6

    async def hops(k):
        t0 = time.process_time()
        for _ in range(k):
            await asyncio.to_thread(lambda: None)
        return (time.process_time() - t0) / k * 1e6

    out["event-loop turn (await asyncio.sleep(0))"] = run(turns(n))
    out["worker-thread hop (await asyncio.to_thread)"] = run(hops(max(100, n // 6)))
    return {k: round(v, 2) for k, v in out.items()}
