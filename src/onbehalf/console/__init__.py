"""The dev console (DESIGN.md §9): chat as any dev user in a browser.

Exists only with `ONBEHALF_DEV_CONSOLE=1` and never with `ONBEHALF_ENV=production`;
every route answers 404 otherwise (checked on each request, fail closed). The token
route mints a dev JWT with the dev secret for loopback clients only; the page keeps it
in sessionStorage and sends it only as the Authorization header. As the confirm page of
§8 it first asks the flow route which server a held connection is for, so that the
person reads what they are about to connect before they press Confirm.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from onbehalf.cli_errors import CliError
from onbehalf.dev_tokens import mint_dev_token
from onbehalf.jwt_auth import InvalidToken
from onbehalf.oauth.accounts import OAuthProblem, oauth_store
from onbehalf.oauth.routes import caller_identity, configured_oauth_servers, unlogged_query
from onbehalf.oauth.store import digest
from onbehalf.redis_store import StoreError
from onbehalf.settings import SettingsError

STATIC = Path(__file__).parent / "static"
_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCOPE = re.compile(r"^[A-Za-z0-9:._-]{1,64}$")
_NO_STORE = {"cache-control": "no-store", "x-content-type-options": "nosniff",
             "referrer-policy": "no-referrer"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def console_enabled(env: dict[str, str] | None = None) -> bool:
    """On only when ONBEHALF_DEV_CONSOLE=1 and not ONBEHALF_ENV=production."""
    env = os.environ if env is None else env
    if env.get("ONBEHALF_ENV", "").strip().lower() == "production":
        return False
    return env.get("ONBEHALF_DEV_CONSOLE", "").strip() == "1"


def _not_found() -> Response:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def loopback_only(request: Request) -> bool:
    """The peer is loopback and no proxy header says the request came from elsewhere."""
    if not _is_loopback(request.client.host if request.client else None):
        return False
    for name in ("x-forwarded-for", "x-real-ip", "forwarded"):
        for value in request.headers.getlist(name):
            for part in value.split(","):
                part = part.strip()
                if name == "forwarded":
                    m = re.search(r'for="?\[?([^\]";,]+)', part, re.I)
                    part = m.group(1) if m else ""
                if not _is_loopback(part):
                    return False
    return True


def same_origin(request: Request) -> bool:
    """No `Origin`, or the console's own (a browser sends it on every cross-site POST)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin.rstrip("/") == own


async def page(request: Request) -> Response:
    if not console_enabled():
        return _not_found()
    unlogged_query(request)  # as the confirm page of §8 it gets ?flow=&confirm=<secret>
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers={**_NO_STORE, "content-security-policy": _CSP})


async def static(request: Request) -> Response:
    if not console_enabled():
        return _not_found()
    name = request.path_params["name"]
    if name not in _FILES:
        return _not_found()
    return FileResponse(STATIC / name, media_type=_FILES[name], headers=_NO_STORE)


async def _json_object(request: Request) -> dict[str, object] | None:
    """The request's JSON object body (`{}` when empty), or None for anything else."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def token(request: Request) -> Response:
    """Mint a dev JWT (as `onbehalf token`): dev console on, loopback clients only."""
    if not console_enabled():
        return _not_found()
    if not loopback_only(request):
        return JSONResponse({"detail": "the dev sign-in is for loopback clients only"},
                            status_code=403)
    if not same_origin(request):
        # another site open in the developer's browser is loopback too: never mint for it
        return JSONResponse({"detail": "the dev sign-in answers the console's own page only"},
                            status_code=403)
    body = await _json_object(request)
    if body is None:
        return JSONResponse({"detail": "send JSON {\"user\": ..., \"scopes\": [...]}"},
                            status_code=400)
    user = body.get("user")
    scopes = body.get("scopes", ["tickets:read"])
    ttl = body.get("ttl", 3600)
    if not isinstance(user, str) or not _USER.match(user):
        return JSONResponse({"detail": "user: letters, digits, . _ @ - (at most 64)"},
                            status_code=400)
    if not (isinstance(scopes, list) and all(isinstance(s, str) and _SCOPE.match(s)
                                             for s in scopes)):
        return JSONResponse({"detail": "scopes: a list of scope names"}, status_code=400)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 86400:
        return JSONResponse({"detail": "ttl: 1 to 86400 seconds"}, status_code=400)
    try:
        jwt = mint_dev_token(user, scopes, ttl)
    except CliError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return JSONResponse({"token": jwt, "user": user, "scopes": scopes, "expires_in": ttl},
                        headers=_NO_STORE)


async def flow(request: Request) -> Response:
    """Which server a held connection is for, to the signed-in holder of its confirm secret.

    Read-only (the flow stays held: only the confirm route spends it); no identity check
    here, because refusing another user's link is the confirm route's job and its message
    is the one the person must read."""
    if not console_enabled():
        return _not_found()
    try:
        await caller_identity(request)
    except InvalidToken as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=_NO_STORE)
    secret = (await _json_object(request) or {}).get("confirm")
    if not isinstance(secret, str) or not secret:
        return JSONResponse({"detail": 'send JSON {"confirm": "<the secret from the link>"}'},
                            status_code=400, headers=_NO_STORE)
    try:
        held = await oauth_store().peek_held(request.path_params["flow"])
        servers = configured_oauth_servers()
    except (StoreError, SettingsError, OAuthProblem) as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers=_NO_STORE)
    if (held is None or held["expires_at"] <= time.time()
            or not hmac.compare_digest(held["confirm"], digest(secret))):
        return JSONResponse(
            {"detail": "this connect link is unknown, already used or expired: nothing was "
                       "connected; ask the agent for a new link"},
            status_code=404, headers=_NO_STORE)
    server = servers.get(held["server"])
    return JSONResponse({"server": held["server"],
                         "description": server.description if server else None},
                        headers=_NO_STORE)


routes = [
    *(Route(path, page, methods=["GET"]) for path in ("/console", "/console/")),
    Route("/console/static/{name}", static, methods=["GET"]),
    Route("/console/api/token", token, methods=["POST"]),
    Route("/console/api/flows/{flow}", flow, methods=["POST"]),
]
