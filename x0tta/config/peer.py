"""Settings of peer sessions (section [peer]): the PQC mutual TLS transport and the peer protocol.

``docs/peer.md`` explains the protocol and the security model these numbers serve.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting

# Key exchange groups OpenSSL 4 knows that include ML-KEM (FIPS 203): hybrids first.
PQ_GROUPS = ("X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024", "MLKEM768", "MLKEM1024")
CLASSICAL_GROUPS = ("X25519", "secp256r1", "secp384r1", "X448")

# Signature algorithms of a peer's leaf certificate (its key type), named as
# x0tta.identity.core.types.key_algorithm names them.
PQ_SIGNATURES = ("ML-DSA-65", "ML-DSA-87", "ML-DSA-44")
CLASSICAL_SIGNATURES = (
    "ECDSA-P256", "ECDSA-P384", "ECDSA-P521", "Ed25519", "Ed448", "RSA-2048", "RSA-3072", "RSA-4096",
)
SOURCE_SIGNATURES = {
    "builtin": ("ML-DSA-65",),
    "workload_api": ("ML-DSA-65", "ECDSA-P256"),
}
"""What ``accepted_signatures = []`` means, per ``[identity] source``: the built-in CA issues ML-DSA-65;
SPIRE issues ECDSA P-256 X509-SVIDs by default and has no ML-DSA yet (2026-12)."""


@dataclass(frozen=True)
class PeerSettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
    listen_address: str = setting(
        "",
        doc="Address peer sessions are accepted on. Empty: every address, IPv4 and IPv6 (one socket "
        "each): neighbours reach us over the mesh interface, whose address may change; the TLS "
        "handshake, not the address, decides who gets in.",
    )
    port: int = setting(
        7443,
        doc="TCP port of peer sessions, the same on every node so that a neighbour's address is "
        "enough to reach it (0 picks a free port, for tests).",
        min=0,
        max=65535,
    )
    peers: tuple[str, ...] = setting(
        (),
        doc="Addresses (host, host:port or [v6]:port) this node keeps sessions to, in addition to "
        "the neighbours batman-adv reports. Empty: only the neighbours.",
    )
    dial_neighbors: bool = setting(
        True,
        doc="Keep a session to every batman-adv neighbour, dialled at the EUI-64 link-local address "
        "(fe80::...%hardif) of the interface it was heard on: the sessions that let the guard admit "
        "it follow the mesh as it changes, with no address list to maintain. Off where nodes use "
        "stable-privacy link-local addresses; list them in peers instead.",
    )
    groups: tuple[str, ...] = setting(
        ("X25519MLKEM768",),
        doc="TLS 1.3 key exchange groups, in preference order. Only the X25519+ML-KEM-768 hybrid: "
        "recorded traffic stays secret unless both X25519 and ML-KEM are broken, and a "
        "classical-only peer is refused rather than silently downgraded.",
        choices=PQ_GROUPS + CLASSICAL_GROUPS,
    )
    require_pq: bool = setting(
        True,
        doc="Demand a post-quantum key exchange: every group above must include ML-KEM, so that "
        "recorded traffic stays secret. Which certificates peers may authenticate with is "
        "accepted_signatures, not this.",
    )
    accepted_signatures: tuple[str, ...] = setting(
        (),
        doc="Signature algorithms (key types) a peer's leaf certificate may use; any other is "
        "refused (reason key_algorithm_not_allowed). Empty: by [identity] source - builtin accepts "
        "ML-DSA-65 only, what the built-in CA issues (ML-DSA-44 is weaker and refused); "
        "workload_api accepts ML-DSA-65 and ECDSA-P256, because SPIRE issues ECDSA P-256 SVIDs and "
        "has no ML-DSA yet: such sessions authenticate classically while the key exchange stays "
        "post-quantum, and x0tta peers and x0tta status say so.",
        choices=PQ_SIGNATURES + CLASSICAL_SIGNATURES,
    )
    handshake_timeout: float = setting(
        10.0,
        doc="A handshake not done by then is abandoned. A PQ mutual handshake takes ~10 ms of CPU "
        "and three round trips; 10 s covers a lossy multi-hop radio path and still frees the slot "
        "of a peer that stalls on purpose.",
        min=0.1,
        max=120.0,
        unit="s",
    )
    max_concurrent_handshakes: int = setting(
        16,
        doc="Handshakes in progress at once; a server refuses more at once (reason busy). 16 is "
        "more than a router's neighbours reconnecting together, and caps what a flood of "
        "ClientHellos can cost at 16 ML-DSA signatures in flight.",
        min=1,
        max=1024,
    )
    handshake_threads: int = setting(
        2,
        doc="Threads that run handshake crypto off the event loop. Two: the routers this runs on "
        "have one to four cores, and the loop must keep one for everything else.",
        min=1,
        max=32,
    )
    frame_max_size: int = setting(
        65536,
        doc="Largest peer protocol frame accepted (and advertised). Control messages are small; "
        "64 KiB bounds the memory one peer can make us buffer.",
        min=256,
        max=16 * 1024 * 1024,
        unit="bytes",
    )
    max_in_flight: int = setting(
        64,
        doc="Requests a peer may have outstanding on one session (advertised in the hello); more "
        "is a protocol error. Bounds the handler tasks one peer can start.",
        min=1,
        max=65535,
    )
    max_buffered: int = setting(
        1024 * 1024,
        doc="Outgoing bytes queued per session before new requests wait (backpressure): a slow "
        "link cannot make the agent's memory grow without bound.",
        min=4096,
        max=256 * 1024 * 1024,
        unit="bytes",
    )
    heartbeat_interval: float = setting(
        5.0,
        doc="A ping is sent after this long without sending anything; its pong measures the RTT "
        "shown by `x0tta peers`.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    idle_timeout: float = setting(
        20.0,
        doc="A session with nothing received for this long is dead and is closed: four missed "
        "heartbeats, so one lost packet burst on a radio link does not tear sessions down.",
        min=0.3,
        max=86400.0,
        unit="s",
    )
    read_timeout: float = setting(
        10.0,
        doc="A frame that started arriving must complete within this time (a peer trickling bytes "
        "holds a buffer).",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    request_timeout: float = setting(
        10.0,
        doc="Default time a request waits for its response before failing locally.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    reconnect_min_delay: float = setting(
        0.5,
        doc="First delay before reconnecting to a peer that failed; doubled up to the maximum.",
        min=0.01,
        max=60.0,
        unit="s",
    )
    reconnect_max_delay: float = setting(
        30.0,
        doc="Cap of the reconnect backoff: a neighbour that comes back is found within 30 s, while "
        "one that is gone costs a connection attempt twice a minute.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    reauth_fraction: float = setting(
        0.2,
        doc="A session re-authenticates (a new full handshake, then the old one drains) when less "
        "than this fraction of the shorter SVID lifetime (ours or the peer's) is left, or at once "
        "when our own SVID rotates. With SPIRE's renewal at half-life this leaves slack for retries.",
        min=0.05,
        max=0.9,
    )
    session_lifetime: float = setting(
        3600.0,
        doc="How long a TLS session may be resumed (PSK with the hybrid group, no signatures): "
        "an hour makes reconnects after a link flap cheap; rotation and revocation end it sooner.",
        min=0.0,
        max=86400.0,
        unit="s",
    )
    neighbour_refresh: float = setting(
        10.0,
        doc="How often the list of peers (config plus batman-adv neighbours) is re-read, to open "
        "sessions to new neighbours and close those to departed ones.",
        min=0.1,
        max=3600.0,
        unit="s",
    )

    def signatures(self, source: str) -> tuple[str, ...]:
        """The accepted signature algorithms for identities from ``source`` ([identity] source)."""
        return self.accepted_signatures or SOURCE_SIGNATURES[source]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("peer.groups must name at least one group")
        classical = [g for g in self.groups if g not in PQ_GROUPS]
        if self.require_pq and classical:
            raise ValueError(
                f"peer.require_pq is true but peer.groups includes classical groups {classical}; "
                "remove them or set require_pq = false"
            )
        if self.idle_timeout <= self.heartbeat_interval:
            raise ValueError("peer.idle_timeout must be longer than peer.heartbeat_interval")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("peer.reconnect_max_delay must be >= peer.reconnect_min_delay")
