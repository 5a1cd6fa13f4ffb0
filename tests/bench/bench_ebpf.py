"""iperf3 throughput over a veth pair with the probes attached vs without, in one run.

    .venv/bin/python tests/bench/bench_ebpf.py [--rounds 5] [--seconds 3] [--ends 2|1]

One veth pair between two network namespaces; iperf3 server in one, client in the other. Rounds
alternate: without probes, then with the probes (flow + neighbour counting and the guard, observe
mode) attached to ingress and egress of BOTH veth ends (``--ends 2``, the default), so every
packet passes two program runs, the sender's egress and the receiver's ingress: what two nodes pay,
each on its own CPU, charged here to one machine. ``--ends 1`` attaches them to the client's end
only, as one node's agent does on its interface: one run per packet.
Two workloads: TCP (the kernel's GSO aggregates, as forwarded traffic mostly is) and UDP with
1400-byte datagrams at full rate (one program run per datagram: the per-packet worst case).
Prints a Markdown table of the medians and the ratio (target: >= 0.95), and the programs' own
run time from the kernel's accounting (kernel.bpf_stats_enabled, turned on for one extra run per
workload and restored), which does not depend on the noise of a shared machine. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kit.netns import in_netns  # noqa: E402
from x0tta.config.probes import ProbeSettings  # noqa: E402
from x0tta.probes.service import Probes, load  # noqa: E402

NS_C, NS_S = "xbench-c", "xbench-s"


def sh(cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True).stdout  # noqa: S602 - the test's own command lines; a shell for their pipes and redirections


def up() -> None:
    down()
    sh(f"ip netns add {NS_C} && ip netns add {NS_S}")
    sh(f"ip link add xb-c netns {NS_C} type veth peer name xb-s netns {NS_S}")
    sh(f"ip -n {NS_C} addr add 10.214.0.1/24 dev xb-c && ip -n {NS_C} link set xb-c up")
    sh(f"ip -n {NS_S} addr add 10.214.0.2/24 dev xb-s && ip -n {NS_S} link set xb-s up")
    time.sleep(0.5)


def down() -> None:
    sh(f"ip netns del {NS_C}", check=False)
    sh(f"ip netns del {NS_S}", check=False)


def iperf(args: str, seconds: float) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", NS_S, "iperf3", "-s", "-1", "-B", "10.214.0.2"],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.3)
        out = sh(f"ip netns exec {NS_C} iperf3 -c 10.214.0.2 -t {seconds} -J {args}")
        end = json.loads(out)["end"]
        return (end.get("sum_received") or end["sum"])["bits_per_second"]
    finally:
        server.wait(10)


ENDS = ((NS_C, "xb-c"), (NS_S, "xb-s"))


def attach(pin: Path, ends: int) -> list[Probes]:
    attached = []
    for ns, dev in ENDS[:ends]:
        s = ProbeSettings(interfaces=(dev,), pin_path=str(pin / ns / "x0tta"))
        with in_netns(ns):
            p = Probes(load(s), s)
            assert p.reconcile()[0] == [dev]
            attached.append(p)
    return attached


def detach(probes: list[Probes]) -> int:
    flows = 0
    for p, (ns, _) in zip(probes, ENDS, strict=False):
        flows += len(p.snapshot().flows)
        with in_netns(ns):
            p.close()
    return flows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ends", type=int, choices=(1, 2), default=2, help="veth ends with the probes attached")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cannot run: needs root", file=sys.stderr)
        return 1
    subprocess.run(["make", "-s", "-C", str(ROOT / "ebpf")], check=True)
    workloads = {"TCP": "", "UDP 1400 B datagrams": "-u -b 0 -l 1400"}
    results: dict[str, dict[str, list[float]]] = {w: {"off": [], "on": []} for w in workloads}
    cost: dict[str, tuple[int, int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-ebpf-") as tmp:
        pin = Path(tmp) / "bpffs"
        pin.mkdir()
        sh(f"mount -t bpf bpf {pin}")
        up()
        try:
            for i in range(args.rounds):
                for name, extra in workloads.items():
                    for state in ("off", "on") if i % 2 == 0 else ("on", "off"):  # cancel drift
                        probes = attach(pin, args.ends) if state == "on" else []
                        results[name][state].append(iperf(extra, args.seconds))
                        assert not probes or detach(probes) > 0
            # The programs' own cost, from the kernel's accounting (kernel.bpf_stats_enabled).
            for name, extra in workloads.items():
                probes = attach(pin, args.ends)
                before = sh("sysctl -n kernel.bpf_stats_enabled").strip()
                sh("sysctl -q kernel.bpf_stats_enabled=1")
                try:
                    t0 = time.monotonic()
                    iperf(extra, args.seconds)
                    wall = time.monotonic() - t0
                    progs = [p for p in json.loads(sh("bpftool prog show -j")) if p.get("name", "").startswith("x0tta")]
                finally:
                    sh(f"sysctl -q kernel.bpf_stats_enabled={before}")
                detach(probes)
                runs = sum(p.get("run_cnt", 0) for p in progs)
                ns = sum(p.get("run_time_ns", 0) for p in progs)
                cost[name] = (runs, ns, wall)
        finally:
            down()
            sh(f"umount {pin}", check=False)
    print(f"veth pair between two namespaces, probes on {args.ends} end(s), iperf3 {args.seconds:g} s x "
          f"{args.rounds} rounds, alternating; "
          f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()})\n")
    print("| workload | without probes (median) | with probes (median) | ratio |")
    print("|---|---|---|---|")
    for name, r in results.items():
        off, on = statistics.median(r["off"]), statistics.median(r["on"])
        print(f"| {name} | {off / 1e9:.2f} Gbit/s | {on / 1e9:.2f} Gbit/s | {on / off:.3f} |")
    print("\n| workload | program runs | mean time per run | program CPU time / wall time |")
    print("|---|---|---|---|")
    for name, (runs, ns, wall) in cost.items():
        print(f"| {name} | {runs} | {ns / max(runs, 1):.0f} ns | {ns / 1e9 / wall * 100:.2f} % of a core |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
