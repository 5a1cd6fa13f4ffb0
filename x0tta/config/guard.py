"""Settings of the admission guard (section [guard]).

The guard's programs and maps are part of the eBPF object the probes load (``[probes]``); these
settings say what the guard does with them. Until 2026-12 the keys lived in ``[probes]``
(``guard_mode``, ``admitted_macs``, ``admitted_map_size``): the loader still takes them there,
maps them here and says so (:data:`x0tta.config.loader.MOVED`).
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting

MAC_PATTERN = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"


@dataclass(frozen=True)
class DetectSettings:
    """Thresholds of the guard's detectors (``x0tta/guard/core/detect.py``, docs/guard.md). Each
    default is set so that honest churn - links flapping, agents restarting, nodes joining - stays
    below it with a margin; lower one only after watching the mesh it runs in."""

    enabled: bool = setting(
        True,
        doc="Look for attacks: every interval, the guard runs the detectors over what the probes "
        "and the mesh tables show, logs a threat record (guard_threat) per finding and counts it "
        "(above informational) in x0tta_guard_threats_total; the heal loop quarantines a neighbour a threat of "
        "heal.quarantine_severity is about. Off: no threat records, no quarantines.",
    )
    interval: float = setting(
        2.0,
        doc="Seconds between two looks, each in a worker thread: batman-adv's tables are dumped "
        "every mesh.observe_interval (2 s), so a shorter interval mostly sees nothing new. At 5 s "
        "the attack suite's first seeds took 5.5-6.2 s to detect a flood, a takeover, a gateway "
        "hijack or a handshake burst (a look and a table refresh of up to 5 s each); 2 s brings "
        "them within 5 s at a cost the steady-state CPU benchmark measures.",
        min=0.5,
        max=300.0,
        unit="s",
    )
    report_hold: float = setting(
        300.0,
        doc="A threat that lasts (same signature, same subject) is recorded once per hold, not at "
        "every look: five minutes keeps the log readable and the alert rules' 5-minute window fed.",
        min=1.0,
        max=86_400.0,
        unit="s",
    )
    window: float = setting(
        60.0,
        doc="The sliding window every detector looks back over: long enough to see a flood or a "
        "burst build up across several table dumps (one every few seconds), short enough that an "
        "old event stops counting within a minute.",
        min=5.0,
        max=3600.0,
        unit="s",
    )
    unadmitted_grace: float = setting(
        30.0,
        doc="How long a MAC first heard on a link, or whose admission just ended, may send "
        "batman-adv frames without being admitted before it is flagged: an honest neighbour "
        "completes its PQ mTLS handshake within seconds of appearing or of its agent restarting "
        "(the peer handshake timeout is 10 s), a rogue one never does.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    unadmitted_min_frames: int = setting(
        5,
        doc="Frames a non-admitted MAC must send within the window to be flagged: a single stray "
        "frame (an ELP probe of a node passing by) is not an intrusion.",
        min=1,
        max=1_000_000,
    )
    mac_conflict_window: float = setting(
        10.0,
        doc="A MAC counts as seen on two links, or as holding two SPIFFE IDs, only when both are "
        "within this many seconds of each other: a neighbour that moves from one radio to another "
        "is heard on the old link until its entry ages out, not at the same time on both.",
        min=0.5,
        max=600.0,
        unit="s",
    )
    originator_flood_min: int = setting(
        32,
        doc="New originators within the window that are always too many, whatever the mesh size: "
        "two merging meshes of a few dozen nodes stay below it.",
        min=1,
        max=1_000_000,
    )
    originator_flood_ratio: float = setting(
        1.0,
        doc="New originators within the window, as a share of those known at its start, that are "
        "too many (the larger of this and originator_flood_min counts): a mesh does not double "
        "within a minute unless something made the originators up.",
        min=0.0,
        max=100.0,
    )
    originator_memory: float = setting(
        3600.0,
        doc="Originators known within this long are not new when they come back: a node that "
        "rejoins the mesh after a partition longer than batman-adv's purge timeout (200 s) "
        "re-learns originators it knew, which is no flood. An hour covers a long outage.",
        min=0.0,
        max=604_800.0,
        unit="s",
    )
    seqno_margin: int = setting(
        64,
        doc="How far behind the newest sequence number an OGM may be and still belong to the same "
        "stream: batman-adv's own sliding window (TQ_LOCAL_WINDOW_SIZE) is 64, so rebroadcasts and "
        "reordered copies stay inside it.",
        min=1,
        max=1 << 20,
    )
    seqno_rate: float = setting(
        25.0,
        doc="Sequence numbers an originator may advance per second and stay the same stream: one "
        "per OGM, and the originator interval is 1 s by default, but heal shortens it to "
        "heal.unstable_orig_interval (50 ms: 20 a second) while a link is suspect, down or steered "
        "off - at 4 a second an honest neighbour's faster OGMs after a cut read as a takeover in the "
        "chaos lab. A stream that jumps further and runs on beside the old one is a "
        "takeover; an originator that restarts (batman-adv draws a random seqno) leaves the old "
        "one behind and is not flagged. The eBPF program that records the OGMs splits an "
        "originator's streams with this and seqno_margin too (docs/guard.md, OGM sequence numbers).",
        min=0.1,
        max=1000.0,
    )
    link_tq_margin: float = setting(
        0.3,
        doc="How much a route's TQ (as a share of 255) may exceed the delivery ratio this node "
        "measures on the link to its next hop: a path is never better than its first hop, and "
        "0.3 covers a probe window's noise and batman-adv's asymmetric link penalty.",
        min=0.0,
        max=1.0,
    )
    forward_penalty_min: int = setting(
        8,
        doc="BATMAN_IV: the smallest mesh hop_penalty (of 255) at which a route through a neighbour "
        "at the link's own TQ is told from a forwarded one: every node that forwards an OGM takes "
        "hop_penalty off its TQ, so an originator the neighbour only forwards for shows at least "
        "that much less than the neighbour itself; a claim above three quarters of that below it, for more than the "
        "neighbour's own primary originator, is an inflated TQ. With a smaller penalty (batman-adv's "
        "default is 30) the check is off.",
        min=1,
        max=255,
    )
    forward_hold: float = setting(
        10.0,
        doc="BATMAN_IV: the unforwarded-route check compares with the link's highest TQ of its two "
        "table dumps, and of at least this many seconds (batman-adv averages each entry over its "
        "last five OGMs: on a link losing quality the neighbour's own entry falls before the "
        "forwarded ones), and asks for the claim in two table dumps in a row.",
        min=0.0,
        max=600.0,
        unit="s",
    )
    forward_fresh: float = setting(
        3.0,
        doc="BATMAN_IV: the unforwarded-route check reads only entries batman-adv heard an OGM of "
        "within this many seconds (its last-seen): an entry nothing refreshes keeps its TQ until it "
        "is purged (200 s), while the link's own entry goes on changing - the attack suite saw a "
        "flood's stale entries read as a claim about the honest neighbour that had forwarded them.",
        min=0.1,
        max=600.0,
        unit="s",
    )
    forward_link_tq_min: int = setting(
        64,
        doc="BATMAN_IV: the link TQ (the neighbour's own interface entry) below which the "
        "unforwarded-route check is not made: on a link that poor a hop penalty is lost in the "
        "rounding of batman-adv's TQ arithmetic.",
        min=0,
        max=255,
    )
    link_throughput_factor: float = setting(
        2.0,
        doc="How many times a route's BATMAN_V throughput may exceed this node's own estimate of "
        "the link to its next hop: a path is never faster than its first hop; twice covers the "
        "estimate lagging a rate change of the radio.",
        min=1.0,
        max=1000.0,
    )
    gateway_max_bandwidth: float = setting(
        10_000.0,
        doc="Gateway bandwidth (down or up) above which an announcement is implausible: a mesh "
        "gateway with more than a 10 Gbit/s uplink does not exist in x0tta's deployments, and a "
        "hijacker announces huge values to be selected.",
        min=1.0,
        max=429_496_729.5,
        unit="Mbit/s",
    )
    gateway_ratio: float = setting(
        20.0,
        doc="A gateway announcing more than this many times the median of the other gateways (with "
        "at least two others) is flagged: honest uplinks of one mesh differ by a few times, not by "
        "an order of magnitude more.",
        min=1.0,
        max=1_000_000.0,
    )
    scan_destinations: int = setting(
        256,
        doc="Distinct destination (address, protocol, port) one source may reach through this node "
        "within the window before it is a scan: the agents' own traffic (peer sessions, probes, "
        "DNS, NTP) stays far below it, and so does a client browsing through a gateway node (a "
        "busy page reaches tens of hosts); a port scan passes it in seconds.",
        min=2,
        max=10_000_000,
    )
    flood_pps: float = setting(
        100_000.0,
        doc="Packets per second from one source, into this node, above which it is a flood: about "
        "1.2 Gbit/s of full-size frames, more than a mesh link carries (radio, or the gigabit "
        "Ethernet some nodes use), so traffic at that rate is made of small packets: a flood.",
        min=1.0,
        max=1e9,
    )
    handshake_failures: int = setting(
        20,
        doc="Failed PQ mTLS handshakes from one address within the window that make a burst: an "
        "honest node with a bad or expired SVID retries with back-off (a few per minute); an "
        "attacker guessing or exhausting handshakes tries many.",
        min=1,
        max=1_000_000,
    )
    handshake_burst_failures: int = setting(
        6,
        doc="Failed handshakes that one address made on this node (this node answering) within "
        "handshake_burst_span that make a burst at once, before handshake_failures is reached: an "
        "honest neighbour's redials back off from 0.5 s, doubling, so it makes at most four in 5 s; "
        "an attacker makes one every few tenths of a second. 0 turns this off.",
        min=0,
        max=1_000_000,
    )
    handshake_burst_span: float = setting(
        5.0,
        doc="The span handshake_burst_failures counts over.",
        unit="s",
        min=0.1,
        max=3600.0,
    )


@dataclass(frozen=True)
class GuardSettings:
    enabled: bool = setting(
        True,
        doc="Run this subsystem: admissions by authenticated handshake and the guard.* admin "
        "commands. Off: nothing admits a neighbour, so the kernel guard is put in observe when the "
        "probes load (nothing dropped, would-be drops still counted).",
    )
    mode: str = setting(
        "auto",
        doc="auto: enforce once this node has an identity (an SVID) and enforce_grace has passed "
        "since the agent started or got it, observe before; enforce: batman-adv frames from "
        "non-admitted MACs are dropped; observe: they pass and are counted as would-be drops (the "
        "opt-out, for a mesh whose nodes do not all run x0tta with identities). auto by default: "
        "a node with an identity admits only neighbours that authenticated, and one without cannot "
        "authenticate anyone, so it must not drop.",
        choices=("auto", "observe", "enforce"),
    )
    enforce_grace: float = setting(
        60.0,
        doc="In auto, seconds the guard still observes after the agent started, or after it got "
        "its identity, so that every neighbour completes its PQ mTLS handshake and is admitted "
        "before anything is dropped: a handshake takes well under a second, a neighbour is dialled "
        "within peer.neighbour_refresh of appearing and retried with back-off; a minute covers a "
        "mesh that boots together.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    session_grace: float = setting(
        60.0,
        doc="How long a neighbour stays admitted after its last session closed (not revoked): a "
        "re-authentication reconnects at once and a restarting agent within seconds, and its "
        "frames must keep passing meanwhile; a neighbour gone for longer re-authenticates before it "
        "is admitted again. A revoked SVID (the CRL) ends the admission at once.",
        min=0.0,
        max=86_400.0,
        unit="s",
    )
    quarantine_share: float = setting(
        0.5,
        doc="At most this share of the neighbours this node hears may be quarantined at once (the "
        "one to quarantine counted): half keeps a detector gone wrong from cutting a node off its "
        "mesh, and still shuts out a rogue next to one honest neighbour.",
        min=0.0,
        max=1.0,
    )
    admitted_macs: tuple[str, ...] = setting(
        default_factory=tuple,
        doc="MACs admitted without a handshake (aa:bb:cc:dd:ee:ff): nodes that run no x0tta, and "
        "the seeds of a new mesh. They cannot be revoked at run time.",
        pattern=MAC_PATTERN,
    )
    admitted_map_size: int = setting(
        1024,
        doc="Capacity of the guard's admitted-MAC map: every neighbour interface of a large mesh, "
        "with room to spare. Admissions beyond it fail loudly. The probes create the map, so a "
        "change restarts them (the pinned map starts again from the admissions in force).",
        min=16,
        max=65_536,
    )
    detect: DetectSettings = setting(
        default_factory=DetectSettings,
        doc="Intrusion detectors: what counts as an attack on the mesh (docs/guard.md).",
    )
