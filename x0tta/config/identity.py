"""Settings of node identity (section [identity]).

Where this node's SPIFFE identity comes from (the built-in CA's files, or a SPIRE agent's Workload
API), which trust domain it belongs to, and which peers it accepts. Validated here, purely: a bad
trust domain or pattern is a config error at load time, not a surprise at the first handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId, SpiffeIdError, parse_pattern
from x0tta.config.fields import setting

SOURCES = ("builtin", "workload_api")
KEY_TYPES = ("ml-dsa-65", "ecdsa-p256")


@dataclass(frozen=True)
class IdentityPaths:
    svid: str
    key: str
    bundle: str
    revocation: str


@dataclass(frozen=True)
class IdentitySettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
    trust_domain: str = setting(
        "mesh.x0tta",
        doc="The SPIFFE trust domain of this mesh. Peers must hold SVIDs of this domain (or of a "
        "federated one in the bundle); a mesh of its own picks a name of its own so that a node "
        "of one mesh can never join another.",
        pattern=r"[a-z0-9._-]{1,255}",
    )
    source: str = setting(
        "builtin",
        doc="Where the SVID comes from: builtin (files written by the built-in CA, `x0tta ca "
        "issue`; needs nothing else, the default for meshes without SPIRE) or workload_api (a "
        "SPIRE agent on this node, which also rotates the SVID).",
        choices=SOURCES,
    )
    workload_api_socket: str = setting(
        "",
        doc="Unix socket of the SPIRE Workload API. Empty: $SPIFFE_ENDPOINT_SOCKET, else SPIRE "
        "agent's own default /tmp/spire-agent/public/api.sock, which the systemd unit cannot see "
        "(PrivateTmp=yes): under systemd put SPIRE's socket outside /tmp (e.g. "
        "/run/spire/sockets/agent.sock) and set it here.",
    )
    workload_api_timeout: float = setting(
        10.0,
        doc="How long to wait for the first SVID from SPIRE before reporting degraded and retrying; "
        "an attested SPIRE agent answers in milliseconds, one still attesting in seconds.",
        min=0.5,
        max=600.0,
        unit="s",
    )
    svid_file: str = setting(
        "",
        doc="Builtin source: the SVID certificate chain (PEM, leaf first). Empty means "
        "<node.state_dir>/identity/svid.pem, next to the key in the state directory systemd "
        "creates with the service's owner.",
    )
    key_file: str = setting(
        "",
        doc="Builtin source: the SVID's private key (PKCS#8 PEM, mode 0600). Empty means "
        "<node.state_dir>/identity/svid.key.",
    )
    bundle_file: str = setting(
        "",
        doc="Builtin source: the trust bundle (root certificates, PEM). Empty means "
        "<node.state_dir>/identity/bundle.pem.",
    )
    revocation_file: str = setting(
        "",
        doc="The built-in CA's revocation list (X.509 CRL, PEM), reloaded when it changes; peers "
        "whose certificates it lists are refused. Empty means <node.state_dir>/identity/crl.pem; "
        "a missing file means nothing is revoked yet.",
    )
    poll_interval: float = setting(
        2.0,
        doc="How often the builtin source looks whether its files changed (a stat of four files: "
        "negligible). SIGHUP reloads at once; this catches files replaced by a renewal job.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    ca_dir: str = setting(
        "",
        doc="A built-in CA directory on this node (the lab, or a one-operator mesh whose CA lives "
        "on a node). When set, the agent renews its own SVID from it before expiry. Empty (the "
        "default) keeps CA keys off the routers: SVIDs are renewed by `x0tta ca issue` on the CA "
        "host and copied in, and the agent picks them up.",
    )
    request_renewal: bool = setting(
        True,
        doc="Without ca_dir: at renewal time write a new key (svid.key.new, 0600) and its request "
        "(svid.csr) next to the SVID, for the CA host's renewal job to sign with `x0tta ca sign`; "
        "the signed certificate is paired with that key when it arrives. The node's private key "
        "then never leaves the node.",
    )
    mesh_renewal: bool = setting(
        True,
        doc="Without ca_dir: renew the SVID through a CA node over the peer sessions (docs/identity.md, "
        "\"Renewal through the mesh\"): a fresh key and CSR made here, signed by a node holding the CA "
        "key, the certificate and the CRL sent back. No operator job; the key never leaves the node.",
    )
    serve_renewals: bool = setting(
        True,
        doc="With ca_dir: act as a CA node, sign peers' renewal requests (each only for the ID its "
        "session authenticated with, never for a revoked one) and advertise it in the peer Hello.",
    )
    ca_ids: tuple[str, ...] = setting(
        (),
        doc="SPIFFE IDs of the CA nodes to ask for renewal. Empty: any peer whose Hello says it "
        "signs renewals. A CA node that is not a neighbour must be in [peer] peers to be reached.",
    )
    renew_jitter: float = setting(
        0.1,
        doc="Spread renewals by up to this fraction of the lifetime either side of renew_fraction, "
        "so that a mesh issued at once does not ask the CA node at once.",
        min=0.0,
        max=0.4,
    )
    renewal_timeout: float = setting(
        10.0,
        doc="How long one renewal request waits for a CA node's answer (an ML-DSA signature and a "
        "few files: milliseconds; a busy CA node: seconds).",
        min=0.5,
        max=300.0,
        unit="s",
    )
    renewal_retry_max: float = setting(
        60.0,
        doc="Longest pause between failed renewal attempts (jittered doubling from 1 s); retries go "
        "on until the SVID expires.",
        min=1.0,
        max=3600.0,
        unit="s",
    )
    spiffe_id: str = setting(
        "",
        doc="The SPIFFE ID this node renews for itself from ca_dir. Empty means "
        "spiffe://<trust_domain>/node/<node.id>, the layout `x0tta ca issue` documents.",
    )
    svid_ttl: float = setting(
        86400.0,
        doc="Lifetime of a self-renewed SVID: a day limits what a stolen key is worth without "
        "making a CA host outage of a few hours fatal (renewal starts at half-life).",
        min=10.0,
        max=366 * 86400.0,
        unit="s",
    )
    key_type: str = setting(
        "ml-dsa-65",
        doc="Key of a self-renewed SVID: ml-dsa-65 (post-quantum, the point of this mesh) or "
        "ecdsa-p256 (classical, for comparison).",
        choices=KEY_TYPES,
    )
    renew_fraction: float = setting(
        0.5,
        doc="Renew the SVID once this fraction of its lifetime has passed; SPIRE's own choice, "
        "leaving the other half for retries.",
        min=0.1,
        max=0.9,
    )
    expiring_fraction: float = setting(
        0.25,
        doc="Report svid_expiring (degraded) when less than this fraction of the SVID's lifetime "
        "is left: renewal has then been failing for a quarter of the lifetime.",
        min=0.01,
        max=0.9,
    )
    allowed_ids: tuple[str, ...] = setting(
        (),
        doc="SPIFFE IDs allowed to hold a peer session with this node, in addition to "
        "allowed_patterns.",
    )
    allowed_patterns: tuple[str, ...] = setting(
        ("/node/*",),
        doc="Patterns of allowed peer IDs: /path is in our trust domain, spiffe://td/path in "
        "another; a '*' segment matches one segment, a final '**' one or more. The default lets "
        "in every node of our domain and no other workload. Both lists empty: any ID of our domain.",
    )

    def __post_init__(self) -> None:
        try:
            self.policy()
            if self.spiffe_id:
                sid = SpiffeId.parse(self.spiffe_id)
                if sid.trust_domain != self.trust_domain:
                    raise ValueError(f"identity.spiffe_id {sid} is not in trust domain {self.trust_domain}")
            for ca in self.ca_ids:
                SpiffeId.parse(ca)
            for p in self.allowed_patterns:
                parse_pattern(p, self.trust_domain)
        except SpiffeIdError as exc:
            raise ValueError(f"identity: {exc}") from exc

    def policy(self) -> AuthorizationPolicy:
        return AuthorizationPolicy.build(self.trust_domain, self.allowed_ids, self.allowed_patterns)

    def own_spiffe_id(self, node_id: str) -> SpiffeId:
        if self.spiffe_id:
            return SpiffeId.parse(self.spiffe_id)
        return SpiffeId.from_parts(self.trust_domain, "node", node_id)

    def paths(self, state_dir: str) -> IdentityPaths:
        base = f"{state_dir.rstrip('/')}/identity"
        return IdentityPaths(
            self.svid_file or f"{base}/svid.pem",
            self.key_file or f"{base}/svid.key",
            self.bundle_file or f"{base}/bundle.pem",
            self.revocation_file or f"{base}/crl.pem",
        )
