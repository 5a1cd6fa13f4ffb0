"""Settings of the MAPE-K loop (section [heal]).

Every threshold of the detectors, every interval of the monitor and every limit of the executor is
here, with the reason for its default. ``docs/heal.md`` explains how they interact.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting

DETECTORS = (
    "link_down",
    "silent_loss",
    "link_suspect",
    "link_degraded",
    "neighbour_lost",
    "gateway_lost",
    "gateway_changed",
    "route_flapping",
    "partition",
    "config_drift",
    "subsystem_unhealthy",
    "mesh_alert",
    "threat",
)
ACTIONS = (
    "steer_off",
    "restore_hardif",
    "reselect_gateway",
    "tune_orig_interval",
    "restore_orig_interval",
    "reapply_settings",
    "restart_subsystem",
    "pause_aggregation",
    "resume_aggregation",
    "quarantine",
)


@dataclass(frozen=True)
class HealSettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
    dry_run: bool = setting(
        False,
        doc="Decide and log, record in the knowledge store, but change nothing. For a first week on "
        "a new mesh, to read what the loop would have done before letting it act.",
    )
    disabled_detectors: tuple[str, ...] = setting(
        (), doc="Detectors not to run (their symptoms are never raised).", choices=DETECTORS
    )
    disabled_actions: tuple[str, ...] = setting(
        (), doc="Actions never to take; the planner picks the next candidate or only records.", choices=ACTIONS
    )
    # --- Monitor ---------------------------------------------------------------------------------
    poll_interval: float = setting(
        1.0,
        doc="Netlink dump period while all is well: batman-adv's own OGM interval is 1 s, tables "
        "change no faster. What only the tables show (a gateway lost, routes flapping, a slow "
        "quality drop) is sampled at this period, and gateway_lost_after counts on it.",
        min=0.05,
        max=60.0,
        unit="s",
    )
    fast_poll_interval: float = setting(
        0.1,
        doc="Cycle period while a symptom is active or an action awaits verification, so that effects "
        "are seen (and rolled back) within a probe interval or so.",
        min=0.02,
        max=10.0,
        unit="s",
    )
    strain_lag: float = setting(
        0.05,
        doc="A probe round that runs this much later than planned means this agent did not get the "
        "CPU when it asked: it is strained (half a probe interval: its probes reach the neighbours "
        "late enough to look lost). While strained, one late probe does not make a link suspect "
        "and the fast cycle slows to strained_poll_interval, so a busy node is not loaded more.",
        min=0.005, max=10.0, unit="s",
    )
    strain_cpu: float = setting(
        0.25,
        doc="Share of one CPU (smoothed over strain_window) above which the agent is strained. The "
        "steady state is a few percent in the lab's 5-node ring; a quarter of a CPU is what a "
        "router needs for forwarding.",
        min=0.01, max=4.0,
    )
    strain_node_cpu: float = setting(
        0.7,
        doc="Share of the node's CPU time busy (all processes and the kernel, from /proc/stat, smoothed "
        "over strain_window) above which the agent is strained: on a node this busy every process "
        "is scheduled late, the neighbours' probes this agent reads included. 0 turns this sign off.",
        min=0.0, max=1.0,
    )
    strain_window: float = setting(
        5.0, doc="Smoothing time of the agent's own CPU share and of the node's.", min=0.1, max=600.0, unit="s",
    )
    strain_hold: float = setting(
        5.0,
        doc="The agent stays strained this long after the last sign: lateness comes in bursts "
        "(a process start, a batch of monitoring scripts).",
        min=0.0, max=3600.0, unit="s",
    )
    strained_poll_interval: float = setting(
        0.3,
        doc="Cycle period while a symptom is active and the agent is strained: three probe intervals, "
        "so a confirmed silent loss (three lost probes) is still acted on within a cycle.",
        min=0.02, max=10.0, unit="s",
    )
    probe_enabled: bool = setting(
        True, doc="Send fast liveness probes to neighbouring agents; needed for silent loss detection."
    )
    probe_interval: float = setting(
        0.1,
        doc="Probe period per hard interface. 100 ms with 3 lost in a row detects a silent link "
        "failure in ~0.3-0.4 s; a 60-byte datagram 10 times a second is negligible on any link.",
        min=0.01,
        max=10.0,
        unit="s",
    )
    probe_port: int = setting(
        4305, doc="UDP port of the liveness probes, on each hard interface's IPv6 link-local address.",
        min=1, max=65535,
    )
    probe_window: int = setting(
        20, doc="Probes per loss window (2 s at 100 ms): long enough to see partial loss.", min=4, max=1000
    )
    probe_peer_expiry: float = setting(
        120.0,
        doc="Forget a probing peer not heard for this long (a neighbour that left for good). Until "
        "then its silence counts as loss, which is what detects a dead link.",
        min=1.0,
        max=3600.0,
        unit="s",
    )
    probe_key_file: str = setting(
        "",
        doc="File holding a shared secret: probes then carry an HMAC-SHA256 tag and untagged or "
        "badly tagged probes are ignored. Empty: unauthenticated probes (a forged probe can only "
        "hide or fake a loss on one link; node identity will key them).",
    )
    alert_enabled: bool = setting(
        True,
        doc="Mesh alerts: when a link of this node is confirmed silent or goes down, tell every "
        "agent of the mesh (one small UDP datagram flooded over the mesh interface, sent twice), and "
        "pause OGM aggregation for the hold of each alert heard, so that the OGMs that reroute around "
        "the dead link are forwarded at once instead of up to 100 ms later at each hop. Keyed like the "
        "probes when probe_key_file is set.",
    )
    alert_port: int = setting(
        4306, doc="UDP port of mesh alerts, on the mesh interface's IPv6 link-local address (to ff02::1).",
        min=1, max=65535,
    )
    alert_hold: float = setting(
        3.0,
        doc="How long the alerts this node sends ask others to forward OGMs at once: the far end's "
        "five faster OGMs and their forwarding take ~1.5 s after a fault.",
        min=0.1,
        max=60.0,
        unit="s",
    )
    alert_hold_max: float = setting(
        10.0, doc="The longest hold this node grants an alert it hears, whatever the alert asks.",
        min=0.1, max=600.0, unit="s",
    )
    alert_fast_ogms: bool = setting(
        True,
        doc="While a keyed alert heard holds, this node also sends its own OGMs every "
        "unstable_orig_interval (within the first half of its load budget, not while strained): the "
        "nodes whose routes to it ran through the failed link move them off only as fast as its OGMs "
        "reach them the other way - and a detach of a link that still works one way cuts that way at once.",
    )
    # --- Analyze: thresholds and hysteresis ------------------------------------------------------
    silent_loss_run: int = setting(
        3,
        doc="Probes lost in a row that make a link suspect. One lost probe is noise; three (0.3 s) "
        "on a wired or good radio link is not.",
        min=1,
        max=100,
    )
    suspect_run: int = setting(
        1,
        doc="Probes lost in a row, on a link that lost none before them in its probe window, that "
        "make it suspect: this node then sends its OGMs faster at once (cheap, undone 2 s after the "
        "probes come back), because batman-adv only applies a new originator interval after the OGM "
        "it already scheduled at the old one. silent_loss_run confirms the loss and steers off. "
        "Links that lose probes now and then are never suspect on one probe; 0 turns this off.",
        min=0,
        max=100,
    )
    silent_loss_ratio: float = setting(
        0.5, doc="Loss over the probe window that makes a link suspect even without a long run.", min=0.01, max=1.0
    )
    silent_loss_raise_after: float = setting(
        0.1,
        doc="Extra time a run of lost probes must last before it is silent loss. A link whose delay jumps "
        "by up to ~350 ms (bufferbloat, a radio retrying) sends no probe for that long and is late, not "
        "dead: the chaos runner found a steer-off of a link delayed by 280 ms causing a 1.1 s outage "
        "that batman-adv alone did not have. The suspect stage (faster OGMs) is not delayed.",
        min=0.0, max=600.0, unit="s",
    )
    silent_loss_clear_after: float = setting(
        2.0,
        doc="Clean probing needed before the link is trusted again: a full loss window, so a link "
        "that drops every other second is not restored between drops.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    link_down_raise_after: float = setting(
        0.0, doc="Carrier loss is certain, no need to wait.", min=0.0, max=600.0, unit="s"
    )
    link_down_clear_after: float = setting(
        2.0,
        doc="Carrier up this long (times 1 + recent flaps, see flap_hold_max) before the link is "
        "trusted again.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    flap_window: float = setting(
        60.0, doc="Window in which link transitions and route changes are counted.", min=1.0, max=3600.0, unit="s"
    )
    flap_count: int = setting(
        3,
        doc="Carrier losses (per hard interface) or router changes (per originator, not counting "
        "alternation between equal paths: flap_quality_band, flap_router_silence) within the flap "
        "window that make it flapping. Three: two could be a cable reseated.",
        min=2,
        max=1000,
    )
    flap_hold_max: float = setting(
        60.0,
        doc="Cap of the dampened hold time of a flapping link (clear_after grows with each flap).",
        min=1.0,
        max=86400.0,
        unit="s",
    )
    flap_quality_band: float = setting(
        0.15,
        doc="Route changes to an originator whose route quality (TQ, or throughput) never fell by "
        "more than this fraction below its best before, over the flap window, between routers that "
        "stayed heard, are "
        "batman-adv alternating between equal paths (BATMAN_IV moves to a neighbour whose TQ is "
        "higher by one unit): lossless, and faster OGMs only make more of it. A 20-node lab grid "
        "with no fault did it for as long as it ran. 15 %: above the drift of an equal path's TQ "
        "(one lost OGM moves a link's TQ by 1/64), below what a lossy link takes off the routes "
        "through it (20 % loss: about 20 %) or a move around a dead link.",
        min=0.0,
        max=1.0,
    )
    flap_router_silence: float = setting(
        3.0,
        doc="A router of a changing route not heard for this long (or gone from the neighbour table, "
        "or on an interface that is down or out of the mesh) when its route moved: that change is "
        "real flapping whatever the quality. Three OGM intervals at batman-adv's default 1 s: one "
        "lost OGM is not silence, and batman-adv moves a route off a silent router only after five. "
        "With a slower orig_interval, three of its intervals.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    degraded_drop: float = setting(
        0.5,
        doc="Link quality (throughput, or TQ) below this fraction of its own long-run average is "
        "degraded. Radio varies +-30 % by itself; halving is a change.",
        min=0.05,
        max=0.95,
    )
    degraded_tq_floor: int = setting(
        50, doc="TQ below this (of 255) is degraded whatever its history: about 80 % loss.", min=0, max=255
    )
    degraded_raise_after: float = setting(
        5.0, doc="Quality must stay low this long: TQ moves in OGM steps, one bad OGM is noise.",
        min=0.0, max=3600.0, unit="s",
    )
    degraded_clear_after: float = setting(
        10.0, doc="Quality back this long before the link is trusted again.", min=0.0, max=3600.0, unit="s"
    )
    neighbour_lost_after: float = setting(
        3.0,
        doc="A neighbour missing from the table (or silent) this long is lost; batman-adv itself "
        "keeps dead neighbours for 200 s.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    neighbour_forget_after: float = setting(
        300.0, doc="Stop remembering a neighbour gone this long (bounds memory on a busy mesh).",
        min=1.0, max=86400.0, unit="s",
    )
    gateway_lost_after: float = setting(
        2.0, doc="No selected gateway this long while in client mode is a lost gateway.",
        min=0.0, max=3600.0, unit="s",
    )
    partition_fraction: float = setting(
        0.5,
        doc="Fraction of the originators seen in the partition window that vanished at once: half "
        "the mesh gone is a partition, not churn.",
        min=0.05,
        max=1.0,
    )
    partition_min_lost: int = setting(
        3, doc="And at least this many, so a 3-node mesh losing one node is not a partition.", min=1, max=100000
    )
    partition_window: float = setting(
        30.0, doc="How far back the peak originator count is taken.", min=1.0, max=3600.0, unit="s"
    )
    drift_raise_after: float = setting(
        30.0,
        doc="Drift must outlast the mesh subsystem's own reconcile period before the heal loop "
        "re-applies settings, so the two never fight.",
        min=0.0,
        max=86400.0,
        unit="s",
    )
    subsystem_raise_after: float = setting(
        30.0,
        doc="A subsystem failing this long (after the supervisor's own restarts) is restarted by "
        "the heal loop as a whole.",
        min=0.0,
        max=86400.0,
        unit="s",
    )
    clear_after: float = setting(
        5.0, doc="Default clear time of symptoms without their own setting.", min=0.0, max=3600.0, unit="s"
    )
    # --- Plan / Execute --------------------------------------------------------------------------
    steer_method: str = setting(
        "detach",
        doc="How traffic is steered off a failing hard interface: detach (batman-adv drops its "
        "neighbours and reroutes at once) or penalty (raise its hop penalty; gentler, slower: "
        "others learn it from the next OGMs).",
        choices=("detach", "penalty"),
    )
    steer_hop_penalty: int = setting(
        255, doc="Hop penalty set on a steered-off hard interface with steer_method = penalty.", min=0, max=255
    )
    reattach_guard: float = setting(
        32.0,
        doc="No detach of a hard interface attached again less than this long ago (the hop penalty, "
        "which keeps it attached, may still be used). batman-adv gives an interface a random OGM "
        "sequence number each time it joins the mesh interface, and a neighbour that took one such "
        "jump ignores the next for 30 s (its seqno reset protection): a second detach and restore "
        "within that time leaves the link unusable for the rest of it, where batman-adv alone would "
        "have used it (the chaos benchmark measured a 7.4 s outage from it). 0 turns the guard off.",
        min=0.0,
        max=3600.0,
    )
    reattach_hop_penalty: int = setting(
        0,
        doc="Hop penalty a hard interface is attached again with, after a detach whose symptom "
        "cleared, for the first 80 of this node's originator intervals (at most 10 s), and then "
        "lowered to its value before the detach. A re-attached link rates its neighbours by the "
        "node's last 64 own OGMs they echoed, from nothing: routes over it swing between it and the "
        "detour while that window fills (the chaos lab: a route flapping for seconds after a "
        "re-attach, and an outage when a later fault cut the detour the route was on). At 240 the "
        "link still carries routes that have no other way, and the others stay on their detour "
        "until it is rated. 0 (the default) turns it off: while a link is held, the way round it "
        "is missing from the other nodes' tables, and a CI heal lab saw a node refuse a needed "
        "steer-off as the only way 2 s after two holds ended; 240 is the value measured.",
        min=0,
        max=254,
    )
    unstable_orig_interval: int = setting(
        50,
        doc="Originator interval of this node while one of its links is suspect, down or steered off, "
        "or the mesh is unstable: a node beyond the dead link drops its route through it only after "
        "five newer OGMs of this node reached it another way (BATMAN_IV), so 50 ms makes that a "
        "quarter of a second. ~20 small OGMs a second from the nodes concerned, while it lasts. "
        "batman-adv's floor is 40 ms (twice its jitter).",
        min=40,
        max=10000,
        unit="ms",
    )
    load_budget: float = setting(
        450.0,
        doc="Seconds each remedy that raises every node's load - tune_orig_interval (~20x the OGMs "
        "this node originates, each forwarded by every node) and pause_aggregation (every OGM "
        "forwarded in a frame of its own) - may be in force within load_budget_window. Past it the "
        "remedy is undone and refused until the window frees time, whatever still asks for it (and "
        "a steer-off goes with its faster OGMs or not at all). A silent loss or a link down needs "
        "faster OGMs for a few seconds (plus the route's return, at most route_return_max), a "
        "flapping link for its hold (at most flap_hold_max): the lab's acceptance scenarios take "
        "~250-300 s of them in ten minutes on the flapping link's ends, and a chaos run with a fault "
        "every 17 s spent 300 s in five minutes (2026-12-06). Three quarters of the window covers "
        "both, and a link that flaps for ever leaves the mesh at its normal OGM rate a quarter of "
        "the time at least.",
        min=0.0,
        max=86400.0,
        unit="s",
    )
    load_budget_window: float = setting(
        600.0,
        doc="The sliding window of load_budget: ten minutes, long enough to span a whole flapping "
        "episode (flap_window, flap_hold_max and route_return_max together).",
        min=1.0,
        max=86400.0,
        unit="s",
    )
    verify_after: float = setting(
        1.0,
        doc="Time after an action before its effect is checked: batman-adv purges and reroutes at "
        "once on detach; one OGM interval covers the rest.",
        min=0.05,
        max=600.0,
        unit="s",
    )
    harm_window: float = setting(
        10.0,
        doc="After a steer-off, a link of this node confirmed silent within this long (one that was "
        "fine when the steer-off was applied) is harm done by it: the steer-off is rolled back at once "
        "and counted as a failure twice over.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    quarantine_severity: int = setting(
        1,
        doc="A threat record of this severity or more urgent (EVE's 1 high, 2 medium, 3 low, 4 "
        "informational) about a neighbour makes a `threat` symptom, answered by quarantining it: "
        "high only, the spoofing and routing attacks that mislead the mesh; the medium ones (scans, "
        "floods, unadmitted frames, handshake bursts) are recorded and alerted on, a human decides.",
        min=1,
        max=4,
    )
    quarantine_forwarded: bool = setting(
        False,
        doc="Quarantine a neighbour for what it forwards, too: the detectors that read batman-adv's "
        "tables and the OGMs a neighbour relays (originator_flood, seqno_takeover, "
        "gateway_bandwidth, inflated_link_metric) cannot tell the attacker from an honest node "
        "one hop further - in the lab's attack suite every node of the ring quarantined the "
        "neighbour it heard a flood, a takeover or a made-up gateway through. Off: those threats "
        "are recorded and alerted on, and an operator quarantines (the fleet's quarantine command); on "
        "where every attacker would be a direct neighbour of every node (a single-hop mesh).",
    )
    quarantine_ttl: float = setting(
        600.0,
        doc="How long a quarantined neighbour stays shut out (out of the guard's admitted MACs, "
        "its peer sessions refused) before it may authenticate again: ten minutes outlasts an "
        "attack's run without holding an honest node a detector misjudged out for long; an "
        "operator releases it sooner (x0tta guard release).",
        min=1.0,
        max=604_800.0,
        unit="s",
    )
    restore_verify_after: float = setting(
        5.0,
        doc="A restore (undo) is judged after this long: if the symptom comes back within it, "
        "restoring failed, which counts against that action's breaker.",
        min=0.05,
        max=3600.0,
        unit="s",
    )
    route_return_max: float = setting(
        30.0,
        doc="After a steered-off hard interface is restored, the faster originator interval stays "
        "until a route goes through it again, at most this long: a re-attached link builds its TQ "
        "from nothing, one OGM at a time (in the 5-node lab ring the direct route came back ~24 s "
        "after the restore at 1 s OGMs).",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    retry_after: float = setting(
        5.0,
        doc="Wait before planning again for an incident whose action was refused or failed.",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    breaker_fail_max: int = setting(
        3,
        doc="Failed actions (error or not verified) of one kind on one target that open its "
        "breaker; three failures in a row say the remedy does not work here now.",
        min=1,
        max=100,
    )
    breaker_reset_timeout: float = setting(
        60.0, doc="Open breaker's wait before one trial action (half-open).", min=0.1, max=86400.0, unit="s"
    )
    rate_burst: int = setting(
        3, doc="Token bucket size per action kind and target: three quick actions, then the rate.",
        min=1, max=1000,
    )
    rate_per_minute: float = setting(
        6.0,
        doc="Sustained actions per minute per kind and target: one every 10 s is ample for real "
        "faults and stops a storm on a flapping link.",
        min=0.01,
        max=6000.0,
    )
    prior_weight: float = setting(
        2.0,
        doc="Weight of the neutral prior (50 % success) against this node's own outcomes when "
        "ranking actions: two outcomes of its own already move the choice.",
        min=0.1,
        max=1000.0,
    )
    resume_grace: float = setting(
        10.0,
        doc="After a restart, how long an incident left open waits for its symptom to show again "
        "before its actions are undone and it is closed.",
        min=0.0,
        max=3600.0,
        unit="s",
    )
    # --- Knowledge -------------------------------------------------------------------------------
    retention_days: float = setting(
        30.0, doc="Closed incidents older than this are deleted.", min=0.01, max=3650.0, unit="days"
    )
    retention_max_incidents: int = setting(
        10000, doc="And at most this many are kept (a few MB), oldest closed first.", min=10, max=10_000_000
    )
