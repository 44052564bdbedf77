"""The HTTP layer under every MCP session: shared pools, per-session credentials.

A new `httpx.AsyncClient` per MCP session normally builds a new TLS context
and connection pool, which is most of what a session costs. Here every
session's client shares one transport per event loop (TLS context and
keep-alive pool), while the `Authorization` header stays on that session's
own client: credentials are never a property of the shared part.

Each client also reports the HTTP status of refused requests to its
session, because the MCP SDK turns a 401 mid-session into a bare
"connection closed".
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedTransport] = (
    weakref.WeakKeyDictionary()
)
_ssl_context: Any = None


class _SharedTransport(httpx.AsyncHTTPTransport):
    """A pool that outlives the clients built on it (their `aclose` must not close it)."""

    async def __aenter__(self) -> _SharedTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None  # `async with client:` exits the transport too: keep the pool open

    async def aclose(self) -> None:
        return None

    async def really_close(self) -> None:
        await super().aclose()


async def prepare_transport() -> None:
    """Build the TLS context off the event loop (it reads the CA bundle from disk)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = await asyncio.to_thread(httpx.create_ssl_context)


def shared_transport() -> httpx.AsyncHTTPTransport:
    """The keep-alive pool of the running event loop (pools cannot cross loops)."""
    global _ssl_context
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        transport = _SharedTransport(
            verify=_ssl_context,
            # one standing SSE stream per open session holds a connection: no hard cap
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
        _transports[loop] = transport
    return transport


StatusListener = Callable[[int], None]
ErrorListener = Callable[[str], None]


class _WatchedStream(httpx.AsyncByteStream):
    """A response body that reports a connection lost mid-stream (the SDK swallows it)."""

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
    """The shared pool, seen through one session: transport failures mark that session."""

    def __init__(self, inner: httpx.AsyncBaseTransport, on_error: ErrorListener) -> None:
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
        return None  # the pool is shared; see _SharedTransport


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
            transport=(
                _WatchedTransport(shared_transport(), on_error) if on_error else shared_transport()
            ),
            headers=headers,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0),
            auth=auth,
            follow_redirects=False,
            event_hooks={"response": [_report]},
        )

    return factory
