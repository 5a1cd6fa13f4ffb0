"""Scenario steps: one frozen record type per action, parsed from a scenario's tables by one function.

A scenario is a list of tables, each with ``do`` (the action), an optional ``label`` (unique; the
default is ``INDEX:ACTION``) and ``after_s`` (a pause before it), and the keys of its action (see
:data:`ACTIONS` and ``docs/lab.md``). :func:`parse_step` turns one table into its record - a
:class:`Ping`, a :class:`LinkDown`, a :class:`Check`, ... - or raises :class:`StepError` naming the
step's index and everything wrong with it. Each record's :meth:`Step.to_data` writes it back as a
table that parses into an equal record, so a scenario can be changed and handed on as data (the host
hands the guest its topology as JSON).

The guest's step runner (:mod:`x0tta.lab.scenario`) dispatches on the record's type.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from x0tta.lab.core.fields import NETEM_KEYS, Reader, TopologyError, read_netem
from x0tta.lab.core.net import Link, Netem, find_link

SIGNALS = ("KILL", "TERM", "INT")
DEFAULT_CONVERGE_TIMEOUT_S = 60.0
DEFAULT_ROUTE_TIMEOUT_S = 30.0
DEFAULT_PING_INTERVAL_MS = 20.0
CALL = re.compile(r"[^:]+:[A-Za-z_][A-Za-z0-9_]*")

# Keys every step may carry, besides its action's own.
COMMON_STEP_KEYS = ("do", "label", "after_s")


class StepError(TopologyError):
    """A scenario step that cannot be used: ``index`` is its place in the scenario, ``problems`` what
    is wrong with it (each with its key path, e.g. ``steps[3].link: no link 'a-q'``)."""

    def __init__(self, index: int, do: str | None, problems: list[str]) -> None:
        self.index = index
        self.do = do
        super().__init__(f"steps[{index}]", problems, f"invalid lab step {index}" + (f" ({do})" if do else ""))


def key(name: str, **kwargs: Any) -> Any:
    """A record field written under another key in the scenario (``from`` is a Python keyword)."""
    return field(metadata={"key": name}, **kwargs)


@dataclass(frozen=True, kw_only=True)
class Step:
    """What every step has; the subclasses are the actions."""

    do: ClassVar[str]
    label: str
    after_s: float = 0.0

    @property
    def waits_s(self) -> float:
        """The longest this step may wait by itself (a sleep, a timeout), besides its ``after_s``."""
        return 0.0

    def to_data(self) -> dict[str, Any]:
        """The table this step is written as (parsing it gives an equal record)."""
        out: dict[str, Any] = {"do": self.do}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.metadata.get("skip"):
                continue
            out[f.metadata.get("key", f.name)] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, kw_only=True)
class Converge(Step):
    do: ClassVar[str] = "converge"
    timeout_s: float = DEFAULT_CONVERGE_TIMEOUT_S
    agents: bool | None = None  # wait for the agents too (None: when the run has agents)

    @property
    def waits_s(self) -> float:
        return self.timeout_s


@dataclass(frozen=True, kw_only=True)
class Sleep(Step):
    do: ClassVar[str] = "sleep"
    seconds: float

    @property
    def waits_s(self) -> float:
        return self.seconds


@dataclass(frozen=True, kw_only=True)
class Ping(Step):
    do: ClassVar[str] = "ping"
    src: str = key("from")
    dst: str = key("to")
    interval_ms: float = DEFAULT_PING_INTERVAL_MS
    name: str


@dataclass(frozen=True, kw_only=True)
class PingStop(Step):
    do: ClassVar[str] = "ping_stop"
    name: str


@dataclass(frozen=True, kw_only=True)
class OnLink(Step):
    """A step on one link."""

    link: str  # the canonical link name "a-b" as declared


@dataclass(frozen=True, kw_only=True)
class LinkDown(OnLink):
    do: ClassVar[str] = "link_down"


@dataclass(frozen=True, kw_only=True)
class LinkUp(OnLink):
    do: ClassVar[str] = "link_up"


@dataclass(frozen=True, kw_only=True)
class Shape(OnLink):
    """A fault that changes a link's shaping (both directions, or only ``src``'s egress)."""

    netem: Netem = field(metadata={"skip": True})  # the link's own shaping, changed
    src: str | None = key("from", default=None)


@dataclass(frozen=True, kw_only=True)
class SilentLoss(Shape):
    """Frames vanish on a link that stays up: no carrier loss tells batman-adv."""

    do: ClassVar[str] = "silent_loss"

    def to_data(self) -> dict[str, Any]:
        return {**super().to_data(), "loss_pct": self.netem.loss_pct}


@dataclass(frozen=True, kw_only=True)
class Degrade(Shape):
    do: ClassVar[str] = "degrade"

    def to_data(self) -> dict[str, Any]:
        netem = {k: getattr(self.netem, k) for k in NETEM_KEYS if getattr(self.netem, k) is not None}
        return {**super().to_data(), **netem}


@dataclass(frozen=True, kw_only=True)
class Restore(Step):
    """A link back up with its own shaping, or a node's links and agent back (exactly one is set)."""

    do: ClassVar[str] = "restore"
    link: str | None = None
    node: str | None = None


@dataclass(frozen=True, kw_only=True)
class OnNode(Step):
    """A step on one node (its agent, or the node itself)."""

    node: str


@dataclass(frozen=True, kw_only=True)
class KillAgent(OnNode):
    do: ClassVar[str] = "kill_agent"
    signal: str = "KILL"


@dataclass(frozen=True, kw_only=True)
class StartAgent(OnNode):
    do: ClassVar[str] = "start_agent"


@dataclass(frozen=True, kw_only=True)
class RestartAgent(OnNode):
    do: ClassVar[str] = "restart_agent"


@dataclass(frozen=True, kw_only=True)
class KillNode(OnNode):
    """The node's agent killed and all its links down: the node is gone until a restore."""

    do: ClassVar[str] = "kill_node"


@dataclass(frozen=True, kw_only=True)
class Snapshot(Step):
    do: ClassVar[str] = "snapshot"
    nodes: tuple[str, ...] | None = None  # None: every live node


@dataclass(frozen=True, kw_only=True)
class WaitRoute(Step):
    """Wait until ``src``'s best route to ``dst`` goes through ``via`` (or not through ``not_via``)."""

    do: ClassVar[str] = "wait_route"
    src: str = key("from")
    dst: str = key("to")
    via: str | None = None
    not_via: str | None = None
    timeout_s: float = DEFAULT_ROUTE_TIMEOUT_S

    @property
    def waits_s(self) -> float:
        return self.timeout_s


@dataclass(frozen=True, kw_only=True)
class Check(Step):
    """A Python function run in the guest (``package.module:function`` or ``/path/file.py:function``)."""

    do: ClassVar[str] = "check"
    call: str
    each_node: bool = False
    nodes: tuple[str, ...] | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Load(Step):
    do: ClassVar[str] = "load"
    cpu_pct: float = 50.0  # share of the guest CPU a busy loop takes
    spawn_per_s: float = 5.0  # processes started (and reaped) per second
    seconds: float = 0.0  # 0: until load_stop or the end
    name: str = "load"

    @property
    def waits_s(self) -> float:
        return self.seconds


@dataclass(frozen=True, kw_only=True)
class LoadStop(Step):
    do: ClassVar[str] = "load_stop"
    name: str = "load"


# The order of this table is the order in docs/lab.md.
STEP_TYPES: dict[str, type[Step]] = {cls.do: cls for cls in (
    Converge, Sleep, Ping, PingStop, LinkDown, LinkUp, SilentLoss, Degrade, Restore, KillAgent, StartAgent,
    RestartAgent, KillNode, Snapshot, WaitRoute, Check, Load, LoadStop,
)}
# action -> (required keys, optional keys)
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "converge": ((), ("timeout_s", "agents")),
    "sleep": (("seconds",), ()),
    "ping": (("from", "to"), ("interval_ms", "name")),
    "ping_stop": (("name",), ()),
    "link_down": (("link",), ()),
    "link_up": (("link",), ()),
    "silent_loss": (("link",), ("loss_pct", "from")),
    "degrade": (("link",), (*NETEM_KEYS, "from")),
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


def parse_step(data: Any, index: int, *, nodes: Collection[str], links: Sequence[Link],
               pings: set[str] | None = None) -> Step:
    """Step ``index`` of a scenario from its table; raises :class:`StepError` listing every problem.

    ``nodes`` and ``links`` are the lab's; ``pings`` the names of the pings started by the steps
    before (updated: a ping adds its name, a ping_stop removes it), so a ping_stop can only stop a
    running ping. Without it, the step is checked alone."""
    problems: list[str] = []
    path = f"steps[{index}]"
    if not isinstance(data, Mapping):
        raise StepError(index, None, [f"{path}: got {data!r}; expected a table with a 'do' key"])
    r = Reader(data, path, problems)
    do = r.str_("do", choices=tuple(ACTIONS))
    if do is None:
        if "do" not in data:
            r.bad("do", f"missing; one of {', '.join(ACTIONS)}")
        raise StepError(index, None, problems)
    values = _values(r, do, index, nodes, links, set() if pings is None else pings)
    if problems:
        raise StepError(index, do, problems)
    return STEP_TYPES[do](**values)


def _values(r: Reader, do: str, index: int, names: Collection[str], links: Sequence[Link],
            pings: set[str]) -> dict[str, Any]:
    """The record's fields from the table, every problem appended to ``r``'s list."""
    required, optional = ACTIONS[do]
    r.unknown(COMMON_STEP_KEYS + required + optional)
    for name in required:
        if name not in r.data:
            r.bad(name, f"missing (a {do} step needs {', '.join(required)})")
    label = r.str_("label", f"{index}:{do}") or f"{index}:{do}"
    values: dict[str, Any] = {"label": label, "after_s": r.num("after_s", 0.0, 0.0, 86_400.0)}

    def node(name: str) -> str | None:
        value = r.str_(name)
        if value is not None and value not in names:
            r.bad(name, f"no node {value!r}; nodes: {', '.join(sorted(names))}")
            return None
        return value

    link: Link | None = None
    if "link" in r.data:
        ref = r.str_("link")
        if ref is not None:
            link = find_link(links, ref)
            if link is None:
                r.bad("link", f"no link {ref!r}; links: {', '.join(x.name for x in links) or '(none)'}")
            else:
                values["link"] = link.name
    for name, attr in (("node", "node"), ("from", "src"), ("to", "dst"), ("via", "via"), ("not_via", "not_via")):
        if name in r.data:
            values[attr] = node(name)
    if "nodes" in r.data:
        raw = r.data["nodes"]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            r.bad("nodes", f"got {raw!r}; expected a list of node names")
        else:
            unknown = [x for x in raw if x not in names]
            if unknown:
                r.bad("nodes", f"no node {', '.join(map(repr, unknown))}; nodes: {', '.join(sorted(names))}")
            values["nodes"] = tuple(raw)

    if do == "sleep":
        values["seconds"] = r.num("seconds", 0.0, 0.0, 86_400.0)
    elif do in ("converge", "wait_route"):
        default = DEFAULT_CONVERGE_TIMEOUT_S if do == "converge" else DEFAULT_ROUTE_TIMEOUT_S
        values["timeout_s"] = r.num("timeout_s", default, 0.1, 86_400.0)
        if do == "converge" and "agents" in r.data:
            values["agents"] = r.bool_("agents", True)
        if do == "wait_route" and ("via" in r.data) == ("not_via" in r.data):
            r.bad("do", "a wait_route step needs exactly one of via or not_via")
    elif do == "ping":
        values["interval_ms"] = r.num("interval_ms", DEFAULT_PING_INTERVAL_MS, 1.0, 10_000.0)
        default_name = f"{values.get('src')}->{values.get('dst')}"
        values["name"] = r.str_("name", default_name) or default_name
        if values["name"] in pings:
            r.bad("name", f"a ping named {values['name']!r} is already running")
        pings.add(values["name"])
        if values.get("src") is not None and values.get("src") == values.get("dst"):
            r.bad("to", "a ping needs two different nodes")
    elif do == "ping_stop":
        name = r.str_("name")
        if name is not None and name not in pings:
            r.bad("name", f"no ping named {name!r} was started before this step")
        pings.discard(name or "")
        values["name"] = name
    elif do in ("silent_loss", "degrade") and link is not None:
        src = values.get("src")
        if src is not None and src not in link.ends():
            r.bad("from", f"{src!r} is not an end of link {link.name}")
        if do == "silent_loss":
            values["netem"] = replace(link.netem, loss_pct=r.num("loss_pct", 100.0, 0.0, 100.0))
        else:
            if not any(k in r.data for k in NETEM_KEYS):
                r.bad("do", f"a degrade step needs at least one of {', '.join(NETEM_KEYS)}")
            values["netem"] = read_netem(r, link.netem)
    elif do == "restore" and ("link" in r.data) == ("node" in r.data):
        r.bad("do", "a restore step needs exactly one of link or node")
    elif do == "kill_agent":
        values["signal"] = r.str_("signal", "KILL", choices=SIGNALS) or "KILL"
    elif do == "load":
        values["cpu_pct"] = r.num("cpu_pct", 50.0, 0.0, 100.0)
        values["spawn_per_s"] = r.num("spawn_per_s", 5.0, 0.0, 200.0)
        values["seconds"] = r.num("seconds", 0.0, 0.0, 86_400.0)
        values["name"] = r.str_("name", "load") or "load"
    elif do == "load_stop":
        values["name"] = r.str_("name", "load") or "load"
    elif do == "check":
        call = r.str_("call")
        if call is not None and not CALL.fullmatch(call):
            r.bad("call", f"got {call!r}; expected 'package.module:function' or '/path/file.py:function'")
        values["call"] = call
        values["each_node"] = r.bool_("each_node", False)
        values["args"] = r.table("args")
    return values


class StepFailed(Exception):
    """A step that could not do what it says (raised in the guest while running it); ``fatal`` ones
    end the scenario."""

    def __init__(self, message: str, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal
