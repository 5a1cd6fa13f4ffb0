"""Settings of coordinated rollouts (section [coord]): the etcd cluster this node is a client of.

The coord subsystem runs only when ``endpoints`` is set: a mesh without an etcd cluster changes
its nodes as before. etcd is written in Go, whose TLS cannot verify ML-DSA-65 certificates: the
client authenticates with an ECDSA certificate issued for the coordination plane (as the fleet
plane does for its broker, docs/fleet.md), and the members' certificates chain to ``ca_file``.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting


@dataclass(frozen=True)
class CoordSettings:
    enabled: bool = setting(
        True,
        doc="Run this subsystem once endpoints are set. Without endpoints it does not run at all: "
        "coordination only gates changes that need it, and a node without it keeps working.",
    )
    endpoints: tuple[str, ...] = setting(
        (),
        doc="Client URLs of the etcd members (https://gw1:2379, ...), on a few well-connected "
        "nodes chosen by the operator (docs/coordination.md). Empty: no coordinated rollouts.",
    )
    cert_file: str = setting(
        "",
        doc="Client certificate (PEM) this node presents to etcd: an ECDSA certificate of the "
        "coordination plane's CA (Go's TLS cannot verify ML-DSA-65).",
    )
    key_file: str = setting("", doc="Private key of cert_file.")
    ca_file: str = setting("", doc="CA certificates (PEM) the etcd members' certificates chain to.")
    prefix: str = setting(
        "/x0tta",
        doc="Key prefix of every key this mesh keeps in etcd (<prefix>/rollouts/..., <prefix>/nodes/...): "
        "one cluster can serve several meshes.",
        pattern=r"(/[A-Za-z0-9_.-]+)+",
    )
    segment: str = setting(
        "",
        doc="The mesh segment this node belongs to (e.g. the gateway it hangs off), as the operator "
        "names it: a rollout with per_segment changes at most one node of a segment at once, so a "
        "bad change cannot take a whole segment down. Empty: a segment of its own.",
        pattern=r"[A-Za-z0-9_.-]{0,64}",
    )
    operator_key_file: str = setting(
        "",
        doc="The operator's public key (the one that signs fleet commands); a rollout whose "
        "signature it does not verify is never applied. Empty: this node applies no rollout.",
    )
    request_timeout: float = setting(
        2.0,
        doc="How long one request to one member may take before the next member is asked: long "
        "enough for a loaded member over a few mesh hops, short enough to step over a dead one.",
        min=0.1,
        max=60.0,
        unit="s",
    )
    poll_interval: float = setting(
        5.0,
        doc="How often the node reads the rollouts it is a target of and renews its registration. A "
        "turn is taken at most this late; each round is two HTTPS requests to etcd, which at 2 s "
        "were the agent's largest steady cost after the probes on a lab node.",
        min=0.05,
        max=600.0,
        unit="s",
    )
    turn_ttl: int = setting(
        15,
        doc="Lease of a node's turn: a node that stops answering (frozen, partitioned) loses its "
        "turn this long after its last keepalive, and the next node may go. It is renewed every "
        "third of it.",
        min=2,
        max=3600,
        unit="s",
    )

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.endpoints)
