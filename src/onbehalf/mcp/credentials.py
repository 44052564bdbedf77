"""Where each server's credential is decided (the servers file's `auth.type`).

`user_token` sends exactly the JWT the user presented; `token_exchange`
trades it (RFC 8693) for one issued for that server; `user_secret` and `oauth`
send the user's own connected account (`oauth`: tokens from the MCP
authorization spec flow, refreshed before use); `static` reads a service
credential from the environment; `none` sends nothing. The result is one
user's connection to one server (client.py: the credential in a
`CredentialAuth`, never in a headers dict): it is never reused for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from langchain_mcp_adapters.sessions import Connection
from pydantic import SecretStr

from onbehalf.errors import OnBehalfError
from onbehalf.jwt_auth import bearer_header
from onbehalf.mcp.client import CredentialAuth, credential_fingerprint, mcp_connection
from onbehalf.mcp.tokens import UserToken
from onbehalf.mcp.transport import session_transport
from onbehalf.oauth.accounts import (
    NotConnected,
    OAuthProblem,
    OAuthServer,
    access_token,
    basic_credentials,
    drop_refused,
    oauth_server,
    start_flow,
)
from onbehalf.oauth.accounts import refresh as refresh_oauth
from onbehalf.oauth.store import StoredTokens
from onbehalf.redis_store import ProcessStore, StoreError
from onbehalf.servers import (
    McpServer,
    OAuthAuth,
    StaticAuth,
    TokenExchangeAuth,
    UserSecretAuth,
    UserTokenAuth,
)
from onbehalf.user_secrets import StoredSecret, UserSecretError, UserSecretStore


class CredentialUnavailable(OnBehalfError):
    """No credential could be produced for one server; only that server's tools are lost."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server


Revoke = Callable[[], Awaitable[None]]
Connect = Callable[[], Awaitable[str]]
Refresh = Callable[[], Awaitable[bool]]
Grant = Callable[[Sequence[str]], Awaitable[str]]


class AccountNotConnected(CredentialUnavailable):
    """An `oauth` server the user has not connected (or must reconnect): lazy consent."""

    def __init__(self, server: str, state: str, description: str | None,
                 connect: Connect) -> None:
        verb = "reconnect" if state == "needs_reconnect" else "connect"
        super().__init__(server, f"MCP server {server!r} needs you to {verb} your account")
        self.state = state
        self.description = description
        self.connect = connect


@dataclass(frozen=True)
class ServerCredential:
    """One user's connection to one server, and how to drop its credential if refused."""

    connection: Connection = field(repr=False)
    kind: str
    fingerprint: str = field(repr=False)
    """Of everything sent (headers and credential): part of the session pool key."""
    connect_url: str | None = None
    revoke: Revoke | None = field(default=None, repr=False)
    """Compare-and-delete of the cached/stored credential that was actually sent."""
    connect: Connect | None = field(default=None, repr=False)
    """Starts a new connect flow and gives its link (`oauth`: a link is single use)."""
    refresh: Refresh | None = field(default=None, repr=False)
    """After a 401: refresh the tokens that were sent; False when that is not possible."""
    grant: Grant | None = field(default=None, repr=False)
    """Step-up (`oauth`): a new connect flow asking for these scopes too; its link."""
    granted_scopes: tuple[str, ...] = ()
    """The scopes the credential that was sent carries (`oauth`: as the AS granted them)."""
    sent_secrets: tuple[SecretStr, ...] = field(default=(), repr=False)
    """What the server is sent that it must never get to echo into a run (results.py)."""

    @property
    def reconnectable(self) -> bool:
        """A refusal means "reconnect that account", not "sign in again"."""
        return self.kind in ("token_exchange", "user_secret", "oauth")

    async def link(self) -> str | None:
        """Where the user (re)connects: a fresh flow for `oauth`, else the configured page."""
        if self.connect is not None:
            with contextlib.suppress(OAuthProblem):
                return await self.connect()
            return None
        return self.connect_url


_secret_stores = ProcessStore(UserSecretStore)


def secret_store() -> UserSecretStore:
    """The per-user secret store (created on first use, from REDIS_URL)."""
    return _secret_stores.get()


def use_secret_store(store: UserSecretStore | None) -> None:
    """Point the kit at another store (tests, embedding applications)."""
    _secret_stores.use(store)


_EXCHANGE_CACHE_SIZE = 2048
_EXCHANGE_MARGIN_SECONDS = 30
_exchange_cache: OrderedDict[tuple[str, str, str, str], tuple[SecretStr, float]] = OrderedDict()
_exchange_locks: dict[tuple[str, str, str, str], asyncio.Lock] = {}


async def credential_for(name: str, server: McpServer, user: UserToken) -> ServerCredential:
    """This user's connection to this server, carrying this user's credential."""
    auth = server.auth
    revoke: Revoke | None = None
    connect_url: str | None = None
    sent: CredentialAuth | None = None
    if isinstance(auth, UserTokenAuth):
        if auth.audience is not None:
            _require_audience(name, auth.audience, user)
        sent = CredentialAuth("Authorization", bearer_header(user.token.get_secret_value()))
    elif isinstance(auth, TokenExchangeAuth):
        token = await _exchanged_token(name, server, auth, user)
        sent = CredentialAuth("Authorization", bearer_header(token.get_secret_value()))
        key = (user.identity, user.fingerprint, name, server.url)
        connect_url = auth.connect_url

        async def revoke() -> None:
            cached = _exchange_cache.get(key)
            if cached is not None and cached[0] == token:  # compare, then delete
                del _exchange_cache[key]

    elif isinstance(auth, UserSecretAuth):
        stored = await _user_secret(name, auth, user)
        value = stored.value.get_secret_value()
        sent = CredentialAuth(auth.header, f"{auth.scheme} {value}" if auth.scheme else value)
        connect_url = auth.connect_url

        async def revoke() -> None:
            await secret_store().delete_if_unchanged(user.identity, stored)

    elif isinstance(auth, OAuthAuth):
        account = oauth_server(name, server)
        tokens = await _oauth_tokens(name, account, user)
        sent = CredentialAuth("Authorization", bearer_header(tokens.access_token))

        async def connect() -> str:
            return await start_flow(user.identity, account)

        async def grant(scopes: Sequence[str]) -> str:
            return await start_flow(user.identity, account, scopes)

        async def revoke() -> None:
            await drop_refused(user.identity, name, tokens)

        async def refresh() -> bool:
            try:
                await refresh_oauth(user.identity, account, tokens)
            except OAuthProblem:
                return False
            return True

        return _credential(server, sent, kind=auth.type, revoke=revoke, connect=connect,
                           refresh=refresh, grant=grant,
                           granted_scopes=tuple((tokens.scope or "").split()))
    elif isinstance(auth, StaticAuth):
        value = os.environ.get(auth.value_env)
        if not value:
            raise CredentialUnavailable(
                name, f"MCP server {name!r}: environment variable {auth.value_env} is not set "
                "(auth.type 'static' reads the service credential from it)"
            )
        sent = CredentialAuth(auth.header, f"{auth.scheme} {value}" if auth.scheme else value)
    return _credential(server, sent, kind=auth.type, connect_url=connect_url, revoke=revoke)


def _credential(server: McpServer, sent: CredentialAuth | None, **rest: Any) -> ServerCredential:
    fingerprint = (sent.fingerprint(server.headers) if sent is not None
                   else credential_fingerprint(server.headers))
    return ServerCredential(connection=mcp_connection(server, sent), fingerprint=fingerprint,
                            sent_secrets=sent.secrets() if sent is not None else (), **rest)


async def _oauth_tokens(name: str, account: OAuthServer, user: UserToken) -> StoredTokens:
    try:
        return await access_token(user.identity, account)
    except NotConnected as exc:

        async def connect() -> str:
            return await start_flow(user.identity, account)

        async def grant(scopes: Sequence[str]) -> str:
            return await start_flow(user.identity, account, scopes)

        raise AccountNotConnected(name, exc.state, account.description, connect) from None
    except (OAuthProblem, StoreError) as exc:
        raise CredentialUnavailable(name, f"MCP server {name!r}: {exc}") from None


async def _user_secret(name: str, auth: UserSecretAuth, user: UserToken) -> StoredSecret:
    hint = f" at {auth.connect_url}" if auth.connect_url else ""
    try:
        stored = await secret_store().get(user.identity, auth.secret)
    except UserSecretError as exc:
        raise CredentialUnavailable(name, f"MCP server {name!r}: {exc}") from None
    if stored is None:
        raise CredentialUnavailable(
            name,
            f"MCP server {name!r} needs your connected {auth.secret!r} account: "
            f"connect it{hint} and retry",
        )
    return stored


def _require_audience(name: str, audience: str, user: UserToken) -> None:
    claims = jwt.decode(user.token.get_secret_value(), options={"verify_signature": False})
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else list(aud or [])
    if audience not in auds:
        raise CredentialUnavailable(
            name,
            f"MCP server {name!r} expects tokens for audience {audience!r}; your token is not "
            "issued for it, so it is not sent there (no token passthrough)",
        )


async def _exchanged_token(
    name: str, server: McpServer, auth: TokenExchangeAuth, user: UserToken
) -> SecretStr:
    key = (user.identity, user.fingerprint, name, server.url)
    cached = _exchange_cache.get(key)
    if cached and cached[1] - _EXCHANGE_MARGIN_SECONDS > time.time():
        _exchange_cache.move_to_end(key)
        return cached[0]
    lock = _exchange_locks.setdefault(key, asyncio.Lock())
    async with lock:
        cached = _exchange_cache.get(key)
        if cached and cached[1] - _EXCHANGE_MARGIN_SECONDS > time.time():
            return cached[0]
        issued, expires_at = await _exchange(name, server, auth, user)
        token = SecretStr(issued)
        _exchange_cache[key] = (token, expires_at)
        while len(_exchange_cache) > _EXCHANGE_CACHE_SIZE:
            old, _ = _exchange_cache.popitem(last=False)
            _exchange_locks.pop(old, None)
    _exchange_locks.pop(key, None)
    return token


class ClientSecretBasic(httpx.Auth):
    """OAuth client authentication with HTTP Basic as RFC 6749 §2.3.1 defines it.

    The id and secret are form-urlencoded *before* base64, which httpx's plain
    `auth=(id, secret)` does not do: a base64 secret with `+`, `/` or `=` would
    otherwise be refused by a conforming endpoint with `invalid_client`.
    """

    def __init__(self, client_id: str, client_secret: str) -> None:
        self._header = SecretStr(basic_credentials(client_id, client_secret))

    def __repr__(self) -> str:
        return "ClientSecretBasic(**********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header.get_secret_value()
        yield request


async def _exchange(
    name: str, server: McpServer, auth: TokenExchangeAuth, user: UserToken
) -> tuple[str, float]:
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": user.token.get_secret_value(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }
    for param in ("audience", "resource", "scope"):
        if getattr(auth, param):
            form[param] = getattr(auth, param)
    basic: ClientSecretBasic | None = None
    if auth.client_id_env:
        client_id = os.environ.get(auth.client_id_env)
        secret = os.environ.get(auth.client_secret_env or "", "") if auth.client_secret_env else ""
        if not client_id or (auth.client_secret_env and not secret):
            missing = auth.client_id_env if not client_id else auth.client_secret_env
            raise CredentialUnavailable(
                name, f"MCP server {name!r}: token exchange client credential {missing} is not set"
            )
        basic = ClientSecretBasic(client_id, secret)
    try:
        async with httpx.AsyncClient(
            transport=session_transport(), timeout=server.timeout_seconds
        ) as client:
            response = await client.post(auth.token_url, data=form, auth=basic)
    except httpx.TimeoutException:
        raise CredentialUnavailable(
            name, f"MCP server {name!r}: the token exchange endpoint timed out"
        ) from None
    except httpx.HTTPError:
        raise CredentialUnavailable(
            name, f"MCP server {name!r}: the token exchange endpoint is unreachable"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body.get("access_token"), str):
        error = body.get("error") if isinstance(body, dict) else None
        hint = {
            "invalid_grant": "your sign-in was not accepted for this server: sign in again",
            "unauthorized_client": "onbehalf's client is not allowed to exchange tokens "
            "(check the client credentials named in the servers file)",
            "invalid_target": "the requested audience/resource is not known to the exchange",
        }.get(str(error), f"HTTP {response.status_code}")
        raise CredentialUnavailable(
            name, f"MCP server {name!r}: token exchange failed ({error or 'error'}): {hint}"
        )
    expires_in = body.get("expires_in")
    ttl = float(expires_in) if isinstance(expires_in, int | float) else 300.0
    return body["access_token"], min(time.time() + ttl, float(user.expires_at))
