"""A local RFC 8693 token-exchange endpoint for tests, one that really verifies.

`run_token_exchange()` serves `POST /token` on a free 127.0.0.1 port in a
background thread. The endpoint authenticates its client (HTTP Basic),
verifies the subject token with onbehalf's own `JwtVerifier` (the test
identity provider's secret, issuer and audience) and mints a fresh HS256
token for the requested audience, signed with the same secret, so a tickets
MCP server started with `AUTH_JWT_AUDIENCE=<that audience>` accepts it.

    with run_token_exchange() as exchange:
        exchange.token_url          # http://127.0.0.1:PORT/token
        exchange.exchanges          # [ExchangeRecord(subject, audience, resource, scope)]
        exchange.fail_mode = "invalid_grant"   # or unauthorized_client, server_error, hang

It runs under `tests.support.asgi_server.serve_in_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from onbehalf.jwt_auth import InvalidToken, JwtVerifier
from onbehalf.settings import AuthSettings
from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = frozenset({JWT_TYPE, ACCESS_TOKEN_TYPE})

HANG_SECONDS = 120.0
"""How long `fail_mode="hang"` keeps a request waiting: longer than any client timeout."""


FailMode = Literal["invalid_grant", "unauthorized_client", "server_error", "hang"]


@dataclass(frozen=True)
class ExchangeRecord:
    """One successful exchange: who and for what; never the tokens themselves."""

    subject: str
    audience: str | None
    resource: str | None
    scope: str | None


@dataclass
class ExchangeServer:
    """A running exchange endpoint; `fail_mode` may be changed while it runs."""

    token_url: str
    client_id: str
    issuer: str
    token_ttl: int
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    fail_mode: FailMode | None = None
    requests: int = 0
    """Every POST /token received, answered or not (exchanges counts only successes)."""
    stopping: threading.Event = field(default_factory=threading.Event, repr=False)


def build_exchange_app(
    state: ExchangeServer, *, client_secret: str, secret: str, subject_audience: str
) -> Starlette:
    """The `/token` endpoint as a Starlette app, recording into `state`."""
    verifier = JwtVerifier(
        AuthSettings(
            auth_jwt_secret=secret,
            auth_jwks_url=None,
            auth_jwt_issuer=state.issuer,
            auth_jwt_audience=subject_audience,
            auth_jwt_algorithms="HS256",
            auth_leeway_seconds=5,
        )
    )

    async def token(request: Request) -> JSONResponse:
        state.requests += 1
        if state.fail_mode == "hang":
            await _hang(state.stopping)
            return _error("server_error", "the exchange hung", status_code=503)
        if state.fail_mode == "server_error":
            return _error("server_error", "the exchange endpoint failed", status_code=500)

        if not _client_authenticated(request, state.client_id, client_secret):
            return _error(
                "invalid_client",
                "client authentication failed: send HTTP Basic client_id:client_secret",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="token-exchange"'},
            )
        if state.fail_mode == "unauthorized_client":
            return _error("unauthorized_client", "this client may not use token exchange")

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _error("invalid_request", "send application/x-www-form-urlencoded")
        try:
            pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            return _error("invalid_request", "the form is not UTF-8")
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key, value)  # a repeated parameter: the first one counts

        if params.get("grant_type") != GRANT_TYPE:
            return _error("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
        subject_token = params.get("subject_token")
        if not subject_token:
            return _error("invalid_request", "subject_token is required")
        if params.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            allowed = " or ".join(sorted(SUBJECT_TOKEN_TYPES))
            return _error("invalid_request", f"subject_token_type must be {allowed}")
        requested_type = params.get("requested_token_type")
        if requested_type is not None and requested_type not in SUBJECT_TOKEN_TYPES:
            return _error("invalid_request", f"cannot issue requested_token_type {requested_type}")
        audience = params.get("audience") or None
        resource = params.get("resource") or None
        target = audience or resource
        if target is None:
            return _error("invalid_target", "name the target service with audience or resource")

        if state.fail_mode == "invalid_grant":
            return _error("invalid_grant", "the subject token was refused (forced by the test)")
        try:
            subject = await verifier.verify(subject_token)
        except InvalidToken as exc:
            return _error("invalid_grant", exc.detail)

        now = int(time.time())
        expires_at = min(now + state.token_ttl, subject.expires_at)
        if expires_at <= now:
            return _error("invalid_grant", "the subject token has expired [check: exp]")
        scope = params.get("scope") or _subject_scope(subject.claims)
        actor: dict[str, Any] = {"sub": state.client_id}
        if isinstance(subject.claims.get("act"), dict):
            actor["act"] = subject.claims["act"]  # RFC 8693 §4.1: the delegation chain nests
        claims: dict[str, Any] = {
            "sub": subject.subject,
            "iss": state.issuer,
            "aud": target,
            "iat": now,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
            "act": actor,
        }
        if scope:
            claims["scope"] = scope
        issued = jwt.encode(claims, secret, algorithm="HS256")
        state.exchanges.append(ExchangeRecord(subject.subject, audience, resource, scope))
        return JSONResponse(
            {
                "access_token": issued,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": expires_at - now,
                **({"scope": scope} if scope else {}),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    return Starlette(routes=[Route("/token", token, methods=["POST"])])


@contextlib.contextmanager
def run_token_exchange(
    *,
    client_id: str = "onbehalf-agent",
    client_secret: str = "exchange-secret",
    issuer: str = TEST_ISSUER,
    secret: str = TEST_SECRET,
    token_ttl: int = 300,
    subject_audience: str = TEST_AUDIENCE,
) -> Iterator[ExchangeServer]:
    """Serve the exchange endpoint on a free port for the duration of the block."""
    state = ExchangeServer(
        token_url="", client_id=client_id, issuer=issuer, token_ttl=token_ttl
    )
    app = build_exchange_app(
        state, client_secret=client_secret, secret=secret, subject_audience=subject_audience
    )
    with serve_in_thread(app, stopping=state.stopping) as base_url:
        state.token_url = f"{base_url}/token"
        yield state


async def _hang(stopping: threading.Event) -> None:
    await asyncio.to_thread(stopping.wait, HANG_SECONDS)


def _client_authenticated(request: Request, client_id: str, client_secret: str) -> bool:
    """HTTP Basic client authentication; RFC 6749 §2.3.1 form-encodes both parts first."""
    sent = _basic_credentials(request)
    if sent is None:
        return False
    return (unquote_plus(sent[0]), unquote_plus(sent[1])) == (client_id, client_secret)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    return (client_id, client_secret) if sep else None


def _subject_scope(claims: dict[str, Any]) -> str | None:
    scope = claims.get("scope")
    return scope if isinstance(scope, str) and scope.strip() else None


def _error(
    error: str,
    description: str,
    *,
    status_code: int = 400,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status_code,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
