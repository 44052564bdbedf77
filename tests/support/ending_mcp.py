"""An MCP server that ends sessions while it runs, as real servers do.

A FastMCP app (the `mcp` SDK's own session handling) behind a thin ASGI layer
that can forget session ids the way other servers do: on idle expiry (a
session without a request for `idle_seconds`), all at once (a graceful restart
without closing anything), or for good (`restart()`: a new app on the same
port, so every id is unknown and the standing GET streams are cut). With `post_only`, `GET` and
`DELETE` answer 405, as a server offering neither may. A forgotten
id answers **404** with a JSON-RPC error, which is what the MCP spec tells a
client to answer with a fresh `initialize`. With `stateless=True` the app has
no sessions at all and answers plain JSON.

Its `count` tool reports progress and log notifications at each step; its `grow` tool
adds a tool and sends `notifications/tools/list_changed`.
It counts what a test needs: `initializes`, `tool_lists`, `tool_calls` and the 404s sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.asgi_server import read_body, replay, rpc_method, serve_in_thread
from tests.support.tokens import free_port

SESSION_HEADER = b"mcp-session-id"


@dataclass
class EndingMcp:
    url: str
    port: int
    stateless: bool
    idle_seconds: float | None = None
    end_on_call: bool = False
    """Every `tools/call` ends its session first (answers 404): a server that never keeps one."""
    post_only: bool = False
    """`GET` and `DELETE` answer 405: no stream of its own and no session ending by the
    client, both optional in the spec."""
    initializes: int = 0
    tool_lists: int = 0
    tool_calls: int = 0
    not_found: int = 0
    refused_405: int = 0
    forgotten: set[str] = field(default_factory=set)
    last_seen: dict[str, float] = field(default_factory=dict)
    _restart: Any = None

    def forget_all(self) -> None:
        """Drop every known session id without closing any stream (ids then answer 404)."""
        self.forgotten.update(self.last_seen)

    def restart(self) -> None:
        """Stop the server and start a new one on the same port: every session is gone."""
        self._restart()


def _build_mcp(state: EndingMcp) -> FastMCP:
    mcp = FastMCP("ending", stateless_http=state.stateless, json_response=state.stateless)

    @mcp.tool()
    def echo(text: str) -> str:
        """Say `text` back."""
        state.tool_calls += 1
        return json.dumps({"echo": text})

    @mcp.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Count to `steps`, reporting progress (and a log line) at each step."""
        state.tool_calls += 1
        for step in range(1, steps + 1):
            await ctx.info(f"step {step}")
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
            await asyncio.sleep(0.05)
        return json.dumps({"counted": steps})

    @mcp.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called `name` (it says its name back) and tell the client so."""
        state.tool_calls += 1

        def added() -> str:
            return json.dumps({"added": name})

        mcp.add_tool(added, name=name, description=f"The tool {name}, added at run time.")
        await ctx.session.send_tool_list_changed()
        return json.dumps({"grew": name})

    return mcp


class _Forgetting:
    def __init__(self, app: ASGIApp, state: EndingMcp) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = dict(scope["headers"]).get(SESSION_HEADER, b"").decode() or None
        state = self.state
        if scope["method"] in ("GET", "DELETE") and state.post_only:
            state.refused_405 += 1
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"POST, DELETE")]})
            await send({"type": "http.response.body", "body": b""})
            return
        now = time.monotonic()
        if sid is not None and state.idle_seconds is not None:
            seen = state.last_seen.get(sid)
            if seen is not None and now - seen > state.idle_seconds:
                state.forgotten.add(sid)
        body = await read_body(receive)
        method = rpc_method(body) if scope["method"] == "POST" else None
        if method == "initialize":
            state.initializes += 1
        if method == "tools/list":
            state.tool_lists += 1
        if sid is not None and method == "tools/call" and state.end_on_call:
            state.forgotten.add(sid)
        if sid is not None and sid in state.forgotten:
            state.not_found += 1
            body = json.dumps({"jsonrpc": "2.0", "id": "server-error",
                               "error": {"code": -32600, "message": "Session not found"}})
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        if sid is not None and scope["method"] == "POST":
            state.last_seen[sid] = now

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == SESSION_HEADER:
                        state.last_seen[value.decode()] = time.monotonic()
            await send(message)

        await self.app(scope, replay(body, receive), send_and_note)


@contextlib.contextmanager
def run_ending_mcp(*, stateless: bool = False, idle_seconds: float | None = None,
                   end_on_call: bool = False, post_only: bool = False
                   ) -> Iterator[EndingMcp]:
    """Serve the app on a free port; `restart()` replaces it with a fresh one on that port."""
    port = free_port()
    state = EndingMcp(url=f"http://127.0.0.1:{port}/mcp", port=port, stateless=stateless,
                      idle_seconds=idle_seconds, end_on_call=end_on_call,
                      post_only=post_only)
    with contextlib.ExitStack() as stack:

        def start() -> None:
            app = _Forgetting(_build_mcp(state).streamable_http_app(), state)
            stack.enter_context(serve_in_thread(app, port))

        def restart() -> None:
            stack.close()
            state.last_seen.clear()
            state.forgotten.clear()
            start()

        state._restart = restart
        start()
        yield state
