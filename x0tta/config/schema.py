"""The agent's settings: one dataclass per config section, every field with its reason.

The sections of the subsystems live in their own modules of this package (``mesh``, ``heal``,
``identity``, ``peer``, ``guard``, ``probes``, ``fleet``, ``coord``, ``meshstate``) so that each subsystem's owners
can grow them without touching the others; this module assembles them into :class:`AgentSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.coord import CoordSettings
from x0tta.config.fields import setting
from x0tta.config.fleet import FleetSettings
from x0tta.config.guard import GuardSettings
from x0tta.config.heal import HealSettings
from x0tta.config.identity import IdentitySettings
from x0tta.config.mesh import MeshSettings
from x0tta.config.meshstate import MeshStateSettings
from x0tta.config.peer import PeerSettings
from x0tta.config.probes import ProbeSettings

LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class NodeSettings:
    id: str = setting(
        "",
        doc="Name of this node in logs, metrics and traces. Empty means the host name, which is "
        "what operators already call the router.",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}|",
    )
    state_dir: str = setting(
        "/var/lib/x0tta",
        doc="Durable state (knowledge store, keys, pinned data). systemd's StateDirectory= creates "
        "it with the right owner and mode.",
    )
    runtime_dir: str = setting(
        "/run/x0tta",
        doc="Volatile state (sockets). systemd's RuntimeDirectory= creates it and removes it on stop.",
    )

    def resolved_id(self, hostname: str) -> str:
        """The configured id, else the short host name (passed in: this module does no I/O)."""
        return self.id or hostname.split(".")[0] or "x0tta"


@dataclass(frozen=True)
class LoggingSettings:
    level: str = setting(
        "info",
        doc="Default level. info shows every decision and state change without per-packet noise.",
        choices=LEVELS,
    )
    format: str = setting(
        "auto",
        doc="json (one object per line, for journald and log shippers), console (readable), or "
        "auto: console on a terminal, json otherwise.",
        choices=("auto", "json", "console"),
    )
    levels: dict[str, str] = setting(
        default_factory=dict,
        doc="Per-subsystem levels, e.g. {mesh = \"debug\"}, to look closer at one part without "
        "flooding the journal with the rest.",
        choices=None,
    )

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.levels.items() if v not in LEVELS}
        if bad:
            raise ValueError(f"logging.levels values must be one of {', '.join(LEVELS)}; got {bad}")


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = setting(True, doc="Serve /metrics, /healthz and /readyz over HTTP.")
    address: str = setting(
        "127.0.0.1",
        doc="Listen address. Loopback by default: metrics reveal the mesh's shape, so exposing them "
        "on the mesh is a decision the operator makes, not a default.",
    )
    port: int = setting(9477, doc="Listen port (0 picks a free one, for tests).", min=0, max=65535)
    max_label_values: int = setting(
        256,
        doc="Cap on distinct values of a label that comes from the network (neighbour MACs, flows, "
        "peers). Beyond it samples fold into an overflow counter, so a large or hostile mesh "
        "cannot blow up the scrape.",
        min=1,
        max=100_000,
    )


@dataclass(frozen=True)
class TracingSettings:
    otlp_endpoint: str = setting(
        "",
        doc="OTLP/gRPC collector address (e.g. http://127.0.0.1:4317). Empty: spans are created "
        "(trace ids still appear in logs) but not exported.",
    )
    sample_ratio: float = setting(
        1.0,
        doc="Fraction of new traces sampled (parent-based: a trace started by a peer keeps its "
        "decision). 1.0 because a router makes few traces: incidents, handshakes, reconciles.",
        min=0.0,
        max=1.0,
    )


@dataclass(frozen=True)
class AdminSettings:
    socket: str = setting(
        "",
        doc="Unix socket of the local admin API (mode 0600). Empty means <node.runtime_dir>/admin.sock.",
    )


@dataclass(frozen=True)
class SupervisorSettings:
    restart_initial_delay: float = setting(
        0.5, doc="First restart delay of a failed subsystem.", min=0.01, max=60.0, unit="s"
    )
    restart_max_delay: float = setting(
        30.0,
        doc="Cap of the exponential restart delay: a subsystem broken for good is retried twice a "
        "minute, cheap yet quick to recover once the cause is gone.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    stable_after: float = setting(
        60.0,
        doc="A subsystem running this long after a restart has its delay reset to the initial one.",
        min=1.0,
        max=86400.0,
        unit="s",
    )
    capability_retry: float = setting(
        60.0,
        doc="How often a subsystem degraded by a missing capability looks again.",
        min=1.0,
        max=86400.0,
        unit="s",
    )
    shutdown_timeout: float = setting(
        4.0,
        doc="Time given to subsystems to stop on SIGTERM before they are abandoned; below systemd's "
        "5 s budget in the unit file.",
        min=0.1,
        max=60.0,
        unit="s",
    )


@dataclass(frozen=True)
class AgentSettings:
    node: NodeSettings = setting(default_factory=NodeSettings, doc="This node.")
    logging: LoggingSettings = setting(default_factory=LoggingSettings, doc="Structured logs.")
    metrics: MetricsSettings = setting(default_factory=MetricsSettings, doc="Prometheus and health endpoints.")
    tracing: TracingSettings = setting(default_factory=TracingSettings, doc="OpenTelemetry traces.")
    admin: AdminSettings = setting(default_factory=AdminSettings, doc="Local admin API.")
    supervisor: SupervisorSettings = setting(
        default_factory=SupervisorSettings, doc="Restart policy of subsystems."
    )
    mesh: MeshSettings = setting(default_factory=MeshSettings, doc="batman-adv control.")
    heal: HealSettings = setting(default_factory=HealSettings, doc="MAPE-K self-healing.")
    identity: IdentitySettings = setting(default_factory=IdentitySettings, doc="SPIFFE identity.")
    peer: PeerSettings = setting(default_factory=PeerSettings, doc="PQC mTLS peer sessions.")
    guard: GuardSettings = setting(default_factory=GuardSettings, doc="Admission guard (eBPF, with the probes).")
    probes: ProbeSettings = setting(default_factory=ProbeSettings, doc="eBPF probes.")
    fleet: FleetSettings = setting(default_factory=FleetSettings, doc="Fleet plane: reports to an MQTT broker.")
    coord: CoordSettings = setting(default_factory=CoordSettings, doc="Coordinated rollouts on etcd.")
    meshstate: MeshStateSettings = setting(
        default_factory=MeshStateSettings, doc="Replicated mesh state: a signed CRDT document over the peer sessions."
    )

    @property
    def admin_socket(self) -> str:
        return self.admin.socket or f"{self.node.runtime_dir.rstrip('/')}/admin.sock"
