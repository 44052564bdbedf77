"""A "third-party" MCP server for tests that knows users only by their own API keys (like GitHub).

It has no idea of the identity provider's JWTs: each user connects their own
account by giving onbehalf a personal API key, and every request must carry
it. `run_apikey_mcp()` serves it in a background thread:

    with run_apikey_mcp({"key-alice": "alice"}) as server:
        server.url                 # http://127.0.0.1:PORT/mcp
        del server.keys["key-alice"]   # revoke: the next request is a 401
        server.sessions_opened, server.sessions_active, server.tool_calls

Request path, outside in: `ApiKeyGate` (which key, which user) →
`SessionLedger` (session counts, shared with the tickets server) → the SDK's
streamable-HTTP app → the tools. The identity is read from the request that
carried the tool call, never from the one that opened the session: under
stateful streamable HTTP a tool runs in the session's own task, so a
contextvar set per request would show the *opening* request's key. The gate
therefore puts the caller into the ASGI scope, which the SDK hands to the
tool as `ctx.request_context.request`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mcp.server.fastmcp import Context
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from onbehalf.demo.tickets.sessions import ServerStats, SessionLedger
from onbehalf.demo.tickets.tools import TicketsMCP
from tests.support.asgi_server import serve_in_thread

DEFAULT_KEYS = {"ghk-alice-0001": "alice", "ghk-bob-0002": "bob"}
"""API key → user, when a test does not bring its own."""

SCOPE_KEY = "apikey_caller"
"""Where the gate leaves the caller in the ASGI scope."""


@dataclass(frozen=True)
class ApiKeyCaller:
    """Who sent this request: the user the key belongs to and the key's fingerprint."""

    user: str
    key_sha256: str


class ApiKeyGate:
    """ASGI middleware: every HTTP request must carry a known key, or it is a 401.

    `keys` is read on every request, so removing an entry revokes the key at once.
    """

    def __init__(self, app: ASGIApp, keys: dict[str, str], header: str, scheme: str | None):
        self.app = app
        self.keys = keys
        self.header = header
        self.scheme = scheme
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self._key(Headers(scope=scope).get(self.header))
        user = self.keys.get(key) if key is not None else None
        if user is None:
            self.refused += 1
            detail = (
                f"missing API key: send '{self.header}: {self._example}'"
                if key is None
                else "unknown or revoked API key: connect your account again"
            )
            response = JSONResponse(
                {"error": "invalid_token", "detail": detail},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            await response(scope, receive, send)
            return
        scope[SCOPE_KEY] = ApiKeyCaller(user, hashlib.sha256(key.encode()).hexdigest())
        await self.app(scope, receive, send)

    @property
    def _example(self) -> str:
        return f"{self.scheme} <your key>" if self.scheme else "<your key>"

    def _key(self, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if self.scheme is None:
            return value.strip()
        scheme, _, key = value.strip().partition(" ")
        if scheme.lower() != self.scheme.lower() or not key.strip():
            return None
        return key.strip()


def caller(ctx: Context[Any, Any, Any]) -> ApiKeyCaller:
    """The caller of the HTTP request that carried this tool call."""
    request = ctx.request_context.request
    found = request.scope.get(SCOPE_KEY) if request is not None else None
    if not isinstance(found, ApiKeyCaller):
        raise ToolError("this tool needs an API key")
    return found


class ReposMCP(TicketsMCP):
    """The tickets server's call-counting FastMCP, serving repositories."""


def build_mcp(stats: ServerStats) -> ReposMCP:
    mcp = ReposMCP(
        stats,
        name="repos",
        instructions="Code repositories of the user whose API key was presented.",
        host="127.0.0.1",
        log_level="WARNING",
        session_idle_timeout=None,
    )
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @mcp.tool(annotations=read_only)
    async def whoami(ctx: Context[Any, Any, Any]) -> dict[str, Any]:
        """Show which account this server believes the caller is (from the API key sent),
        and a sha256 fingerprint of that key."""
        who = caller(ctx)
        return {"as_user": who.user, "key_sha256": who.key_sha256}

    @mcp.tool(annotations=read_only)
    async def list_repos(ctx: Context[Any, Any, Any]) -> dict[str, Any]:
        """List the code repositories of the account whose API key was sent."""
        user = caller(ctx).user
        return {"as_user": user, "repos": [f"{user}/project-a", f"{user}/dotfiles"]}

    return mcp


@dataclass
class ApiKeyMcp:
    """A running API-key MCP server; `keys` is live (edit it to add or revoke keys)."""

    url: str
    keys: dict[str, str]
    stats: ServerStats
    gate: ApiKeyGate

    @property
    def sessions_opened(self) -> int:
        return self.stats.sessions_opened

    @property
    def sessions_active(self) -> int:
        return len(self.stats.open_sessions)

    @property
    def tool_calls(self) -> int:
        return self.stats.tool_calls

    @property
    def refused(self) -> int:
        """Requests answered 401 (missing, unknown or revoked key)."""
        return self.gate.refused


@contextlib.contextmanager
def run_apikey_mcp(
    keys: dict[str, str] | None = None,
    *,
    header: str = "Authorization",
    scheme: str | None = "Bearer",
) -> Iterator[ApiKeyMcp]:
    """Serve the API-key MCP server on a free port; `scheme=None` expects the raw key.

    `keys` (API key → user) is copied; change `server.keys` to revoke at runtime.
    """
    live_keys = dict(DEFAULT_KEYS if keys is None else keys)
    stats = ServerStats()
    app = SessionLedger(build_mcp(stats).streamable_http_app(), stats)
    gate = ApiKeyGate(app, live_keys, header, scheme)  # lifespan events pass straight through
    with serve_in_thread(gate) as base_url:
        yield ApiKeyMcp(f"{base_url}/mcp", live_keys, stats, gate)
