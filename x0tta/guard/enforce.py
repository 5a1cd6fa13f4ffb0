"""The admission guard's API and its enforcement in the kernel maps.

:class:`Guard` holds the pure :class:`~x0tta.guard.core.AdmissionState` and, once the probes are
loaded, mirrors it into the eBPF maps ``admitted`` and ``config`` (bound through
:meth:`Guard.bind`). Callers (the peer subsystem after an authenticated handshake, the admin
commands, tests) use:

* ``admit(mac, reason="") -> bool`` - let ``mac``'s batman-adv frames in; True if it was new;
* ``revoke(mac) -> bool`` - shut it out again; True if it was admitted (static MACs refuse);
* ``set_mode("observe" | "enforce")``;
* ``is_admitted(mac)``, ``to_json()``.

Each is one or two ``bpf()`` map syscalls (microseconds, no sleeping) so they are called directly
from the event loop. Before the probes are loaded (or when they cannot be) the state is kept and
written to the maps as soon as they bind: admissions are never lost for want of a kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from x0tta.guard.core import STATIC, AdmissionState, mac_from_link_local, parse_mac, plan_sync


class AdmittedMap(Protocol):
    """The part of a BPF map the guard needs (x0tta.probes.libbpf.BpfMap has it)."""

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def items(self) -> list[tuple[bytes, bytes]]: ...


class KernelMaps(NamedTuple):
    """The guard's two maps in the probes' eBPF object: ``admitted`` (MAC -> origin) and ``config``
    (key 0 -> mode)."""

    admitted: AdmittedMap
    config: AdmittedMap


ORIGIN = {1: (1).to_bytes(4, "little"), 2: (2).to_bytes(4, "little")}
MODE_VALUE = {"observe": (0).to_bytes(8, "little"), "enforce": (1).to_bytes(8, "little")}
ZERO_KEY = (0).to_bytes(4, "little")


class Guard:
    def __init__(self, mode: str = "observe", static: Iterable[str] = (), clock=time.time) -> None:
        self._clock = clock
        self.state = AdmissionState.seeded(mode, static, clock())
        self._admitted: AdmittedMap | None = None
        self._config: AdmittedMap | None = None

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
        config.update(ZERO_KEY, MODE_VALUE[self.state.mode])

    def unbind(self) -> None:
        self._admitted = self._config = None

    def attach(self, maps: KernelMaps | None) -> None:
        """Bind to ``maps`` (the probes loaded them), or unbind (None: the probes let them go)."""
        if maps is None:
            self.unbind()
        else:
            self.bind(maps.admitted, maps.config)

    def reconfigure(self, mode: str, static: Iterable[str]) -> None:
        """A config reload: new static set and mode; dynamic admissions stay."""
        self.state = self.state.reseed(static, self._clock())
        self._sync()
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        self.state = self.state.with_mode(mode)
        if self._config is not None:
            self._config.update(ZERO_KEY, MODE_VALUE[mode])

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

    def to_json(self) -> dict[str, object]:
        return {**self.state.to_json(), "enforced_in_kernel": self.bound}

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
    """Admit the MAC behind every authenticated peer session; revoke it when its last session goes.

    A callback for ``PeerService.subscribe`` (called on the loop with a ``PeerChange``: ``up``,
    ``host``, ``spiffe_id``). ``resolve(host) -> MAC | None`` maps the session's address to the MAC
    its batman-adv frames come from; by default the MAC inside an EUI-64 link-local address (the
    handshake over a hard interface's fe80:: address). A host it cannot map is reported through
    ``on_unresolved`` and admits nothing: authenticated but unplaceable is not admitted.
    """

    def __init__(
        self,
        guard: Guard,
        resolve: Callable[[str], bytes | None] = mac_from_link_local,
        on_unresolved: Callable[[str], None] | None = None,
    ) -> None:
        self.guard, self.resolve, self.on_unresolved = guard, resolve, on_unresolved
        self.sessions: dict[bytes, int] = {}  # MAC -> sessions up (in and out count separately)

    def __call__(self, change: object) -> None:
        host, up, who = getattr(change, "host", ""), getattr(change, "up", False), getattr(change, "spiffe_id", "")
        mac = self.resolve(host)
        if mac is None:
            if self.on_unresolved is not None:
                self.on_unresolved(host)
            return
        if up:
            self.sessions[mac] = self.sessions.get(mac, 0) + 1
            self.guard.admit(mac, reason=who)
            return
        left = self.sessions.get(mac, 0) - 1
        if left > 0:
            self.sessions[mac] = left
            return
        self.sessions.pop(mac, None)
        entry = self.guard.state.entries.get(mac)
        if entry is not None and entry.origin != STATIC:
            self.guard.revoke(mac)
