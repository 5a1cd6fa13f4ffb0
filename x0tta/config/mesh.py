"""Settings of batman-adv control (section [mesh]): the desired mesh of this node.

The mesh subsystem applies these through the batadv generic netlink family at start, on reload,
every ``reconcile_interval`` and whenever batman-adv reports a change (its ``config`` events); a
value changed by hand (``batctl meshif bat0 orig_interval 5000``) is put back and counted as drift.
Defaults are batman-adv's own defaults (net/batman-adv/soft-interface.c, 2022.3), so an agent
with an empty ``[mesh]`` section changes nothing on a stock node. ``docs/mesh.md`` has the
reference with each setting's batctl name.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting

ROUTING_ALGOS = ("BATMAN_IV", "BATMAN_V")
GW_MODES = ("off", "client", "server")
IFNAME = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,14}"


@dataclass(frozen=True)
class HardIfSettings:
    """Per hard interface settings (``[mesh.hardif.<name>]``), applied with SET_HARDIF."""

    hop_penalty: int = setting(
        0,
        doc="Extra TQ penalty for OGMs forwarded out of this interface (batctl hardif X hp). 0, "
        "batman-adv's default: only raise it to make a poor radio less attractive.",
        min=0,
        max=255,
    )
    elp_interval: int = setting(
        500,
        doc="BATMAN_V neighbour probing (ELP) interval on this interface, ms (batctl hardif X et). "
        "batman-adv's default 500 ms balances detection speed against airtime.",
        min=1,
        max=60_000,
        unit="ms",
    )
    throughput_override: int = setting(
        0,
        doc="BATMAN_V: fixed throughput of this link in kbit/s instead of the estimate (batctl "
        "hardif X to). 0 lets batman-adv estimate, right for Ethernet and most radios. Sent in "
        "batman-adv's 100 kbit/s units (rounded).",
        min=0,
        max=429_496_729_500,
        unit="kbit/s",
    )


@dataclass(frozen=True)
class MeshSettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
    interface: str = setting(
        "bat0",
        doc="The batman-adv mesh interface. bat0 is the name every batman-adv tool and guide uses.",
        pattern=IFNAME,
    )
    routing_algo: str = setting(
        "BATMAN_IV",
        doc="Routing algorithm used when the agent creates the interface. BATMAN_IV, batman-adv's "
        "default, works on every link type; BATMAN_V measures throughput and suits mixed-speed "
        "meshes. An existing interface keeps its algorithm (changing it means recreating the "
        "mesh); a mismatch is reported, not forced.",
        choices=ROUTING_ALGOS,
    )
    create: bool = setting(
        True,
        doc="Create the mesh interface when it is missing, so a fresh node needs no other setup.",
    )
    hard_interfaces: tuple[str, ...] = setting(
        (),
        doc="Interfaces to attach to the mesh (missing ones are attached, none are detached: other "
        "tools may add their own). Empty: the agent leaves membership alone.",
        pattern=IFNAME,
    )
    manage: bool = setting(
        True,
        doc="Apply the settings below and correct drift. false: observe and report only, for a "
        "node whose mesh another tool owns.",
    )
    reconcile_interval: float = setting(
        30.0,
        doc="How often the live settings are compared with these even without a change event: "
        "events can be lost (socket overrun), and a missed hand change should not last.",
        min=1.0,
        max=3600.0,
        unit="s",
    )
    observe_interval: float = setting(
        2.0,
        doc="How often originators, neighbours, gateways and table sizes are read (on the event "
        "loop, through a non-blocking netlink socket) for metrics and for the guard's detectors, "
        "which see a flood or a gateway hijack no sooner than this: batman-adv's tables change "
        "once per 1 s OGM interval, and 2 s keeps time to detection within 5 s at a cost the "
        "steady-state CPU benchmark measures.",
        min=0.5,
        max=3600.0,
        unit="s",
    )
    orig_interval: int = setting(
        1000,
        doc="OGM interval, ms (batctl it). batman-adv's default 1000 ms; lower reacts faster to "
        "failures at the cost of airtime.",
        min=1,
        max=60_000,
        unit="ms",
    )
    hop_penalty: int = setting(
        30,
        doc="TQ penalty per hop (batctl hp), batman-adv's default 30 of 255: prefers fewer hops "
        "unless a longer path is clearly better.",
        min=0,
        max=255,
    )
    gw_mode: str = setting(
        "off",
        doc="Gateway mode (batctl gw): off, client (choose a gateway for DHCP) or server "
        "(announce this node's uplink). off, batman-adv's default: a gateway is a deliberate role.",
        choices=GW_MODES,
    )
    gw_bandwidth_down: int = setting(
        10_000,
        doc="Downlink announced in server mode, kbit/s. batman-adv's default 10 Mbit/s; set it to "
        "the real uplink so clients choose well. Sent in 100 kbit/s units (rounded).",
        min=100,
        max=429_496_729_500,
        unit="kbit/s",
    )
    gw_bandwidth_up: int = setting(
        2_000,
        doc="Uplink announced in server mode, kbit/s (batman-adv's default 2 Mbit/s).",
        min=100,
        max=429_496_729_500,
        unit="kbit/s",
    )
    gw_sel_class: int = setting(
        0,
        doc="Gateway selection class in client mode (BATMAN_IV: 1-255, 20 by default; BATMAN_V: "
        "throughput threshold in kbit/s). 0 leaves batman-adv's per-algorithm default.",
        min=0,
        max=4_294_967_295,
    )
    bridge_loop_avoidance: bool = setting(
        True,
        doc="Bridge loop avoidance (batctl bl), on by default in batman-adv: without it two nodes "
        "bridging the same LAN into the mesh make a loop.",
    )
    distributed_arp_table: bool = setting(
        True,
        doc="Distributed ARP table (batctl dat), on by default: answers ARP inside the mesh instead "
        "of flooding it.",
    )
    aggregation: bool = setting(
        True,
        doc="OGM aggregation (batctl ag), on by default: fewer, larger protocol frames.",
    )
    fragmentation: bool = setting(
        True,
        doc="Fragment frames larger than a hard interface's MTU (batctl f), on by default: "
        "otherwise they are dropped on links without the 1532+ byte MTU batman-adv wants.",
    )
    bonding: bool = setting(
        False,
        doc="Send over several hard interfaces at once (batctl b). Off, batman-adv's default: it "
        "only helps with several similar-quality links to the same neighbour.",
    )
    multicast_forceflood: bool = setting(
        False,
        doc="Flood all multicast like broadcast (batctl mff). Off, batman-adv's default: its "
        "multicast optimisations save airtime.",
    )
    multicast_fanout: int = setting(
        16,
        doc="Most unicast copies one multicast frame may become before falling back to a "
        "broadcast (batctl mo); batman-adv's default 16.",
        min=1,
        max=4_294_967_295,
    )
    ap_isolation: bool = setting(
        False,
        doc="Drop traffic between wireless clients of the mesh (batctl ap). Off, batman-adv's "
        "default; a hotspot deployment turns it on.",
    )
    hardif: dict[str, HardIfSettings] = setting(
        default_factory=dict,
        doc="Per hard interface settings, e.g. [mesh.hardif.wlan0] hop_penalty = 10. An interface "
        "not listed keeps what it has.",
    )
