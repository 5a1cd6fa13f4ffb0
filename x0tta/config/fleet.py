"""Settings of the fleet plane (section [fleet]): the MQTT broker this node reports to.

The fleet subsystem runs only when a broker is configured (``broker``): a node of a mesh without
one stays as it was. The client authenticates with a certificate, and the broker maps that
certificate to the node's user (mosquitto: ``use_identity_as_username``, the certificate's CN), so
the CN must be this node's id (``[node] id``), the level its topics are under (docs/fleet.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting
from x0tta.config.identity import IdentityPaths


@dataclass(frozen=True)
class FleetPaths:
    cert: str
    key: str
    ca: str
    outbox: str
    commands: str = ""


@dataclass(frozen=True)
class FleetSettings:
    enabled: bool = setting(
        True,
        doc="Run this subsystem once a broker is set. Without a broker it does not run at all: "
        "a mesh without a fleet broker needs nothing of it.",
    )
    broker: str = setting(
        "",
        doc="Host name or address of the MQTT 5 broker (mosquitto, configs/mosquitto/). Empty: no "
        "fleet plane, the node reports nowhere.",
    )
    port: int = setting(8883, doc="The broker's TLS port (8883: MQTT over TLS, IANA).", min=1, max=65535)
    cert_file: str = setting(
        "",
        doc="Client certificate (PEM) the broker maps to this node; its CN is the node id. Empty "
        "means the node's SVID (<node.state_dir>/identity/svid.pem). A broker built on OpenSSL "
        "before 3.5 (Debian 12's mosquitto) cannot verify ML-DSA-65 certificates: give such a "
        "broker an ECDSA certificate issued for the fleet plane here.",
    )
    key_file: str = setting(
        "",
        doc="Private key of cert_file. Empty means the SVID's key (<node.state_dir>/identity/svid.key).",
    )
    ca_file: str = setting(
        "",
        doc="CA certificates (PEM) the broker's certificate must chain to. Empty means the trust "
        "bundle of the identity (<node.state_dir>/identity/bundle.pem).",
    )
    topic_prefix: str = setting(
        "x0tta",
        doc="First topic level of every message (x0tta/nodes/<node>/...): one broker can serve "
        "several meshes, each under a prefix of its own.",
        pattern=r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*",
    )
    keepalive: int = setting(
        30,
        doc="MQTT keepalive: the broker publishes the Last Will (death) after 1.5 times this "
        "without a packet, so a lost node is marked dead within 45 s without chatter.",
        min=5,
        max=3600,
        unit="s",
    )
    state_interval: float = setting(
        60.0,
        doc="The node's state is published on every change of health and at least this often, so "
        "that the fleet's view is at most a minute old even when nothing changes.",
        min=1.0,
        max=86400.0,
        unit="s",
    )
    outbox_capacity: int = setting(
        10_000,
        doc="Messages the outbox holds while the broker is out of reach: hours of incidents of a "
        "troubled node, a few MB on disk. Beyond it informational messages are dropped first, "
        "then the oldest; every drop is counted.",
        min=10,
        max=10_000_000,
    )
    outbox_file: str = setting(
        "",
        doc="The outbox's SQLite file. Empty means <node.state_dir>/fleet-outbox.sqlite3: durable "
        "state, beside the knowledge store.",
    )
    window: int = setting(
        16,
        doc="Messages in flight (published, PUBACK awaited) at once: enough to drain a full outbox "
        "in seconds over a slow link, few enough that a reconnection resends little.",
        min=1,
        max=1000,
    )
    publish_timeout: float = setting(
        15.0,
        doc="How long to wait for a PUBACK before the connection is given up as dead and made again.",
        min=1.0,
        max=600.0,
        unit="s",
    )
    reconnect_initial: float = setting(
        1.0,
        doc="First reconnection delay; it doubles after every failure (with jitter: each node "
        "waits between half and all of it, so a fleet does not return in one wave).",
        min=0.05,
        max=600.0,
        unit="s",
    )
    reconnect_max: float = setting(
        60.0,
        doc="Cap of the reconnection delay: a node is back at most a minute after its broker.",
        min=0.1,
        max=3600.0,
        unit="s",
    )

    operator_keys: tuple[str, ...] = setting(
        (),
        doc="Public keys of the operators whose signed commands this node takes (docs/fleet.md, "
        "\"Operator commands\"): files written by `x0tta fleet keygen` (<name>.pub.pem or .pub.json), "
        "or directories of them. Empty: the node takes no commands and does not subscribe to them.",
    )
    commands_file: str = setting(
        "",
        doc="SQLite file of the last command counter taken per operator (against replay; it must "
        "outlive restarts). Empty means <node.state_dir>/fleet-commands.sqlite3.",
    )
    command_session_expiry: int = setting(
        7 * 86400,
        doc="MQTT 5 session expiry interval asked for while this node takes commands: the broker "
        "keeps its subscription to the command topic and queues the commands published while it "
        "is away (each until its own expiry) for this long after the connection is lost. 7 days "
        "is the longest a command may live (docs/fleet.md); 0 starts a clean session every time, "
        "and commands sent while the node is away are lost.",
        min=0,
        max=4_294_967_295,
        unit="s",
    )
    command_timeout: float = setting(
        60.0,
        doc="How long one command's action may run before it is reported failed: long enough for a "
        "diagnostic bundle, short enough that the next command is not held up for long.",
        min=1.0,
        max=3600.0,
        unit="s",
    )

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.broker)

    def paths(self, state_dir: str, identity: IdentityPaths) -> FleetPaths:
        """The files in use; ``identity`` gives the SVID's, for those left empty."""
        return FleetPaths(
            self.cert_file or identity.svid,
            self.key_file or identity.key,
            self.ca_file or identity.bundle,
            self.outbox_file or f"{state_dir.rstrip('/')}/fleet-outbox.sqlite3",
            self.commands_file or f"{state_dir.rstrip('/')}/fleet-commands.sqlite3",
        )
