"""Connected accounts over OAuth: the multi-user glue around Authlib and the `mcp` models.

The protocol pieces are libraries: Authlib's httpx client builds the
authorization URL with PKCE S256 and talks to the token and revocation
endpoints; the `mcp` SDK's models parse metadata and registrations. What is
ours is what no single-user client does:

- a flow is started for one identity, from a run, and finished from a browser
  that may be far away: the callback only holds the code, and the exchange
  happens when *that same identity* confirms with the one-time secret the
  callback handed to the browser (DESIGN.md §8, docs/security.md);
- tokens are sealed per (identity, server) in Redis, and one refresh at a time
  per (identity, server) across processes: a rotating refresh token spent twice
  would make a conforming AS revoke the whole grant.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from mcp.client.auth.utils import issuers_match
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from onbehalf.oauth.client_metadata import CLIENT_METADATA_PATH, client_id_url, client_metadata
from onbehalf.oauth.discovery import AuthorizationServer, DiscoveryError, discover
from onbehalf.oauth.guard import (
    GuardedTransport,
    OutboundRefused,
    check_url,
    guarded_client,
    is_loopback_url,
)
from onbehalf.oauth.store import NEEDS_RECONNECT, OAuthStore, StoredTokens, digest
from onbehalf.redis_store import ProcessStore
from onbehalf.settings import OAuthSettings, SettingsError

log = logging.getLogger("onbehalf.oauth")

REFRESH_MARGIN_SECONDS = 60.0
"""Tokens expiring sooner than this are refreshed before use (DESIGN.md §8)."""
LOCK_SECONDS = 30.0
"""Longest a refresh (or a registration) may hold its cross-process lock."""
_POLL_SECONDS = 0.05


class OAuthProblem(Exception):
    """Something the user or deployer must act on; `status` is the HTTP answer for routes."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotConnected(OAuthProblem):
    """The user has no usable tokens for that server (never connected, or refused since)."""

    def __init__(self, server: str, state: str) -> None:
        self.server = server
        self.state = state  # "not_connected" | "needs_reconnect"
        verb = "reconnect" if state == "needs_reconnect" else "connect"
        super().__init__(f"MCP server {server!r} needs you to {verb} your account", 409)


class OAuthUnavailable(OAuthProblem):
    """The authorization server could not be used right now (nothing was dropped)."""

    status = 502


@dataclass(frozen=True)
class OAuthServer:
    """One `oauth` server of the servers file, as this module needs it."""

    name: str
    url: str
    scopes: list[str] | None = None
    description: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None


@dataclass(frozen=True)
class ClientInfo:
    client_id: str
    client_secret: str | None
    auth_method: str

    def __repr__(self) -> str:
        return f"ClientInfo(client_id={self.client_id!r}, auth_method={self.auth_method!r})"


_stores = ProcessStore(OAuthStore)
_local_locks: dict[tuple[str, str], asyncio.Lock] = {}


def oauth_store() -> OAuthStore:
    """The process's OAuth store (created on first use, from REDIS_URL)."""
    return _stores.get()


def use_oauth_store(store: OAuthStore | None) -> None:
    """Point onbehalf at another store (tests, embedding applications)."""
    _stores.use(store)


def oauth_settings() -> OAuthSettings:
    return OAuthSettings()


def _dev(settings: OAuthSettings) -> bool:
    return not settings.production


async def authorization_server(server: OAuthServer, settings: OAuthSettings) -> AuthorizationServer:
    try:
        return await discover(server.name, server.url, scopes=server.scopes, dev=_dev(settings))
    except DiscoveryError as exc:
        raise OAuthUnavailable(str(exc)) from None


# --- the client onbehalf is at the authorization server ------------------------------------


def basic_credentials(client_id: str, client_secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 §2.3.1 defines it.

    The id and secret are form-urlencoded *before* base64 (Authlib's and httpx's
    defaults skip that): a base64 secret with `+`, `/` or `=` is otherwise refused
    by a conforming token endpoint with `invalid_client`.
    """
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _encode_basic(client: Any, method: str, uri: str, headers: dict, body: str) -> tuple:
    headers["Authorization"] = basic_credentials(client.client_id, client.client_secret)
    return uri, headers, body


async def client_info(
    server: OAuthServer, asrv: AuthorizationServer, settings: OAuthSettings
) -> ClientInfo:
    """Who onbehalf is at `asrv` (DESIGN.md §8.1), in this order: the client the servers
    file configures; else onbehalf's Client ID Metadata Document, where the AS fetches
    those; else a registration (RFC 7591), made once per (server, issuer, redirect URI)."""
    methods = asrv.metadata.token_endpoint_auth_methods_supported or ["client_secret_basic"]
    configured = _configured_client(server, methods)
    if configured is not None:
        return configured
    document = _metadata_document_client(asrv, settings)
    if document is not None:
        return document
    store = oauth_store()
    redirect_uri = settings.redirect_uri
    for _ in range(int(LOCK_SECONDS / _POLL_SECONDS)):
        known = await store.registration(server.name, asrv.issuer, redirect_uri)
        if known is not None:
            return ClientInfo(known["client_id"], known.get("client_secret"),
                              known.get("token_endpoint_auth_method") or "none")
        lock = await store.try_lock(f"register:{server.name}", LOCK_SECONDS)
        if lock is None:
            await asyncio.sleep(_POLL_SECONDS)
            continue
        try:
            info = await _register(server, asrv, settings, methods)
            await store.put_registration(server.name, asrv.issuer, redirect_uri, info)
            return ClientInfo(info["client_id"], info.get("client_secret"),
                              info.get("token_endpoint_auth_method") or "none")
        finally:
            await store.unlock(f"register:{server.name}", lock)
    raise OAuthUnavailable(f"MCP server {server.name!r}: client registration did not finish")


def _configured_client(server: OAuthServer, methods: list[str]) -> ClientInfo | None:
    """The client the servers file names by variables (`client_id_env`), or None."""
    if not server.client_id_env:
        return None
    client_id = os.environ.get(server.client_id_env, "").strip()
    secret = os.environ.get(server.client_secret_env, "") if server.client_secret_env else ""
    missing = server.client_id_env if not client_id else (
        server.client_secret_env if server.client_secret_env and not secret else None)
    if missing:
        raise OAuthProblem(
            f"MCP server {server.name!r}: the OAuth client credential {missing} is not set",
            500,
        )
    if not secret:
        return ClientInfo(client_id, None, "none")
    method = "client_secret_basic" if "client_secret_basic" in methods else (
        "client_secret_post")
    return ClientInfo(client_id, secret, method)


def _metadata_document_client(asrv: AuthorizationServer, settings: OAuthSettings
                              ) -> ClientInfo | None:
    """onbehalf's metadata document URL as a public client, where `asrv` can use it.

    The AS must advertise `client_id_metadata_document_supported` and accept public
    clients (`none`), and must be able to fetch the document: an https URL, or in dev
    a loopback one when the AS is on this machine too (the demo AS of `make dev`)."""
    metadata = asrv.metadata
    methods = metadata.token_endpoint_auth_methods_supported
    if metadata.client_id_metadata_document_supported is not True or (
        methods is not None and "none" not in methods
    ):
        return None
    try:
        url = client_id_url(settings)
    except SettingsError as exc:
        raise OAuthProblem(str(exc), 500) from None
    reachable = urlsplit(url).scheme == "https" or (
        _dev(settings) and is_loopback_url(url) and is_loopback_url(asrv.issuer)
    )
    return ClientInfo(url, None, "none") if reachable else None


def _issued_to_document(client_id: str, settings: OAuthSettings) -> ClientInfo | None:
    """The tokens' client as onbehalf's metadata document: a public client, nothing stored.

    Where ONBEHALF_PUBLIC_URL is not set (the operator's CLI) the document is recognised
    by its path; a wrong guess costs only a refused revocation (there is no secret)."""
    try:
        ours = client_id_url(settings)
    except SettingsError:
        ours = client_id if urlsplit(client_id).path.endswith(CLIENT_METADATA_PATH) else None
    return ClientInfo(client_id, None, "none") if client_id == ours else None


async def _issued_to(server: OAuthServer, asrv: AuthorizationServer, tokens: StoredTokens,
                     settings: OAuthSettings) -> ClientInfo | None:
    """The client `tokens` were issued to, to authenticate as at the AS; never a new one.

    Only the browser flow needs the redirect URI (ONBEHALF_PUBLIC_URL). A registration is
    kept under the redirect URI it was made for, so where that URL is not set (the
    operator's `onbehalf connections delete`) it is found by the tokens' client_id; no
    registration has it when the tokens were issued to onbehalf's metadata document."""
    methods = asrv.metadata.token_endpoint_auth_methods_supported or ["client_secret_basic"]
    configured = _configured_client(server, methods)
    if configured is not None and configured.client_id == tokens.client_id:
        return configured
    try:
        redirect_uri: str | None = settings.redirect_uri
    except SettingsError:
        redirect_uri = None  # not the server: look the registration up by client_id
    known = (await oauth_store().registration(server.name, tokens.issuer, redirect_uri)
             if redirect_uri else None)
    if known is None or known.get("client_id") != tokens.client_id:
        known = await oauth_store().registration_of(server.name, tokens.issuer,
                                                    tokens.client_id)
    if known is None:
        return _issued_to_document(tokens.client_id, settings)
    return ClientInfo(known["client_id"], known.get("client_secret"),
                      known.get("token_endpoint_auth_method") or "none")


async def _register(
    server: OAuthServer, asrv: AuthorizationServer, settings: OAuthSettings, methods: list[str]
) -> dict[str, Any]:
    endpoint = asrv.metadata.registration_endpoint
    if endpoint is None:
        raise OAuthProblem(
            f"MCP server {server.name!r}: its authorization server offers no dynamic client "
            "registration; register onbehalf there and set client_id_env/client_secret_env "
            f"(redirect URI {settings.redirect_uri})", 500,
        )
    method = next((m for m in ("client_secret_basic", "client_secret_post", "none")
                   if m in methods), "none")
    metadata = client_metadata(settings.redirect_uri, auth_method=method, scope=asrv.scope)
    try:
        async with guarded_client(dev=_dev(settings)) as http:
            response = await http.post(
                str(endpoint), json=metadata.model_dump(mode="json", exclude_none=True)
            )
        info = OAuthClientInformationFull.model_validate_json(response.content)
    except OutboundRefused as exc:
        raise OAuthUnavailable(f"MCP server {server.name!r}: registration refused: {exc}") from None
    except (httpx.HTTPError, ValidationError):
        raise OAuthUnavailable(
            f"MCP server {server.name!r}: dynamic client registration failed"
        ) from None
    log.info("registered onbehalf as an OAuth client for MCP server %s", server.name)
    return info.model_dump(mode="json", exclude_none=True)


def _oauth_client(client: ClientInfo, settings: OAuthSettings,
                  redirect_uri: str | None = None) -> AsyncOAuth2Client:
    """Authlib's client for one token-endpoint conversation.

    `client_id` also goes in every token and revocation body: RFC 6749 allows it with
    client authentication, and some servers (the `mcp` SDK's among them) require it.
    `redirect_uri` only for the authorization-code flow: refreshing and revoking need
    none, so they need no ONBEHALF_PUBLIC_URL."""
    oauth = AsyncOAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method,
        revocation_endpoint_auth_method=client.auth_method,
        code_challenge_method="S256",
        redirect_uri=redirect_uri,
        transport=GuardedTransport(dev=_dev(settings)),
        follow_redirects=False,
        timeout=10.0,
    )
    oauth.register_client_auth_method(("client_secret_basic", _encode_basic))
    return oauth


async def _token_request(server: str, call: Any) -> dict[str, Any]:
    """One token-endpoint call; OAuth errors keep their `error` code for the caller."""
    try:
        return dict(await call)
    except OAuthError:
        raise
    except OutboundRefused as exc:
        raise OAuthUnavailable(f"MCP server {server!r}: token endpoint refused: {exc}") from None
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise OAuthUnavailable(
            f"MCP server {server!r}: the authorization server's token endpoint failed "
            f"({type(exc).__name__})"
        ) from None


# --- starting, holding and confirming a connection -----------------------------------------


async def start_flow(identity: str, server: OAuthServer,
                     scopes: Sequence[str] = ()) -> str:
    """A new connect link for `identity` (the AS's authorization URL, PKCE S256, `resource`).

    `scopes` are asked for on top of the server's own (step-up, DESIGN.md §8.1: the union
    of what the user granted and what the server asks for)."""
    settings = oauth_settings()
    try:
        redirect_uri = settings.redirect_uri
    except SettingsError as exc:
        raise OAuthProblem(str(exc), 500) from None
    asrv = await authorization_server(server, settings)
    client = await client_info(server, asrv, settings)
    endpoint = str(asrv.metadata.authorization_endpoint)
    try:
        check_url(endpoint, dev=_dev(settings))
    except OutboundRefused as exc:
        raise OAuthUnavailable(f"MCP server {server.name!r}: {exc}") from None
    state = generate_token(43)
    verifier = generate_token(64)
    async with _oauth_client(client, settings, redirect_uri) as oauth:
        url, _ = oauth.create_authorization_url(
            endpoint, state=state, code_verifier=verifier,
            scope=" ".join(scope_union((asrv.scope or "").split(), scopes)) or None,
            resource=asrv.resource,
        )
    now = time.time()
    flow = {
        "flow_id": secrets.token_urlsafe(16),
        "identity": identity,
        "server": server.name,
        "server_url": server.url,
        "issuer": asrv.issuer,
        "iss_required": asrv.iss_required,
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "expires_at": now + settings.oauth_flow_ttl_seconds,
    }
    await oauth_store().put_flow(state, flow, verifier, settings.oauth_flow_ttl_seconds)
    log.info("connect flow started for MCP server %s", server.name)
    return url


def scope_union(*lists: Iterable[str]) -> list[str]:
    """Scopes in first-seen order, each once."""
    return list(dict.fromkeys(scope for scopes in lists for scope in scopes if scope))


async def hold_callback(params: dict[str, str]) -> str:
    """Check `state` (single use, unexpired) and `iss`; hold the code; the confirm page URL."""
    settings = oauth_settings()
    state = params.get("state")
    if not state:
        raise OAuthProblem("this callback has no state: start the connection again", 400)
    flow = await oauth_store().take_flow(state)
    if flow is None or flow["expires_at"] <= time.time():
        raise OAuthProblem(
            "this connect link is unknown, already used or expired: start the connection "
            "again from the agent", 400,
        )
    iss = params.get("iss")
    if iss is not None and not issuers_match(iss, flow["issuer"]):
        log.warning("OAuth callback for %s refused: iss mismatch (mix-up)", flow["server"])
        raise OAuthProblem(
            "the authorization response came from another authorization server than the one "
            "this connection was started with (RFC 9207 mix-up check): nothing was stored", 400,
        )
    if iss is None and flow.get("iss_required"):
        raise OAuthProblem(
            "the authorization server promised to identify itself (iss) and did not: "
            "nothing was stored", 400,
        )
    if params.get("error"):
        error = params["error"][:64]
        raise OAuthProblem(
            f"the authorization server did not grant access ({error}): nothing was stored", 400
        )
    code = params.get("code")
    if not code:
        raise OAuthProblem("the authorization server sent no code: nothing was stored", 400)
    confirm = secrets.token_urlsafe(32)
    await oauth_store().hold_code(flow, code, confirm)
    try:
        page = settings.confirm_url
    except SettingsError as exc:
        raise OAuthProblem(str(exc), 500) from None
    separator = "&" if "?" in page else "?"
    return f"{page}{separator}flow={flow['flow_id']}&confirm={confirm}"


async def confirm_flow(identity: str, flow_id: str, confirm: str, server: OAuthServer | None
                       ) -> dict[str, Any]:
    """Exchange the held code, only for the identity that started the flow, with its secret."""
    store = oauth_store()
    held = await store.take_held(flow_id)  # one try: a refused confirm burns the code
    if held is None or held["expires_at"] <= time.time():
        raise OAuthProblem(
            "this connection is not known or has expired: start again from the agent", 404
        )
    if not isinstance(confirm, str) or not hmac.compare_digest(held["confirm"], digest(confirm)):
        raise OAuthProblem("the confirm secret does not match: nothing was stored", 403)
    if held["identity"] != identity:
        log.warning("OAuth confirm refused: the flow for %s was started by another user",
                    held["server"])
        raise OAuthProblem(
            "this connect link was started by another user: nothing was stored for anyone. "
            "If you want to connect your own account, ask the agent for your own link", 403,
        )
    if server is None or server.name != held["server"] or server.url != held["server_url"]:
        raise OAuthProblem(f"MCP server {held['server']!r} is no longer configured for OAuth",
                           404)
    settings = oauth_settings()
    asrv = await authorization_server(server, settings)
    if not issuers_match(asrv.issuer, held["issuer"]):
        raise OAuthProblem("the server's authorization server changed: start again", 409)
    client = await client_info(server, asrv, settings)
    if client.client_id != held["client_id"]:
        raise OAuthProblem("onbehalf's client registration changed: start again", 409)
    async with _oauth_client(client, settings, held["redirect_uri"]) as oauth:
        try:
            token = await _token_request(server.name, oauth.fetch_token(
                str(asrv.metadata.token_endpoint),
                grant_type="authorization_code",
                code=store.open_flow_secret(held, "code"),
                code_verifier=store.open_flow_secret(held, "verifier"),
                redirect_uri=held["redirect_uri"],
                resource=asrv.resource,
                client_id=client.client_id,
            ))
        except OAuthError as exc:
            raise OAuthProblem(
                f"the authorization server refused the code ({exc.error}): nothing was stored; "
                "start the connection again", 400,
            ) from None
    if not isinstance(token.get("access_token"), str):
        raise OAuthUnavailable("the authorization server answered without an access token")
    await store.put_tokens(identity, server.name, token, client_id=client.client_id,
                           issuer=asrv.issuer)
    log.info("MCP server %s connected for a user", server.name)
    return {"server": server.name, "status": "connected",
            "scopes": str(token.get("scope") or asrv.scope or "").split()}


# --- using, refreshing and forgetting tokens -----------------------------------------------


async def access_token(identity: str, server: OAuthServer) -> StoredTokens:
    """The user's current tokens for `server`, refreshed first when they expire within 60 s."""
    tokens = await oauth_store().tokens(identity, server.name)
    if not isinstance(tokens, StoredTokens):
        raise NotConnected(server.name, "needs_reconnect" if tokens else "not_connected")
    if tokens.expires_within(REFRESH_MARGIN_SECONDS):
        tokens = await refresh(identity, server, tokens)
    return tokens


async def refresh(identity: str, server: OAuthServer, seen: StoredTokens) -> StoredTokens:
    """Replace `seen` by refreshed tokens: one refresh per (user, server) across processes.

    Whoever holds the Redis lock refreshes; everyone else waits for the stored tokens
    to change and uses the new ones. A refusal drops the tokens (only if unchanged).
    """
    store = oauth_store()
    local = _local_locks.setdefault((identity, server.name), asyncio.Lock())
    async with local:
        name = store.lock_name(identity, server.name)
        deadline = time.monotonic() + LOCK_SECONDS
        while time.monotonic() < deadline:
            current = await store.tokens(identity, server.name)
            if not isinstance(current, StoredTokens):
                raise NotConnected(server.name, "needs_reconnect" if current else "not_connected")
            if current.stored != seen.stored:
                return current  # refreshed (or reconnected) by someone else meanwhile
            lock = await store.try_lock(name, LOCK_SECONDS)
            if lock is None:
                await asyncio.sleep(_POLL_SECONDS)
                continue
            try:
                current = await store.tokens(identity, server.name)
                if isinstance(current, StoredTokens) and current.stored != seen.stored:
                    return current
                return await _refresh_now(identity, server, seen)
            finally:
                await store.unlock(name, lock)
    raise OAuthUnavailable(f"MCP server {server.name!r}: another refresh did not finish in time")


async def _refresh_now(identity: str, server: OAuthServer, seen: StoredTokens) -> StoredTokens:
    store = oauth_store()
    if not seen.refresh_token:
        await store.mark_needs_reconnect(identity, server.name, seen)
        raise NotConnected(server.name, "needs_reconnect")
    settings = oauth_settings()
    asrv = await authorization_server(server, settings)
    client = await client_info(server, asrv, settings)
    async with _oauth_client(client, settings) as oauth:
        try:
            token = await _token_request(server.name, oauth.refresh_token(
                str(asrv.metadata.token_endpoint), refresh_token=seen.refresh_token,
                resource=asrv.resource, client_id=client.client_id,
            ))
        except OAuthError as exc:
            log.warning("refresh for MCP server %s refused (%s)", server.name, exc.error)
            await store.mark_needs_reconnect(identity, server.name, seen)
            raise NotConnected(server.name, "needs_reconnect") from None
    if not isinstance(token.get("access_token"), str):
        raise OAuthUnavailable("the authorization server refreshed without an access token")
    await store.replace_tokens(identity, server.name, seen, token)
    current = await store.tokens(identity, server.name)
    if not isinstance(current, StoredTokens):
        raise NotConnected(server.name, "needs_reconnect" if current else "not_connected")
    return current


async def drop_refused(identity: str, server: str, refused: StoredTokens) -> None:
    """The server refused these tokens even after a refresh: drop them if unchanged."""
    await oauth_store().mark_needs_reconnect(identity, server, refused)


async def disconnect(identity: str, server: OAuthServer) -> dict[str, Any]:
    """Forget the user's tokens for `server`, revoking them at the AS when it offers RFC 7009."""
    store = oauth_store()
    tokens = await store.tokens(identity, server.name)
    revoked = False
    if isinstance(tokens, StoredTokens):
        revoked = await _revoke(server, tokens)
    await store.forget_tokens(identity, server.name)
    return {"server": server.name, "status": "not_connected",
            "revoked_at_authorization_server": revoked}


async def _revoke(server: OAuthServer, tokens: StoredTokens) -> bool:
    settings = oauth_settings()
    try:
        asrv = await authorization_server(server, settings)
        endpoint = asrv.metadata.revocation_endpoint
        if endpoint is None:
            return False
        if not issuers_match(asrv.issuer, tokens.issuer):
            log.warning("not revoking the tokens for MCP server %s: its authorization server "
                        "changed since they were issued", server.name)
            return False
        client = await _issued_to(server, asrv, tokens, settings)
        if client is None:
            log.warning("could not revoke the tokens for MCP server %s: the client they were "
                        "issued to is no longer registered here", server.name)
            return False
        async with _oauth_client(client, settings) as oauth:
            pairs = [(tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")]
            for value, hint in pairs:
                if value:
                    response = await oauth.revoke_token(
                        str(endpoint), token=value, token_type_hint=hint,
                        body=urlencode({"client_id": client.client_id}),
                    )
                    if response.status_code != 200:
                        log.warning("revocation at the AS of MCP server %s answered %s",
                                    server.name, response.status_code)
                        return False
        return True
    except (OAuthProblem, OutboundRefused, httpx.HTTPError):
        log.warning("could not revoke the tokens for MCP server %s at its AS", server.name)
        return False


async def connection_status(identity: str, server: OAuthServer) -> dict[str, Any]:
    """What `GET /connections` says about one server: never a token."""
    tokens = await oauth_store().tokens(identity, server.name)
    entry: dict[str, Any] = {"server": server.name, "description": server.description}
    if isinstance(tokens, StoredTokens):
        entry.update(status="connected", scopes=(tokens.scope or "").split(),
                     expires_at=int(tokens.expires_at) if tokens.expires_at else None)
    else:
        entry.update(status="needs_reconnect" if tokens == NEEDS_RECONNECT else "not_connected",
                     scopes=[], expires_at=None)
    return entry


def oauth_server(name: str, server: Any) -> OAuthServer:
    """The `OAuthServer` of a servers-file entry (`McpServer` with `auth.type == "oauth"`)."""
    auth = server.auth
    return OAuthServer(
        name=name, url=server.url, scopes=auth.scopes, description=auth.description,
        client_id_env=auth.client_id_env, client_secret_env=auth.client_secret_env,
    )
