"""Where a rollout lives in etcd, and the compare-and-swap that changes it.

Keys, under the mesh's prefix (``[coord] prefix``, default ``/x0tta``)::

    nodes/<node>                          registered node and its mesh segment (under the node's lease)
    rollouts/<id>/doc                     the signed document: {"rollout": ..., "signature": b64}
    rollouts/<id>/state                   RolloutState as JSON (x0tta.coord.core.rollout)
    rollouts/<id>/turn/<slot>             the node holding turn slot <slot> (< wave), under its turn lease
    rollouts/<id>/applied/<node>/<token>  the node's apply interval in that turn (written fenced)
    rollouts/<id>/fenced/<node>/<token>   a node that found its turn lost notes it here (not fenced)

A turn's **token** is the revision at which its turn key was created. Every write a node makes
under its turn is a txn that compares the turn key's mod_revision with the token: once the lease
is gone (expired, revoked) the key is deleted, the compare fails and etcd refuses the write, so a
holder that comes back late cannot record anything under the turn it lost.

The state changes only by compare-and-swap on its own mod_revision (:meth:`RolloutStore.update`),
so nodes, the CLI and other nodes clearing a lost turn never overwrite one another.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from x0tta.common.errors import DecodeError, TemporaryError
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import Rollout, RolloutState
from x0tta.coord.etcd import Compare, EtcdClient, KeyValue, Op, absent, mod_revision_is, put

UPDATE_ATTEMPTS = 20


class TurnLost(TemporaryError):
    """The turn key is gone or is another turn's: this node no longer holds its turn."""


class Conflict(TemporaryError):
    """The state kept changing under a compare-and-swap."""


@dataclass
class View:
    """One rollout as read at one revision."""

    id: str
    rollout: Rollout | None
    signature: bytes
    doc_revision: int
    state: RolloutState | None
    state_revision: int
    turns: dict[int, tuple[str, int]] = field(default_factory=dict)  # slot -> (node, token)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<node>/<token>" -> record
    fenced: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str = ""

    def holder_slot(self, node: str) -> tuple[int, int] | None:
        for slot, (who, token) in self.turns.items():
            if who == node:
                return slot, token
        return None


class RolloutStore:
    def __init__(self, client: EtcdClient, prefix: str = "/x0tta") -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")

    # -- keys -------------------------------------------------------------------------------------

    def node_key(self, node: str) -> str:
        return f"{self.prefix}/nodes/{node}"

    def base(self, rid: str) -> str:
        return f"{self.prefix}/rollouts/{rid}/"

    def doc_key(self, rid: str) -> str:
        return self.base(rid) + "doc"

    def state_key(self, rid: str) -> str:
        return self.base(rid) + "state"

    def turn_key(self, rid: str, slot: int) -> str:
        return self.base(rid) + f"turn/{slot}"

    def record_key(self, rid: str, node: str, token: int) -> str:
        return self.base(rid) + f"applied/{node}/{token}"

    def fenced_key(self, rid: str, node: str, token: int) -> str:
        return self.base(rid) + f"fenced/{node}/{token}"

    # -- reading ----------------------------------------------------------------------------------

    async def registered(self) -> list[str]:
        return sorted(await self.registrations())

    async def registrations(self) -> dict[str, str]:
        """The registered nodes and their mesh segments ("" for none)."""
        kvs, _ = await self.client.range(f"{self.prefix}/nodes/", prefix=True)
        out = {}
        for kv in kvs:
            try:
                seg = json.loads(kv.value).get("segment", "")
            except (ValueError, AttributeError):
                seg = ""
            out[kv.key.rsplit("/", 1)[1]] = str(seg or "")
        return out

    async def load(self, rid: str) -> View | None:
        kvs, _ = await self.client.range(self.base(rid), prefix=True)
        views = self._views(kvs)
        return views.get(rid)

    async def list(self) -> list[View]:
        kvs, _ = await self.client.range(f"{self.prefix}/rollouts/", prefix=True)
        return sorted(self._views(kvs).values(), key=lambda v: v.id)

    def _views(self, kvs: Sequence[KeyValue]) -> dict[str, View]:
        root = f"{self.prefix}/rollouts/"
        views: dict[str, View] = {}
        for kv in kvs:
            rid, _, rest = kv.key[len(root):].partition("/")
            v = views.setdefault(rid, View(rid, None, b"", 0, None, 0))
            try:
                if rest == "doc":
                    d = json.loads(kv.value)
                    v.rollout = Rollout.from_json(d["rollout"])
                    v.signature = base64.b64decode(d.get("signature", ""))
                    v.doc_revision = kv.mod_revision
                elif rest == "state":
                    v.state = RolloutState.from_json(json.loads(kv.value))
                    v.state_revision = kv.mod_revision
                elif rest.startswith("turn/"):
                    v.turns[int(rest[5:])] = (kv.value.decode(errors="replace"), kv.mod_revision)
                elif rest.startswith("applied/"):
                    v.records[rest[8:]] = json.loads(kv.value)
                elif rest.startswith("fenced/"):
                    v.fenced[rest[7:]] = json.loads(kv.value)
            except (DecodeError, ValueError, KeyError, TypeError) as exc:
                v.error = f"{kv.key}: {exc}"
        return views

    # -- writing ----------------------------------------------------------------------------------

    async def create(self, rollout: Rollout, signature: bytes, now: float) -> RolloutState:
        """Store a new rollout and its first state, its targets resolved against the nodes
        registered now. Refused (DecodeError) if the id is taken."""
        state = core.start(rollout, await self.registrations(), now)
        doc = {"rollout": rollout.to_json(), "signature": base64.b64encode(signature).decode()}
        r = await self.client.txn([absent(self.doc_key(rollout.id))],
                                  [put(self.doc_key(rollout.id), json.dumps(doc, sort_keys=True)),
                                   put(self.state_key(rollout.id), json.dumps(state.to_json()))])
        if not r.succeeded:
            raise DecodeError(f"rollout {rollout.id} exists already")
        return state

    async def update(self, rid: str, change: Callable[[RolloutState], RolloutState], *,
                     fence: tuple[int, int] | None = None, extra: Sequence[Op] = (),
                     when: Callable[[View], bool] | None = None) -> RolloutState:
        """Compare-and-swap the state with ``change(state)`` (retried while others change it).
        ``fence=(slot, token)``: the write goes through only while that turn is held (else
        :class:`TurnLost`). ``extra`` ops are written in the same txn. ``when``: the change is
        made only while it holds of the view read for that attempt (else the state is returned
        unchanged)."""
        for _ in range(UPDATE_ATTEMPTS):
            view = await self.load(rid)
            if view is None or view.state is None:
                raise DecodeError(f"rollout {rid} has no state")
            if fence is not None and view.turns.get(fence[0], ("", 0))[1] != fence[1]:
                raise TurnLost(f"turn {fence[0]} of rollout {rid} (token {fence[1]}) is no longer held")
            if when is not None and not when(view):
                return view.state
            new = change(view.state)
            compare: list[Compare] = [mod_revision_is(self.state_key(rid), view.state_revision)]
            if fence is not None:
                compare.append(mod_revision_is(self.turn_key(rid, fence[0]), fence[1]))
            r = await self.client.txn(compare, [put(self.state_key(rid), json.dumps(new.to_json())), *extra])
            if r.succeeded:
                return new
        raise Conflict(f"rollout {rid}: the state kept changing under {UPDATE_ATTEMPTS} attempts")

    async def fenced_put(self, rid: str, slot: int, token: int, key: str, value: dict[str, Any]) -> None:
        r = await self.client.txn([mod_revision_is(self.turn_key(rid, slot), token)],
                                  [put(key, json.dumps(value, sort_keys=True))])
        if not r.succeeded:
            raise TurnLost(f"turn {slot} of rollout {rid} (token {token}) is no longer held")
