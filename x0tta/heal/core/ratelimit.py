"""A token bucket as a value: ``take(now)`` returns whether an action may run and the new bucket.

The bucket holds at most ``capacity`` tokens and gains ``rate`` tokens per second; an action costs
one. Over any interval of length T it therefore admits at most ``capacity + rate * T`` actions -
the invariant the property tests check. Time going backwards (a clock step) adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: float, rate: float, now: float) -> TokenBucket:
        return cls(capacity=capacity, rate=rate, tokens=capacity, updated=now)

    def refill(self, now: float) -> TokenBucket:
        if now <= self.updated:
            return self
        return replace(self, tokens=min(self.capacity, self.tokens + (now - self.updated) * self.rate), updated=now)

    def take(self, now: float) -> tuple[bool, TokenBucket]:
        b = self.refill(now)
        if b.tokens >= 1.0:
            return True, replace(b, tokens=b.tokens - 1.0)
        return False, b

    def wait(self, now: float) -> float:
        """Seconds until a token is available."""
        b = self.refill(now)
        return 0.0 if b.tokens >= 1.0 else (1.0 - b.tokens) / self.rate
