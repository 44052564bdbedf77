"""The notes MCP server and its OAuth 2.1 authorization server: a stand-in for Linear or GitHub.

The AS is the `mcp` SDK's server-side auth (`create_auth_routes`: authorize,
token with PKCE and client authentication, RFC 7591 registration, RFC 7009
revocation, RFC 8414 metadata) over a provider written here, with what hosted
servers do and the SDK leaves to providers:

- Client ID Metadata Documents (MCP 2025-11-25), when `client_id_metadata_documents`
  is on (`onbehalf notes-mcp` turns it on): the metadata advertises
  `client_id_metadata_document_supported`, and a `client_id` that is a URL is fetched
  (`ClientDocuments`) instead of looked up among registrations; off, the AS knows
  registered clients only. Registration requests are recorded (`application_type`);
- a sign-in-and-consent page (`/consent`): pick the account (alice or bob) and allow;
- `iss` in every authorization response (RFC 9207), advertised in the metadata;
- rotating refresh tokens with reuse detection: a refresh token presented a
  second time revokes its whole grant;
- tokens bound to the `resource` they were issued for (RFC 8707).

The RS is a FastMCP streamable-HTTP server with a `TokenVerifier` that accepts
only live tokens of this AS issued for its own URL; anything else is 401 with
`resource_metadata` (RFC 9728), exactly as hosted MCP servers answer. Its tools,
`whoami` and `list_notes`, answer as the account the token was issued for. Three more
ask the user something, as hosted servers do, and count their executions
(`world.counts["<tool>_executed"]`):

- `add_note(text)` needs the `notes:write` scope (step-up: 403 `insufficient_scope`);
- `share_note(text)` asks during the call which notebook (an `elicitation/create` form
  with one enum field), then records the note there;
- `link_calendar()` asks during the call for a visit to a page of the AS
  (`/calendar-consent`, an `elicitation/create` in URL mode); it links the calendar
  only if the person went there and allowed it.

Everything lives in memory (`NotesWorld`): restarting the server forgets every
grant, so connections made against it then read as refused and ask to reconnect.
The test suite runs it on two origins (AS and RS apart, as hosted servers are);
`onbehalf notes-mcp` serves both on one port for `make dev`.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenVerifier,
)
from mcp.server.auth.routes import build_metadata, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.server import Context
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from onbehalf.demo.tickets.server import (
    MCP_PATH,
    bind_listening_socket,
    serve_until_stopped,
    url_host,
)
from onbehalf.oauth.guard import is_loopback_url

NOTES = {"alice": ["alice-note-1", "alice-note-2"], "bob": ["bob-note-1"]}
TEST_CLIENT_ID = "onbehalf-test"
TEST_CLIENT_SECRET = "s3cr+t/with=="


@dataclass
class Grant:
    """Everything issued from one authorization code: revoked together."""

    account: str
    client_id: str
    resource: str | None
    scopes: list[str]
    access: set[str] = field(default_factory=set)
    refresh: str | None = None
    spent_refresh: set[str] = field(default_factory=set)
    revoked: bool = False


class DocumentClient(OAuthClientInformationFull):
    """A client known by its metadata document, which names no scope: this AS grants a
    document client what it asks for and the person consents to (a registration, by
    contrast, is limited to the scope it registered)."""

    def validate_scope(self, requested_scope: str | None) -> list[str] | None:
        return None if requested_scope is None else requested_scope.split()


class ClientDocuments:
    """Clients known by the URL of their metadata document, fetched as the draft says.

    draft-ietf-oauth-client-id-metadata-document: the `client_id` is an https URL with
    a path (here also http to loopback: the tests and `make dev` serve onbehalf there),
    no fragment and no credentials; the document must be a JSON object whose
    `client_id` is that URL exactly, with `redirect_uris`, and no shared secret (a
    public client). The SDK's authorize handler then requires the request's
    `redirect_uri` to be one of the document's. A document is kept as long as its
    `Cache-Control: max-age` says, and not at all under `no-store`.
    """

    MAX_BYTES = 64 * 1024

    def __init__(self, world: NotesWorld) -> None:
        self.world = world
        self.cache: dict[str, tuple[float, OAuthClientInformationFull]] = {}

    @staticmethod
    def is_document_url(client_id: str) -> bool:
        parts = urlsplit(client_id)
        fetchable = parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback_url(client_id))
        return (fetchable and parts.path not in ("", "/") and not parts.fragment
                and not parts.username and not parts.password)

    async def client(self, url: str) -> OAuthClientInformationFull | None:
        known = self.cache.get(url)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        fetched = await self._fetch(url)
        if fetched is None:
            self.world.hit("client_metadata_refused")
            return None
        client, max_age = fetched
        if max_age > 0:
            self.cache[url] = (time.monotonic() + max_age, client)
        return client

    async def _fetch(self, url: str) -> tuple[OAuthClientInformationFull, int] | None:
        """The client the document at `url` describes, and how long to keep it; or None."""
        self.world.hit("client_metadata_fetch")
        try:
            async with httpx.AsyncClient(follow_redirects=False, timeout=5) as http:
                answer = await http.get(url, headers={"Accept": "application/json"})
            if answer.status_code != 200 or len(answer.content) > self.MAX_BYTES:
                return None
            document = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(document, dict):
            return None
        self.world.client_documents.append(document)
        public = document.get("token_endpoint_auth_method", "none") == "none" and not (
            {"client_secret", "client_secret_expires_at"} & document.keys())
        if document.get("client_id") != url or not document.get("redirect_uris") or not public:
            return None
        try:
            client = DocumentClient.model_validate(
                {**document, "token_endpoint_auth_method": "none"})
        except ValidationError:
            return None
        control = answer.headers.get("cache-control", "")
        found = re.search(r"max-age=(\d+)", control)
        max_age = 0 if "no-store" in control or not found else int(found.group(1))
        return client, max_age


class Provider:
    """`OAuthAuthorizationServerProvider` with consent, rotation and reuse detection."""

    def __init__(self, world: NotesWorld) -> None:
        self.world = world
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.documents = ClientDocuments(world)
        self.pending: dict[str, tuple[OAuthClientInformationFull, AuthorizationParams]] = {}
        self.codes: dict[str, tuple[AuthorizationCode, str]] = {}
        self.grants: list[Grant] = []
        self.access: dict[str, tuple[AccessToken, Grant]] = {}
        self.lock = threading.Lock()

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if self.world.client_id_metadata_documents and self.documents.is_document_url(client_id):
            return await self.documents.client(client_id)
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.world.hit("register")
        self.clients[client_info.client_id or ""] = client_info
        if client_info.client_secret:
            self.world.seen_secrets.add(client_info.client_secret)

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams
                        ) -> str:
        self.world.hit("authorize")
        self.world.redirect_uris_seen.append(str(params.redirect_uri))
        request_id = secrets.token_urlsafe(12)
        self.pending[request_id] = (client, params)
        return f"{self.world.as_url}/consent?req={request_id}"

    def approve(self, request_id: str, account: str) -> str:
        client, params = self.pending.pop(request_id)
        code = secrets.token_urlsafe(24)
        self.world.seen_secrets.add(code)
        self.codes[code] = (AuthorizationCode(
            code=code, scopes=params.scopes or [], expires_at=time.time() + 300,
            client_id=client.client_id or "", code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource, subject=account,
        ), account)
        return self._redirect(params, code=code)

    def deny(self, request_id: str) -> str:
        _, params = self.pending.pop(request_id)
        return self._redirect(params, error="access_denied")

    def _redirect(self, params: AuthorizationParams, **values: str) -> str:
        query = {**values, "state": params.state or ""}
        if self.world.issue_iss:
            query["iss"] = self.world.as_url
        base = str(params.redirect_uri)
        return f"{base}{'&' if '?' in base else '?'}{urlencode(query)}"

    async def load_authorization_code(self, client: OAuthClientInformationFull, code: str
                                      ) -> AuthorizationCode | None:
        found = self.codes.get(code)
        return found[0] if found and found[0].client_id == client.client_id else None

    async def exchange_authorization_code(self, client: OAuthClientInformationFull,
                                          authorization_code: AuthorizationCode) -> OAuthToken:
        self.world.hit("token_code")
        _, account = self.codes.pop(authorization_code.code)  # single use
        grant = Grant(account=account, client_id=client.client_id or "",
                      resource=authorization_code.resource, scopes=authorization_code.scopes)
        self.grants.append(grant)
        return self._issue(grant)

    def _issue(self, grant: Grant) -> OAuthToken:
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self.world.seen_secrets.update((access, refresh))
        self.access[access] = (AccessToken(
            token=access, client_id=grant.client_id, scopes=grant.scopes,
            expires_at=int(time.time() + self.world.access_ttl), resource=grant.resource,
            subject=grant.account,
        ), grant)
        grant.access.add(access)
        grant.refresh = refresh
        return OAuthToken(access_token=access, token_type="Bearer",
                          expires_in=self.world.access_ttl, refresh_token=refresh,
                          scope=" ".join(grant.scopes) or None)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str
                                 ) -> RefreshToken | None:
        self.world.hit("token_refresh")
        with self.lock:
            for grant in self.grants:
                if refresh_token in grant.spent_refresh:
                    self._revoke_grant(grant)  # reuse: somebody has a copy; end the grant
                    self.world.hit("refresh_reuse")
                    return None
                if grant.refresh == refresh_token and not grant.revoked:
                    if grant.client_id != client.client_id:
                        return None
                    return RefreshToken(token=refresh_token, client_id=grant.client_id,
                                        scopes=grant.scopes, resource=grant.resource,
                                        subject=grant.account)
        return None

    async def exchange_refresh_token(self, client: OAuthClientInformationFull,
                                     refresh_token: RefreshToken, scopes: list[str]
                                     ) -> OAuthToken:
        with self.lock:
            grant = next(g for g in self.grants if g.refresh == refresh_token.token)
            grant.spent_refresh.add(refresh_token.token)
            return self._issue(grant)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or found[1].revoked:
            return None
        access, _ = found
        if access.expires_at is not None and access.expires_at <= time.time():
            return None
        return access

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.world.hit("revoke")
        self.world.revoked.append(hashlib.sha256(token.token.encode()).hexdigest())
        with self.lock:
            for grant in self.grants:
                if token.token == grant.refresh or token.token in grant.access:
                    if isinstance(token, RefreshToken):
                        self._revoke_grant(grant)
                    else:
                        grant.access.discard(token.token)
                        self.access.pop(token.token, None)

    def _revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True
        for access in grant.access:
            self.access.pop(access, None)
        grant.access.clear()
        grant.refresh = None


class _Audience(TokenVerifier):
    """The RS accepts only live tokens issued for its own URL (RFC 8707 audience)."""

    def __init__(self, world: NotesWorld) -> None:
        self.world = world

    async def verify_token(self, token: str) -> AccessToken | None:
        access = await self.world.provider.load_access_token(token)
        if access is None or (access.resource or "").rstrip("/") != self.world.mcp_url:
            return None
        return access


WRITE_SCOPE = "notes:write"
SCOPED_TOOLS = {"add_note": WRITE_SCOPE}
"""Tools that need a scope beyond `notes`: a call without it is answered 403
`insufficient_scope` naming what it needs (the MCP authorization spec's step-up)."""


NOTEBOOKS = ("work", "personal")


class Notebook(BaseModel):  # share_note's question: one string field listing the notebooks
    notebook: str = Field(description="the notebook to put the note in",
                          json_schema_extra={"enum": list(NOTEBOOKS)})


class _RequireScope:
    """Answer a `tools/call` of a scoped tool with 403 `insufficient_scope` when the bearer
    lacks the scope, before the tool runs (as hosted MCP servers do)."""

    def __init__(self, app: ASGIApp, world: NotesWorld) -> None:
        self.app, self.world = app, world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        needed = self._needed(body)
        if needed is not None:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            access = await self.world.provider.load_access_token(auth.partition(" ")[2])
            if access is not None and needed not in access.scopes:
                self.world.hit("insufficient_scope")
                wanted = " ".join(dict.fromkeys([*access.scopes, needed]))
                challenge = (f'Bearer error="insufficient_scope", scope="{wanted}", '
                             f'resource_metadata="{self.world.resource_metadata_url}"')
                await JSONResponse({"error": "insufficient_scope",
                                    "error_description": f"this tool needs {needed}"},
                                   status_code=403,
                                   headers={"www-authenticate": challenge})(scope, receive, send)
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    def _needed(body: bytes) -> str | None:
        try:
            message = json.loads(body)
        except ValueError:
            return None
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        params = message.get("params") or {}
        return SCOPED_TOOLS.get(params.get("name")) if isinstance(params, dict) else None


class _CountUnauthorized:
    def __init__(self, app: ASGIApp, world: NotesWorld) -> None:
        self.app, self.world = app, world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/.well-known/"):
            self.world.hit("prm")
            if self.world.hostile_resource_metadata:
                await JSONResponse({"resource": self.world.mcp_url, "authorization_servers":
                                    [self.world.hostile_resource_metadata]})(scope, receive, send)
                return

        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.world.hit("mcp_401")
                if self.world.hostile_resource_metadata:
                    headers = [(k, v) for k, v in message["headers"]
                               if k.lower() != b"www-authenticate"]
                    value = f'Bearer resource_metadata="{self.world.hostile_resource_metadata}"'
                    message = {**message, "headers": [*headers,
                                                      (b"www-authenticate", value.encode())]}
            await send(message)

        await self.app(scope, receive, counting)


@dataclass
class NotesWorld:
    """The running AS and RS, and what they saw."""

    as_url: str
    mcp_url: str
    access_ttl: int = 3600
    issue_iss: bool = True
    hostile_resource_metadata: str | None = None
    client_id_metadata_documents: bool = False
    """Advertise and accept Client ID Metadata Documents (else registered clients only)."""
    client_id: str = TEST_CLIENT_ID
    client_secret: str = TEST_CLIENT_SECRET
    revoked: list[str] = field(default_factory=list)
    seen_secrets: set[str] = field(default_factory=set)
    redirect_uris_seen: list[str] = field(default_factory=list)
    application_types: list[str | None] = field(default_factory=list)
    """The `application_type` of each registration request, as sent (None: absent)."""
    client_documents: list[dict[str, Any]] = field(default_factory=list)
    """Every client metadata document fetched, as received."""
    counts: Counter[str] = field(default_factory=Counter)
    added: dict[str, list[str]] = field(default_factory=dict)
    """Notes added through `add_note` and `share_note`, per account."""
    calendar_requests: dict[str, str] = field(default_factory=dict)
    """`link_calendar`'s pending URL elicitations: elicitation id -> account."""
    calendars_allowed: set[str] = field(default_factory=set)
    """Elicitation ids whose page the person visited and allowed."""
    provider: Provider = field(init=False)

    def __post_init__(self) -> None:
        self.provider = Provider(self)
        self.seen_secrets.add(self.client_secret)

    @property
    def resource_metadata_url(self) -> str:
        """RFC 9728's metadata URL of the RS, as the SDK serves it (path-suffixed)."""
        origin, _, path = self.mcp_url.partition("://")[2].partition("/")
        scheme = self.mcp_url.partition("://")[0]
        return f"{scheme}://{origin}/.well-known/oauth-protected-resource/{path}"

    def hit(self, kind: str) -> None:
        self.counts[kind] += 1

    def count(self, kind: str) -> int:
        return self.counts[kind]

    def register_test_client(self, redirect_uri: str) -> None:
        """The pre-registered confidential client (client_secret_basic, a +/= secret)."""
        self.provider.clients[TEST_CLIENT_ID] = OAuthClientInformationFull(
            client_id=TEST_CLIENT_ID, client_secret=TEST_CLIENT_SECRET,
            redirect_uris=[AnyHttpUrl(redirect_uri)],
            token_endpoint_auth_method="client_secret_basic",
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            client_name="onbehalf (pre-registered)",
        )

    def expire_access_tokens(self, account: str) -> None:
        for access, grant in list(self.provider.access.values()):
            if grant.account == account:
                access.expires_at = int(time.time()) - 1

    def revoke_account(self, account: str) -> None:
        """As if the user removed the app at the provider: every token of theirs dies."""
        for grant in self.provider.grants:
            if grant.account == account:
                self.provider._revoke_grant(grant)

    def live_grants(self, account: str) -> int:
        return sum(1 for g in self.provider.grants if g.account == account and not g.revoked)



def _page(title: str, body: str) -> str:
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font:16px system-ui;max-width:32em;margin:3em auto}"
            ".dim{color:#666;font-size:.85em}</style>"
            f"<h1>{html.escape(title)}</h1>{body}")


def as_routes(world: NotesWorld) -> list[Any]:
    """The authorization server's routes, to serve on their own origin or beside the RS."""
    issuer = AnyHttpUrl(world.as_url)
    registration = ClientRegistrationOptions(enabled=True)
    revocation = RevocationOptions(enabled=True)
    metadata = build_metadata(issuer, None, registration, revocation).model_dump(
        mode="json", exclude_none=True)
    metadata["issuer"] = world.as_url
    metadata["authorization_response_iss_parameter_supported"] = True
    metadata["token_endpoint_auth_methods_supported"] = [
        "client_secret_basic", "client_secret_post", "none"]
    if world.client_id_metadata_documents:
        metadata["client_id_metadata_document_supported"] = True

    async def as_metadata(request: Request) -> Response:
        world.hit("metadata")
        return JSONResponse(metadata)

    async def consent_page(request: Request) -> Response:
        world.hit("consent")
        request_id = request.query_params.get("req", "")
        pending = world.provider.pending.get(request_id)
        if pending is None:
            return HTMLResponse(_page("Unknown request", "<p>This sign-in request is unknown "
                                      "or was already answered.</p>"), status_code=400)
        client = pending[0]
        name = client.client_name or client.client_id or "?"
        # a metadata document names itself: the page also shows where it was fetched from
        source = (f" <span class=dim>({html.escape(urlsplit(client.client_id).netloc)})</span>"
                  if world.provider.documents.is_document_url(client.client_id or "") else "")
        accounts = "".join(f"<option value={a}>{a}</option>" for a in NOTES)
        return HTMLResponse(_page(f"Authorize {name}", (
            f"<p><b>{html.escape(name)}</b>{source} asks to read your notes, acting as you.</p>"
            "<form method=post action=/consent>"
            f"<input type=hidden name=req value={html.escape(request_id)}>"
            "<p><label>Sign in to Notes as <input id=account name=account list=accounts "
            f"required autofocus></label><datalist id=accounts>{accounts}</datalist></p>"
            "<p><button id=allow name=decision value=allow>Allow</button> "
            "<button id=deny name=decision value=deny formnovalidate>Deny</button></p>"
            "</form><p class=dim>Notes is onbehalf's demo authorization server: "
            f"accounts {', '.join(NOTES)}; no password.</p>")))

    async def calendar_page(request: Request) -> Response:
        """`link_calendar`'s URL: the person, in their browser, allows the link."""
        world.hit("calendar_page")
        elicitation_id = request.query_params.get("id", "")
        account = world.calendar_requests.get(elicitation_id)
        if account is None:
            return HTMLResponse(_page("Unknown request", "<p>This calendar request is "
                                      "unknown.</p>"), status_code=400)
        if elicitation_id in world.calendars_allowed:
            return HTMLResponse(_page("Calendar linked", "<p id=done>Your calendar is linked "
                                      "to Notes: go back to your chat and accept.</p>"))
        return HTMLResponse(_page("Link your calendar", (
            f"<p>Notes asks to link <b>{html.escape(account)}</b>'s calendar to its notes.</p>"
            "<form method=post action=/calendar-consent>"
            f"<input type=hidden name=id value={html.escape(elicitation_id)}>"
            "<p><button id=allow-calendar>Link my calendar</button></p></form>")))

    async def calendar_allow(request: Request) -> Response:
        form = await request.form()
        elicitation_id = str(form.get("id", ""))
        if elicitation_id not in world.calendar_requests:
            return HTMLResponse("<p>unknown request</p>", status_code=400)
        world.calendars_allowed.add(elicitation_id)
        return RedirectResponse(f"/calendar-consent?{urlencode({'id': elicitation_id})}",
                                status_code=303)

    async def consent(request: Request) -> Response:
        form = await request.form()
        request_id = str(form.get("req", ""))
        if request_id not in world.provider.pending:
            return HTMLResponse("<p>unknown request</p>", status_code=400)
        if form.get("decision") != "allow":
            return RedirectResponse(world.provider.deny(request_id), status_code=302)
        account = str(form.get("account", "")).strip()
        if account not in NOTES:
            return HTMLResponse(_page("No such account", f"<p>Notes has no account "
                                      f"{html.escape(account)!r}: go back and pick one of "
                                      f"{', '.join(NOTES)}.</p>"), status_code=400)
        return RedirectResponse(world.provider.approve(request_id, account), status_code=302)

    authenticator = ClientAuthenticator(world.provider)  # type: ignore[arg-type]
    registrar = RegistrationHandler(world.provider, registration)  # type: ignore[arg-type]

    async def register(request: Request) -> Response:
        """The SDK's RFC 7591 handler, after noting the `application_type` the client sent."""
        try:
            body = json.loads(await request.body())  # the handler reads the same cached body
        except ValueError:
            body = None
        world.application_types.append(
            body.get("application_type") if isinstance(body, dict) else None)
        return await registrar.handle(request)

    async def revoke(request: Request) -> Response:
        """RFC 7009 (the SDK's handler insists on a client_secret form field even with Basic)."""
        try:
            client = await authenticator.authenticate_request(request)
        except AuthenticationError as exc:
            return JSONResponse({"error": "invalid_client", "error_description": exc.message},
                                status_code=401)
        form = await request.form()
        value = str(form.get("token", ""))
        if not value:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        found: AccessToken | RefreshToken | None = await world.provider.load_access_token(value)
        if found is None:
            for grant in world.provider.grants:
                if grant.refresh == value:
                    found = RefreshToken(token=value, client_id=grant.client_id,
                                         scopes=grant.scopes)
        if found is not None and found.client_id == client.client_id:
            await world.provider.revoke_token(found)
        return Response(status_code=200)

    routes = [
        Route("/.well-known/oauth-authorization-server", as_metadata, methods=["GET"]),
        Route("/revoke", revoke, methods=["POST"]),
        Route("/register", register, methods=["POST"]),
        Route("/consent", consent_page, methods=["GET"]),
        Route("/consent", consent, methods=["POST"]),
        Route("/calendar-consent", calendar_page, methods=["GET"]),
        Route("/calendar-consent", calendar_allow, methods=["POST"]),
        *create_auth_routes(world.provider, issuer, None, registration, revocation),  # type: ignore[arg-type]
    ]
    return routes


def as_app(world: NotesWorld) -> Starlette:
    """The authorization server on its own origin (`world.as_url`)."""
    return Starlette(routes=as_routes(world))


def rs_app(world: NotesWorld, *, with_authorization_server: bool = False) -> ASGIApp:
    """The MCP resource server at `world.mcp_url`; with the AS's routes beside it when asked."""
    mcp = FastMCP(
        "notes", token_verifier=_Audience(world),
        auth=AuthSettings(issuer_url=AnyHttpUrl(world.as_url),
                          resource_server_url=AnyHttpUrl(world.mcp_url)),
    )

    def account_of(ctx: Context) -> str:
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        if token is None or not token.subject:  # the verifier lets no such token through
            raise PermissionError("no verified account on this request")
        return token.subject

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """The account this token acts as."""
        return account_of(ctx)

    @mcp.tool()
    def list_notes(ctx: Context) -> str:
        """The caller's own notes."""
        return ", ".join(NOTES.get(account_of(ctx), []) + world.added.get(account_of(ctx), []))

    @mcp.tool()
    def add_note(text: str, ctx: Context) -> str:
        """Add a note for the caller (needs the `notes:write` scope)."""
        world.hit("add_note_executed")
        world.added.setdefault(account_of(ctx), []).append(text)
        return f"added: {text}"

    @mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=False))
    async def share_note(text: str, ctx: Context) -> str:
        """Add a note to a notebook of the caller's (asks which notebook)."""
        world.hit("share_note_executed")
        account = account_of(ctx)
        answer = await ctx.elicit(f"Which notebook should {text!r} go to?", Notebook)
        if answer.action != "accept":
            return f"not shared ({answer.action})"
        if answer.data.notebook not in NOTEBOOKS:
            return f"not shared: no notebook {answer.data.notebook!r}"
        world.added.setdefault(account, []).append(f"{text} ({answer.data.notebook})")
        return f"shared {text!r} in {answer.data.notebook}"

    @mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=False))
    async def link_calendar(ctx: Context) -> str:
        """Link the caller's calendar to their notes (asks for a visit to a page)."""
        world.hit("link_calendar_executed")
        account = account_of(ctx)
        elicitation_id = secrets.token_urlsafe(12)
        world.calendar_requests[elicitation_id] = account
        url = f"{world.as_url}/calendar-consent?{urlencode({'id': elicitation_id})}"
        answer = await ctx.elicit_url("Link your calendar to Notes", url, elicitation_id)
        if answer.action != "accept":
            return f"calendar not linked ({answer.action})"
        if elicitation_id not in world.calendars_allowed:
            return "calendar not linked: the page was not visited and allowed"
        return f"calendar linked for {account}"

    app = mcp.streamable_http_app()
    if with_authorization_server:
        app.router.routes[:0] = as_routes(world)
    return _CountUnauthorized(_RequireScope(app, world), world)


def cmd_serve(args: argparse.Namespace) -> int:
    """`onbehalf notes-mcp [--host H] [--port P]`: the AS and the RS on one port, until Ctrl-C."""
    host: str = args.host
    sock = bind_listening_socket(host, args.port)
    origin = f"http://{url_host(host)}:{sock.getsockname()[1]}"
    world = NotesWorld(as_url=origin, mcp_url=f"{origin}{MCP_PATH}",
                       client_id_metadata_documents=True)
    print(f"notes MCP server (demo OAuth: accounts {', '.join(NOTES)}) on {world.mcp_url}",
          flush=True)
    return serve_until_stopped(rs_app(world, with_authorization_server=True), sock)
