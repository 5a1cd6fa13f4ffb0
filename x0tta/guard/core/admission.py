"""Admission state of the guard. Pure: takes data (and ``now`` where it matters), returns data.

The eBPF guard (``ebpf/x0tta_probes.bpf.c``) passes a batman-adv frame only if its source MAC is
in the kernel map ``admitted``; this module decides what that map should hold. Two origins:

* **static** MACs come from ``[guard] admitted_macs`` (seeds for nodes without a handshake, and
  for bootstrapping a mesh);
* **dynamic** MACs are admitted at run time through :meth:`AdmissionState.admit`, by the peer
  subsystem after an authenticated handshake, and leave with :meth:`AdmissionState.revoke`.

A static MAC cannot be revoked (the config says it is trusted; change the config). Re-seeding on a
config reload replaces the static set and keeps the dynamic one.

:func:`plan_sync` compares the desired set with what the kernel map holds and returns the puts and
deletes that make them equal: applying it twice is a no-op (the adapter is idempotent).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from x0tta.common.errors import DecodeError, PermanentError

MODES = ("observe", "enforce")
STATIC = 1
DYNAMIC = 2
ORIGIN_NAMES = {STATIC: "static", DYNAMIC: "dynamic"}

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}")


class BadMac(DecodeError):
    """Text that is not a MAC address."""


class StaticMacRevoke(PermanentError):
    """Revoking a MAC that the config admits."""


def parse_mac(text: str | bytes) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``, or bare hex, or 6 raw bytes) to 6 bytes."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) != 6:
            raise BadMac(f"a MAC has 6 bytes, got {len(text)}")
        return bytes(text)
    if not isinstance(text, str) or not _MAC.fullmatch(text):
        raise BadMac(f"not a MAC address: {text!r}")
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


def format_mac(raw: bytes) -> str:
    return raw.hex(":")


@dataclass(frozen=True)
class Admission:
    origin: int  # STATIC or DYNAMIC
    since: float  # wall-clock seconds, for operators
    reason: str = ""


@dataclass(frozen=True)
class AdmissionState:
    mode: str = "observe"
    entries: Mapping[bytes, Admission] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PermanentError(f"guard mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def seeded(cls, mode: str, static: Iterable[str | bytes], now: float) -> AdmissionState:
        return cls(mode).reseed(static, now)

    def reseed(self, static: Iterable[str | bytes], now: float) -> AdmissionState:
        """Replace the static set; dynamic admissions stay (a static entry wins over a dynamic one)."""
        wanted = {parse_mac(m) for m in static}
        entries = {m: a for m, a in self.entries.items() if a.origin == DYNAMIC}
        for mac in wanted:
            old = self.entries.get(mac)
            entries[mac] = old if old and old.origin == STATIC else Admission(STATIC, now, "config")
        return replace(self, entries=entries)

    def with_mode(self, mode: str) -> AdmissionState:
        return replace(self, mode=mode)

    def admit(self, mac: str | bytes, now: float, reason: str = "") -> tuple[AdmissionState, bool]:
        """Admit ``mac``; returns the new state and whether anything changed."""
        raw = parse_mac(mac)
        if raw in self.entries:
            return self, False
        return replace(self, entries={**self.entries, raw: Admission(DYNAMIC, now, reason)}), True

    def revoke(self, mac: str | bytes) -> tuple[AdmissionState, bool]:
        raw = parse_mac(mac)
        current = self.entries.get(raw)
        if current is None:
            return self, False
        if current.origin == STATIC:
            raise StaticMacRevoke(f"{format_mac(raw)} is admitted by the config (guard.admitted_macs)")
        return replace(self, entries={m: a for m, a in self.entries.items() if m != raw}), True

    def adopt(self, kernel: Mapping[bytes, int], now: float) -> AdmissionState:
        """Take over dynamic admissions found in a pinned map after a restart, so that an agent
        restart does not cut off neighbours that were admitted before it (their sessions re-run
        the handshake and the peer subsystem revokes them if it fails)."""
        entries = dict(self.entries)
        for mac, origin in kernel.items():
            if origin == DYNAMIC and mac not in entries:
                entries[mac] = Admission(DYNAMIC, now, "adopted from pinned map")
        return replace(self, entries=entries)

    def desired(self) -> dict[bytes, int]:
        return {m: a.origin for m, a in self.entries.items()}

    def is_admitted(self, mac: str | bytes) -> bool:
        return parse_mac(mac) in self.entries

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "admitted": [
                {"mac": format_mac(m), "origin": ORIGIN_NAMES[a.origin], "since": a.since, "reason": a.reason}
                for m, a in sorted(self.entries.items())
            ],
        }


def plan_sync(
    desired: Mapping[bytes, int], current: Mapping[bytes, int]
) -> tuple[dict[bytes, int], list[bytes]]:
    """(entries to write, keys to delete) that turn ``current`` into ``desired``."""
    puts = {m: o for m, o in desired.items() if current.get(m) != o}
    deletes = sorted(m for m in current if m not in desired)
    return puts, deletes


def mac_from_link_local(host: str) -> bytes | None:
    """The MAC inside a modified-EUI-64 IPv6 link-local address (RFC 4291 appendix A: the MAC with
    ff:fe in the middle and the universal/local bit flipped), or None when ``host`` is not one.
    A peer that authenticates from fe80::...%if over a hard interface is, in the default Linux
    addressing (addr_gen_mode eui64), the MAC its batman-adv frames come from on that link."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version != 6 or not ip.is_link_local:
        return None
    iid = ip.packed[8:]
    if iid[3:5] != b"\xff\xfe":
        return None
    return bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:8]


def link_local_from_mac(mac: str | bytes, ifname: str) -> str:
    """The modified-EUI-64 link-local address (with its ``%ifname`` zone) that Linux gives the
    interface with this MAC: the inverse of :func:`mac_from_link_local`, used to dial a batman-adv
    neighbour on the hard interface it was heard on."""
    raw = mac if isinstance(mac, bytes) else bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    iid = bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:6]
    address = ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)
    return f"{address}%{ifname}"
