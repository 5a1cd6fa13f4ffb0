"""The lab engine inside User-Mode Linux: build the mesh, run the scenario, write the results.

``python -m x0tta.lab.guest SPEC.json`` is started by the guest's init script (written by
:mod:`x0tta.lab.runner`) once the kernel modules are loaded. It runs as root in the guest, as the
only program besides the ones it starts, and:

1. builds one network namespace per node, one veth pair per link (MTU 1560 so that bat0 keeps 1500
   without fragmenting), bat0 with the topology's routing algorithm on every node, the derived
   addresses (see :mod:`x0tta.lab.core.topology`) and a root netem qdisc on every veth end (its shape
   is changed in place later: ``tc qdisc change``);
2. starts one ``x0tta-agent`` per node when the run has agents (config written by the host into
   ``input/agents/NODE.toml``; state and sockets in the guest's tmpfs; log in ``agents/NODE.log``);
3. runs the steps one after another, recording each as an event on one monotonic timeline;
4. stops pings and agents and writes ``timeline.json``.

The guest sees the host's root file system read-write (hostfs): everything it writes goes to its
tmpfs (``/run``, ``/tmp``) or to the results directory handed in by the host, nothing else.

Check functions (the ``check`` step) get a :class:`GuestLab`: run commands in a node's namespace,
read batctl's tables, enter a namespace from Python, ask an agent over its admin socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from x0tta.lab.core.timeline import best_routes, missing_views, outages, reachable, samples_from_rows
from x0tta.lab.core.topology import MESH_IF, PRIMARY_IF, Netem, Step, Topology, topology_from_data, veth_mac
from x0tta.lab.pinger import read_samples

CLONE_NEWNET = 0x40000000
TC_H_ROOT = 0xFFFFFFFF
REQUIRED_MODULES = ("batman-adv", "veth", "sch_netem")  # without these no lab can be built
VETH_MTU = 1560  # 1500 + batman-adv's unicast header and some, so bat0 need not fragment
POLL_S = 0.05
AGENT_STOP_TIMEOUT_S = 5.0
BATCTL_TABLES = {"originators": "oj", "neighbors": "nj", "gateways": "gwj", "hardifs": "hj", "mesh": "mj"}


class StepFailed(Exception):
    """A step that could not do what it says; ``fatal`` ones end the scenario."""

    def __init__(self, message: str, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


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
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.link_state: dict[str, dict[str, Any]] = {
            link.name: {"up": True, "netem": {link.a: link.netem, link.b: link.netem}} for link in topology.links
        }
        self.dead_nodes: set[str] = set()
        self._rtnl: dict[str, Any] = {}
        self._batadv: dict[str, Any] | bool = {}

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
    def run(self, node: str | None, *argv: str, check: bool = True, timeout: float = 30.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s namespace (the root namespace for None), text in and out."""
        cmd = (["ip", "netns", "exec", node] if node else []) + list(argv)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
        if check and proc.returncode != 0:
            why = proc.stderr.strip() or proc.stdout.strip()
            raise StepFailed(f"{' '.join(cmd)} failed ({proc.returncode}): {why}")
        return proc

    def batctl_json(self, node: str, table: str) -> Any:
        """One of batctl's JSON tables for ``node``: originators, neighbors, gateways, hardifs, mesh
        (or a batctl JSON command itself: oj, nj, gwj, hj, mj, tlj, tgj, ...)."""
        cmd = BATCTL_TABLES.get(table, table)
        proc = self.run(node, "batctl", "meshif", MESH_IF, cmd, check=False)
        try:  # batctl exits non-zero on an empty table, yet prints its JSON ("[]")
            return json.loads(proc.stdout)
        except ValueError:
            raise StepFailed(f"batctl meshif {MESH_IF} {cmd} in {node} failed ({proc.returncode}): "
                             f"{proc.stderr.strip() or proc.stdout.strip()}") from None

    def routes(self, node: str) -> dict[str, str]:
        """{destination node: next-hop node} from ``node``'s best originator entries.

        Read in-process through the project's batadv client (~1 ms) when it works, so polling a
        20-node lab does not start 20 batctl processes per round; through batctl otherwise."""
        entries = self._originators_netlink(node)
        if entries is None:
            entries = self.batctl_json(node, "originators")
        return best_routes(entries, self.topology.mac_owner(), self.topology.originator_owner())

    def _originators_netlink(self, node: str) -> list[dict[str, Any]] | None:
        if self._batadv is False:
            return None
        try:
            from x0tta.mesh.core.batadv import Cmd, Originator
            from x0tta.mesh.genl import BatadvSocket

            if node not in self._batadv:
                with self.netns(node):  # the socket stays in the node's namespace
                    sock = BatadvSocket()
                    sock.open()
                self._batadv[node] = (sock, self.rtnl(node).link_lookup(ifname=MESH_IF)[0])
            sock, index = self._batadv[node]
            return [{"orig_address": r.orig_address, "neigh_address": r.neigh_address, "best": r.flag_best}
                    for r in sock.dump(Cmd.GET_ORIGINATORS, index) if isinstance(r, Originator)]
        except Exception as exc:  # the client is another package's: batctl stays the fallback
            print(f"x0tta-lab: reading originators through netlink failed ({exc!r}); using batctl", flush=True)
            self._batadv = False
            return None

    @contextlib.contextmanager
    def netns(self, node: str) -> Iterator[None]:
        """Run the body in ``node``'s network namespace (this thread only). Sockets opened inside
        stay in that namespace after the block, so open a netlink client inside it."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{node}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {node} failed")
            try:
                yield
            finally:
                libc.setns(own, CLONE_NEWNET)
        finally:
            os.close(own)
            os.close(target)

    def agent_socket(self, node: str) -> str:
        return str(self.spec["agent_sockets"][node])

    def agent_call(self, node: str, command: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Ask ``node``'s agent over its admin socket (JSON lines, as ``x0tta`` does)."""
        from x0tta.admin.client import call

        return call(self.agent_socket(node), command, args, timeout=timeout)

    def alive_nodes(self) -> list[str]:
        return [n.name for n in self.topology.nodes if n.name not in self.dead_nodes]

    def carrying_links(self) -> list[tuple[str, str]]:
        """Links that are up and not blackholed in either direction."""
        out = []
        for link in self.topology.links:
            st = self.link_state[link.name]
            if st["up"] and all(n.loss_pct < 100 for n in st["netem"].values()):
                out.append(link.ends())
        return out


class Engine(GuestLab):
    def __init__(self, topology: Topology, out: Path, scratch: Path, spec: dict[str, Any]) -> None:
        super().__init__(topology, out, scratch, spec)
        self.with_agents = bool(spec.get("agents", topology.agents))
        self.pings: dict[str, dict[str, Any]] = {}
        self.loads: dict[str, subprocess.Popen[bytes]] = {}
        self.measurements: dict[str, Any] = {"pings": {}, "convergence": [], "routes": [], "checks": {}}
        self.errors: list[str] = []
        self.boot: dict[str, float] = {}
        self._ping_files = 0

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        missing = [m for m in REQUIRED_MODULES if not Path("/sys/module", m.replace("-", "_")).exists()]
        if missing:
            raise StepFailed(f"kernel modules not loaded in the guest: {', '.join(missing)} (the init script's "
                             "modprobe failed: see console.log; on the host, packages kmod and user-mode-linux)")
        topo = self.topology
        root = [f"netns add {n.name}" for n in topo.nodes]
        for link in topo.links:
            a, b = topo.node(link.a), topo.node(link.b)
            root.append(
                f"link add name {link.ifname(a.name)} address {veth_mac(a, link)} netns {a.name} mtu {VETH_MTU} "
                f"type veth peer name {link.ifname(b.name)} address {veth_mac(b, link)} netns {b.name} mtu {VETH_MTU}"
            )
        self.run(None, "ip", "-batch", "-", stdin="\n".join(root) + "\n")
        for node in topo.nodes:
            ifs = topo.hard_interfaces(node.name)
            cmds = ["link set lo up", f"link add {MESH_IF} address {node.mac} type batadv ra {topo.routing_algo}"]
            if topo.primary == "dummy":
                cmds.append(f"link add {PRIMARY_IF} address {node.primary_mac} type dummy")
            cmds += [f"link set {i} master {MESH_IF}" for i in ifs]
            cmds += [f"link set {i} up" for i in ifs]
            cmds += [f"link set {MESH_IF} up", f"addr add {node.address}/24 dev {MESH_IF}"]
            self.run(None, "ip", "-n", node.name, "-batch", "-", stdin="\n".join(cmds) + "\n")
            if topo.links_of(node.name):
                tc = []
                for link in topo.links_of(node.name):
                    tc.append(f"qdisc add dev {link.ifname(node.name)} root netem {' '.join(link.netem.tc_args())}")
                self.run(None, "tc", "-n", node.name, "-batch", "-", stdin="\n".join(tc) + "\n")
            if topo.orig_interval_ms is not None:
                self.run(node.name, "batctl", "meshif", MESH_IF, "orig_interval", str(topo.orig_interval_ms))
            self.run(node.name, "batctl", "meshif", MESH_IF, "bridge_loop_avoidance",
                     "1" if topo.bridge_loop_avoidance else "0")
        for node in topo.nodes:  # open the fault-injection sockets now, not at the first fault
            self.rtnl(node.name)
        self.boot["setup_s"] = round(self.now(), 6)
        self.event("setup_done", nodes=len(topo.nodes), links=len(topo.links))
        if self.with_agents:
            for node in topo.nodes:
                self.start_agent(node.name)

    # -- agents -------------------------------------------------------------------------------
    def start_agent(self, node: str) -> None:
        if node in self.agents and self.agents[node].poll() is None:
            raise StepFailed(f"the agent of {node} is already running")
        (self.scratch / node).mkdir(parents=True, exist_ok=True)
        (self.out / "agents").mkdir(exist_ok=True)
        config = self.out / "input" / "agents" / f"{node}.toml"
        log = open(self.out / "agents" / f"{node}.log", "ab")  # handed to the child, closed here
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.agents[node] = subprocess.Popen(
            ["ip", "netns", "exec", node, self.spec["agent"], "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        self.event("agent_start", node=node, pid=self.agents[node].pid)

    def stop_agent(self, node: str, sig: int | None = signal.SIGTERM) -> int | None:
        """Signal the agent (None: it was signalled already) and wait; SIGKILL after the timeout."""
        proc = self.agents.get(node)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        if sig is not None:
            proc.send_signal(sig)
        try:
            return proc.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def agents_ready(self) -> list[str]:
        """Nodes whose agent is running but does not answer ``status`` yet."""
        waiting = []
        for node, proc in self.agents.items():
            if node in self.dead_nodes:
                continue
            if proc.poll() is not None:
                raise StepFailed(f"the agent of {node} exited with {proc.returncode}; see agents/{node}.log")
            try:
                self.agent_call(node, "status", timeout=2.0)
            except Exception:
                waiting.append(node)
        return waiting

    # -- links --------------------------------------------------------------------------------
    def rtnl(self, node: str) -> Any:
        """A pyroute2 IPRoute bound to ``node``'s namespace (opened once). Faults go through it:
        starting ``tc`` or ``ip`` costs 0.2-0.4 s in the guest, a netlink request a millisecond."""
        if node not in self._rtnl:
            from pyroute2 import IPRoute

            with self.netns(node):  # the socket stays in the namespace it was opened in
                ipr = IPRoute()
                ipr.get_links()
            self._rtnl[node] = ipr
        return self._rtnl[node]

    def set_link(self, name: str, *, up: bool | None = None, netem: Netem | None = None,
                 only: str | None = None) -> None:
        link = self.topology.link(name)
        st = self.link_state[link.name]
        for end in link.ends():
            if only is not None and end != only:
                continue
            ipr = self.rtnl(end)
            index = ipr.link_lookup(ifname=link.ifname(end))[0]
            if netem is not None:
                if netem.rate_mbit:  # pyroute2 0.9 encodes netem's rate wrongly (ERANGE): tc does it
                    self.run(None, "tc", "-n", end, "qdisc", "change", "dev", link.ifname(end), "root", "netem",
                             *netem.tc_args())
                elif st["netem"][end].rate_mbit:
                    # netem keeps a rate it was once given (a rate of 0 is refused): start afresh
                    ipr.tc("del", index=index, parent=TC_H_ROOT)
                    ipr.tc("add", "netem", index, handle=0, **netem_kwargs(netem))
                else:
                    ipr.tc("replace", "netem", index, handle=0, **netem_kwargs(netem))
                st["netem"][end] = netem
            if up is not None:
                ipr.link("set", index=index, state="up" if up else "down")
        if up is not None:
            st["up"] = up

    # -- the scenario ---------------------------------------------------------------------------
    def run_steps(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            if step.after_s:
                time.sleep(step.after_s)
            handler = getattr(self, f"do_{step.do}")
            t = self.now()
            try:
                fields = handler(step) or {}
            except StepFailed as exc:
                self.event(step.do, t=t, label=step.label, ok=False, error=str(exc))
                self.errors.append(f"step {step.label}: {exc}")
                if exc.fatal:
                    self.errors.append("scenario stopped after a failed step")
                    return
                continue
            except Exception as exc:  # a bug or an unexpected kernel answer: stop, keep what was measured
                self.event(step.do, t=t, label=step.label, ok=False, error=f"{type(exc).__name__}: {exc}")
                self.errors.append(f"step {step.label} crashed: {traceback.format_exc()}")
                self.errors.append("scenario stopped after a failed step")
                return
            self.event(step.do, t=t, label=step.label, ok=fields.pop("ok", True), took=round(self.now() - t, 6),
                       **fields)

    def do_sleep(self, step: Step) -> dict[str, Any]:
        time.sleep(step.seconds or 0.0)
        return {"seconds": step.seconds}

    def do_converge(self, step: Step) -> dict[str, Any]:
        start = self.now()
        deadline = start + (step.timeout_s or 60.0)
        want_agents = self.with_agents if step.agents is None else step.agents
        expected = reachable(self.alive_nodes(), self.carrying_links())
        missing: dict[str, list[str]] = {}
        waiting: list[str] = []
        mesh_done: float | None = None
        while self.now() < deadline:
            if mesh_done is None:
                views = {n: self.routes(n) for n in self.alive_nodes()}
                missing = missing_views(views, expected)
                if not missing:
                    mesh_done = self.now()
            if mesh_done is not None:
                waiting = self.agents_ready() if want_agents else []
                if not waiting:
                    seconds = round(mesh_done - start, 6)
                    self.measurements["convergence"].append({"t": round(start, 6), "seconds": seconds,
                                                             "label": step.label})
                    if "converged_s" not in self.boot:  # the first convergence: the lab is up
                        self.boot["mesh_converged_s"] = round(mesh_done, 6)
                        self.boot["converged_s"] = round(self.now(), 6)
                    return {"seconds": seconds, "agents_ready_s": round(self.now() - start, 6) if want_agents else None}
            time.sleep(POLL_S)
        what = f"nodes missing originators: {missing}" if missing else f"agents not answering: {waiting}"
        raise StepFailed(f"not converged within {step.timeout_s} s; {what}")

    def do_ping(self, step: Step) -> dict[str, Any]:
        assert step.src and step.dst and step.name
        self._ping_files += 1
        path = self.scratch / "pings" / f"{self._ping_files}.samples"
        path.parent.mkdir(parents=True, exist_ok=True)
        interval = (step.interval_ms or 20.0) / 1000.0
        proc = subprocess.Popen(
            ["ip", "netns", "exec", step.src, sys.executable, "-m", "x0tta.lab.pinger",
             self.topology.node(step.dst).address, str(interval), str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise StepFailed(f"pinger did not start: {line} {err}".strip())
        self.pings[step.name] = {"proc": proc, "path": path, "from": step.src, "to": step.dst,
                                 "interval_ms": step.interval_ms}
        return {"name": step.name, "from": step.src, "to": step.dst, "interval_ms": step.interval_ms}

    def do_ping_stop(self, step: Step) -> dict[str, Any]:
        assert step.name
        self.stop_ping(step.name)
        return {"name": step.name}

    def stop_ping(self, name: str) -> None:
        ping = self.pings.pop(name)
        proc = ping["proc"]
        terminate(proc)
        rows = read_samples(ping["path"]) if ping["path"].exists() else []
        if not rows:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            self.errors.append(f"ping {name} left no samples (exit {proc.returncode}): {err[-500:]}")
        # the pinger's clock is the guest's monotonic clock; move the samples onto the timeline
        rows = [[s, round(sent - self.t0, 6), None if rcv is None else round(rcv - self.t0, 6)]
                for s, sent, rcv in rows]
        samples = samples_from_rows(rows)
        self.measurements["pings"][name] = {
            "from": ping["from"], "to": ping["to"], "interval_ms": ping["interval_ms"],
            "sent": len(samples), "lost": sum(1 for s in samples if s.lost),
            "outages": [o.to_json() for o in outages(samples)],
            "samples": rows,
        }

    def do_link_down(self, step: Step) -> dict[str, Any]:
        assert step.link
        self.set_link(step.link, up=False)
        return {"link": step.link}

    def do_link_up(self, step: Step) -> dict[str, Any]:
        assert step.link
        self.set_link(step.link, up=True)
        return {"link": step.link}

    def do_silent_loss(self, step: Step) -> dict[str, Any]:
        assert step.link and step.netem
        self.set_link(step.link, netem=step.netem, only=step.src)
        return {"link": step.link, "loss_pct": step.netem.loss_pct, "from": step.src}

    def do_degrade(self, step: Step) -> dict[str, Any]:
        assert step.link and step.netem
        self.set_link(step.link, netem=step.netem, only=step.src)
        return {"link": step.link, "netem": " ".join(step.netem.tc_args()), "from": step.src}

    def do_restore(self, step: Step) -> dict[str, Any]:
        if step.link:
            self.set_link(step.link, up=True, netem=self.topology.link(step.link).netem)
            return {"link": step.link}
        assert step.node
        for link in self.topology.links_of(step.node):
            self.set_link(link.name, up=True, netem=link.netem)
        self.dead_nodes.discard(step.node)
        if self.with_agents and (step.node not in self.agents or self.agents[step.node].poll() is not None):
            self.start_agent(step.node)
        return {"node": step.node}

    def do_kill_agent(self, step: Step) -> dict[str, Any]:
        assert step.node
        proc = self.agents.get(step.node)
        if proc is None or proc.poll() is not None:
            raise StepFailed(f"no agent running on {step.node}", fatal=False)
        proc.send_signal(getattr(signal, f"SIG{step.signal or 'KILL'}"))
        code = proc.wait(AGENT_STOP_TIMEOUT_S * 2)
        return {"node": step.node, "signal": step.signal, "exit": code}

    def do_start_agent(self, step: Step) -> dict[str, Any]:
        assert step.node
        self.start_agent(step.node)
        return {"node": step.node}

    def do_restart_agent(self, step: Step) -> dict[str, Any]:
        assert step.node
        code = self.stop_agent(step.node)
        self.start_agent(step.node)
        return {"node": step.node, "exit": code}

    def do_kill_node(self, step: Step) -> dict[str, Any]:
        assert step.node
        self.stop_agent(step.node, signal.SIGKILL)
        for link in self.topology.links_of(step.node):
            self.set_link(link.name, up=False)
        self.dead_nodes.add(step.node)
        return {"node": step.node}

    def do_snapshot(self, step: Step) -> dict[str, Any]:
        where = self.out / "snapshots" / safe_name(step.label)
        where.mkdir(parents=True, exist_ok=True)
        nodes = list(step.nodes) if step.nodes else self.alive_nodes()
        for node in nodes:
            doc: dict[str, Any] = {"t": round(self.now(), 6), "node": node}
            for table in BATCTL_TABLES:
                doc[table] = self.batctl_json(node, table)
            doc["routes"] = best_routes(doc["originators"], self.topology.mac_owner(), self.topology.originator_owner())
            (where / f"{node}.json").write_text(json.dumps(doc, indent=1))
            self.measurements["routes"].append({"t": doc["t"], "label": step.label, "node": node,
                                                "routes": doc["routes"]})
        return {"dir": str(where.relative_to(self.out)), "nodes": nodes}

    def do_wait_route(self, step: Step) -> dict[str, Any]:
        assert step.src and step.dst
        start = self.now()
        hop = None
        while self.now() - start < (step.timeout_s or 30.0):
            hop = self.routes(step.src).get(step.dst)
            if hop is not None and (hop == step.via if step.via else hop != step.not_via):
                return {"from": step.src, "to": step.dst, "next_hop": hop, "seconds": round(self.now() - start, 6)}
            time.sleep(POLL_S)
        return {"ok": False, "from": step.src, "to": step.dst, "next_hop": hop, "timeout_s": step.timeout_s}

    def do_load(self, step: Step) -> dict[str, Any]:
        """CPU and process-spawn load in the guest's root namespace (:mod:`x0tta.lab.load`)."""
        name = step.name or "load"
        if name in self.loads and self.loads[name].poll() is None:
            raise StepFailed(f"a load named {name!r} is already running", fatal=False)
        proc = subprocess.Popen(
            [sys.executable, "-m", "x0tta.lab.load", str(step.cpu_pct), str(step.spawn_per_s), str(step.seconds or 0)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().decode().strip() != "ready":
            raise StepFailed("the load generator did not start", fatal=False)
        self.loads[name] = proc
        return {"name": name, "cpu_pct": step.cpu_pct, "spawn_per_s": step.spawn_per_s, "seconds": step.seconds}

    def do_load_stop(self, step: Step) -> dict[str, Any]:
        self.stop_load(step.name or "load")
        return {"name": step.name or "load"}

    def stop_load(self, name: str) -> None:
        proc = self.loads.pop(name, None)
        if proc is None:
            return
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()

    def do_check(self, step: Step) -> dict[str, Any]:
        assert step.call
        try:
            fn = load_callable(step.call, step.label)
        except Exception as exc:
            raise StepFailed(f"cannot load {step.call}: {type(exc).__name__}: {exc}", fatal=False) from None
        if step.each_node:
            result: dict[str, Any] = {}
            ok = True
            for node in list(step.nodes or self.alive_nodes()):
                one = call_check(fn, (self, node), step.args)
                result[node] = one
                ok = ok and one["ok"]
            outcome = {"ok": ok, "per_node": result}
        else:
            outcome = call_check(fn, (self,), step.args)
        self.measurements["checks"][step.label] = outcome
        return {"call": step.call, "ok": outcome["ok"]}

    # -- the end --------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        for name in list(self.loads):  # first: the rest of the shutdown should not compete with it
            self.stop_load(name)
        for name in list(self.pings):
            self.stop_ping(name)
        for ipr in self._rtnl.values():
            ipr.close()
        for sock, _ in (self._batadv or {}).values():
            sock.close()
        for proc in self.agents.values():  # all at once: each may take its shutdown timeout
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        exits = {node: self.stop_agent(node, None) for node in self.agents}
        if exits:
            self.event("agents_stopped", exits=exits)
        for node in exits:  # the agents' state lives in the guest's tmpfs: keep a copy
            state = self.scratch / node / "state"
            if state.is_dir():
                shutil.copytree(state, self.out / "state" / node, dirs_exist_ok=True)
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


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM and wait; SIGKILL after ``timeout`` (what it wrote before stays: the pinger flushes)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def netem_kwargs(netem: Netem) -> dict[str, Any]:
    """pyroute2's netem parameters (microseconds, percent) for a :class:`Netem` without a rate."""
    return {"delay": int(netem.delay_ms * 1000), "jitter": int(netem.jitter_ms * 1000), "loss": netem.loss_pct}


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def load_callable(ref: str, label: str) -> Any:
    """``package.module:function`` or ``/path/to/file.py:function``."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"x0tta_lab_check_{safe_name(label)}", target)
        if spec is None or spec.loader is None:
            raise StepFailed(f"cannot load {target}", fatal=False)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, attr)


def call_check(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one check: its return value is the result; an exception (an assert) makes it fail."""
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            import asyncio

            async def wait() -> Any:
                return await value

            value = asyncio.run(wait())
        json.dumps(value)
        return {"ok": True, "result": value}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


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
