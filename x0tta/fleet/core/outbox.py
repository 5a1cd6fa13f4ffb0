"""What the outbox keeps, in what order it delivers, and what it drops when full.

Every message the node sends goes through the outbox (:mod:`x0tta.fleet.outbox` stores it in
SQLite). The rules, here without I/O:

* **Order.** Each message gets a sequence number when it is stored; delivery is by ascending
  sequence (oldest first), after every reconnection too. A message leaves the outbox only when the
  broker acknowledged it (MQTT 5 PUBACK, QoS 1) - or refused it for good (a PUBACK reason code of
  0x80 or more, e.g. 0x87 "not authorized": retrying cannot help, the refusal is counted).
* **Idempotency.** Every message carries a key; storing a key that is already queued is a no-op,
  and the key travels in the payload (``id``) so that a receiver recognises the duplicates QoS 1
  allows after a reconnection.
* **Superseding.** A message that carries state (``coalesce``) replaces the undelivered message of
  its topic: the broker retains only the latest state anyway, so the older one is never worth a
  slot.
* **Bound.** At most ``capacity`` messages. When one more arrives, the victims are chosen by
  :func:`evictions`: the lowest priority first (informational before what matters), and among
  equals the oldest first. The arriving message is a candidate like the others (it is the
  newest): an informational message that finds the outbox full of important ones is the one
  dropped. Every drop is counted.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

NEW = -1  # the sequence number of the arriving message among eviction candidates (not stored yet)

# MQTT 5 reason codes (OASIS MQTT 5.0, 2.4 "Reason Code"): below 0x80 is success.
REASON_FAILURE_FROM = 0x80


class Priority(enum.IntEnum):
    """Ordered so that the lower one goes first when the outbox is full."""

    INFO = 0  # informational: a symptom cleared, a periodic figure
    IMPORTANT = 1  # state and the events an operator acts on: incidents, actions, harm


@dataclass(frozen=True)
class Candidate:
    """A message that could be dropped: its sequence number (``NEW`` for the arriving one) and priority."""

    seq: int
    priority: int


def _order(c: Candidate) -> tuple[int, bool, int]:
    # Lowest priority first; among equals the oldest, and the arriving message is the newest.
    return (c.priority, c.seq == NEW, c.seq)


def evictions(candidates: Sequence[Candidate], excess: int) -> list[Candidate]:
    """The ``excess`` candidates to drop so that the outbox stays within its capacity.

    ``candidates`` need only hold, per priority, the ``excess`` oldest stored messages and the
    arriving one: nothing else can be chosen.
    """
    if excess <= 0:
        return []
    return sorted(candidates, key=_order)[:excess]


def delivered(reason_code: int) -> bool:
    """A PUBACK with this reason code means the broker took the message (0x00, or 0x10 "no
    matching subscribers")."""
    return reason_code < REASON_FAILURE_FROM
