"""The HTTP layer under every MCP session: one TLS context, per-session credentials.

A new `httpx.AsyncClient` per MCP session normally builds a new TLS context
(reading the CA bundle and parsing it), which was over half of what opening a
session cost. Here every client shares one TLS context, built once off the
event loop. Each session keeps its own small connection pool: measured, one
pool shared by hundreds of pooled sessions (each holding its standing SSE
stream) made every request scan every connection (docs/performance.md). The
`Authorization` header lives on the session's own client, never on anything
shared.

Each client also reports failures to its session: the HTTP status of refused
requests (the MCP SDK turns a 401 mid-session into a bare "connection
closed") and connections lost mid-stream (the SDK swallows those).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import httpx

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
    """A small connection pool for one session, on the shared TLS context."""
    return httpx.AsyncHTTPTransport(
        verify=shared_ssl_context(),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=4),
    )


class _WatchedStream(httpx.AsyncByteStream):
    """A response body that reports a connection lost mid-stream."""

    def __init__(self, stream: httpx.AsyncByteStream, on_error: ErrorListener) -> None:
        self._stream = stream
        self._on_error = on_error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as exc:
            self._on_error(f"connection lost ({type(exc).__name__})")
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()


class _WatchedTransport(httpx.AsyncBaseTransport):
    """A session's pool, reporting transport failures to that session."""

    def __init__(self, inner: httpx.AsyncHTTPTransport, on_error: ErrorListener) -> None:
        self._inner = inner
        self._on_error = on_error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._on_error(f"connection failed ({type(exc).__name__})")
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _WatchedStream(response.stream, self._on_error)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


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
        transport: httpx.AsyncBaseTransport = session_transport()
        if on_error is not None:
            transport = _WatchedTransport(transport, on_error)
        return httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0),
            auth=auth,
            follow_redirects=False,
            event_hooks={"response": [_report]},
        )

    return factory
