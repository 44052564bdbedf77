"""A real streamable-HTTP MCP server whose faults a test switches at runtime.

`FaultyMcpServer` serves a FastMCP app (tools `echo`, `slow`, `huge`) under
uvicorn in a background thread on a free 127.0.0.1 port. It needs no
credential (servers file `"auth": {"type": "none"}`) and ignores any bearer.
In front of the MCP app sits `FaultGate`, an ASGI wrapper that reads each
request's JSON-RPC method and applies the current fault to the requests it
targets (by default `tools/call` only, so sessions open and tools list
normally and the fault hits the run mid-way):

- `hang(...)`: never answer (the request waits until the server stops);
- `http_status(code, ...)`: answer `code` (401, 403, 500, ...) with a JSON body;
- `malformed(...)`: answer 200 `application/json` with a body that is not JSON-RPC;
- `normal()`: no fault;
- `down()` / `up()`: stop the server (listening socket closed, open connections
  dropped) and start a fresh one on the same port.

Session accounting is the tickets server's own (`onbehalf.demo.tickets.sessions`): a
session is opened when `initialize` is answered with a new `mcp-session-id`,
and closed only when its client sends DELETE — so `sessions_active` counts
exactly the sessions clients left open. Tool calls are counted when they
reach the tool (`started`) and when it returns (`finished`), and every
`tools/call` remembers the session that carried it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from starlette.types import ASGIApp, Receive, Scope, Send

from onbehalf.demo.tickets.sessions import ServerStats, SessionLedger
from tests.support.asgi_server import read_body, replay
from tests.support.tokens import free_port

STARTUP_SECONDS = 15.0
STOP_SECONDS = 10.0
GRACEFUL_SHUTDOWN_SECONDS = 0.5
"""How long a stopping server lets in-flight requests finish before dropping them."""

MALFORMED_BODY = b'{"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "te'
TOOLS_CALL = ("tools/call",)

FaultKind = Literal["hang", "status", "malformed"]


@dataclass(frozen=True)
class Fault:
    """What the gate does to the requests it targets instead of passing them on."""

    kind: FaultKind
    methods: frozenset[str] | None
    """JSON-RPC methods targeted (POST requests); None targets every request (GET, DELETE too)."""
    status: int = 0

    def targets(self, http_method: str, rpc_method: str | None) -> bool:
        if self.methods is None:
            return True
        return http_method == "POST" and rpc_method in self.methods


@dataclass
class FaultStats:
    """What the server saw; written on the server's loop, read by tests."""

    sessions: ServerStats = field(default_factory=ServerStats)
    reached: Counter[str] = field(default_factory=Counter)
    """JSON-RPC methods of POSTs that reached the MCP app (not intercepted by a fault)."""
    faulted: Counter[str] = field(default_factory=Counter)
    """JSON-RPC methods (or HTTP methods) of requests a fault intercepted."""
    started: Counter[str] = field(default_factory=Counter)
    finished: Counter[str] = field(default_factory=Counter)
    call_sessions: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Tool name -> ids of the sessions that carried a `tools/call` of it."""

    @property
    def open_sessions(self) -> set[str]:
        return set(self.sessions.open_sessions)

    def counts(self) -> dict[str, int]:
        """`sessions_opened`, `sessions_active` and `tool_calls`, as the tickets server reports."""
        return {
            "sessions_opened": self.sessions.sessions_opened,
            "sessions_active": len(self.sessions.open_sessions),
            "tool_calls": sum(self.started.values()),
        }


def build_faulty_mcp(stats: FaultStats) -> FastMCP[Any]:
    """The MCP server itself: three tools that count what they do."""
    mcp: FastMCP[Any] = FastMCP(
        name="faulty",
        instructions="A test server whose failures the tests choose.",
        host="127.0.0.1",
        log_level="WARNING",
        # sessions end only when their client closes them (or the server stops)
        session_idle_timeout=None,
    )

    @mcp.tool()
    async def echo(text: str) -> str:
        """Echo the text back."""
        stats.started["echo"] += 1
        stats.finished["echo"] += 1
        return f"echo: {text}"

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Wait this many seconds, then answer."""
        stats.started["slow"] += 1
        await asyncio.sleep(seconds)
        stats.finished["slow"] += 1
        return f"slept {seconds:g}s"

    @mcp.tool()
    async def huge(chars: int) -> str:
        """Answer with this many characters of text."""
        stats.started["huge"] += 1
        stats.finished["huge"] += 1
        return "x" * chars

    return mcp


class FaultGate:
    """ASGI wrapper in front of the MCP app: applies the server's current fault."""

    def __init__(self, app: ASGIApp, server: FaultyMcpServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        http_method = scope["method"]
        rpc_method: str | None = None
        tool: str | None = None
        if http_method == "POST":
            body = await read_body(receive)
            rpc_method, tool = _rpc_method_and_tool(body)
            receive = replay(body, receive)
        fault = self.server.fault
        stats = self.server.stats
        if fault is not None and fault.targets(http_method, rpc_method):
            stats.faulted[rpc_method or http_method] += 1
            await self._apply(fault, send)
            return
        if rpc_method is not None:
            stats.reached[rpc_method] += 1
        if rpc_method == "tools/call" and tool is not None:
            session_id = _header(scope, MCP_SESSION_ID_HEADER)
            if session_id is not None:
                stats.call_sessions[tool].add(session_id)
        await self.app(scope, receive, send)

    async def _apply(self, fault: Fault, send: Send) -> None:
        if fault.kind == "hang":
            # never answer; uvicorn cancels this when the server stops
            await asyncio.Event().wait()
        elif fault.kind == "status":
            body = json.dumps({"error": f"faulty MCP server answers {fault.status}"}).encode()
            headers = [(b"content-type", b"application/json")]
            if fault.status == 401:
                headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
            await _respond(send, fault.status, headers, body)
        else:
            await _respond(send, 200, [(b"content-type", b"application/json")], MALFORMED_BODY)


class FaultyMcpServer:
    """The server, its fault switch and its counters; start with `up()`, stop with `down()`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.stats = FaultStats()
        self.fault: Fault | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def config(self, *, timeout_seconds: float = 2, **extra: Any) -> dict[str, Any]:
        """This server's entry in an MCP servers file."""
        return {"url": self.url, "auth": {"type": "none"}, "timeout_seconds": timeout_seconds,
                **extra}

    # --- faults ------------------------------------------------------------------------

    def normal(self) -> None:
        self.fault = None

    def hang(self, methods: Iterable[str] | None = TOOLS_CALL) -> None:
        self.fault = Fault("hang", _methods(methods))

    def http_status(self, status: int, methods: Iterable[str] | None = TOOLS_CALL) -> None:
        self.fault = Fault("status", _methods(methods), status)

    def malformed(self, methods: Iterable[str] | None = TOOLS_CALL) -> None:
        self.fault = Fault("malformed", _methods(methods))

    # --- up and down -------------------------------------------------------------------

    def up(self) -> FaultyMcpServer:
        """Start a fresh MCP app on the port (the SDK's session manager runs only once)."""
        if self.running:
            return self
        _quiet_sdk_noise()
        app = build_faulty_mcp(self.stats).streamable_http_app()
        app.add_middleware(SessionLedger, stats=self.stats.sessions)
        gated = FaultGate(app, self)
        server = uvicorn.Server(uvicorn.Config(
            gated, host="127.0.0.1", port=self.port, log_level="critical", lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ))
        thread = threading.Thread(target=server.run, name=f"faulty-mcp-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"faulty MCP server did not start on port {self.port}")
            time.sleep(0.02)
        self._server, self._thread = server, thread
        return self

    def down(self) -> None:
        """Stop listening and drop every connection; the server's sessions are gone."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=STOP_SECONDS)
        if thread.is_alive():
            raise RuntimeError(f"faulty MCP server on port {self.port} did not stop")
        self.stats.sessions.open_sessions.clear()

    # --- waiting -----------------------------------------------------------------------

    async def wait_until(
        self, condition: Callable[[FaultStats], bool], what: str, seconds: float = 10.0
    ) -> None:
        """Poll the counters until `condition` holds; fail naming `what` after `seconds`."""
        deadline = time.monotonic() + seconds
        while not condition(self.stats):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"faulty MCP server: {what} did not happen within {seconds:g}s "
                    f"(counts {self.stats.counts()}, started {dict(self.stats.started)})"
                )
            await asyncio.sleep(0.05)

    async def wait_for_call(self, tool: str, count: int = 1, seconds: float = 10.0) -> None:
        """Until `count` calls of `tool` have reached the tool (e.g. `slow` is now sleeping)."""
        await self.wait_until(lambda s: s.started[tool] >= count, f"call #{count} of {tool}",
                              seconds)


@contextlib.contextmanager
def run_faulty_mcp(port: int | None = None) -> Iterator[FaultyMcpServer]:
    server = FaultyMcpServer(port).up()
    try:
        yield server
    finally:
        server.down()


def _quiet_sdk_noise() -> None:
    """mcp 1.30 logs a client closing its session (its GET stream open) as an ERROR traceback."""
    logger = logging.getLogger("mcp.server.streamable_http")
    if _drop_closed_stream_noise not in logger.filters:
        logger.addFilter(_drop_closed_stream_noise)


def _drop_closed_stream_noise(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    closed = isinstance(error, anyio.ClosedResourceError)
    return not (closed and record.getMessage() == "Error in standalone SSE writer")


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    return None if methods is None else frozenset(methods)


def _rpc_method_and_tool(body: bytes) -> tuple[str | None, str | None]:
    try:
        message = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(message, dict):
        return None, None
    method = message.get("method")
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) else None
    return (method if isinstance(method, str) else None,
            tool if isinstance(tool, str) else None)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
