"""The reconnection schedule: exponential backoff with jitter, the random draw passed in.

After the ``attempt``-th failed connection in a row (0 for the first) the client waits between
half and all of ``min(cap, initial * 2**attempt)``: the base doubles so that a broker down for an
hour is not hammered, the cap keeps a node from waiting longer than ``cap`` once it is back, and
the jitter ("equal jitter") keeps a fleet that lost its broker at the same moment from coming back
in one wave, while the lower half keeps every node from retrying at once right away.
"""

from __future__ import annotations


def backoff_delay(attempt: int, initial: float, cap: float, draw: float) -> float:
    """Seconds to wait after ``attempt`` failures in a row; ``draw`` is uniform in [0, 1)."""
    if attempt < 0 or not 0.0 <= draw < 1.0 or initial <= 0 or cap < initial:
        raise ValueError(f"bad backoff arguments: attempt={attempt} initial={initial} cap={cap} draw={draw}")
    base = min(cap, initial * 2.0 ** min(attempt, 64))
    return base / 2.0 + draw * base / 2.0
