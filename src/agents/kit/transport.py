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

DRAIN_SECONDS = 0.5
"""How long a closed-early response may take to finish before its connection is dropped."""
DRAIN_BYTES = 64 * 1024
"""How much of a closed-early response is read to keep its connection; more is dropped."""
KEEPALIVE_SECONDS = 2.0
"""Idle connections in the shared pool are closed after this, before a server's own
keep-alive timeout (uvicorn: 5 s) can close one under a request that was about to reuse it."""
MAX_IDLE_CONNECTIONS = 64

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

StatusListener = Callable[[int], None]
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
            max_keepalive_connections=MAX_IDLE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
    )


_request_pools = PerLoop(_new_request_pool)


def request_pool() -> httpx.AsyncHTTPTransport:
    """The running event loop's pool for request/response traffic, shared by all sessions.

    Unlimited connections (one user's slow request never queues another's), a
    bounded number kept idle, for a short time."""
    return _request_pools.get()


async def aclose_request_pool() -> None:
    """Close the running loop's shared pool (process shutdown, tests); made again on demand."""
    pool = _request_pools.pop()
    if pool is not None:
        await pool.aclose()


class _WatchedStream(httpx.AsyncByteStream):
    """A response body that reports a connection lost mid-stream.

    With `drain`, closing it before the end first reads what is left (bounded),
    so that the connection can serve the next request instead of being dropped."""

    def __init__(self, stream: httpx.AsyncByteStream, on_error: ErrorListener | None,
                 *, drain: bool) -> None:
        self._stream = stream
        self._on_error = on_error
        self._drain = drain
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
            await self._stream.aclose()


class _SessionTransport(httpx.AsyncBaseTransport):
    """One session's way out: requests on the shared pool, its GET stream on its own.

    Closing it closes only what is the session's own."""

    def __init__(self, on_error: ErrorListener | None) -> None:
        self._on_error = on_error
        self._streams: httpx.AsyncHTTPTransport | None = None

    def _route(self, request: httpx.Request) -> httpx.AsyncHTTPTransport:
        if request.method != "GET":
            return request_pool()
        if self._streams is None:
            self._streams = session_transport()
        return self._streams

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shared = request.method != "GET"
        try:
            response = await self._route(request).handle_async_request(request)
        except httpx.TransportError as exc:
            if self._on_error is not None:
                self._on_error(f"connection failed ({type(exc).__name__})")
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _WatchedStream(response.stream, self._on_error, drain=shared)
        return response

    async def aclose(self) -> None:
        if self._streams is not None:
            await self._streams.aclose()


def client_factory(
    on_refused: StatusListener | None = None, on_error: ErrorListener | None = None
) -> Callable[..., httpx.AsyncClient]:
    """An `httpx_client_factory` for langchain-mcp-adapters connections.

    `on_refused` hears the status of every failed response (>= 400); `on_error`
    hears connection failures, including a stream cut mid-response.
    """

    async def _report(response: httpx.Response) -> None:
        if on_refused is not None and response.status_code >= 400:
            on_refused(response.status_code)

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
