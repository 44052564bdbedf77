"""The HTTP layer under every MCP session: shared connections, per-session credentials.

Two kinds of traffic, two kinds of pool:

- Requests with a response (`initialize`, `tools/list`, `tools/call`, the
  `DELETE` that ends a session) go through one connection pool per event
  loop, shared by every session of every user. A connection carries no
  identity: each request brings its own `Authorization` header from its
  session's own `httpx.AsyncClient`, so sharing the pool shares TCP and TLS
  handshakes, never a credential. The MCP SDK closes an SSE response as soon
  as it has read the JSON-RPC answer, before the server's end of stream; such
  a close would drop the connection, so the rest of the body (normally just
  the end-of-stream chunk) is read first, within `DRAIN_SECONDS` and
  `DRAIN_BYTES`, and the connection goes back to the pool.
- The standing `GET` stream a session keeps open for server notifications
  goes through the session's own small pool, closed with it. Kept out of the
  shared pool, hundreds of pooled sessions' streams do not make every request
  scan hundreds of busy connections (`httpcore` scans the whole pool per
  request).

Every client shares one TLS context, built once off the event loop (building
one reads and parses the CA bundle: over half of what opening a session used
to cost).

Each client also reports failures to its session: the HTTP status of refused
requests (the MCP SDK turns a 401 mid-session into a bare "connection
closed") and connections lost mid-stream (the SDK swallows those).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import httpx
from mcp.client.auth.utils import extract_field_from_www_auth, extract_scope_from_www_auth

DRAIN_SECONDS = 0.5
"""How long a closed-early response may take to finish before its connection is dropped."""
DRAIN_BYTES = 64 * 1024
"""How much of a closed-early response is read to keep its connection; more is dropped."""
KEEPALIVE_SECONDS = 2.0
"""Idle connections in the shared pool are closed after this, before a server's own
keep-alive timeout (uvicorn: 5 s) can close one under a request that was about to reuse it."""
SHARD_IN_FLIGHT = 8
"""Requests in flight on one shard of the shared pool before new ones go to the next shard.

httpcore matches every waiting request against every connection of its pool, on every
request and every response (O(requests × connections)); at 50 users at once that scan cost
more CPU than the requests themselves. Small shards keep it short; at low load every
request shares the first shard, so connections are still reused across users."""
MAX_SHARDS = 16
"""Beyond this many shards, a request takes the least busy one."""

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One `T` per running event loop: connections, sessions and tasks cannot cross loops.

    Made on first use in a loop, forgotten with the loop."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = self._make()
        return found

    def peek(self) -> T | None:
        """This loop's, if one was made (never makes one)."""
        return self._by_loop.get(asyncio.get_running_loop())

    def pop(self) -> T | None:
        return self._by_loop.pop(asyncio.get_running_loop(), None)


_ssl_context: ssl.SSLContext | None = None
StatusListener = Callable[[int, "tuple[str, ...] | None"], None]
ErrorListener = Callable[[str], None]


async def prepare_transport() -> None:
    """Build the TLS context off the event loop (it reads the CA bundle from disk)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = await asyncio.to_thread(httpx.create_ssl_context)


def shared_ssl_context() -> ssl.SSLContext:
    """The process's TLS context (built synchronously if nobody prepared it)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def session_transport() -> httpx.AsyncHTTPTransport:
    """A small connection pool of its own, on the shared TLS context."""
    return httpx.AsyncHTTPTransport(
        verify=shared_ssl_context(),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=4),
    )


def _new_request_pool() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(
        verify=shared_ssl_context(),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=SHARD_IN_FLIGHT,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
    )


class RequestPools:
    """A loop's request traffic over a few small connection pools, filled in order."""

    def __init__(self) -> None:
        self.shards: list[httpx.AsyncHTTPTransport] = []
        self.in_flight: list[int] = []

    def _index(self) -> int:
        for i, busy in enumerate(self.in_flight):
            if busy < SHARD_IN_FLIGHT:
                return i
        if len(self.shards) < MAX_SHARDS:
            self.shards.append(_new_request_pool())
            self.in_flight.append(0)
            return len(self.shards) - 1
        return min(range(len(self.in_flight)), key=self.in_flight.__getitem__)

    def next_pool(self) -> httpx.AsyncHTTPTransport:
        """The shard the next request would take (nothing reserved)."""
        return self.shards[self._index()]

    def take(self) -> tuple[int, httpx.AsyncHTTPTransport]:
        """A shard for one request, counted in flight until `give_back`."""
        index = self._index()
        self.in_flight[index] += 1
        return index, self.shards[index]

    def give_back(self, index: int) -> None:
        self.in_flight[index] -= 1

    async def aclose(self) -> None:
        await asyncio.gather(*(shard.aclose() for shard in self.shards))


_request_pools = PerLoop(RequestPools)


def request_pools() -> RequestPools:
    """The running event loop's pools for request/response traffic, shared by all sessions.

    Unlimited connections (one user's slow request never queues another's), a
    bounded number kept idle, for a short time."""
    return _request_pools.get()


def request_pool() -> httpx.AsyncHTTPTransport:
    """The shard an idle loop's next request takes: the first, shared by every session."""
    return request_pools().next_pool()


async def aclose_request_pool() -> None:
    """Close the running loop's shared pools (process shutdown, tests); made again on demand."""
    pools = _request_pools.pop()
    if pools is not None:
        await pools.aclose()


class _WatchedStream(httpx.AsyncByteStream):
    """A response body that reports a connection lost mid-stream.

    With `drain`, closing it before the end first reads what is left (bounded),
    so that the connection can serve the next request instead of being dropped."""

    def __init__(self, stream: httpx.AsyncByteStream, on_error: ErrorListener | None,
                 *, drain: bool, on_closed: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._on_error = on_error
        self._drain = drain
        self._on_closed = on_closed
        self._chunks: AsyncIterator[bytes] | None = None

    def _iterator(self) -> AsyncIterator[bytes]:
        # one iterator for the reader and the drain: the drain resumes where reading stopped
        if self._chunks is None:
            self._chunks = self._stream.__aiter__()
        return self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._iterator():
                yield chunk
        except httpx.TransportError as exc:
            if self._on_error is not None:
                self._on_error(f"connection lost ({type(exc).__name__})")
            raise

    async def aclose(self) -> None:
        try:
            if self._drain:
                # a failed or slow drain only costs the connection: closing drops it
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(DRAIN_SECONDS):
                        read = 0
                        async for chunk in self._iterator():
                            read += len(chunk)
                            if read > DRAIN_BYTES:
                                break
        finally:  # also when cancelled mid-drain: the pool must get its connection back
            try:
                await self._stream.aclose()
            finally:
                closed, self._on_closed = self._on_closed, None
                if closed is not None:  # once, however often it is closed
                    closed()


class _SessionTransport(httpx.AsyncBaseTransport):
    """One session's way out: requests on the shared pool, its GET stream on its own.

    Closing it closes only what is the session's own."""

    def __init__(self, on_error: ErrorListener | None) -> None:
        self._on_error = on_error
        self._streams: httpx.AsyncHTTPTransport | None = None

    def _route(self, request: httpx.Request) -> httpx.AsyncHTTPTransport:
        if request.method != "GET":
            return request_pool()
        return self._stream_pool()

    def _stream_pool(self) -> httpx.AsyncHTTPTransport:
        if self._streams is None:
            self._streams = session_transport()
        return self._streams

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shared = request.method != "GET"
        pools: RequestPools | None = None
        if shared:
            pools = request_pools()
            shard, route = pools.take()
        else:
            route = self._stream_pool()
        try:
            response = await route.handle_async_request(request)
        except BaseException as exc:
            if pools is not None:
                pools.give_back(shard)
            if isinstance(exc, httpx.TransportError) and self._on_error is not None:
                self._on_error(f"connection failed ({type(exc).__name__})")
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _WatchedStream(
            response.stream, self._on_error, drain=shared,
            on_closed=(lambda: pools.give_back(shard)) if pools is not None else None,
        )
        return response

    async def aclose(self) -> None:
        if self._streams is not None:
            await self._streams.aclose()


def insufficient_scope(response: httpx.Response) -> tuple[str, ...] | None:
    """The scopes a 403 `insufficient_scope` challenge asks for (RFC 6750 §3.1; the MCP
    authorization spec's step-up), else None."""
    if response.status_code != 403:
        return None
    if extract_field_from_www_auth(response, "error") != "insufficient_scope":
        return None
    return tuple((extract_scope_from_www_auth(response) or "").split())


def client_factory(
    on_refused: StatusListener | None = None, on_error: ErrorListener | None = None
) -> Callable[..., httpx.AsyncClient]:
    """An `httpx_client_factory` for langchain-mcp-adapters connections.

    `on_refused` hears the status of every failed response (>= 400) but a 405 to the
    optional GET stream or DELETE and, for a 403 `insufficient_scope`, the scopes it asks for;
    `on_error` hears connection failures, including a stream cut mid-response.
    """

    async def _report(response: httpx.Response) -> None:
        if on_refused is None or response.status_code < 400:
            return
        if response.status_code == 405 and response.request.method in ("GET", "DELETE"):
            # both optional in the MCP spec (streamable HTTP): a server may offer no stream
            # of its own messages, or not let clients end sessions; either answers 405 and
            # the session works without it
            return
        on_refused(response.status_code, insufficient_scope(response))

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=_SessionTransport(on_error),
            headers=headers,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0),
            auth=auth,
            follow_redirects=False,
            event_hooks={"response": [_report]},
        )

    return factory
