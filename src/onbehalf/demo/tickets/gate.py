"""Who may reach the MCP endpoint: a verified bearer token, or an anonymous health check.

The SDK's own `RequireAuthMiddleware` guards the whole endpoint, and its
`BearerAuthBackend` drops the reason a token was refused. We need both an
open door for `get_health` and a 401 that names the failed check, so this
one middleware makes the whole decision:

- an `Authorization` header is verified (`JwtTokenVerifier`); if it fails,
  401 with `{"detail": ..., "check": ...}` and `WWW-Authenticate: Bearer
  error="invalid_token"`, whatever the request was;
- without one, a POST passes only if every JSON-RPC message in it is on
  `ANONYMOUS_METHODS` or calls a tool on `ANONYMOUS_TOOLS`; GET (the
  notification stream) and DELETE (closing) pass only for an existing session
  id, which the SDK binds to the credential that opened it, so an anonymous
  request can only reach an anonymous session. Everything else is a 401.

A verified request carries the SDK's `AuthenticatedUser` in `scope["user"]`;
the SDK uses it to bind sessions to their owner, the tools to learn who is
calling. The token itself is never logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onbehalf.demo.tickets.verifier import JwtTokenVerifier
from onbehalf.jwt_auth import InvalidToken, parse_bearer

logger = logging.getLogger(__name__)

ANONYMOUS_METHODS = frozenset({"initialize", "notifications/initialized", "ping", "tools/list"})
"""JSON-RPC methods a client may send without a token: enough to connect and discover tools."""

ANONYMOUS_TOOLS = frozenset({"get_health"})
"""Tools that touch no user data and may be called without a token."""

MAX_ANONYMOUS_BODY = 64 * 1024
"""Anonymous requests are small; a larger one is not read further and needs a token."""


class BearerGate:
    """ASGI middleware: authenticate the request, or let it through anonymously, or answer 401."""

    def __init__(self, app: ASGIApp, verifier: JwtTokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        try:
            if authorization is None or not authorization.strip():
                allowed, receive = await _anonymous_allowed(scope, receive, headers)
                if not allowed:
                    parse_bearer(authorization)  # raises: names the missing header and the fix
                scope["user"] = UnauthenticatedUser()
                scope["auth"] = AuthCredentials()
            else:
                access = await self.verifier.authenticate(authorization)
                scope["user"] = AuthenticatedUser(access)
                scope["auth"] = AuthCredentials(access.scopes)
        except InvalidToken as exc:
            logger.info("refused %s %s: %s", scope["method"], scope["path"], exc.check)
            await unauthorized(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def unauthorized(exc: InvalidToken) -> JSONResponse:
    """The one shape of every refusal: RFC 6750 header plus a JSON body naming the check."""
    description = exc.message.replace('"', "'").replace("\\", "/")
    return JSONResponse(
        {"error": "invalid_token", "detail": exc.detail, "check": exc.check},
        status_code=exc.status_code,
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        },
    )


async def _anonymous_allowed(
    scope: Scope, receive: Receive, headers: Headers
) -> tuple[bool, Receive]:
    """Decide for a request without a token; returns a `receive` that still yields the body."""
    method = scope["method"]
    if method in ("GET", "DELETE"):
        return MCP_SESSION_ID_HEADER in headers, receive
    if method != "POST":
        return False, receive
    body = await _read_body(receive, MAX_ANONYMOUS_BODY)
    if body is None:
        return False, receive
    try:
        payload = json.loads(body)
    except ValueError:
        return False, _replay(body, receive)
    messages = payload if isinstance(payload, list) else [payload]
    allowed = bool(messages) and all(_anonymous_message(m) for m in messages)
    return allowed, _replay(body, receive)


def _anonymous_message(message: object) -> bool:
    if not isinstance(message, dict):
        return False
    method = message.get("method")
    if method in ANONYMOUS_METHODS:
        return True
    if method == "tools/call":
        params = message.get("params")
        return isinstance(params, dict) and params.get("name") in ANONYMOUS_TOOLS
    return False


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if the client left or it exceeds `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A `receive` that hands the already-read body to the app, then defers to the client."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
