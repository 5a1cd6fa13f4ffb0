"""A sync round of the replicated mesh state asks its worker thread as little as it can: one step 1
for every peer while nothing arrives, and no hop for an answer that carries nothing (on a lab node
a hop costs more CPU than the rest of the round). What the peers get stays correct: a step 1 that
is older than the replica only makes a peer send what this node has already."""

from __future__ import annotations

from typing import Any

from tests.kit.pki import TestCA
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica
from x0tta.fleet.statesync import EMPTY, StateSync

TD = "mesh.test"


class Session:
    def __init__(self, answer: Any) -> None:
        self.answer, self.asked = answer, []

    async def request(self, method: str, body: bytes = b"", *, timeout: float | None = None) -> bytes:
        self.asked.append(body)
        return self.answer(body) if callable(self.answer) else self.answer


class Carrier:
    def __init__(self, sessions: list[Session]) -> None:
        self._sessions = sessions

    def register_method(self, name: str, handler: Any) -> None:
        pass

    def sessions(self) -> list[tuple[str, Any]]:
        return [("out", s) for s in self._sessions]


def replica(ca: TestCA, name: str) -> Replica:
    leaf = ca.issue(path=f"/node/{name}")
    return Replica(f"spiffe://{TD}/node/{name}", leaf.key, st.chain_der([leaf.cert]), st.Policy(TD),
                   {TD: ca.bundle()})


def counted(sync: StateSync) -> list[Any]:
    hops: list[Any] = []
    call = sync.call

    async def hop(fn: Any, *args: Any) -> Any:
        hops.append(fn)
        return await call(fn, *args)

    sync.call = hop  # type: ignore[method-assign]
    return hops


async def test_peers_that_lack_nothing_cost_one_hop_for_the_whole_round() -> None:
    ca = TestCA(TD, kind="p256")
    sync = StateSync(replica(ca, "a"))
    peers = [Session(EMPTY) for _ in range(4)]
    sync.attach(Carrier(peers))
    hops = counted(sync)
    assert await sync.sync_all() == 0
    assert len(hops) == 1  # one step 1, no hop for the four empty answers
    assert len({p.asked[0] for p in peers}) == 1 and all(len(p.asked) == 1 for p in peers)
    await sync.close()


async def test_what_a_peer_sends_is_applied_and_the_next_peer_gets_a_new_step_1() -> None:
    ca = TestCA(TD, kind="p256")
    a, b = StateSync(replica(ca, "a")), StateSync(replica(ca, "b"))
    at = b.clock.time()
    entry = {"macs": ["02:00:00:00:00:0b"], "role": "node", "version": "1", "at": at}
    await b.write({"registry": {b.replica.author: entry}})
    page = b.replica.page(st.decode(a.replica.step1()), 60 * 1024)  # what a lacks: b's entry
    first = Session(lambda body: page if body == a.replica.step1() else EMPTY)
    later = Session(EMPTY)
    a.attach(Carrier([first, later]))
    assert await a.sync_all() == 1
    assert (await a.state())["registry"].keys() == {b.replica.author}
    assert later.asked[0] != first.asked[0]  # asked with the state as it is after the first peer's update
    await a.close()
    await b.close()


async def test_a_page_of_known_updates_for_a_reused_step_1_is_asked_again_with_a_new_one() -> None:
    """The step 1 carried over from the peer before may be older than the replica: a page that held
    only what this node had is not "nothing more", the peer is asked once more."""
    ca = TestCA(TD, kind="p256")
    a = StateSync(replica(ca, "a"))
    entry = {"macs": ["02:00:00:00:00:0a"], "role": "node", "version": "1", "at": a.clock.time()}
    own = await a.write({"registry": {a.replica.author: entry}})
    known = st.encode(st.Updates((own,)))
    quiet = Session(EMPTY)
    stale = Session(lambda body: known if not stale.asked[:-1] else EMPTY)
    a.attach(Carrier([quiet, stale]))
    assert await a.sync_all() == 0
    assert len(quiet.asked) == 1 and len(stale.asked) == 2
    await a.close()
