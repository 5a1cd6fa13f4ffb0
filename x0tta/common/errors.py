"""The project's error hierarchy.

Every error x0tta raises on purpose derives from :class:`X0ttaError`, so a caller at a boundary
(the supervisor, the CLI, the admin API) can tell a known failure, reported with its message, from
a bug. Errors come in kinds that decide what happens next, after kopf's permanent/temporary split:

* :class:`PermanentError` - retrying will not help (bad config, bad certificate, bad input).
* :class:`TemporaryError` - may clear by itself (kernel busy, peer unreachable); carries a delay hint.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec


class X0ttaError(Exception):
    """Base of every error raised on purpose by x0tta."""


class PermanentError(X0ttaError):
    """A failure that retrying will not fix."""


class TemporaryError(X0ttaError):
    """A failure that may clear by itself; ``delay`` is the suggested wait in seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class DecodeError(PermanentError):
    """Bytes from outside (kernel, peer, disk) that do not follow their format.

    Every decoder in x0tta raises this (or a subclass) and nothing else on bad input; the fuzz tests
    hold them to it.
    """


class CapabilityMissing(X0ttaError):
    """An optional capability is absent (no batman-adv, no CAP_BPF, no SPIRE socket).

    A subsystem that raises this is reported ``degraded`` with the message, not restarted in a loop.
    ``spec`` is the declared condition it is reported as (``x0tta/<subsystem>/conditions.py``).
    """

    def __init__(self, spec: ConditionSpec, message: str) -> None:
        if not isinstance(spec, ConditionSpec):
            raise TypeError(f"CapabilityMissing is raised with a declared ConditionSpec, not {spec!r}")
        super().__init__(message)
        self.spec = spec
        self.code = spec.code
