"""Sessions share one TLS context and one request pool, but nothing that carries a credential.

(That connections really are shared while every request carries its own
session's token is proven against a real server in
tests/integration/test_shared_connections.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from onbehalf.mcp import transport
from onbehalf.mcp.transport import client_factory, request_pool, shared_ssl_context

pytestmark = pytest.mark.anyio


def _route(client: httpx.AsyncClient, method: str) -> httpx.AsyncHTTPTransport:
    return client._transport._route(httpx.Request(method, "http://mcp.test/mcp"))  # type: ignore[attr-defined]


async def test_requests_share_one_pool_and_get_streams_have_their_own() -> None:
    factory = client_factory(on_error=lambda reason: None)
    alice, bob = factory(headers={"Authorization": "Bearer A"}), factory(
        headers={"Authorization": "Bearer B"}
    )
    for method in ("POST", "DELETE"):
        assert _route(alice, method) is _route(bob, method) is request_pool()
    assert _route(alice, "GET") is not _route(bob, "GET")
    assert _route(alice, "GET") is _route(alice, "GET")
    for pool in (request_pool(), _route(alice, "GET"), _route(bob, "GET")):
        assert pool._pool._ssl_context is shared_ssl_context()
    await alice.aclose()
    await bob.aclose()


class _Endless(httpx.AsyncByteStream):
    """A response body that never ends, or that is larger than worth draining."""

    def __init__(self, chunk: bytes, pause: float) -> None:
        self.chunk, self.pause, self.read, self.closed = chunk, pause, 0, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(self.pause)
            self.read += len(self.chunk)
            yield self.chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_a_response_that_never_ends_is_dropped_after_the_drain_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "DRAIN_SECONDS", 0.05)
    body = _Endless(b"data: x\n\n", pause=0.01)
    stream = transport._WatchedStream(body, None, drain=True)
    started = time.monotonic()
    await stream.aclose()
    assert body.closed and time.monotonic() - started < 1.0


async def test_a_large_remainder_is_not_drained() -> None:
    body = _Endless(b"x" * 16384, pause=0)
    stream = transport._WatchedStream(body, None, drain=True)
    await stream.aclose()
    assert body.closed and body.read <= transport.DRAIN_BYTES + 16384


async def test_each_client_has_its_own_authorization_header() -> None:
    factory = client_factory()
    alice, bob = factory(headers={"Authorization": "Bearer A"}), factory(
        headers={"Authorization": "Bearer B"}
    )
    assert alice.headers["authorization"] == "Bearer A"
    assert bob.headers["authorization"] == "Bearer B"
    await alice.aclose()
    await bob.aclose()


async def test_refusals_are_reported_to_the_session() -> None:
    seen: list[tuple[int, tuple[str, ...] | None]] = []
    answers = iter([
        httpx.Response(401),
        httpx.Response(403),
        httpx.Response(403, headers={"www-authenticate": 'Bearer error="insufficient_scope", '
                                     'scope="notes notes:write", resource_metadata="https://x"'}),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    client = client_factory(lambda status, scopes: seen.append((status, scopes)))()
    client._transport = httpx.MockTransport(handler)
    for _ in range(3):
        await client.get("http://mcp.test/mcp")
    # only a 403 insufficient_scope names what it needs (step-up)
    assert seen == [(401, None), (403, None), (403, ("notes", "notes:write"))]
    await client.aclose()


async def test_a_lost_connection_is_reported_to_the_session() -> None:
    reasons: list[str] = []
    client = client_factory(on_error=reasons.append)()
    with pytest.raises(httpx.ConnectError):
        await client.get("http://127.0.0.1:9/mcp")  # nothing listens on the discard port
    assert reasons and "connection failed" in reasons[0]
    await client.aclose()


async def test_a_cancelled_drain_still_closes_the_response() -> None:
    body = _Endless(b"data: x\n\n", pause=0.05)
    stream = transport._WatchedStream(body, None, drain=True)
    closing = asyncio.ensure_future(stream.aclose())
    await asyncio.sleep(0.02)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert body.closed


async def test_requests_fill_the_first_shard_before_the_next_and_give_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "SHARD_IN_FLIGHT", 2)
    monkeypatch.setattr(transport, "MAX_SHARDS", 2)
    pools = transport.RequestPools()
    taken = [pools.take() for _ in range(4)]
    assert [index for index, _ in taken] == [0, 0, 1, 1]
    assert taken[0][1] is taken[1][1] and taken[1][1] is not taken[2][1]
    pools.give_back(1)
    assert pools.take()[0] == 1  # shard 0 is full: the least busy one
    pools.give_back(0)
    assert pools.next_pool() is pools.shards[0]  # room again in the first: back to it
    assert pools.in_flight == [1, 2]
    await pools.aclose()


async def test_a_request_is_counted_in_flight_until_its_response_is_closed() -> None:
    await transport.aclose_request_pool()

    class Body(httpx.AsyncByteStream):  # a streamed answer, as a real server's is
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"{}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body())

    pools = transport.request_pools()
    pools.shards.append(httpx.MockTransport(handler))  # type: ignore[arg-type]
    pools.in_flight.append(0)
    client = client_factory()()
    async with client.stream("POST", "http://mcp.test/mcp") as response:
        assert pools.in_flight == [1]
        await response.aread()
    assert pools.in_flight == [0]
    await client.post("http://mcp.test/mcp")
    assert pools.in_flight == [0]
    failing = httpx.MockTransport(lambda request: (_ for _ in ()).throw(httpx.ConnectError("x")))
    pools.shards[0] = failing  # type: ignore[assignment]
    with pytest.raises(httpx.ConnectError):
        await client.post("http://mcp.test/mcp")
    assert pools.in_flight == [0]  # a failed request gives its place back too
    await client.aclose()
    await transport.aclose_request_pool()
