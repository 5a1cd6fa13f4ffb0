"""The admission guard's API and its enforcement in the kernel maps.

:class:`Guard` holds the pure :class:`~x0tta.guard.core.AdmissionState` and, once the probes are
loaded, mirrors it into the eBPF maps ``admitted`` and ``config`` (bound through
:meth:`Guard.bind`). Callers (the peer subsystem after an authenticated handshake, the admin
commands, tests) use:

* ``admit(mac, reason="") -> bool`` - let ``mac``'s batman-adv frames in; True if it was new;
* ``revoke(mac) -> bool`` - shut it out again; True if it was admitted (static MACs refuse);
* ``set_mode("observe" | "enforce")``;
* ``set_ogm_window(margin, rate)`` - the window within which the program counts an OGM to its
  originator's stream (the detector's ``seqno_margin`` and ``seqno_rate``), written into
  ``config`` with the mode; ``ogm_entries()`` reads the program's ``ogms`` map;
* ``is_admitted(mac)``, ``to_json()``;
* ``session_up``/``session_down``/``expire`` - the MAC-to-SPIFFE-ID bindings behind dynamic
  admissions (:mod:`x0tta.guard.core.binding`), which :class:`PeerAdmission` drives;
* ``quarantine``/``release`` - shut a neighbour out for a while, and let it back.

Each is one or two ``bpf()`` map syscalls (microseconds, no sleeping) so they are called directly
from the event loop. Before the probes are loaded (or when they cannot be) the state is kept and
written to the maps as soon as they bind: admissions are never lost for want of a kernel.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from x0tta.guard.core import STATIC, AdmissionState, format_mac, mac_from_link_local, parse_mac, plan_sync
from x0tta.guard.core.binding import Bindings


class AdmittedMap(Protocol):
    """The part of a BPF map the guard needs (x0tta.probes.libbpf.BpfMap has it)."""

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def items(self) -> list[tuple[bytes, bytes]]: ...


class KernelMaps(NamedTuple):
    """The guard's maps in the probes' eBPF object: ``admitted`` (MAC -> origin), ``config``
    (key 0 -> mode) and ``ogms`` (originator -> its sequence-number streams, read-only here:
    :mod:`x0tta.guard.core.ogm`; None from an object without it)."""

    admitted: AdmittedMap
    config: AdmittedMap
    ogms: AdmittedMap | None = None


ORIGIN = {1: (1).to_bytes(4, "little"), 2: (2).to_bytes(4, "little")}
MODES = {"observe": 0, "enforce": 1}
# struct x0tta_config { u32 guard_mode; u32 ogm_margin; u64 ogm_ns_per_seqno; } (0: the program's default)
CONFIG = struct.Struct("<IIQ")
ZERO_KEY = (0).to_bytes(4, "little")


def config_value(mode: str, ogm_margin: int = 0, ogm_rate: float = 0.0) -> bytes:
    """The ``config`` entry: the mode, and the window the program splits an originator's OGM
    streams with (the detector's ``seqno_margin`` and ``seqno_rate``, as nanoseconds per seqno)."""
    ns = round(1e9 / ogm_rate) if ogm_rate > 0 else 0
    return CONFIG.pack(MODES[mode], max(0, min(ogm_margin, 0xFFFF_FFFF)), max(0, min(ns, (1 << 64) - 1)))


class Guard:
    def __init__(self, mode: str = "observe", static: Iterable[str] = (), clock=time.time) -> None:
        self._clock = clock
        self.state = AdmissionState.seeded(mode, static, clock())
        self.bindings = Bindings()
        self._admitted: AdmittedMap | None = None
        self._config: AdmittedMap | None = None
        self._ogms: AdmittedMap | None = None
        self.ogm_window: tuple[int, float] = (0, 0.0)  # (seqno_margin, seqno_rate); 0: the program's own

    @property
    def mode(self) -> str:
        return self.state.mode

    @property
    def bound(self) -> bool:
        return self._admitted is not None

    def bind(self, admitted: AdmittedMap, config: AdmittedMap) -> None:
        """Enforce through these maps: adopt dynamic admissions already pinned there, then make
        the maps equal to the state."""
        current = {bytes(k): int.from_bytes(v[:4], "little") for k, v in admitted.items() if len(k) == 6}
        self.state = self.state.adopt(current, self._clock())
        self._admitted, self._config = admitted, config
        self._sync(current)
        self._write_config()

    def unbind(self) -> None:
        self._admitted = self._config = self._ogms = None

    def attach(self, maps: KernelMaps | None) -> None:
        """Bind to ``maps`` (the probes loaded them), or unbind (None: the probes let them go)."""
        if maps is None:
            self.unbind()
        else:
            self.bind(maps.admitted, maps.config)
            self._ogms = maps.ogms

    def ogm_entries(self) -> list[tuple[bytes, bytes]]:
        """The raw entries of the kernel's ``ogms`` map; none while unbound. A batched map read
        (one syscall per few hundred originators): the guard calls it from its worker thread."""
        ogms = self._ogms
        return [] if ogms is None else ogms.items()

    def reconfigure(self, mode: str, static: Iterable[str]) -> None:
        """A config reload: new static set and mode; dynamic admissions stay."""
        self.state = self.state.reseed(static, self._clock())
        self._sync()
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        self.state = self.state.with_mode(mode)
        self._write_config()

    def set_ogm_window(self, margin: int, rate: float) -> None:
        """The window within which an OGM belongs to its originator's stream in the kernel: at most
        ``margin`` behind its newest seqno, ``margin`` + ``rate`` per second ahead."""
        self.ogm_window = (margin, rate)
        self._write_config()

    def _write_config(self) -> None:
        if self._config is not None:
            self._config.update(ZERO_KEY, config_value(self.state.mode, *self.ogm_window))

    def admit(self, mac: str | bytes, reason: str = "") -> bool:
        self.state, changed = self.state.admit(mac, self._clock(), reason)
        if self._admitted is not None:
            raw = parse_mac(mac)
            self._admitted.update(raw, ORIGIN[self.state.entries[raw].origin])
        return changed

    def revoke(self, mac: str | bytes) -> bool:
        self.state, changed = self.state.revoke(mac)
        if self._admitted is not None:
            self._admitted.delete(parse_mac(mac))
        return changed

    def is_admitted(self, mac: str | bytes) -> bool:
        return self.state.is_admitted(mac)

    def to_json(self, now: float | None = None) -> dict[str, object]:
        """The mode, the admissions and (with ``now``, monotonic) the bindings and quarantines."""
        out: dict[str, object] = {**self.state.to_json(), "enforced_in_kernel": self.bound}
        return out if now is None else {**out, **self.bindings.to_json(now)}

    # -- bindings and quarantine (times: the caller's monotonic ``now``) ----------------------------

    def session_up(self, mac: bytes, spiffe_id: str, interface: str, now: float) -> str:
        """An authenticated session of ``spiffe_id`` on ``mac``'s link: bind and admit; or the reason
        it is refused (quarantined), admitting nothing."""
        self.bindings, why = self.bindings.up(mac, spiffe_id, interface, now)
        if not why:
            self.admit(mac, reason=spiffe_id)
        return why

    def session_down(self, mac: bytes, now: float, reason: str = "") -> bool:
        """A session of ``mac`` closed; True when that ended its binding and admission (revoked)."""
        self.bindings, ended = self.bindings.down(mac, now, reason)
        if ended:
            self._unadmit(mac)
        return ended

    def expire(self, now: float, grace: float) -> tuple[list[bytes], list[bytes]]:
        """End the bindings without a session for ``grace`` s (and their admissions) and the
        quarantines whose TTL ran out: (unbound MACs, released MACs)."""
        self.bindings, lost, released = self.bindings.expire(now, grace)
        for mac in lost:
            self._unadmit(mac)
        return lost, released

    def quarantine(self, mac: str | bytes, now: float, ttl: float, reason: str, neighbours: Iterable[bytes],
                   share: float) -> str:
        """Quarantine ``mac`` for ``ttl`` s (binding and admission end, sessions are refused); "" or
        why not (a MAC the config admits, or more than ``share`` of the neighbours)."""
        raw = parse_mac(mac)
        entry = self.state.entries.get(raw)
        if entry is not None and entry.origin == STATIC:
            return f"{format_mac(raw)} is admitted by the config (guard.admitted_macs)"
        self.bindings, why = self.bindings.quarantine(raw, now, ttl, reason, neighbours, share)
        if not why:
            self._unadmit(raw)
        return why

    def unbind_identity(self, spiffe_id: str) -> list[bytes]:
        """End the bindings, and the admissions, of every MAC bound to ``spiffe_id`` (revoked)."""
        self.bindings, macs = self.bindings.revoke(spiffe_id)
        for mac in macs:
            self._unadmit(mac)
        return macs

    def release(self, who: str) -> list[bytes]:
        """End the quarantine of a MAC or of every MAC quarantined with a SPIFFE ID."""
        self.bindings, released = self.bindings.release(who)
        return released

    def _unadmit(self, mac: bytes) -> None:
        entry = self.state.entries.get(mac)
        if entry is not None and entry.origin != STATIC:
            self.revoke(mac)

    def _sync(self, current: dict[bytes, int] | None = None) -> None:
        if self._admitted is None:
            return
        if current is None:
            current = {bytes(k): int.from_bytes(v[:4], "little") for k, v in self._admitted.items()}
        puts, deletes = plan_sync(self.state.desired(), current)
        for mac, origin in puts.items():
            self._admitted.update(mac, ORIGIN[origin])
        for mac in deletes:
            self._admitted.delete(mac)


class PeerAdmission:
    """Bind and admit the MAC behind every authenticated peer session; end that when its sessions go.

    A callback for ``PeerService.subscribe`` (called on the loop with a ``PeerChange``: ``up``,
    ``host``, ``spiffe_id``, ``reason``). ``resolve(host) -> MAC | None`` maps the session's address
    to the MAC its batman-adv frames come from; by default the MAC inside an EUI-64 link-local
    address (the handshake over a hard interface's fe80:: address, whose ``%zone`` names the
    link). A host it cannot map is reported through ``on_unresolved`` and admits nothing:
    authenticated but unplaceable is not admitted. The binding outlives its last session by the
    guard's ``session_grace`` (:meth:`Guard.expire`), except after a revocation.

    :meth:`refusal` is the peer subsystem's gate: a session of a quarantined MAC or SPIFFE ID is
    refused before anything admits it.
    """

    def __init__(
        self,
        guard: Guard,
        resolve: Callable[[str], bytes | None] = mac_from_link_local,
        on_unresolved: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard, self.resolve, self.on_unresolved, self.clock = guard, resolve, on_unresolved, clock

    def __call__(self, change: object) -> None:
        host, up, who = getattr(change, "host", ""), getattr(change, "up", False), getattr(change, "spiffe_id", "")
        mac = self.resolve(host)
        if mac is None:
            if self.on_unresolved is not None:
                self.on_unresolved(host)
            return
        if up:
            zone = host.strip("[]").split("%", 1)[1] if "%" in host else ""
            self.guard.session_up(mac, who, zone, self.clock())
        else:
            self.guard.session_down(mac, self.clock(), getattr(change, "reason", ""))

    def refusal(self, host: str, spiffe_id: str) -> str:
        """Why a session from ``host`` authenticated as ``spiffe_id`` must be refused, or ""."""
        mac = self.resolve(host)
        if mac is None:
            return self.guard.bindings.refusal(b"", spiffe_id)
        return self.guard.bindings.refusal(mac, spiffe_id)
