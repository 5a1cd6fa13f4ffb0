"""Lab topology files: TOML data into typed, validated records, every problem reported at once.

A topology names the nodes of a lab mesh, the links between them (each a veth pair shaped by netem:
delay, jitter, loss, rate), the batman-adv routing algorithm, the agent configuration shared by all
nodes and each node's overrides, and a scenario: steps run one after another on a timeline (wait for
convergence, start a ping, cut a link, add silent loss, degrade, kill or restart an agent, kill a node,
restore, snapshot the routing tables, wait for a route to move, run a Python check). The format is
documented in ``docs/lab.md``; ``configs/lab/*.toml`` are examples.

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
from dataclasses import dataclass, field, replace
from typing import Any

from x0tta.common.errors import PermanentError
from x0tta.common.tables import merge_tables

ROUTING_ALGOS = ("BATMAN_IV", "BATMAN_V")
NODE_NAME = re.compile(r"[a-z][a-z0-9_]{0,11}")
MAX_NODES = 200
SIGNALS = ("KILL", "TERM", "INT")
MESH_IF = "bat0"
PRIMARY_IF = "primary0"
PRIMARY_CHOICES = ("dummy", "link")

# Keys every step may carry, besides its action's own.
COMMON_STEP_KEYS = ("do", "label", "after_s")
# action -> (required keys, optional keys). The order of this table is the order in docs/lab.md.
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "converge": ((), ("timeout_s", "agents")),
    "sleep": (("seconds",), ()),
    "ping": (("from", "to"), ("interval_ms", "name")),
    "ping_stop": (("name",), ()),
    "link_down": (("link",), ()),
    "link_up": (("link",), ()),
    "silent_loss": (("link",), ("loss_pct", "from")),
    "degrade": (("link",), ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit", "from")),
    "restore": ((), ("link", "node")),
    "kill_agent": (("node",), ("signal",)),
    "start_agent": (("node",), ()),
    "restart_agent": (("node",), ()),
    "kill_node": (("node",), ()),
    "snapshot": ((), ("nodes",)),
    "wait_route": (("from", "to"), ("via", "not_via", "timeout_s")),
    "check": (("call",), ("each_node", "nodes", "args")),
    "load": ((), ("cpu_pct", "spawn_per_s", "seconds", "name")),
    "load_stop": ((), ("name",)),
}
DEFAULT_CONVERGE_TIMEOUT_S = 60.0
DEFAULT_ROUTE_TIMEOUT_S = 30.0
DEFAULT_PING_INTERVAL_MS = 20.0


class TopologyError(PermanentError):
    """A topology that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid lab topology {source}:\n{lines}")


@dataclass(frozen=True)
class Netem:
    """One direction's shaping of a link (netem applies on egress, so each veth end gets one)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None

    def tc_args(self) -> list[str]:
        """The ``tc qdisc ... netem`` arguments (an empty netem is a plain FIFO: ``delay 0ms``)."""
        out = ["delay", f"{self.delay_ms:g}ms"]
        if self.jitter_ms:
            out.append(f"{self.jitter_ms:g}ms")
        if self.loss_pct:
            out += ["loss", f"{self.loss_pct:g}%"]
        if self.rate_mbit:
            out += ["rate", f"{self.rate_mbit:g}mbit"]
        return out


@dataclass(frozen=True)
class Node:
    name: str
    index: int  # 1-based, file order
    agent: dict[str, Any] = field(default_factory=dict)  # overrides of the shared [agent] table

    @property
    def address(self) -> str:
        return f"10.99.0.{self.index}"

    @property
    def mac(self) -> str:
        return f"02:ba:01:{self.index:02x}:00:00"

    @property
    def primary_mac(self) -> str:
        """MAC of the dummy primary interface (the originator address when mesh.primary is dummy)."""
        return f"02:ba:02:{self.index:02x}:00:00"


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    index: int  # 1-based, file order
    netem: Netem = field(default_factory=Netem)

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def ends(self) -> tuple[str, str]:
        return (self.a, self.b)

    def peer(self, node: str) -> str:
        return self.b if node == self.a else self.a

    def ifname(self, node: str) -> str:
        """The name of ``node``'s end of this link, inside ``node``'s namespace."""
        return f"to-{self.peer(node)}"


@dataclass(frozen=True)
class Step:
    """One scenario step. Only the fields of its action are set (see :data:`ACTIONS`)."""

    do: str
    label: str
    after_s: float = 0.0
    link: str | None = None  # canonical link name "a-b" as declared
    node: str | None = None
    src: str | None = None  # "from"
    dst: str | None = None  # "to"
    via: str | None = None
    not_via: str | None = None
    seconds: float | None = None
    timeout_s: float | None = None
    interval_ms: float | None = None
    name: str | None = None
    netem: Netem | None = None  # the shaping a silent_loss/degrade step sets (link's own, changed)
    signal: str | None = None
    agents: bool | None = None
    nodes: tuple[str, ...] | None = None
    call: str | None = None
    each_node: bool = False
    args: dict[str, Any] = field(default_factory=dict)
    cpu_pct: float | None = None  # load: share of the guest CPU a busy loop takes
    spawn_per_s: float | None = None  # load: processes started (and reaped) per second
    data: dict[str, Any] = field(default_factory=dict, compare=False)  # as written, for the guest


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
        found = _find_link(self.links, ref)
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
            data["steps"] = [dict(s.data) if isinstance(s, Step) else dict(s) for s in steps]
        if agents is not None:
            data["agents"] = agents
        return topology_from_data(data, f"{self.name} (changed)")


def veth_mac(node: Node, link: Link) -> str:
    return f"02:ba:00:{node.index:02x}:{link.index >> 8:02x}:{link.index & 0xFF:02x}"


def _find_link(links: Iterable[Link], ref: str) -> Link | None:
    a, sep, b = ref.partition("-")
    if not sep:
        return None
    for link in links:
        if {link.a, link.b} == {a, b}:
            return link
    return None


def parse_topology(text: str, source: str = "<string>") -> Topology:
    """A topology from TOML text; raises :class:`TopologyError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(source, [f"not valid TOML: {exc}"]) from None
    return topology_from_data(data, source)


class _Reader:
    """Typed access to one table, appending problems with their key path instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def bad(self, key: str, message: str) -> None:
        self.problems.append(f"{self.at(key)}: {message}")

    def unknown(self, known: Iterable[str]) -> None:
        known = list(known)
        for key in self.data:
            if key not in known:
                self.bad(key, f"no such key; known keys: {', '.join(known)}")

    def str_(self, key: str, default: str | None = None, *, choices: tuple[str, ...] | None = None,
             pattern: re.Pattern[str] | None = None) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self.bad(key, f"got {value!r}; expected a string")
            return None
        if choices and value not in choices:
            self.bad(key, f"got {value!r}; expected one of {', '.join(choices)}")
            return None
        if pattern and not pattern.fullmatch(value):
            self.bad(key, f"got {value!r}; expected a name matching {pattern.pattern}")
            return None
        return value

    def num(self, key: str, default: float | None, lo: float, hi: float, *, integer: bool = False) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        ok_type = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            self.bad(key, f"got {value!r}; expected {'an integer' if integer else 'a number'}")
            return default
        if not lo <= value <= hi:
            self.bad(key, f"got {value!r}; expected between {lo:g} and {hi:g}")
            return default
        return value if integer else float(value)

    def bool_(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.bad(key, f"got {value!r}; expected true or false")
            return default
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.bad(key, f"got {value!r}; expected a table")
            return {}
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.bad(key, f"got {value!r}; expected a list")
            return []
        return value


def _netem(r: _Reader, base: Netem) -> Netem:
    rate = r.num("rate_mbit", base.rate_mbit, 0.001, 100_000.0)
    return Netem(
        delay_ms=r.num("delay_ms", base.delay_ms, 0.0, 60_000.0),
        jitter_ms=r.num("jitter_ms", base.jitter_ms, 0.0, 60_000.0),
        loss_pct=r.num("loss_pct", base.loss_pct, 0.0, 100.0),
        rate_mbit=rate,
    )


def topology_from_data(data: Mapping[str, Any], source: str = "<data>") -> Topology:
    """Validate already-parsed TOML data (a dict) into a :class:`Topology`."""
    problems: list[str] = []
    top = _Reader(data, "", problems)
    top.unknown(("name", "description", "agents", "mesh", "agent", "lab", "nodes", "links", "steps"))
    name = top.str_("name", "lab") or "lab"
    description = top.str_("description", "") or ""
    agents = top.bool_("agents", True)
    mesh = _Reader(top.table("mesh"), "mesh", problems)
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
    lab = _Reader(top.table("lab"), "lab", problems)
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


def _nodes(top: _Reader, problems: list[str]) -> list[Node]:
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
        r = _Reader(item, path, problems)
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


def _links(top: _Reader, nodes: Mapping[str, Node], problems: list[str]) -> list[Link]:
    links: list[Link] = []
    for i, item in enumerate(top.list_("links")):
        path = f"links[{i}]"
        if isinstance(item, str):
            a, _, b = item.partition("-")
            item = {"a": a, "b": b}
        if not isinstance(item, dict):
            problems.append(f"{path}: got {item!r}; expected \"a-b\" or a table with a and b")
            continue
        r = _Reader(item, path, problems)
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
        netem = _netem(r, Netem())
        if len(ends) != 2:
            continue
        a, b = ends
        if a == b:
            problems.append(f"{path}: a link needs two different nodes, got {a!r} twice")
        elif _find_link(links, f"{a}-{b}") is not None:
            problems.append(f"{path}: {a}-{b} is declared twice (parallel links are not supported)")
        else:
            links.append(Link(a=a, b=b, index=len(links) + 1, netem=netem))
    return links


def _steps(top: _Reader, nodes: list[Node], links: list[Link], problems: list[str]) -> list[Step]:
    names = {n.name for n in nodes}
    steps: list[Step] = []
    labels: set[str] = set()
    pings: set[str] = set()
    for i, item in enumerate(top.list_("steps")):
        path = f"steps[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{path}: got {item!r}; expected a table with a 'do' key")
            continue
        before = len(problems)
        step = _step(_Reader(item, path, problems), i, names, links, pings)
        if step is None or len(problems) > before:
            continue
        if step.label in labels:
            problems.append(f"{path}.label: {step.label!r} is used by an earlier step")
            continue
        labels.add(step.label)
        steps.append(step)
    return steps


def _step(r: _Reader, i: int, names: set[str], links: list[Link], pings: set[str]) -> Step | None:
    do = r.str_("do", choices=tuple(ACTIONS))
    if do is None:
        if "do" not in r.data:
            r.bad("do", f"missing; one of {', '.join(ACTIONS)}")
        return None
    required, optional = ACTIONS[do]
    r.unknown(COMMON_STEP_KEYS + required + optional)
    for key in required:
        if key not in r.data:
            r.bad(key, f"missing (a {do} step needs {', '.join(required)})")
    label = r.str_("label", f"{i}:{do}") or f"{i}:{do}"
    fields: dict[str, Any] = {"do": do, "label": label, "after_s": r.num("after_s", 0.0, 0.0, 86_400.0)}

    def node(key: str) -> str | None:
        value = r.str_(key)
        if value is not None and value not in names:
            r.bad(key, f"no node {value!r}; nodes: {', '.join(sorted(names))}")
            return None
        return value

    link: Link | None = None
    if "link" in r.data:
        ref = r.str_("link")
        if ref is not None:
            link = _find_link(links, ref)
            if link is None:
                r.bad("link", f"no link {ref!r}; links: {', '.join(x.name for x in links) or '(none)'}")
            else:
                fields["link"] = link.name
    if "node" in r.data:
        fields["node"] = node("node")
    if "from" in r.data:
        fields["src"] = node("from")
    if "to" in r.data:
        fields["dst"] = node("to")
    for key in ("via", "not_via"):
        if key in r.data:
            fields[key] = node(key)
    if do == "sleep":
        fields["seconds"] = r.num("seconds", 0.0, 0.0, 86_400.0)
    if do in ("converge", "wait_route"):
        default = DEFAULT_CONVERGE_TIMEOUT_S if do == "converge" else DEFAULT_ROUTE_TIMEOUT_S
        fields["timeout_s"] = r.num("timeout_s", default, 0.1, 86_400.0)
    if do == "converge" and "agents" in r.data:
        fields["agents"] = r.bool_("agents", True)
    if do == "ping":
        fields["interval_ms"] = r.num("interval_ms", DEFAULT_PING_INTERVAL_MS, 1.0, 10_000.0)
        default_name = f"{fields.get('src')}->{fields.get('dst')}"
        fields["name"] = r.str_("name", default_name) or default_name
        if fields["name"] in pings:
            r.bad("name", f"a ping named {fields['name']!r} is already running")
        pings.add(fields["name"])
        if fields.get("src") is not None and fields.get("src") == fields.get("dst"):
            r.bad("to", "a ping needs two different nodes")
    if do == "ping_stop":
        name = r.str_("name")
        if name is not None and name not in pings:
            r.bad("name", f"no ping named {name!r} was started before this step")
        pings.discard(name or "")
        fields["name"] = name
    if do in ("silent_loss", "degrade") and link is not None:
        src = fields.get("src")
        if src is not None and src not in link.ends():
            r.bad("from", f"{src!r} is not an end of link {link.name}")
        if do == "silent_loss":
            fields["netem"] = replace(link.netem, loss_pct=r.num("loss_pct", 100.0, 0.0, 100.0))
        else:
            if not any(k in r.data for k in ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")):
                r.bad("do", "a degrade step needs at least one of delay_ms, jitter_ms, loss_pct, rate_mbit")
            fields["netem"] = _netem(r, link.netem)
    if do == "restore" and ("link" in r.data) == ("node" in r.data):
        r.bad("do", "a restore step needs exactly one of link or node")
    if do == "wait_route" and ("via" in r.data) == ("not_via" in r.data):
        r.bad("do", "a wait_route step needs exactly one of via or not_via")
    if do == "kill_agent":
        fields["signal"] = r.str_("signal", "KILL", choices=SIGNALS) or "KILL"
    if "nodes" in r.data:
        raw = r.data["nodes"]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            r.bad("nodes", f"got {raw!r}; expected a list of node names")
        else:
            unknown = [x for x in raw if x not in names]
            if unknown:
                r.bad("nodes", f"no node {', '.join(map(repr, unknown))}; nodes: {', '.join(sorted(names))}")
            fields["nodes"] = tuple(raw)
    if do == "load":
        fields["cpu_pct"] = r.num("cpu_pct", 50.0, 0.0, 100.0)
        fields["spawn_per_s"] = r.num("spawn_per_s", 5.0, 0.0, 200.0)
        fields["seconds"] = r.num("seconds", 0.0, 0.0, 86_400.0)  # 0: until load_stop or the end
        fields["name"] = r.str_("name", "load") or "load"
    if do == "load_stop":
        fields["name"] = r.str_("name", "load") or "load"
    if do == "check":
        call = r.str_("call")
        if call is not None and not re.fullmatch(r"[^:]+:[A-Za-z_][A-Za-z0-9_]*", call):
            r.bad("call", f"got {call!r}; expected 'package.module:function' or '/path/file.py:function'")
        fields["call"] = call
        fields["each_node"] = r.bool_("each_node", False)
        fields["args"] = r.table("args")
    return Step(**fields, data=dict(r.data))
