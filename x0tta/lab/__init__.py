"""The mesh lab: real batman-adv in User-Mode Linux, one network namespace per node, netem links,
one agent per node, scripted faults, a JSON timeline. See ``docs/lab.md``.

Pure parts live in :mod:`x0tta.lab.core` (topology records, agent configs, outage computation);
:mod:`x0tta.lab.runner` boots the guest (host I/O); :mod:`x0tta.lab.guest` is the engine inside it,
built of :mod:`x0tta.lab.netns` (namespaces, links, batman-adv's tables), :mod:`x0tta.lab.agents`,
:mod:`x0tta.lab.faults` and :mod:`x0tta.lab.scenario` (the steps, dispatched on their record type);
:mod:`x0tta.lab.pinger` sends the timestamped echoes. This package's own import is light (the
guest imports it for the pinger and the engine), so the public names load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabFailed", "LabResult", "LabUnavailable", "Topology", "TopologyError", "load_topology",
           "parse_topology", "run_lab"]


def __getattr__(name: str) -> Any:
    if name in ("LabFailed", "LabResult", "LabUnavailable", "load_topology", "run_lab"):
        from x0tta.lab import runner

        return getattr(runner, name)
    if name in ("Topology", "TopologyError", "parse_topology"):
        from x0tta.lab.core import topology

        return getattr(topology, name)
    raise AttributeError(name)
