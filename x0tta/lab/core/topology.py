"""Lab topology files: TOML data into typed, validated records, every problem reported at once.

A topology names the nodes of a lab mesh, the links between them (each a veth pair shaped by netem:
delay, jitter, loss, rate), the batman-adv routing algorithm, the agent configuration shared by all
nodes and each node's overrides, and a scenario: steps run one after another on a timeline (wait for
convergence, start a ping, cut a link, add silent loss, degrade, kill or restart an agent, kill a node,
restore, snapshot the routing tables, wait for a route to move, run a Python check), each parsed into
its own record type by :mod:`x0tta.lab.core.steps`. The format is documented in ``docs/lab.md``;
``configs/lab/*.toml`` are examples.

Like :func:`x0tta.config.fields.build`, :func:`topology_from_data` collects *all* the problems it
finds (with the key path, e.g. ``steps[3].link``) into one :class:`TopologyError` instead of stopping
at the first, so a broken scenario is fixed in one pass and not one error per lab boot.

Addressing is derived, never configured, so that every lab is reproducible: node ``i`` (1-based, in
file order) has bat0 address ``10.99.0.i/24`` and MAC ``02:ba:01:ii:00:00``; its end of link ``k`` is
a veth named ``to-<peer>`` with MAC ``02:ba:00:ii:kk:kk``; its dummy primary interface ``primary0``
has MAC ``02:ba:02:ii:00:00``.

Two mesh defaults differ from batman-adv's, both for the lab's sake and both configurable:

* ``primary = "dummy"``: a dummy interface is bat0's first hard interface, so the originator address
  never moves. Otherwise the first link is primary, and batman-adv (2022.3) disables the whole node's
  mesh while its primary interface is down: cutting that one link would cut the node off. Mesh
  firmwares (Gluon's ``primary0``) do the same for the same reason.
* ``bridge_loop_avoidance = false``: the lab has no bridges, and with BLA on, batman-adv drops
  broadcasts (ARP) for the first periods after the mesh starts: pings fail for ~30 s after
  convergence. Node names are short (``[a-z][a-z0-9_]``,
at most 12 characters) because the veth name ``to-<peer>`` must fit the kernel's 15 (IFNAMSIZ - 1).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from x0tta.common.tables import merge_tables
from x0tta.lab.core.fields import Reader, TopologyError, read_netem
from x0tta.lab.core.net import MESH_IF, PRIMARY_IF, Link, Netem, Node, find_link, veth_mac
from x0tta.lab.core.steps import ACTIONS, SIGNALS, Step, StepError, parse_step

__all__ = [
    "ACTIONS", "MESH_IF", "PRIMARY_IF", "SIGNALS", "Link", "Netem", "Node", "Step", "StepError", "Topology",
    "TopologyError", "parse_topology", "topology_from_data", "veth_mac",
]

ROUTING_ALGOS = ("BATMAN_IV", "BATMAN_V")
NODE_NAME = re.compile(r"[a-z][a-z0-9_]{0,11}")
MAX_NODES = 200
PRIMARY_CHOICES = ("dummy", "link")


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    routing_algo: str
    orig_interval_ms: int | None
    primary: str  # "dummy": a dummy interface primary0 is bat0's first hard interface; "link": the first link
    bridge_loop_avoidance: bool
    agents: bool  # run an agent on every node (a step may still kill/start them)
    agent: dict[str, Any]  # the agent config shared by all nodes
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    steps: tuple[Step, ...]
    mem_mb: int | None
    timeout_s: float | None
    data: dict[str, Any] = field(default_factory=dict, compare=False)  # the source data

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def link(self, ref: str) -> Link:
        """A link by ``a-b`` or ``b-a``."""
        found = find_link(self.links, ref)
        if found is None:
            raise KeyError(ref)
        return found

    def links_of(self, node: str) -> tuple[Link, ...]:
        return tuple(link for link in self.links if node in link.ends())

    def neighbours(self, node: str) -> tuple[str, ...]:
        return tuple(link.peer(node) for link in self.links_of(node))

    def originator_owner(self) -> dict[str, str]:
        """Every node's originator address (the MAC of bat0's primary interface) -> the node."""
        out = {}
        for node in self.nodes:
            if self.primary == "dummy":
                out[node.primary_mac] = node.name
            elif self.links_of(node.name):
                out[veth_mac(node, self.links_of(node.name)[0])] = node.name
        return out

    def hard_interfaces(self, node: str) -> list[str]:
        """bat0's hard interfaces on ``node``, in the order they are attached (the first is primary)."""
        links = [link.ifname(node) for link in self.links_of(node)]
        return [PRIMARY_IF, *links] if self.primary == "dummy" else links

    def mac_owner(self) -> dict[str, str]:
        """Every MAC of the lab (bat0 and veth ends) -> the node that has it."""
        out = {n.mac: n.name for n in self.nodes} | {n.primary_mac: n.name for n in self.nodes}
        for link in self.links:
            for end in link.ends():
                out[veth_mac(self.node(end), link)] = end
        return out

    def with_changes(self, *, steps: Iterable[Step | Mapping[str, Any]] | None = None,
                     agents: bool | None = None, overrides: Mapping[str, Any] | None = None) -> Topology:
        """The same lab with another scenario, agents switched on or off, and/or ``overrides`` merged
        into the file's tables (e.g. ``{"mesh": {"orig_interval_ms": 250}}``); revalidated."""
        data = merge_tables(self.data, overrides or {})
        if steps is not None:
            data["steps"] = [s.to_data() if isinstance(s, Step) else dict(s) for s in steps]
        if agents is not None:
            data["agents"] = agents
        return topology_from_data(data, f"{self.name} (changed)")


def parse_topology(text: str, source: str = "<string>") -> Topology:
    """A topology from TOML text; raises :class:`TopologyError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(source, [f"not valid TOML: {exc}"]) from None
    return topology_from_data(data, source)


def topology_from_data(data: Mapping[str, Any], source: str = "<data>") -> Topology:
    """Validate already-parsed TOML data (a dict) into a :class:`Topology`."""
    problems: list[str] = []
    top = Reader(data, "", problems)
    top.unknown(("name", "description", "agents", "mesh", "agent", "lab", "nodes", "links", "steps"))
    name = top.str_("name", "lab") or "lab"
    description = top.str_("description", "") or ""
    agents = top.bool_("agents", True)
    mesh = Reader(top.table("mesh"), "mesh", problems)
    mesh.unknown(("routing_algo", "orig_interval_ms", "primary", "bridge_loop_avoidance"))
    algo = mesh.str_("routing_algo", "BATMAN_IV", choices=ROUTING_ALGOS) or "BATMAN_IV"
    orig_interval = mesh.num("orig_interval_ms", None, 20, 60_000, integer=True)
    primary = mesh.str_("primary", "dummy", choices=PRIMARY_CHOICES) or "dummy"
    bla = mesh.bool_("bridge_loop_avoidance", False)
    agent = top.table("agent")
    for key in ("nodes", "links", "steps", "agents", "name", "description"):
        if key in agent:
            problems.append(f"agent.{key}: {key} landed in the [agent] table; in TOML, top-level keys must "
                            "come before the first [table] header")
    lab = Reader(top.table("lab"), "lab", problems)
    lab.unknown(("mem_mb", "timeout_s"))
    mem_mb = lab.num("mem_mb", None, 128, 65_536, integer=True)
    timeout_s = lab.num("timeout_s", None, 10.0, 86_400.0)

    nodes = _nodes(top, problems)
    links = _links(top, {n.name: n for n in nodes}, problems)
    steps = _steps(top, nodes, links, problems)
    if problems:
        raise TopologyError(source, problems)
    return Topology(
        name=name,
        description=description,
        routing_algo=algo,
        orig_interval_ms=orig_interval,
        primary=primary,
        bridge_loop_avoidance=bla,
        agents=agents,
        agent=agent,
        nodes=tuple(nodes),
        links=tuple(links),
        steps=tuple(steps),
        mem_mb=mem_mb,
        timeout_s=timeout_s,
        data=dict(data),
    )


def _nodes(top: Reader, problems: list[str]) -> list[Node]:
    raw = top.list_("nodes")
    if not raw:
        problems.append("nodes: a lab needs at least one node")
    if len(raw) > MAX_NODES:
        problems.append(f"nodes: {len(raw)} nodes; at most {MAX_NODES}")
    nodes: list[Node] = []
    for i, item in enumerate(raw):
        path = f"nodes[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            problems.append(f"{path}: got {item!r}; expected a name or a table with a name")
            continue
        r = Reader(item, path, problems)
        r.unknown(("name", "agent"))
        name = r.str_("name", pattern=NODE_NAME)
        if "name" not in item:
            r.bad("name", "missing")
        agent = r.table("agent")
        if name is None:
            continue
        if any(n.name == name for n in nodes):
            r.bad("name", f"node {name!r} is declared twice")
            continue
        nodes.append(Node(name=name, index=len(nodes) + 1, agent=agent))
    return nodes


def _links(top: Reader, nodes: Mapping[str, Node], problems: list[str]) -> list[Link]:
    links: list[Link] = []
    for i, item in enumerate(top.list_("links")):
        path = f"links[{i}]"
        if isinstance(item, str):
            a, _, b = item.partition("-")
            item = {"a": a, "b": b}
        if not isinstance(item, dict):
            problems.append(f"{path}: got {item!r}; expected \"a-b\" or a table with a and b")
            continue
        r = Reader(item, path, problems)
        r.unknown(("a", "b", "delay_ms", "jitter_ms", "loss_pct", "rate_mbit"))
        ends = []
        for key in ("a", "b"):
            end = r.str_(key)
            if end is None:
                if key not in item:
                    r.bad(key, "missing")
            elif end not in nodes:
                r.bad(key, f"no node {end!r}; nodes: {', '.join(nodes) or '(none)'}")
            else:
                ends.append(end)
        netem = read_netem(r, Netem())
        if len(ends) != 2:
            continue
        a, b = ends
        if a == b:
            problems.append(f"{path}: a link needs two different nodes, got {a!r} twice")
        elif find_link(links, f"{a}-{b}") is not None:
            problems.append(f"{path}: {a}-{b} is declared twice (parallel links are not supported)")
        else:
            links.append(Link(a=a, b=b, index=len(links) + 1, netem=netem))
    return links


def _steps(top: Reader, nodes: list[Node], links: list[Link], problems: list[str]) -> list[Step]:
    names = {n.name for n in nodes}
    steps: list[Step] = []
    labels: set[str] = set()
    pings: set[str] = set()
    for i, item in enumerate(top.list_("steps")):
        try:
            step = parse_step(item, i, nodes=names, links=links, pings=pings)
        except StepError as exc:
            problems.extend(exc.problems)
            continue
        if step.label in labels:
            problems.append(f"steps[{i}].label: {step.label!r} is used by an earlier step")
            continue
        labels.add(step.label)
        steps.append(step)
    return steps
