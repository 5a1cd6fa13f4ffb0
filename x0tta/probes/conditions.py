"""The probes subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

PROBE_INTERFACE_MISSING = ConditionSpec(
    "probe_interface_missing", Severity.DEGRADED, "an interface to probe does not exist (yet)"
)
PROBES_LOADING = ConditionSpec("probes_loading", Severity.STARTING, "the eBPF programs are being loaded")
BPF_PERMISSION_DENIED = ConditionSpec(
    "bpf_permission_denied", Severity.DEGRADED, "eBPF probes off: CAP_BPF and CAP_NET_ADMIN missing"
)
BPF_OBJECTS_MISSING = ConditionSpec(
    "bpf_objects_missing", Severity.DEGRADED, "eBPF probes off: the object file or libbpf is missing"
)
BPF_UNSUPPORTED = ConditionSpec(
    "bpf_unsupported", Severity.DEGRADED, "eBPF probes off: the kernel lacks BPF, cls_bpf or sch_ingress"
)
BPF_LOAD_FAILED = ConditionSpec(
    "bpf_load_failed", Severity.DEGRADED, "eBPF probes off: the program did not load (verifier or libbpf error)"
)
BPFFS_UNAVAILABLE = ConditionSpec(
    "bpffs_unavailable", Severity.DEGRADED, "eBPF probes off: no bpffs mounted for the pins, and none can be"
)
PROBE_ATTACH_FAILED = ConditionSpec(
    "probe_attach_failed", Severity.DEGRADED, "the tc filter could not be attached to an interface"
)

CONDITIONS = (
    PROBE_INTERFACE_MISSING, PROBES_LOADING, BPF_PERMISSION_DENIED, BPF_OBJECTS_MISSING, BPF_UNSUPPORTED,
    BPF_LOAD_FAILED, BPFFS_UNAVAILABLE, PROBE_ATTACH_FAILED,
)
