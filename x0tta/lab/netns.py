"""The lab's network inside the guest: one namespace per node, one veth pair per link, bat0 on each.

:class:`Mesh` builds it (see :mod:`x0tta.lab.guest` for the order), changes links in place (state and
netem shaping, through netlink), reads batman-adv's tables and keeps what each link is doing now, so
that ``converge`` knows which nodes can reach which.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from x0tta.lab.core.net import MESH_IF, PRIMARY_IF, Netem, veth_mac
from x0tta.lab.core.steps import StepFailed
from x0tta.lab.core.timeline import best_routes
from x0tta.lab.core.topology import Topology

CLONE_NEWNET = 0x40000000
TC_H_ROOT = 0xFFFFFFFF
REQUIRED_MODULES = ("batman-adv", "veth", "sch_netem")  # without these no lab can be built
VETH_MTU = 1560  # 1500 + batman-adv's unicast header and some, so bat0 need not fragment
BATCTL_TABLES = {"originators": "oj", "neighbors": "nj", "gateways": "gwj", "hardifs": "hj", "mesh": "mj"}


def run(node: str | None, *argv: str, check: bool = True, timeout: float | None = 30.0,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``node``'s namespace (None: the namespace this thread is in), text in and out;
    a failure with ``check`` raises :class:`StepFailed` with its exit code and stderr (timeout None:
    no limit). The one command runner of code in the guest: the engine's and the checks' alike."""
    cmd = (["ip", "netns", "exec", node] if node else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
    if check and proc.returncode != 0:
        why = proc.stderr.strip() or proc.stdout.strip()
        raise StepFailed(f"{' '.join(cmd)} failed ({proc.returncode}): {why}")
    return proc


def shell(node: str | None, script: str, check: bool = True, timeout: float | None = 30.0,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """:func:`run` of a command line (``/bin/sh -c script``), for a check's pipes, ``&&`` and ``;``."""
    return run(node, "/bin/sh", "-c", script, check=check, timeout=timeout, stdin=stdin)


@contextlib.contextmanager
def netns(node: str) -> Iterator[None]:
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


def netem_kwargs(netem: Netem) -> dict[str, Any]:
    """pyroute2's netem parameters (microseconds, percent) for a :class:`Netem` without a rate."""
    return {"delay": int(netem.delay_ms * 1000), "jitter": int(netem.jitter_ms * 1000), "loss": netem.loss_pct}


class Mesh:
    """The namespaces, links and bat0s of one lab, and the state of every link and node."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.link_state: dict[str, dict[str, Any]] = {
            link.name: {"up": True, "netem": {link.a: link.netem, link.b: link.netem}} for link in topology.links
        }
        self.dead_nodes: set[str] = set()
        self._rtnl: dict[str, Any] = {}
        self._batadv: dict[str, Any] | bool = {}

    # -- building -------------------------------------------------------------------------------
    def build(self) -> None:
        """Namespaces, veth pairs, bat0 (and primary0) with addresses, a netem root qdisc on every
        veth end, the mesh settings; then the netlink sockets the faults go through."""
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
        run(None, "ip", "-batch", "-", stdin="\n".join(root) + "\n")
        for node in topo.nodes:
            ifs = topo.hard_interfaces(node.name)
            cmds = ["link set lo up", f"link add {MESH_IF} address {node.mac} type batadv ra {topo.routing_algo}"]
            if topo.primary == "dummy":
                cmds.append(f"link add {PRIMARY_IF} address {node.primary_mac} type dummy")
            cmds += [f"link set {i} master {MESH_IF}" for i in ifs]
            cmds += [f"link set {i} up" for i in ifs]
            cmds += [f"link set {MESH_IF} up", f"addr add {node.address}/24 dev {MESH_IF}"]
            run(None, "ip", "-n", node.name, "-batch", "-", stdin="\n".join(cmds) + "\n")
            if topo.links_of(node.name):
                tc = []
                for link in topo.links_of(node.name):
                    tc.append(f"qdisc add dev {link.ifname(node.name)} root netem {' '.join(link.netem.tc_args())}")
                run(None, "tc", "-n", node.name, "-batch", "-", stdin="\n".join(tc) + "\n")
            if topo.orig_interval_ms is not None:
                run(node.name, "batctl", "meshif", MESH_IF, "orig_interval", str(topo.orig_interval_ms))
            run(node.name, "batctl", "meshif", MESH_IF, "bridge_loop_avoidance",
                "1" if topo.bridge_loop_avoidance else "0")
        for node in topo.nodes:  # open the fault-injection sockets now, not at the first fault
            self.rtnl(node.name)

    def close(self) -> None:
        for ipr in self._rtnl.values():
            ipr.close()
        for sock, _ in (self._batadv or {}).values():
            sock.close()

    # -- links ----------------------------------------------------------------------------------
    def rtnl(self, node: str) -> Any:
        """A pyroute2 IPRoute bound to ``node``'s namespace (opened once). Faults go through it:
        starting ``tc`` or ``ip`` costs 0.2-0.4 s in the guest, a netlink request a millisecond."""
        if node not in self._rtnl:
            from pyroute2 import IPRoute

            with netns(node):  # the socket stays in the namespace it was opened in
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
                    run(None, "tc", "-n", end, "qdisc", "change", "dev", link.ifname(end), "root", "netem",
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

    # -- batman-adv's tables --------------------------------------------------------------------
    def batctl_json(self, node: str, table: str) -> Any:
        """One of batctl's JSON tables for ``node``: originators, neighbors, gateways, hardifs, mesh
        (or a batctl JSON command itself: oj, nj, gwj, hj, mj, tlj, tgj, ...)."""
        cmd = BATCTL_TABLES.get(table, table)
        proc = run(node, "batctl", "meshif", MESH_IF, cmd, check=False)
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
                with netns(node):  # the socket stays in the node's namespace
                    sock = BatadvSocket()
                    sock.open()
                self._batadv[node] = (sock, self.rtnl(node).link_lookup(ifname=MESH_IF)[0])
            sock, index = self._batadv[node]
            return [{"orig_address": r.orig_address, "neigh_address": r.neigh_address, "best": r.flag_best}
                    for r in sock.dump(Cmd.GET_ORIGINATORS, index) if isinstance(r, Originator)]
        except Exception as exc:  # the client is another package's: batctl stays the fallback
            if getattr(exc, "errno", None) == errno.ENOENT:
                # batman-adv answers ENOENT while the mesh interface has no active primary
                # interface yet (a node still being set up): batctl this once, netlink again next time
                return None
            print(f"x0tta-lab: reading originators through netlink failed ({exc!r}); using batctl", flush=True)
            self._batadv = False
            return None
