"""The replicated mesh state: documents that diverged during a partition converge through the sync
messages; forged updates are refused, each with its reason; compaction keeps the state and moves
the epoch; the codec round-trips and refuses what is not a message."""

from __future__ import annotations

import random
from collections import Counter

import pycrdt
import pytest

from tests.kit.pki import Leaf, TestCA
from x0tta.fleet.core import state as st
from x0tta.fleet.core.state import Reason
from x0tta.fleet.replica import Replica

TD = "mesh.test"
REVOKER = f"spiffe://{TD}/node/ca"


def nid(name: str) -> str:
    return f"spiffe://{TD}/node/{name}"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(TD, kind="p256")  # ECDSA keeps the module fast; test_mldsa_svid_signs covers ML-DSA-65


@pytest.fixture(scope="module")
def leaves(ca: TestCA) -> dict[str, Leaf]:
    return {name: ca.issue(path=f"/node/{name}") for name in ("a", "b", "c", "ca")}


@pytest.fixture
def now(ca: TestCA) -> float:
    return ca.cert.not_valid_before_utc.timestamp() + 3600 + 120  # inside every leaf's validity


def replica(ca: TestCA, leaf: Leaf, name: str, **policy) -> Replica:
    pol = st.Policy(TD, revokers=frozenset({REVOKER}), **policy)
    return Replica(nid(name), leaf.key, st.chain_der([leaf.cert]), pol, {TD: ca.bundle()})


@pytest.fixture
def nodes(ca, leaves) -> dict[str, Replica]:
    return {name: replica(ca, leaf, name) for name, leaf in leaves.items()}


def sync(x: Replica, y: Replica, now: float) -> list:
    """The two steps, both ways: x asks y, y asks x. Returns every outcome."""
    outcomes = []
    for asker, answerer in ((x, y), (y, x)):
        replies, _ = answerer.receive(asker.step1(), now)
        for reply in replies:
            back, got = asker.receive(reply, now)
            outcomes += got
            for joined in back:  # the asker joined a newer epoch: its own entries go back
                assert answerer.receive(joined, now)[0] == []
    return outcomes


def incident(now: float) -> dict:
    return {"kind": "loss", "target": "hardif:eth1", "severity": "warning", "opened": now, "closed": None,
            "summary": "", "at": now}


def register(r: Replica, now: float, role: str = "node", macs=("02:00:00:00:00:01",)) -> st.Update:
    return r.write(now, {"registry": {r.author: {"macs": list(macs), "role": role, "version": "1.0", "at": now}}})


def test_partitioned_sides_write_then_converge_when_healed(nodes, now):
    a, b, c, rev = nodes["a"], nodes["b"], nodes["c"], nodes["ca"]
    for r in nodes.values():
        register(r, now)
    for x, y in ((a, b), (b, c), (c, rev), (rev, a), (a, b)):  # a ring, and once more to close it
        sync(x, y, now)
    assert a.state() == b.state() == c.state() == rev.state()
    assert len(a.state()["registry"]) == 4
    # the partition: {a, b} | {c, ca}; each side writes, and syncs only within itself
    a.write(now + 1, {"quarantine": {f"{a.author} {nid('x')}": {"target": nid("x"), "macs": [], "reason": "replay",
                                                          "until": now + 600, "at": now}}})
    b.add_incident(now + 2, "i1", "link_down", "n2-n3 down for 4 s")
    register(b, now + 3, macs=("02:00:00:00:00:02", "02:00:00:00:00:03"))
    c.add_incident(now + 1, "i9", "loss", "30 % loss on mesh0")
    rev.write(now + 2, {"revocations": {nid("old"): {"by": rev.author, "reason": "decommissioned", "at": now,
                                                     "serials": ["7"]}}})
    sync(a, b, now + 5)
    sync(c, rev, now + 5)
    assert a.state() == b.state() != c.state() == rev.state()
    # healed: one link across is enough, the updates are relayed with their authors' signatures
    outcomes = sync(b, c, now + 10)
    assert outcomes and all(o.applied for o in outcomes)
    sync(a, b, now + 11)
    sync(c, rev, now + 11)
    states = [r.state() for r in nodes.values()]
    assert all(s == states[0] for s in states)
    s = states[0]
    assert s["registry"][b.author]["macs"] == ["02:00:00:00:00:02", "02:00:00:00:00:03"]
    assert {k.split(" ")[1] for k in s["incidents"]} == {"i1", "i9"}
    assert s["quarantine"][f"{a.author} {nid('x')}"]["reason"] == "replay"
    assert nid("old") in s["revocations"]
    assert sum(sum(r.refused.values()) for r in nodes.values()) == 0
    # a further sync has nothing to carry
    assert all(not r.receive(x.step1(), now)[0] for r in nodes.values() for x in nodes.values() if x is not r)


def test_updates_applied_in_any_order_give_one_state(nodes, now):
    a, b = nodes["a"], nodes["b"]
    u1 = register(a, now)
    u2 = a.add_incident(now + 1, "i1", "loss", "x")
    assert b.apply(u2, now).refusal.reason is Reason.GAP  # its predecessor is missing: nothing merged
    assert b.state()["registry"] == {}
    assert b.apply(u1, now).applied and b.apply(u2, now).applied
    assert b.apply(u1, now).duplicate
    assert a.state() == b.state()


def forge(author_leaf: Leaf, author: str, writer_client: int, write, now: float, epoch: int = 0,
          key=None) -> st.Update:
    """An update made outside a Replica: a raw pycrdt document with any client id, any content."""
    doc = pycrdt.Doc(client_id=writer_client)
    with doc.transaction():
        write(doc)
        doc.get("heads", type=pycrdt.Map)[author] = st.encode_value("heads", {"seq": 1, "at": now})
    end = max(1, st.decode_vector(doc.get_state()).get(st.client_id(author), 0))  # a range is never empty
    u = st.Update(author, epoch, 0, end, now, doc.get_update(), st.chain_der([author_leaf.cert]))
    return st.sign(u, key or author_leaf.key)


def registry_of(target: str, now: float):
    value = st.encode_value("registry", {"macs": [], "role": "gateway", "version": "9", "at": now})
    return lambda doc: doc.get("registry", type=pycrdt.Map).__setitem__(target, value)


def test_forged_updates_are_refused_with_their_reason_and_counted(ca, leaves, nodes, now):
    a, b = nodes["a"], nodes["b"]
    la, lb = leaves["a"], leaves["b"]
    other = TestCA("other.test", kind="p256")
    stranger = other.issue(path="/node/z")
    outsider = TestCA(TD, kind="p256").issue(path="/node/z")  # same trust domain, a CA the mesh does not trust
    cid_a = st.client_id(a.author)
    cases = [
        # b's certificate, signed with a's key
        (forge(lb, b.author, st.client_id(b.author), registry_of(b.author, now), now, key=la.key),
         Reason.BAD_SIGNATURE),
        (forge(stranger, nid("z").replace(TD, "other.test"), st.client_id("z"), registry_of("z", now), now),
         Reason.NOT_MEMBER),
        (forge(outsider, nid("z"), st.client_id(nid("z")), registry_of(nid("z"), now), now), Reason.NOT_MEMBER),
        # a member writing another member's entry, with its own client id
        (forge(la, a.author, cid_a, registry_of(b.author, now), now), Reason.FOREIGN_WRITE),
        # ... or items under another client id
        (forge(la, a.author, st.client_id(b.author), registry_of(a.author, now), now), Reason.FOREIGN_CLIENT),
        (forge(la, a.author, cid_a, lambda d: d.get("evil", type=pycrdt.Map).__setitem__("k", "v"), now),
         Reason.UNKNOWN_SECTION),
        (forge(la, a.author, cid_a, lambda d: d.get("registry", type=pycrdt.Map).__setitem__(a.author, "{}"), now),
         Reason.BAD_VALUE),
        (forge(la, a.author, cid_a, lambda d: d.get("revocations", type=pycrdt.Map).__setitem__(
            b.author, st.canonical({"by": a.author, "reason": "x", "at": now, "serials": []})), now),
         Reason.NOT_REVOKER),
        (forge(la, a.author, cid_a, registry_of(a.author, now + 600), now + 600), Reason.FUTURE),
    ]
    over = {f"{a.author} i{n}": st.canonical(incident(now))
            for n in range(st.MAX_INCIDENTS + 1)}
    cases.append((forge(la, a.author, cid_a, lambda d: d.get("incidents", type=pycrdt.Map).update(over), now),
                  Reason.OVER_BOUND))
    u = register(a, now)
    cases.append((st.Update(u.author, 0, u.start, u.end, u.at, u.update, st.chain_der([lb.cert]), u.signature),
                  Reason.NOT_MEMBER))  # a's update under b's certificate
    for forged, reason in cases:
        outcome = b.receive(st.encode(st.Updates((forged,))), now)[1][0]
        assert outcome.refusal is not None and outcome.refusal.reason is reason, (reason, outcome)
    assert b.state()["registry"] == {} and b.state()["revocations"] == {}
    assert sum(b.refused.values()) == len(cases)
    assert b.refused[Reason.FOREIGN_WRITE] == 1 and b.refused[Reason.NOT_REVOKER] == 1
    with pytest.raises(st.StateError, match="may not write"):
        a.write(now, {"registry": {b.author: {"macs": [], "role": "x", "version": "1", "at": now}}})


def test_a_revoked_member_is_refused_and_its_entries_hidden(nodes, now):
    a, b, rev = nodes["a"], nodes["b"], nodes["ca"]
    sync(a, b, now) if register(b, now) else None
    assert b.author in a.state()["registry"]
    # only a revoker may revoke: a's attempt is refused locally, the revoker's goes through
    with pytest.raises(st.StateError):
        a.write(now, {"revocations": {b.author: {"by": a.author, "reason": "x", "at": now, "serials": []}}})
    stolen = {"by": rev.author, "reason": "key stolen", "at": now, "serials": ["1f"]}
    rev.write(now, {"revocations": {b.author: stolen}})
    sync(a, rev, now)
    assert b.author not in a.state()["registry"]
    later = register(b, now + 1)
    assert a.apply(later, now + 1).refusal.reason is Reason.REVOKED
    assert a.refused[Reason.REVOKED] == 1


def test_compaction_keeps_the_state_and_moves_the_epoch(ca, leaves, now):
    nodes = {n: replica(ca, leaves[n], n, compact_at_bytes=4000) for n in ("a", "b", "c")}
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    for r in nodes.values():
        register(r, now)
    for i in range(30):
        a.add_incident(now + i, f"i{i}", "loss", f"incident {i}")
    sync(a, b, now + 40)
    sync(b, c, now + 40)
    sync(a, b, now + 40)
    before = a.state()
    assert len(before["incidents"]) == st.MAX_INCIDENTS and a.epoch == 0
    old_bytes = a.epochs[0].log_bytes
    assert st.should_compact(old_bytes, a.policy)
    u = a.maybe_compact(now + 41)
    assert u is not None and a.epoch == 1 and a.state() == before
    # b learns of epoch 1 from a's update, joins it (writing its own entries again), and replies
    replies, out = b.receive(st.encode(st.Updates((u,))), now + 42)
    assert out[0].applied and b.epoch == 1
    assert [v.author for m in replies for v in st.decode(m).updates] == [b.author]
    sync(b, c, now + 43)
    sync(a, b, now + 44)
    assert a.epoch == b.epoch == c.epoch == 1
    assert a.state() == b.state() == c.state() == before
    assert a.epochs[1].log_bytes < old_bytes / 2
    # a keeps two epochs: compacting twice alone, it holds only its own entries until the others
    # have joined the newest, which they do at their next sync (and an update older is refused)
    a.compact(now + 45)
    a.compact(now + 46)
    assert set(a.epochs) == {2, 3} and set(a.state()["registry"]) == {a.author}
    assert a.apply(u, now + 47).refusal.reason is Reason.STALE_EPOCH
    sync(a, b, now + 48)
    sync(b, c, now + 48)
    sync(a, b, now + 48)
    assert a.epoch == b.epoch == c.epoch == 3
    assert a.state() == b.state() == c.state() == before
    # epochs a peer has moved past are not offered to it: nothing but the one stale update refused
    assert dict(a.refused) == {Reason.STALE_EPOCH: 1} and not b.refused and not c.refused


def test_mldsa_svid_signs(now):
    ca = TestCA(TD)  # ML-DSA-65, the built-in CA's kind
    leaf = ca.issue(path="/node/q")
    q, r = replica(ca, leaf, "q"), replica(ca, ca.issue(path="/node/r"), "r")
    u = register(q, now)
    assert len(u.signature) == 3309
    assert r.apply(u, now).applied and r.state() == q.state()
    bad = st.Update(u.author, u.epoch, u.start, u.end, u.at, u.update + b"", u.chain, u.signature[:-1] + b"\x00")
    assert r.apply(bad, now).refusal.reason is Reason.BAD_SIGNATURE  # checked before it is known a duplicate


def test_codec_round_trips_and_matches_the_yjs_state_vector(nodes, now):
    a = nodes["a"]
    u1 = register(a, now)
    u2 = a.add_incident(now, "i1", "loss", "x")
    msg = st.Updates((u1, u2))
    data = st.encode(msg)
    assert st.decode(data) == msg
    assert data.count(u1.chain[0]) == 1  # one chain per author and message
    doc = a.epochs[0].doc
    assert st.encode_vector(st.decode_vector(doc.get_state())) == doc.get_state()
    step = st.decode(a.step1())
    assert step == st.SyncStep1(((0, {st.client_id(a.author): u2.end}),))


@pytest.mark.parametrize(("data", "why"), [
    (b"", "truncated"),
    (b"XXXX\x01\x01\x00", "not an x0tta"),
    (b"X0RS\x02\x01\x00", "version 2"),
    (b"X0RS\x01\x09", "unknown message kind"),
    (b"X0RS\x01\x01\x03", "3 epochs"),
    (b"X0RS\x01\x01\x01\x00\x00\x00\x00\x02\x05\x01\x05\x02", "twice"),
    (b"X0RS\x01\x01\x01\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00", "longer than 8"),
    (b"X0RS\x01\x01\x00\x00", "after the message"),
    (b"X0RS\x01\x02\x00\x00\x00\x01\x00\x00\x00\x00", "chain 0 of 0"),
    (b"X0RS\x01\x02\x00\x01\x00\x00\x00", "a chain of 0"),
])
def test_decode_refuses_what_is_not_a_message(data, why):
    with pytest.raises(st.StateError, match=why):
        st.decode(data)


@pytest.mark.parametrize(("section", "value", "why"), [
    ("registry", {"macs": ["02:00:00:00:00:0G"], "role": "node", "version": "1", "at": 1.0}, "MAC"),
    ("registry", {"macs": [], "role": "Node", "version": "1", "at": 1.0}, "role"),
    ("registry", {"macs": [], "role": "node", "version": "1", "at": True}, "wrong type"),
    ("quarantine", {"target": "http://x", "macs": [], "reason": "", "until": 2.0, "at": 1.0}, "SPIFFE"),
    ("quarantine", {"target": "02:00:00:00:00:01", "macs": ["02:00:00:00:00:0G"], "reason": "", "until": 2.0,
                    "at": 1.0}, "MAC"),
    ("heads", {"seq": 1, "at": 1.0, "more": 1}, "exactly"),
    ("incidents", {**incident(1.0), "summary": "x" * 201}, "longer"),
    ("incidents", {**incident(1.0), "closed": "soon"}, "wrong type"),
    ("incidents", {**incident(1.0), "severity": "Bad!"}, "names"),
    ("revocations", {"by": REVOKER, "reason": "", "at": 1.0, "serials": ["0x1f"]}, "hex serials"),
    ("revocations", {"by": REVOKER, "reason": "", "at": 1.0, "serials": ["1"] * 17}, "hex serials"),
    ("revocations", {"by": REVOKER, "reason": "", "at": 1.0}, "exactly"),
])
def test_values_are_checked_by_schema(section, value, why):
    with pytest.raises(st.StateError, match=why):
        st.encode_value(section, value)


def test_split_keeps_every_message_under_its_limit(nodes, now):
    a, b = nodes["a"], nodes["b"]
    ups = [register(a, now + i) for i in range(6)] + [register(b, now + i) for i in range(6)]
    for limit in (1500, 4000, 10**6):
        msgs = st.split(ups, limit)
        assert all(len(st.encode(m)) <= limit for m in msgs)
        assert [u for m in msgs for u in m.updates] == ups
    assert st.split(ups, 100) == []  # nothing fits


def test_an_epoch_far_ahead_is_refused(leaves, nodes, now):
    a, b = nodes["a"], nodes["b"]
    u = register(a, now)
    for epoch, reason in ((3, Reason.EPOCH_JUMP), (2, None)):
        moved = st.sign(st.Update(u.author, epoch, u.start, u.end, u.at, u.update, u.chain), leaves["a"].key)
        outcome = b.apply(moved, now)
        assert (outcome.refusal.reason if outcome.refusal else None) is reason
    assert b.epoch == 2 and a.author in b.state()["registry"]


def test_random_writes_and_partial_syncs_always_converge(ca, leaves, now):
    """Seeded: 3 nodes, 120 steps of random writes (registry, incidents, quarantine claims and
    releases) and random pairwise syncs, a compaction bound that is passed on the way; then a
    full round of syncs: every node reads the same state, and no update was refused (an update
    carries its own deletions only, so relaying is never judged as deleting another's entry)."""
    rng = random.Random(20261206)
    nodes = [replica(ca, leaves[n], n, compact_at_bytes=6000) for n in ("a", "b", "c")]
    for step in range(120):
        r = rng.choice(nodes)
        t = now + step
        op = rng.randrange(4)
        if op == 0:
            register(r, t, macs=(f"02:00:00:00:00:{step:02x}",))
        elif op == 1:
            r.add_incident(t, f"i{step}", "loss", f"step {step}")
        elif op == 2:
            target = nid(rng.choice("xyz"))
            r.write(t, {"quarantine": {f"{r.author} {target}": {"target": target, "macs": [], "reason": "r",
                                                                 "until": t + 60, "at": t}}})
        else:
            mine = [k for k in r.view()["quarantine"] if k.startswith(r.author + " ")]
            if mine:
                r.write(t, {"quarantine": {rng.choice(mine): None}})
        r.maybe_compact(t)
        if rng.random() < 0.3:
            x, y = rng.sample(nodes, 2)
            sync(x, y, t)
    for x, y in ((nodes[0], nodes[1]), (nodes[1], nodes[2]), (nodes[0], nodes[1])):
        sync(x, y, now + 200)
    states = [r.state() for r in nodes]
    assert states[0] == states[1] == states[2]
    assert max(r.epoch for r in nodes) >= 1  # compaction happened on the way
    refused = sum((r.refused for r in nodes), start=Counter())
    assert not refused, refused
