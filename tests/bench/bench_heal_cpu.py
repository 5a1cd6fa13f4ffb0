"""Steady-state CPU of the agents in the lab, against the same guest without them, in one boot
(docs/benchmarks.md, section "heal: steady-state CPU").

    .venv/bin/python tests/bench/bench_heal_cpu.py [--topology ring|grid] [--seconds 30] [--settle 20]
        [--identities] [--fleet] [--set SECTION.KEY=VALUE ...]

One User-Mode Linux boot of the 5-node ring (or the 4 x 5 grid, 20 nodes): the mesh converges
without agents and the guest's busy share is measured over ``--seconds`` (the baseline); then an
agent is started on every node with its defaults, the agents converge, ``--settle`` seconds pass,
and the guest's busy share and each agent's share of the guest CPU (``/proc/PID/stat``) are
measured over the same window; then the open incidents of every agent are counted (a quiet
mesh has none). The guest has one CPU: "% of the guest CPU" is the share of a lab node's CPU.
The guest's kernel charges a process's CPU by its 100 Hz tick (the process running at a tick gets
the whole tick), but measures its idle time exactly (a tickless kernel): "exact" is the guest's
busy share from its idle time over the window's wall time, and "per agent, exact" the exact busy
share with the agents less the one without, over the number of agents - what the agents cost the
node, the kernel's work for their packets included. The per-process figures are tick samples, fair
only on average: they show the spread between agents (tests/bench/cpu_checks.py).
``--identities``: every node enrolled by the lab's CA, so the peer subsystem holds PQ mTLS
sessions with the neighbours and the probes are keyed by them (every subsystem doing its work).
``--fleet``: the fleet plane and coordination on as well - a mosquitto (TLS, client certificates, the
ACL of configs/mosquitto/) and a one-member etcd (TLS, client certificates) run on the first node,
inside the guest, before the baseline is measured (so the baseline holds their idle cost), and every
agent reports to the broker over the mesh, takes signed operator commands from it, and polls etcd
for rollouts, and keeps the replicated mesh state with its neighbours (``[meshstate]``, which needs
``--identities`` to sign); a check afterwards shows every agent connected to both.
``--set heal.probe_interval=0.2`` (repeatable): a setting of every agent's config, the value read
as JSON (a number, true/false) or else as a string - what a default would cost or save.
Prints a markdown table and the JSON figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from x0tta.lab.core.topology import Topology, topology_from_data
from x0tta.lab.runner import default_mem_mb, load_topology, run_lab

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("cpu_checks.py")
HEAL_CHECKS = ROOT / "tests" / "lab" / "heal_checks.py"
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))  # tests.kit: the broker's and etcd's certificates and configs
from bench_lab import grid  # noqa: E402


def scenario(nodes: list[str], seconds: float, settle: float, timeout: float,
             servers: dict | None = None) -> list[dict]:
    return [
        {"do": "converge", "label": "mesh", "timeout_s": timeout},
        *([{"do": "check", "label": "servers", "call": f"{CHECKS}:start_servers", "args": servers}] if servers else []),
        {"do": "sleep", "label": "quiet", "seconds": 5},
        {"do": "check", "label": "cpu-alone", "call": f"{CHECKS}:cpu", "args": {"seconds": seconds}},
        *[{"do": "start_agent", "label": f"start-{n}", "node": n} for n in nodes],
        {"do": "converge", "label": "agents", "agents": True, "timeout_s": timeout},
        {"do": "sleep", "label": "settle", "seconds": settle},
        {"do": "check", "label": "cpu-agents", "call": f"{CHECKS}:cpu", "args": {"seconds": seconds}},
        {"do": "check", "label": "open", "call": f"{HEAL_CHECKS}:open_incidents", "each_node": True},
        *([{"do": "check", "label": "planes", "call": f"{CHECKS}:planes", "each_node": True}] if servers else []),
    ]


def fleet_plane(topo: Topology, where: Path) -> tuple[Topology, dict]:
    """The servers of the fleet plane and coordination, on the first node of ``topo``, and every
    node's agent configured for them: ``(topology with the agents' settings, start_servers args)``."""
    from tests.kit.etcd import Cluster
    from tests.kit.mosquitto import MONITOR, Broker

    nodes = [n.name for n in topo.nodes]
    home, address = nodes[0], "10.99.0.1"  # node 1's bat0 address (x0tta.lab.core.topology)
    broker = Broker(where / "mosquitto", clients=(*nodes, MONITOR), address=address)
    etcd = Cluster(where / "etcd", size=1, clients=tuple(nodes), address=address)
    subprocess.run([sys.executable, "-m", "x0tta.cli.main", "fleet", "keygen", str(where / "operator")],
                   check=True, capture_output=True)
    operator = str(where / "operator.pub.pem")
    data = dict(topo.data)
    data["nodes"] = [{"name": n.name, "agent": {
        **n.agent,
        "fleet": {"broker": address, "port": broker.port, **broker.files(n.name), "operator_keys": [operator]},
        "coord": {"endpoints": etcd.endpoints, **etcd.files(n.name), "operator_key_file": operator},
        "meshstate": {"enabled": True},  # the replicated state over the peer sessions (with --identities)
    }} for n in topo.nodes]
    member = etcd.members[0]
    servers = {"node": home, "address": address,
               "argvs": [[shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(broker.dir / "mosquitto.conf")],
                         etcd._argv(member, "new")],
               "ports": [broker.port, member.client_port]}
    return topology_from_data(data, f"{topo.name} (fleet)"), servers


def spread(vals: list[float]) -> str:
    """``min / median / max`` of ``vals``, two decimals."""
    return f"{min(vals):.2f} / {statistics.median(vals):.2f} / {max(vals):.2f}"


def with_settings(topo: Topology, pairs: list[str]) -> Topology:
    """``topo`` with ``SECTION.KEY=VALUE`` settings in the agent config of every node."""
    agent = {k: dict(v) for k, v in topo.data.get("agent", {}).items()}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        section, dot, key = name.partition(".")
        if not (sep and dot and section and key):
            raise SystemExit(f"--set {pair!r}: expected SECTION.KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or isinstance(value, (list, dict)):
            raise SystemExit(f"--set {pair!r}: a number, true/false or a string")
        agent.setdefault(section, {})[key] = value
    return topology_from_data({**topo.data, "agent": agent}, topo.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", choices=("ring", "grid"), default="ring")
    p.add_argument("--seconds", type=float, default=30.0, help="measuring window, s")
    p.add_argument("--settle", type=float, default=20.0, help="wait after the agents converged, s")
    p.add_argument("--out", help="keep the lab's output here")
    p.add_argument("--identities", action="store_true",
                   help="every node enrolled: PQ mTLS sessions with the neighbours, probes keyed by them")
    p.add_argument("--fleet", action="store_true",
                   help="the fleet plane (mosquitto) and coordination (etcd) on node 1, every agent using both")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a setting of every agent (repeatable), e.g. heal.probe_interval=0.2")
    args = p.parse_args()
    if args.topology == "ring":
        topo = load_topology(ROOT / "configs" / "lab" / "ring.toml")
    else:
        topo = topology_from_data(grid(4, 5), "grid4x5")
    if args.set:
        topo = with_settings(topo, args.set)
    nodes = [n.name for n in topo.nodes]
    timeout = 90.0 if len(nodes) <= 5 else 240.0
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-cpu-") as tmp:
        out = Path(args.out or tmp)
        servers = None
        if args.fleet:
            topo, servers = fleet_plane(topo, out / "fleet")
            for pair in args.set:  # a node's own table wins over the [agent] table --set writes to
                section, _, key = pair.partition("=")[0].partition(".")
                if key in topo.nodes[0].agent.get(section, {}):
                    print(f"--set {pair}: --fleet sets {section}.{key} per node, which wins", file=sys.stderr)
        # booted without agents (the baseline first), it starts one per node later: size the guest for them
        result = run_lab(topo, out, scenario=scenario(nodes, args.seconds, args.settle, timeout, servers), agents=False,
                         identities=args.identities, mem_mb=default_mem_mb(topo, True))
        if not result.ok:
            print(result.failure_report()[:4000], file=sys.stderr)
        alone, agents = result.check("cpu-alone"), result.check("cpu-agents")
        open_ = result.check("open")
        planes = ({n: r.get("result") for n, r in result.check("planes").get("per_node", {}).items()}
                  if args.fleet else None)
    if not (alone.get("ok") and agents.get("ok")):
        raise SystemExit(f"a measurement failed: {alone} {agents}")
    a, b = alone["result"], agents["result"]
    per = b["agents_pct"]
    incidents = {n: r.get("result") for n, r in open_.get("per_node", {}).items()}
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
          f"{topo.name}, {len(nodes)} nodes, window {args.seconds:.0f} s, settle {args.settle:.0f} s")
    print("| guest | guest CPU busy, exact (ticks) | per agent, exact | per agent, ticks charged: mean (min / median / "
          "max) | open incidents |")
    print("|---|---|---|---|---|")
    print(f"| no agents | {a['guest_busy_exact_pct']:.1f} % ({a['guest_busy_pct']:.1f} %) | | | |")
    vals = list(per.values()) or [0.0]
    exact = (b["guest_busy_exact_pct"] - a["guest_busy_exact_pct"]) / len(vals)
    print(f"| an agent on every node | {b['guest_busy_exact_pct']:.1f} % ({b['guest_busy_pct']:.1f} %) | "
          f"**{exact:.2f} %** | {statistics.mean(vals):.2f} % ({spread(vals)}) "
          f"| {sum(len(v or []) for v in incidents.values())} |")
    woke = list(b.get("agents_wakeups_per_s", {}).values())
    if woke:
        print(f"wake-ups per agent (voluntary context switches, all threads): {spread(woke)} a second "
              "(min / median / max)")
    if planes is not None:
        connected = sum(1 for v in planes.values() if v and v.get("fleet_connected"))
        polled = sum(1 for v in planes.values() if v and v.get("coord_rollouts") is not None)
        full = sum(1 for v in planes.values() if v and v.get("meshstate_nodes") == len(nodes))
        print(f"fleet plane: {connected} of {len(nodes)} agents connected to the broker, {polled} reading etcd, "
              f"{full} holding every node in the replicated registry")
    print(json.dumps({"alone": a, "agents": b, "open_incidents": incidents, "planes": planes}, indent=1))


if __name__ == "__main__":
    main()
