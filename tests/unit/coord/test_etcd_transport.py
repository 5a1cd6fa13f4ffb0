"""The etcd client's HTTP/1.1 transport against a scripted member on loopback (real sockets, real
HTTP/1.1 bytes): kept connections, chunked answers, a member that closes a kept connection, and
malformed answers. The client against a real etcd is in tests/integration/coord/."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from x0tta.coord.etcd import EtcdClient, EtcdError, EtcdUnavailable

Reply = Callable[[int, bytes], bytes | None]  # (request number, body) -> raw answer, None: close unanswered


def _answer(obj: object, *, chunked: bool = False, close: bool = False) -> bytes:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + (b"Connection: close\r\n" if close else b"")
    if chunked:
        half = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p)
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Member:
    """A loopback HTTP/1.1 server answering each request by ``reply``; counts connections."""

    def __init__(self, reply: Reply, close_after: set[int] | frozenset[int] = frozenset()) -> None:
        self.reply, self.connections, self.requests = reply, 0, 0
        self.close_after = close_after  # request numbers after whose answer the connection is closed
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                self.requests += 1
                raw = self.reply(self.requests, body)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if b"Connection: close" in raw or self.requests in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


RANGE = {"header": {"revision": "7"}, "kvs": [{"key": "YQ==", "value": "Yg==", "mod_revision": "5"}]}


@pytest.mark.asyncio
async def test_requests_share_one_kept_connection_and_chunked_answers_are_read() -> None:
    member = Member(lambda n, _: _answer(RANGE, chunked=n % 2 == 0))
    async with member as url, EtcdClient([url], timeout=2.0) as client:
        for _ in range(4):
            kvs, rev = await client.range("a")
            assert rev == 7 and kvs[0].key == "a" and kvs[0].value == b"b"
    assert member.connections == 1 and member.requests == 4


@pytest.mark.asyncio
async def test_a_member_that_closes_after_answering_gets_a_new_connection() -> None:
    member = Member(lambda n, _: _answer(RANGE, close=True))
    async with member as url, EtcdClient([url], timeout=2.0) as client:
        for _ in range(3):
            assert (await client.range("a"))[1] == 7
    assert member.connections == 3


@pytest.mark.asyncio
async def test_a_read_on_a_kept_connection_closed_unanswered_is_asked_again_on_a_new_one() -> None:
    member = Member(lambda n, _: None if n == 2 else _answer(RANGE))
    async with member as url, EtcdClient([url], timeout=2.0) as client:
        await client.range("a")
        assert (await client.range("a"))[1] == 7  # request 2 dropped with its connection, 3 answered
    assert member.connections == 2 and member.requests == 3


@pytest.mark.asyncio
async def test_a_write_whose_connection_closed_unanswered_is_ambiguous_not_repeated() -> None:
    member = Member(lambda n, _: None if n == 2 else _answer(RANGE))
    async with member as url, EtcdClient([url], timeout=2.0) as client:
        await client.range("a")
        with pytest.raises(EtcdUnavailable) as err:
            await client.put("a", "b")
        assert err.value.ambiguous
    assert member.requests == 2  # the txn was sent once, never again


@pytest.mark.asyncio
async def test_a_member_that_does_not_answer_in_time_is_unavailable() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read, never answered
        await reader.read(1 << 16)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with EtcdClient([url], timeout=0.2) as client:
            with pytest.raises(EtcdUnavailable):
                await client.range("a")
    finally:
        server.close()
        for writer in held:
            writer.close()


@pytest.mark.asyncio
async def test_nobody_listening_is_unavailable_and_a_write_is_not_ambiguous() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with EtcdClient([f"http://127.0.0.1:{port}"], timeout=1.0) as client:
        with pytest.raises(EtcdUnavailable) as err:
            await client.put("a", "b")
        assert not err.value.ambiguous  # nothing was sent


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [
    _answer(b"not json"),
    _answer([1, 2]),
    _answer({"kvs": []}),  # no header
    _answer({"header": {"revision": "x"}}),
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",  # shorter than announced, then closed
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
    b"garbage\r\n\r\n",
])
async def test_a_malformed_answer_is_an_etcd_error_and_the_client_goes_on(raw: bytes) -> None:
    member = Member(lambda n, _: raw if n == 1 else _answer(RANGE), close_after={1})
    async with member as url, EtcdClient([url], timeout=1.0) as client:
        with pytest.raises((EtcdError, EtcdUnavailable)):
            await client.range("a")
        assert (await client.range("a"))[1] == 7  # the next request is served


@pytest.mark.asyncio
async def test_overlapping_requests_keep_one_connection_per_member_and_close_the_other() -> None:
    member = Member(lambda n, _: _answer(RANGE))
    async with member as url:
        client = EtcdClient([url], timeout=2.0)
        await client.open()
        for _ in range(3):  # a lease keepalive beside a round's read, as coordination does
            await asyncio.gather(client.range("a"), client.range("b"))
        assert len(client._idle) == 1
        opened = member.connections
        await client.close()
    assert opened <= 4  # two for the first overlap, at most one new one per later overlap


@pytest.mark.asyncio
async def test_a_member_that_times_out_on_a_kept_connection_is_not_asked_twice() -> None:
    """The first request is answered, the second never: one timeout, no second connection (a
    member that hangs is not a kept connection gone stale)."""
    stall = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(1 << 16)
        writer.write(_answer(RANGE))
        await writer.drain()
        await stall.wait()  # the next request on this connection is read by nobody

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with EtcdClient([url], timeout=0.3) as client:
            await client.range("a")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(EtcdUnavailable):
                await client.range("a")
            assert loop.time() - started < 0.55  # one timeout, not one per connection
        assert len(held) == 1
    finally:
        stall.set()
        server.close()
        for w in held:
            w.close()
