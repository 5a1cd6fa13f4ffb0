"""What every SVID source shares: the current state, its subscribers, and counting rotations.

A concrete source (built-in files, Workload API) feeds new material into :meth:`SourceBase._publish`
from the event loop thread; this class decides whether the SVID rotated (a different leaf), keeps
the new state, and calls the subscribers in order. A subscriber that raises is logged and does not
stop the others: one broken consumer must not keep the rest on an old certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from x0tta.identity.core.types import Bundles, RevocationList, SourceUpdate, SvidUnavailable, X509Svid


class SourceBase:
    kind = "base"

    def __init__(self, log: Any = None) -> None:
        self.log = log if log is not None else structlog.get_logger("x0tta.identity").bind(source=self.kind)
        self._svid: X509Svid | None = None
        self._bundles: Bundles = {}
        self._revocations: tuple[RevocationList, ...] = ()
        self._subscribers: list[Callable[[SourceUpdate], None]] = []
        self.rotations = 0
        self.updates = 0
        self.last_error: str | None = None
        self.closed = False

    async def start(self) -> None:
        raise NotImplementedError

    async def refresh(self) -> bool:
        """Re-read now what can be re-read (SIGHUP); True if the state changed."""
        return False

    async def close(self) -> None:
        self.closed = True

    def retry_interval(self) -> float | None:
        """After a failed :meth:`start`: how soon to try again, or None to back off (a real error)."""
        return None

    def svid(self) -> X509Svid:
        if self._svid is None:
            raise SvidUnavailable(self.last_error or f"{self.kind} source has no SVID yet")
        return self._svid

    def has_svid(self) -> bool:
        return self._svid is not None

    def bundles(self) -> Bundles:
        return self._bundles

    def revocations(self) -> tuple[RevocationList, ...]:
        return self._revocations

    def subscribe(self, callback: Callable[[SourceUpdate], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _publish(
        self, svid: X509Svid, bundles: Bundles, revocations: tuple[RevocationList, ...]
    ) -> SourceUpdate | None:
        """Take new material; notify subscribers if anything changed. Returns the update, if any."""
        old = self._svid
        rotated = old is not None and old.leaf != svid.leaf
        changed = (
            old is None
            or rotated
            or _roots(bundles) != _roots(self._bundles)
            or _revs(revocations) != _revs(self._revocations)
        )
        self._svid, self._bundles, self._revocations = svid, dict(bundles), tuple(revocations)
        if not changed:
            return None
        self.updates += 1
        if rotated:
            self.rotations += 1
        update = SourceUpdate(svid, self._bundles, self._revocations, rotated)
        for cb in list(self._subscribers):
            try:
                cb(update)
            except Exception:  # a broken subscriber must not starve the others
                self.log.exception("identity_subscriber_failed", subscriber=repr(cb))
        return update


def _roots(bundles: Bundles) -> dict[str, frozenset[bytes]]:
    return {td: b.fingerprint_set() for td, b in bundles.items()}


def _revs(revs: tuple[RevocationList, ...]) -> tuple[tuple[int, frozenset[int]], ...]:
    return tuple((r.number, r.serials) for r in revs)


class SharedSource(SourceBase):
    """The source other subsystems hold: it outlives restarts of the identity subsystem.

    The identity subsystem builds a new concrete source each time it (re)starts and
    :meth:`attach`-es it here; this object republishes what the current one publishes. A consumer
    (the peer transport) subscribes once and keeps receiving updates across restarts and source
    changes, instead of holding a closed source that never speaks again.
    """

    kind = "shared"

    def __init__(self, log: Any = None) -> None:
        super().__init__(log)
        self.inner: SourceBase | None = None

    def attach(self, inner: SourceBase) -> Callable[[], None]:
        """Follow ``inner`` from now on; returns the function that stops following it."""
        self.inner = inner
        self.kind = inner.kind
        if inner.has_svid():
            self._publish(inner.svid(), inner.bundles(), inner.revocations())
        return inner.subscribe(lambda u: self._publish(u.svid, u.bundles, u.revocations))

    async def start(self) -> None:
        if self.inner is None:
            raise SvidUnavailable("identity subsystem not started")
        await self.inner.start()

    async def refresh(self) -> bool:
        return await self.inner.refresh() if self.inner is not None else False

    async def close(self) -> None:
        """Consumers do not close the shared source; the identity subsystem closes the inner one."""
