"""The OAuth routes of DESIGN.md §8, on the LangGraph server through `http.app`.

Custom routes are not behind the server's `@auth.authenticate`, so every route
but the callback and the client metadata document verifies the caller's bearer
JWT itself, with the same verifier as the server edge. The callback is a browser
redirect from the authorization server and carries no JWT: `state` finds the
flow, and it only *holds* the code until the user who started the flow confirms.
The client metadata document is public by design: authorization servers fetch it.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from onbehalf.jwt_auth import InvalidToken, parse_bearer, process_verifier
from onbehalf.oauth.accounts import (
    OAuthProblem,
    OAuthServer,
    confirm_flow,
    connection_status,
    disconnect,
    hold_callback,
    oauth_server,
    oauth_settings,
    oauth_store,
)
from onbehalf.oauth.client_metadata import (
    CACHE_CONTROL,
    CLIENT_METADATA_PATH,
    client_metadata_document,
)
from onbehalf.redis_store import StoreError
from onbehalf.servers import OAuthAuth, ServersFileError, load_servers_config
from onbehalf.settings import SettingsError

log = logging.getLogger("onbehalf.oauth")

_PRIVATE = {"cache-control": "no-store", "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff"}
_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def configured_oauth_servers() -> dict[str, OAuthServer]:
    """The `oauth` servers of the servers file (every graph's: connections are per user)."""
    try:
        config = load_servers_config()
    except ServersFileError as exc:
        raise OAuthProblem(str(exc), 503) from None
    return {name: oauth_server(name, server) for name, server in config.servers.items()
            if isinstance(server.auth, OAuthAuth)}


async def caller_identity(request: Request) -> str:
    """The verified `sub` of the request's bearer JWT, or InvalidToken."""
    token = parse_bearer(request.headers.get("authorization"))
    return (await process_verifier().verify(token)).subject


def unlogged_query(request: Request) -> dict[str, str]:
    """The query parameters, then blanked in the ASGI scope so the access log never has them.

    langgraph-api's access logger records each request's `query_string` when the
    response is done, from the same scope dict the route receives. The callback's
    query carries the authorization code and `state`, the confirm page's the
    one-time confirm secret: read once here, they are gone before the log line."""
    params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    request.scope["query_string"] = b""
    return params


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=_PRIVATE)


def _page(title: str, message: str, status: int) -> HTMLResponse:
    body = (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<body style='font:16px system-ui;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p id=message>{html.escape(message)}</p></body>"
    )
    return HTMLResponse(body, status_code=status,
                        headers={**_PRIVATE, "content-security-policy": _PAGE_CSP})


async def _guarded(request: Request, handler: Any) -> Response:
    """Run a bearer route: 401 for a bad token, the problem's status for a refusal."""
    try:
        identity = await caller_identity(request)
    except InvalidToken as exc:
        return _json({"detail": exc.detail}, exc.status_code)
    except SettingsError:
        return _json({"detail": "the server's token verification is misconfigured"}, 401)
    try:
        return await handler(identity)
    except OAuthProblem as exc:
        return _json({"detail": str(exc)}, exc.status)
    except (StoreError, SettingsError) as exc:
        return _json({"detail": str(exc)}, 503)


async def callback(request: Request) -> Response:
    """Check state and iss, hold the code, and send the browser on to the confirm page."""
    params = unlogged_query(request)
    try:
        target = await hold_callback(params)
    except OAuthProblem as exc:
        return _page("The account was not connected", str(exc), exc.status)
    except (StoreError, SettingsError) as exc:
        return _page("The account was not connected", str(exc), 503)
    return RedirectResponse(target, status_code=303, headers=_PRIVATE)


async def metadata_document(request: Request) -> Response:
    """onbehalf's Client ID Metadata Document: public, cacheable, the same bytes every time."""
    try:
        body = client_metadata_document(oauth_settings())
    except SettingsError as exc:
        return _json({"detail": f"no client metadata document here: {exc}"}, 404)
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"cache-control": CACHE_CONTROL, "etag": etag, "x-content-type-options": "nosniff"}
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def confirm(request: Request) -> Response:
    """Only the user who started the flow, holding its one-time secret, completes it."""
    flow_id = request.path_params["flow"]

    async def handle(identity: str) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        secret = body.get("confirm") if isinstance(body, dict) else None
        if not isinstance(secret, str) or not secret:
            return _json({"detail": 'send JSON {"confirm": "<the secret from the link>"}'}, 400)
        held_server = await _held_server(flow_id)
        return _json(await confirm_flow(identity, flow_id, secret, held_server))

    return await _guarded(request, handle)


async def _held_server(flow_id: str) -> OAuthServer | None:
    """The configured server a held flow is for (looked up without consuming the flow)."""
    raw = await oauth_store().peek_held(flow_id)
    return configured_oauth_servers().get(raw["server"]) if raw else None


async def list_connections(request: Request) -> Response:
    """The caller's oauth servers and the state of each, never a token."""

    async def handle(identity: str) -> Response:
        servers = configured_oauth_servers()
        return _json({"connections": [await connection_status(identity, s)
                                      for s in servers.values()]})

    return await _guarded(request, handle)


async def delete_connection(request: Request) -> Response:
    """Forget the caller's tokens for one server, revoking them at the AS first."""
    name = request.path_params["server"]

    async def handle(identity: str) -> Response:
        server = configured_oauth_servers().get(name)
        if server is None:
            return _json({"detail": f"no oauth MCP server named {name!r} is configured"}, 404)
        return _json(await disconnect(identity, server))

    return await _guarded(request, handle)


routes = [
    Route("/oauth/callback", callback, methods=["GET"]),
    Route(CLIENT_METADATA_PATH, metadata_document, methods=["GET"]),
    Route("/oauth/flows/{flow}/confirm", confirm, methods=["POST"]),
    Route("/connections", list_connections, methods=["GET"]),
    Route("/connections/{server}", delete_connection, methods=["DELETE"]),
]
