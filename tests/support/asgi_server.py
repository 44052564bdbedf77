"""Any ASGI app under uvicorn in a daemon thread, for test servers that run in process."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.tokens import free_port

STARTUP_SECONDS = 15.0
STOP_SECONDS = 10.0


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp, port: int | None = None, *, stopping: threading.Event | None = None
) -> Iterator[str]:
    """Run any ASGI app under uvicorn in a daemon thread; yields `http://127.0.0.1:PORT`.

    `stopping` is set before shutdown begins, so handlers that wait on it
    (a simulated hang) end and never hold up the graceful shutdown.
    """
    port = free_port() if port is None else port
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                       timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, name=f"asgi-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"in-process test server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if stopping is not None:
            stopping.set()
        server.should_exit = True
        thread.join(timeout=STOP_SECONDS)


async def read_body(receive: Receive) -> bytes:
    """A request's whole body, for a layer that looks at it before the app does."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the real channel."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect

    return replaying


def rpc_method(body: bytes) -> str | None:
    """The JSON-RPC method a request body carries (None: a response, a batch, not JSON)."""
    with contextlib.suppress(ValueError):
        message = json.loads(body)
        if isinstance(message, dict) and isinstance(message.get("method"), str):
            return message["method"]
    return None


def lowlevel_mcp_app(server: Any, heard: Callable[[str | None], None] | None = None
                     ) -> Starlette:
    """The `mcp` SDK's low-level `Server` over streamable HTTP at `/mcp/` (sessions kept),
    for servers a test builds by hand; `heard` is told the JSON-RPC method of every POST."""
    manager = StreamableHTTPSessionManager(app=server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if heard is not None and scope["type"] == "http" and scope["method"] == "POST":
            body = await read_body(receive)
            heard(rpc_method(body))
            receive = replay(body, receive)
        await manager.handle_request(scope, receive, send)

    return Starlette(routes=[Mount("/mcp", app=handle)], lifespan=lifespan)
