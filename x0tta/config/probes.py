"""Settings of the eBPF probes (section [probes]). The admission guard that shares their object has
its own section, [guard] (:mod:`x0tta.config.guard`)."""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
    interfaces: tuple[str, ...] = setting(
        default_factory=tuple,
        doc="Interfaces to probe. Empty means the batman-adv interface and every hard interface "
        "enslaved to it, followed as the mesh adds and removes them: the guard must sit on every "
        "link batman-adv listens on, or it guards nothing.",
    )
    batman_interface: str = setting(
        "bat0",
        doc="The batman-adv soft interface whose hard interfaces are probed when `interfaces` is "
        "empty; bat0 is batman-adv's own default name.",
        pattern=r"[A-Za-z0-9_.:-]{1,15}",
    )
    flow_map_size: int = setting(
        8192,
        doc="Entries of the per-flow LRU map (~120 bytes of kernel memory each, plus 40 per CPU: "
        "8192 is ~1.6 MiB on 2 CPUs). "
        "Enough for the flows a mesh router forwards between polls; beyond it the least recently "
        "seen flows are evicted, never new ones refused.",
        min=64,
        max=1_048_576,
    )
    neighbor_map_size: int = setting(
        1024,
        doc="Entries of the per-neighbour-MAC LRU map. A mesh node hears tens of neighbours; 1024 "
        "leaves room for a flood of forged MACs to be counted without evicting the real ones at once.",
        min=16,
        max=65_536,
    )
    top_flows: int = setting(
        20,
        doc="How many flows (by bytes) are exported as labelled metrics. Also capped by "
        "metrics.max_label_values; the rest are counted in x0tta_probes_label_overflow.",
        min=0,
        max=10_000,
    )
    pin_path: str = setting(
        "/sys/fs/bpf/x0tta",
        doc="Where the maps are pinned (on bpffs), so counters and admissions survive an agent "
        "restart. Under /sys/fs/bpf, which systemd mounts; mounted by the agent if missing.",
    )
    object_path: str = setting(
        "",
        doc="The compiled eBPF object. Empty means the one shipped in the package "
        "(x0tta/probes/bpf/x0tta_probes.o), built by `make ebpf`.",
    )
    poll_interval: float = setting(
        5.0,
        doc="How often the maps are read for metrics and neighbour last-seen times. 5 s keeps the "
        "cost negligible (one batched read per map) and is well inside the MAPE-K silence window.",
        min=0.1,
        max=300.0,
        unit="s",
    )
