"""The heal subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Besides these, heal reports the mesh's ``batman_adv_missing`` (it reads batman-adv through the
mesh client). Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

HEAL_MONITOR_FAILING = ConditionSpec(
    "heal_monitor_failing", Severity.DEGRADED, "three monitor cycles in a row failed to read the kernel"
)
HEAL_PROBES_UNAUTHENTICATED = ConditionSpec(
    "heal_probes_unauthenticated", Severity.OK,
    "liveness probes and mesh alerts carry no tag: no node identity and no probe_key_file",
)
HEAL_PROBES_WITHOUT_SESSIONS = ConditionSpec(
    "heal_probes_without_sessions", Severity.OK,
    "probes are keyed by the neighbours' PQ mTLS sessions and none is up: the loop uses batman-adv alone",
)
HEAL_PROBE_ECHO_UNAVAILABLE = ConditionSpec(
    "heal_probe_echo_unavailable", Severity.DEGRADED, "no raw ICMPv6 socket for the kernel echo (CAP_NET_RAW)"
)
HEAL_PROBE_INTERFACE_CORROBORATION = ConditionSpec(
    "heal_probe_interface_corroboration", Severity.OK,
    "a late neighbour's silence is checked against its interface's receive counter, not its own eBPF "
    "counters: another neighbour's frames on that interface can hide it",
)
HEAL_STRAINED = ConditionSpec(
    "heal_strained", Severity.OK,
    "this agent is itself short of CPU (event-loop lag, its own CPU share, or a busy node): it backs off",
)

CONDITIONS = (
    HEAL_MONITOR_FAILING, HEAL_PROBES_UNAUTHENTICATED, HEAL_PROBES_WITHOUT_SESSIONS, HEAL_PROBE_ECHO_UNAVAILABLE,
    HEAL_STRAINED, HEAL_PROBE_INTERFACE_CORROBORATION,
)
