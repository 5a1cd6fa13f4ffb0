"""The lab mesh's plain records: nodes, the links between them and each direction's shaping.

Addressing is derived from the file order (see :mod:`x0tta.lab.core.topology`), never configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MESH_IF = "bat0"
PRIMARY_IF = "primary0"


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


def veth_mac(node: Node, link: Link) -> str:
    return f"02:ba:00:{node.index:02x}:{link.index >> 8:02x}:{link.index & 0xFF:02x}"


def find_link(links: Iterable[Link], ref: str) -> Link | None:
    """The link named ``a-b`` or ``b-a`` among ``links``, or None."""
    a, sep, b = ref.partition("-")
    if not sep:
        return None
    for link in links:
        if {link.a, link.b} == {a, b}:
            return link
    return None
