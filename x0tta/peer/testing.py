"""Running the peer subsystem outside the agent, for tests and benchmarks: an identity provider
over in-memory credentials and a context with a private metrics registry (run it with
:func:`x0tta.telemetry.testing.running`).

The certificates for it come from ``tests/kit/pki.py`` (a throwaway CA built on the built-in CA's
certificate code).
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.peer.tls import Credentials
from x0tta.telemetry.testing import StandaloneContext


class StaticIdentity:
    """An identity provider over an in-memory source; :meth:`rotate` publishes new material."""

    def __init__(self, creds: Credentials) -> None:
        from x0tta.identity.source import SourceBase

        self.source = SourceBase()
        self.source._publish(creds.svid, creds.bundles, creds.revocations)

    async def wait_source(self, timeout: float | None = None) -> object:
        return self.source

    def rotate(self, creds: Credentials) -> None:
        self.source._publish(creds.svid, creds.bundles, creds.revocations)


@dataclass
class FakeContext(StandaloneContext):
    """What the agent hands a subsystem, with a private metrics registry."""

    name: str = "peer"


def sample(ctx: FakeContext, name: str, **labels: str) -> float:
    """A metric's value in the context's registry (0 when it has no such sample yet)."""
    return ctx.registry.get_sample_value(name, labels) or 0.0
