"""The guard's pure half: data in, data out, ``now`` passed in, no I/O.

* :mod:`.admission` - which MACs the kernel guard lets in, and how to sync the map (its names are
  re-exported here: ``from x0tta.guard.core import AdmissionState`` keeps working);
* :mod:`.detect` - the intrusion detectors: observations of the mesh in, findings with evidence
  out;
* :mod:`.ogm` - the eBPF program's ``ogms`` map (originators' sequence-number streams) decoded
  into the OGM records ``seqno_takeover`` judges;
* :mod:`.threats` - a finding as a threat record, the EVE-style JSON an operator reads.

An import-linter contract keeps sockets, clocks, threads and files out of this package.
"""

from x0tta.guard.core.admission import (
    DYNAMIC,
    MODES,
    ORIGIN_NAMES,
    STATIC,
    Admission,
    AdmissionState,
    BadMac,
    StaticMacRevoke,
    format_mac,
    link_local_from_mac,
    mac_from_link_local,
    parse_mac,
    plan_sync,
)

__all__ = [
    "DYNAMIC",
    "MODES",
    "ORIGIN_NAMES",
    "STATIC",
    "Admission",
    "AdmissionState",
    "BadMac",
    "StaticMacRevoke",
    "format_mac",
    "link_local_from_mac",
    "mac_from_link_local",
    "parse_mac",
    "plan_sync",
]
