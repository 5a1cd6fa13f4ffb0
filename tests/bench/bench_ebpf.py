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

    .venv/bin/python tests/bench/bench_ebpf.py --ogm [--frames 100000] [--rounds 5] [--baseline OBJ]

``--ogm``: the ingress program's own time per batman-adv frame, from the kernel's accounting, no
iperf3. A packet socket in one namespace sends ``--frames`` frames to the other end, where the
probes sit on ingress (guard in observe): BATMAN_IV OGM aggregates (three OGMs, the first with 8
bytes of TVLV, of 60 originators whose seqnos advance by one per round of them), then as many
batman-adv unicast frames (no OGM). ``--baseline`` takes another build of the object (say, of an
earlier commit: ``git show REV:ebpf/x0tta_probes.bpf.c``, built with ``make -C ebpf``'s flags),
loaded with the maps it has; the rounds alternate between the two objects.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kit.netns import in_netns, sh  # noqa: E402
from x0tta.config.probes import ProbeSettings  # noqa: E402
from x0tta.probes import core  # noqa: E402
from x0tta.probes.libbpf import ProbeObject  # noqa: E402
from x0tta.probes.service import Probes, load  # noqa: E402

NS_C, NS_S = "xbench-c", "xbench-s"


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
        out = sh(f"ip netns exec {NS_C} iperf3 -c 10.214.0.2 -t {seconds} -J {args}").stdout
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


SENDER = """
import socket, struct, sys
dev, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
head = bytes.fromhex("ffffffffffff020000000b01" "4305")
def ogm(orig, seqno, tvlv):
    mac = bytes([2, 0, 0, 0, 0x0c, orig])
    return struct.pack("!BBBBI6s6sBBH", 0, 15, 50, 0, seqno, mac, mac, 0, 255, tvlv) + bytes(tvlv)
for i in range(n):
    if kind == "ogm":
        k, seq = i % 60, 1000 + i // 60
        body = ogm(k, seq, 8) + ogm((k + 1) % 60, seq, 0) + ogm((k + 2) % 60, seq, 0)
    else:
        body = bytes([0x40, 15, 50, 0]) + bytes(60)
    s.send(head + body)
"""


def ogm_cost(args: argparse.Namespace) -> int:
    """Nanoseconds per ingress run over batman-adv frames, per object (see the module doc)."""
    objects = {"this build": (ROOT / "x0tta" / "probes" / "bpf" / "x0tta_probes.o", core.MAP_NAMES)}
    if args.baseline:
        objects["baseline"] = (Path(args.baseline), tuple(m for m in core.MAP_NAMES if m != core.MAP_OGMS))
    kinds = ("ogm", "unicast")
    runs: dict[tuple[str, str], list[float]] = {(o, k): [] for o in objects for k in kinds}
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-ebpf-") as tmp:
        pin = Path(tmp) / "bpffs"
        pin.mkdir()
        sh(f"mount -t bpf bpf {pin}")
        up()
        before = sh("sysctl -n kernel.bpf_stats_enabled").stdout.strip()
        try:
            sh("sysctl -q kernel.bpf_stats_enabled=1")
            for i in range(args.rounds):
                for name in list(objects)[:: 1 if i % 2 == 0 else -1]:  # cancel drift
                    path, maps = objects[name]
                    for kind in kinds:
                        with in_netns(NS_S):
                            obj = ProbeObject.load(path, {}, pin / f"{name}-{i}-{kind}".replace(" ", "-"), maps,
                                                   tuple(core.PROGRAMS.values()))
                            index = socket.if_nametoindex("xb-s")
                            obj.attach(index, "ingress", core.PROGRAMS["ingress"])
                            prog_id = obj.query(index, "ingress")
                        try:
                            subprocess.run(["ip", "netns", "exec", NS_C, sys.executable, "-c", SENDER, "xb-c", kind,
                                            str(args.frames)], check=True)
                            info = json.loads(sh(f"bpftool prog show id {prog_id} -j").stdout)
                            if kind == "ogm" and core.MAP_OGMS in obj.maps:  # the OGMs were read, all 60
                                assert len(obj.maps[core.MAP_OGMS].items()) == 60
                        finally:
                            with in_netns(NS_S):
                                obj.detach_all()
                                obj.close()
                        runs[(name, kind)].append(info.get("run_time_ns", 0) / max(info.get("run_cnt", 0), 1))
        finally:
            sh(f"sysctl -q kernel.bpf_stats_enabled={before}")
            down()
            sh(f"umount {pin}", check=False)
    load = os.getloadavg()
    print(f"veth pair between two namespaces, ingress program on the receiving end, {args.frames} frames x "
          f"{args.rounds} rounds per object and kind, alternating; load average {load[0]:.1f}; "
          f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()})\n")
    print("| object | batman-adv frame | mean time per run (median of rounds) | rounds |")
    print("|---|---|---|---|")
    for (name, kind), values in runs.items():
        label = "BATMAN_IV OGM aggregate (3 OGMs)" if kind == "ogm" else "unicast (no OGM)"
        print(f"| {name} | {label} | {statistics.median(values):.0f} ns | "
              f"{', '.join(f'{v:.0f}' for v in values)} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ends", type=int, choices=(1, 2), default=2, help="veth ends with the probes attached")
    ap.add_argument("--ogm", action="store_true", help="the ingress program's time per batman-adv frame instead")
    ap.add_argument("--frames", type=int, default=100_000, help="--ogm: frames per round and kind")
    ap.add_argument("--baseline", help="--ogm: another build of the object to compare with")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cannot run: needs root", file=sys.stderr)
        return 1
    subprocess.run(["make", "-s", "-C", str(ROOT / "ebpf")], check=True)
    if args.ogm:
        return ogm_cost(args)
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
                before = sh("sysctl -n kernel.bpf_stats_enabled").stdout.strip()
                sh("sysctl -q kernel.bpf_stats_enabled=1")
                try:
                    t0 = time.monotonic()
                    iperf(extra, args.seconds)
                    wall = time.monotonic() - t0
                    progs = [p for p in json.loads(sh("bpftool prog show -j").stdout)
                             if p.get("name", "").startswith("x0tta")]
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
