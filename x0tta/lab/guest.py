"""The lab engine inside User-Mode Linux: build the mesh, run the scenario, write the results.

``python -m x0tta.lab.guest SPEC.json`` is started by the guest's init script (written by
:mod:`x0tta.lab.runner`) once the kernel modules are loaded. It runs as root in the guest, as the
only program besides the ones it starts, and:

1. builds one network namespace per node, one veth pair per link (MTU 1560 so that bat0 keeps 1500
   without fragmenting), bat0 with the topology's routing algorithm on every node, the derived
   addresses (see :mod:`x0tta.lab.core.topology`) and a root netem qdisc on every veth end (its shape
   is changed in place later: ``tc qdisc change``) - :mod:`x0tta.lab.netns`;
2. starts one ``x0tta-agent`` per node when the run has agents (config written by the host into
   ``input/agents/NODE.toml``; state and sockets in the guest's tmpfs; log in ``agents/NODE.log``) -
   :mod:`x0tta.lab.agents`;
3. runs the steps one after another, recording each as an event on one monotonic timeline -
   :mod:`x0tta.lab.scenario`, with the faults in :mod:`x0tta.lab.faults`;
4. stops pings and agents and writes ``timeline.json``.

The guest sees the host's root file system read-write (hostfs): everything it writes goes to its
tmpfs (``/run``, ``/tmp``) or to the results directory handed in by the host, nothing else.

Check functions (the ``check`` step) get a :class:`GuestLab`: run commands in a node's namespace,
read batctl's tables, enter a namespace from Python, ask an agent over its admin socket.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from x0tta.lab import netns, scenario
from x0tta.lab.agents import Agents
from x0tta.lab.core.net import veth_mac
from x0tta.lab.core.steps import Step, StepFailed
from x0tta.lab.core.topology import Topology, topology_from_data
from x0tta.lab.faults import Loads

__all__ = ["Engine", "GuestLab", "StepFailed", "main"]


class GuestLab:
    """The running lab, as seen from inside the guest (what a ``check`` function gets)."""

    def __init__(self, topology: Topology, out: Path, scratch: Path, spec: dict[str, Any]) -> None:
        self.topology = topology
        self.out = out
        self.scratch = scratch
        self.spec = spec
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.events: list[dict[str, Any]] = []
        self.mesh = netns.Mesh(topology)
        self.agents = Agents(out, scratch, spec, self.event)

    # -- time and records ---------------------------------------------------------------------
    def now(self) -> float:
        """Seconds on the run's timeline."""
        return time.monotonic() - self.t0

    def event(self, kind: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
        ev = {"t": round(self.now() if t is None else t, 6), "kind": kind, **fields}
        self.events.append(ev)
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "label")
        print(f"x0tta-lab: {ev['t']:9.3f}  {kind:<14} {detail}", flush=True)
        return ev

    # -- commands in nodes --------------------------------------------------------------------
    def run(self, node: str | None, *argv: str, check: bool = True, timeout: float | None = 30.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s namespace (the root namespace for None), text in and out."""
        return netns.run(node, *argv, check=check, timeout=timeout, stdin=stdin)

    def batctl_json(self, node: str, table: str) -> Any:
        """One of batctl's JSON tables for ``node``: originators, neighbors, gateways, hardifs, mesh
        (or a batctl JSON command itself: oj, nj, gwj, hj, mj, tlj, tgj, ...)."""
        return self.mesh.batctl_json(node, table)

    def routes(self, node: str) -> dict[str, str]:
        """{destination node: next-hop node} from ``node``'s best originator entries."""
        return self.mesh.routes(node)

    def netns(self, node: str) -> contextlib.AbstractContextManager[None]:
        """Run the body in ``node``'s network namespace (this thread only). Sockets opened inside
        stay in that namespace after the block, so open a netlink client inside it."""
        return netns.netns(node)

    def rtnl(self, node: str) -> Any:
        """A pyroute2 IPRoute bound to ``node``'s namespace (opened once)."""
        return self.mesh.rtnl(node)

    def agent_socket(self, node: str) -> str:
        return self.agents.socket(node)

    def agent_call(self, node: str, command: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Ask ``node``'s agent over its admin socket (JSON lines, as ``x0tta`` does)."""
        return self.agents.call(node, command, args, timeout=timeout)

    def alive_nodes(self) -> list[str]:
        return self.mesh.alive_nodes()

    def carrying_links(self) -> list[tuple[str, str]]:
        """Links that are up and not blackholed in either direction."""
        return self.mesh.carrying_links()


class Engine(GuestLab):
    """The lab being run: what a check sees, plus what the steps measure and run."""

    def __init__(self, topology: Topology, out: Path, scratch: Path, spec: dict[str, Any]) -> None:
        super().__init__(topology, out, scratch, spec)
        self.with_agents = bool(spec.get("agents", topology.agents))
        self.pings: dict[str, dict[str, Any]] = {}
        self.loads = Loads()
        self.measurements: dict[str, Any] = {"pings": {}, "convergence": [], "routes": [], "checks": {}}
        self.errors: list[str] = []
        self.boot: dict[str, float] = {}
        self.ping_files = 0

    def setup(self) -> None:
        self.mesh.build()
        self.boot["setup_s"] = round(self.now(), 6)
        self.event("setup_done", nodes=len(self.topology.nodes), links=len(self.topology.links))
        if self.with_agents:
            for node in self.topology.nodes:
                self.agents.start(node.name)

    def run_steps(self, steps: Iterable[Step]) -> None:
        scenario.run_steps(self, steps)

    def finish(self) -> dict[str, Any]:
        self.loads.stop_all()  # first: the rest of the shutdown should not compete with it
        for name in list(self.pings):
            scenario.stop_ping(self, name)
        self.mesh.close()
        exits = self.agents.stop_all()
        if exits:
            self.event("agents_stopped", exits=exits)
        self.agents.keep_state()
        doc = {
            "version": 1,
            "topology": self.topology.name,
            "description": self.topology.description,
            "routing_algo": self.topology.routing_algo,
            "agents": self.with_agents,
            "t0_wall": self.t0_wall,
            "boot": self.boot,
            "nodes": [
                {"name": n.name, "index": n.index, "address": n.address, "mac": n.mac,
                 "links": [{"link": ln.name, "ifname": ln.ifname(n.name), "peer": ln.peer(n.name),
                            "mac": veth_mac(n, ln)} for ln in self.topology.links_of(n.name)]}
                for n in self.topology.nodes
            ],
            "links": [{"name": ln.name, "a": ln.a, "b": ln.b, "netem": " ".join(ln.netem.tc_args())}
                      for ln in self.topology.links],
            "events": self.events,
            "measurements": self.measurements,
            "agent_exits": exits,
            "ok": not self.errors and all(ev.get("ok", True) for ev in self.events),
            "errors": self.errors,
        }
        tmp = self.out / "timeline.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.out / "timeline.json")
        return doc


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out"])
    scratch = Path(spec.get("scratch", "/run/lab"))
    scratch.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = spec.get("python_path", [])
    topology = topology_from_data(spec["topology"], spec.get("source", "<spec>"))
    engine = Engine(topology, out, scratch, spec)
    try:
        engine.setup()
        engine.run_steps(topology.steps)
    except StepFailed as exc:
        engine.errors.append(str(exc))
    except Exception as exc:  # a bug: keep what was measured, say what happened
        engine.errors.append(f"engine crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    doc = engine.finish()
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
