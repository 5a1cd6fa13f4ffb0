"""The session state machine: two cores against each other in memory, time passed in by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.peer.core import (
    NEED_DATA,
    Backpressure,
    Established,
    Hello,
    Limits,
    LocalProtocolError,
    PeerConnection,
    RemoteGoAway,
    RemoteProtocolError,
    Request,
    RequestTimedOut,
    Response,
    State,
    TimedOut,
)
from x0tta.peer.core.frames import GoAway, Ping, encode
from x0tta.peer.core.protocol import TRANSITIONS

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def pair(now=0.0, a_limits=None, b_limits=None):
    a = PeerConnection(Hello("a", capabilities=("rpc",)), now, a_limits)
    b = PeerConnection(Hello("b"), now, b_limits)
    return a, b


def events(conn, now=0.0):
    out = []
    while (ev := conn.next_event(now)) is not NEED_DATA:
        out.append(ev)
    return out


def flow(src, dst, now=0.0):
    dst.receive_data(src.data_to_send(), now)
    return events(dst, now)


def open_pair(now=0.0, **kw):
    a, b = pair(now, **kw)
    (ea,) = flow(b, a, now)
    (eb,) = flow(a, b, now)
    assert isinstance(ea, Established) and ea.hello.node_id == "b" and ea.version == 1
    assert isinstance(eb, Established) and eb.hello.capabilities == ("rpc",)
    return a, b


def test_request_response_with_trace_context():
    a, b = open_pair()
    rid = a.send_request("echo", b"hi", 0.0, traceparent=TP)
    (req,) = flow(a, b)
    assert req == Request(rid, "echo", b"hi", TP)
    b.send_response(rid, b"hi back", 0.1, traceparent=TP)
    (resp,) = flow(b, a)
    assert resp == Response(rid, 0, b"hi back", TP)
    assert a.in_flight == 0 and b.unanswered == 0


def test_request_before_hello_is_a_local_error():
    a, _ = pair()
    with pytest.raises(LocalProtocolError):
        a.send_request("echo", b"", 0.0)


def test_second_hello_is_a_remote_error():
    a, _b = open_pair()
    a.receive_data(encode(Hello("b")), 0.0)
    with pytest.raises(RemoteProtocolError) as exc:
        events(a)
    assert exc.value.code == "unexpected_frame"
    assert a.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        a.send_ping(0.0)


def test_request_before_peer_hello_is_a_remote_error():
    a, _ = pair()
    a.receive_data(encode(Request(1, "x")), 0.0)
    with pytest.raises(RemoteProtocolError):
        events(a)


def test_no_common_version():
    a = PeerConnection(Hello("a", min_version=1, max_version=1), 0.0)
    b = PeerConnection(Hello("b", min_version=2, max_version=3), 0.0)
    with pytest.raises(RemoteProtocolError) as exc:
        flow(b, a)
    assert exc.value.code == "no_common_version"


def test_newer_peer_settles_on_common_version():
    a = PeerConnection(Hello("a", min_version=1, max_version=1), 0.0)
    b = PeerConnection(Hello("b", min_version=1, max_version=4), 0.0)
    (ev,) = flow(b, a)
    assert ev.version == 1


def test_response_to_unknown_request():
    a, b = open_pair()
    b._incoming.add(9)  # b believes a asked
    b.send_response(9, b"", 0.0)
    with pytest.raises(RemoteProtocolError) as exc:
        flow(b, a)
    assert exc.value.code == "unknown_response"


def test_window_and_peer_breach():
    a, b = open_pair(a_limits=Limits(max_in_flight=2), b_limits=Limits(max_in_flight=2))
    a.send_request("x", b"", 0.0)
    a.send_request("x", b"", 0.0)
    assert a.window == 0 and not a.can_request
    with pytest.raises(Backpressure) as exc:
        a.send_request("x", b"", 0.0)
    assert exc.value.code == "window_full"
    flow(a, b)
    # a misbehaving peer ignoring our window
    b.receive_data(encode(Request(77, "x")), 0.0)
    with pytest.raises(RemoteProtocolError) as err:
        events(b)
    assert err.value.code == "too_many_requests"


def test_outgoing_buffer_bound():
    a, _b = open_pair(a_limits=Limits(max_buffered=100))
    a.send_request("x", b"y" * 150, 0.0)
    with pytest.raises(Backpressure) as exc:
        a.send_request("x", b"", 0.0)
    assert exc.value.code == "buffer_full"
    a.data_to_send()
    a.send_request("x", b"", 0.0)


def test_heartbeat_rtt_and_idle_timeout():
    lim = Limits(heartbeat_interval=5.0, idle_timeout=12.0)
    a, b = open_pair(a_limits=lim, b_limits=lim)
    assert a.next_deadline() == 5.0
    assert a.tick(5.0) == []
    flow(a, b, 5.0)  # ping -> pong queued by b
    flow(b, a, 5.04)
    assert a.rtt == pytest.approx(0.04)
    # b goes silent: a declares it dead 12 s after the last bytes from b
    assert a.tick(10.0) == []
    a.data_to_send()
    assert a.tick(17.04) == [TimedOut("idle")]
    assert a.state is State.CLOSED and a.next_deadline() is None


def test_hello_timeout():
    a, _ = pair(10.0, a_limits=Limits(hello_timeout=3.0))
    assert a.next_deadline() == 13.0
    assert a.tick(12.9) == []
    assert a.tick(13.0) == [TimedOut("hello")]


def test_read_timeout_on_partial_frame():
    a, _b = open_pair(a_limits=Limits(read_timeout=2.0, idle_timeout=60.0))
    wire = encode(Request(1, "x", b"abc"))
    a.receive_data(wire[:5], 1.0)
    assert events(a, 1.0) == []
    assert a.tick(2.9) == []
    assert a.tick(3.0) == [TimedOut("read")]


def test_request_timeout_and_late_response_dropped():
    a, b = open_pair()
    rid = a.send_request("slow", b"", 0.0, timeout=1.0)
    flow(a, b)
    assert a.next_deadline() == 1.0
    assert a.tick(1.0) == [RequestTimedOut(rid, "slow")]
    b.send_response(rid, b"late", 2.0)
    assert flow(b, a, 2.0) == []
    assert a.state is State.OPEN


def test_goaway_drains_both_ways():
    a, b = open_pair()
    rid = a.send_request("x", b"", 0.0)
    flow(a, b)
    b.send_goaway("rotating", 0.0)
    assert flow(b, a) == [RemoteGoAway("rotating")]
    with pytest.raises(LocalProtocolError):
        a.send_request("x", b"", 0.0)
    assert not b.drained  # a's GoAway reply not seen yet, and a's request unanswered
    assert flow(a, b) == [RemoteGoAway("reply")]
    assert not b.drained
    b.send_response(rid, b"ok", 0.0)
    (resp,) = flow(b, a)
    assert resp.body == b"ok"
    assert a.drained and b.drained


def test_request_crossing_goaway_is_served():
    a, b = open_pair()
    b.send_goaway("rotating", 0.0)
    rid = a.send_request("x", b"", 0.0)  # sent before a saw the GoAway
    wire_b = b.data_to_send()
    (req,) = flow(a, b)  # arrives at b after b's GoAway left
    assert req.id == rid and not b.drained
    a.receive_data(wire_b, 0.0)
    assert events(a) == [RemoteGoAway("rotating")]
    flow(a, b)  # a's reply GoAway
    b.send_response(rid, b"", 0.0)
    flow(b, a)
    assert a.drained and b.drained


def test_table_has_no_exit_from_terminal_states():
    assert not [k for k in TRANSITIONS if k[0] in (State.CLOSED, State.ERROR)]


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["a_req", "b_req", "a_ans", "b_ans", "a2b", "b2a", "tick", "a_ping", "goaway"]),
        st.integers(0, 300),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_random_conversations_keep_invariants(actions):
    """Any interleaving of legal calls: no protocol error; every request answered exactly once."""
    lim = Limits(max_in_flight=4, max_buffered=2000, heartbeat_interval=2.0, idle_timeout=1e9,
                 request_timeout=1e9, hello_timeout=1e9, read_timeout=1e9)
    now = 0.0
    a, b = pair(now, lim, lim)
    pending = {"a": [], "b": []}  # requests each side received and has not answered
    sent = {"a": set(), "b": set()}
    answered = {"a": set(), "b": set()}
    conns = {"a": a, "b": b}
    other = {"a": "b", "b": "a"}
    for action, n in actions:
        now += n / 100
        side = action[0]
        if action in ("a_req", "b_req"):
            c = conns[side]
            if c.state is State.OPEN and c.can_request:
                sent[side].add(c.send_request("m", bytes(n % 50), now))
        elif action in ("a_ans", "b_ans"):
            if pending[side]:
                req = pending[side].pop(n % len(pending[side]))
                conns[side].send_response(req.id, req.body, now)
        elif action in ("a2b", "b2a"):
            src, dst = conns[side], conns[other[side]]
            data = src.data_to_send()
            dst.receive_data(data, now)
            for ev in events(dst, now):
                if isinstance(ev, Request):
                    pending[other[side]].append(ev)
                elif isinstance(ev, Response):
                    assert ev.id in sent[other[side]] and ev.id not in answered[other[side]]
                    answered[other[side]].add(ev.id)
        elif action == "tick":
            assert a.tick(now) == [] and b.tick(now) == []
        elif action == "a_ping" and a.state is State.OPEN:
            a.send_ping(now)
        elif action == "goaway" and a.state is State.OPEN:
            a.send_goaway("bye", now)
        assert a.in_flight <= 4 and b.in_flight <= 4
    # flush everything: every request sent is answered once
    for _ in range(3):
        for side in "ab":
            for req in pending[side]:
                conns[side].send_response(req.id, b"", now)
            pending[side] = []
            dst = conns[other[side]]
            dst.receive_data(conns[side].data_to_send(), now)
            for ev in events(dst, now):
                if isinstance(ev, Request):
                    pending[other[side]].append(ev)
                elif isinstance(ev, Response):
                    answered[other[side]].add(ev.id)
    assert answered == sent
    assert a.in_flight == 0 and b.in_flight == 0


def test_ping_answered_in_draining():
    a, b = open_pair()
    a.send_goaway("bye", 0.0)
    flow(a, b)
    b.receive_data(encode(Ping(5)), 0.0)
    events(b)
    a.receive_data(b.data_to_send(), 0.0)
    assert events(a) == [RemoteGoAway("reply")]  # and the pong, consumed
    a.receive_data(encode(GoAway("again")), 0.0)
    assert events(a) == [RemoteGoAway("again")]
    assert a.drained
