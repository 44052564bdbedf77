"""Counting MCP sessions and tool calls, for `get_health` and the tests that read it.

Tests prove "one MCP session per server per run" and "no session left open
after a run" from these numbers, so they must be exact at the moment a
client sees a response. The SDK's session manager has no public hooks for
session start and end, so `SessionLedger` watches the HTTP exchange
instead, and updates its counts *before* the response leaves the server:

- opened: a POST without `mcp-session-id` answered with a success status and
  a new `mcp-session-id` header (only `initialize` is answered that way);
- closed: a DELETE with `mcp-session-id` answered with a success status (how
  a streamable-HTTP client ends its session).

The server runs without the SDK's idle timeout (see `server.build_app`), so a
session only ends when its client closes it or the server stops; a session a
client forgot to close stays counted, which is exactly what the tests look for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SESSION_HEADER = MCP_SESSION_ID_HEADER.encode()


@dataclass
class ServerStats:
    """What `get_health` reports; mutated only on the server's event loop."""

    sessions_opened: int = 0
    tool_calls: int = 0
    open_sessions: set[str] = field(default_factory=set)

    def session_opened(self, session_id: str) -> None:
        self.sessions_opened += 1
        self.open_sessions.add(session_id)

    def session_closed(self, session_id: str) -> None:
        self.open_sessions.discard(session_id)

    def tool_called(self) -> None:
        self.tool_calls += 1

    def snapshot(self) -> dict[str, int]:
        return {
            "sessions_opened": self.sessions_opened,
            "sessions_active": len(self.open_sessions),
            "tool_calls": self.tool_calls,
        }


class SessionLedger:
    """ASGI middleware that records session starts and ends into `ServerStats`."""

    def __init__(self, app: ASGIApp, stats: ServerStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "DELETE"):
            await self.app(scope, receive, send)
            return
        requested = _header(scope.get("headers", []), _SESSION_HEADER)
        method = scope["method"]

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                if method == "POST" and requested is None:
                    created = _header(message.get("headers", []), _SESSION_HEADER)
                    if created is not None:
                        self.stats.session_opened(created)
                elif method == "DELETE" and requested is not None:
                    self.stats.session_closed(requested)
            await send(message)

        await self.app(scope, receive, observe)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
