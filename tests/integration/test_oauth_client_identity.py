"""Who onbehalf is at an authorization server (DESIGN.md §8.1), against a real AS.

In order: the client the servers file configures (tests/integration/test_oauth_accounts.py
and test_connections_cli_operator.py), else onbehalf's Client ID Metadata Document when
the AS advertises `client_id_metadata_document_supported`, else an RFC 7591 registration
sent as `"application_type": "web"` and kept per issuer.

onbehalf's HTTP app is served on a real loopback port, its public URL, because the AS
fetches the document from there; the test drives the routes in process (ASGI) at the
same base URL. The AS and RS are tests/support/oauth_provider.py in either mode.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from onbehalf.http_app import app
from onbehalf.mcp.pool import PoolSettings, session_pool
from onbehalf.oauth import accounts
from onbehalf.oauth.store import OAuthStore, StoredTokens
from tests.integration import test_oauth_accounts
from tests.support.agents import say, scripted_agent, tool_messages
from tests.support.asgi_server import serve_in_thread
from tests.support.oauth_provider import OAuthWorld, consent_and_confirm, oauth_world
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio
store = test_oauth_accounts.store  # the same fixture: the suite's Redis, emptied, in use


@pytest.fixture
async def public(store: OAuthStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """onbehalf's HTTP app on a loopback port: ONBEHALF_PUBLIC_URL, reachable by the AS
    (it replaces the unreachable one of test_oauth_accounts.py's `store`)."""
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")
    session_pool().settings = PoolSettings.from_env()
    with serve_in_thread(app) as url:
        monkeypatch.setenv("ONBEHALF_PUBLIC_URL", url)
        yield url


@pytest.fixture
def document_url(public: str) -> str:
    return f"{public}/oauth/client-metadata.json"


@pytest.fixture
async def onbehalf(public: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=public) as c:
        yield c


@pytest.fixture
def documents() -> Iterator[OAuthWorld]:
    """The AS advertises and fetches Client ID Metadata Documents (as `make dev` runs it)."""
    with oauth_world(client_id_metadata_documents=True) as running:
        yield running


@pytest.fixture
def registering() -> Iterator[OAuthWorld]:
    """The AS knows registered clients only."""
    with oauth_world() as running:
        yield running


def notes_at(world: OAuthWorld, monkeypatch: pytest.MonkeyPatch) -> accounts.OAuthServer:
    """`notes` in the servers file, at `world`'s MCP server, asking for a scope (as in
    `make dev`: a document names none, a registration names the one it was made for)."""
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "scopes": ["notes"]}}
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"notes": entry}}))
    return accounts.OAuthServer(name="notes", url=world.mcp_url, scopes=["notes"])


def client_id_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["client_id"][0]


async def registrations(redis_url: str, store: OAuthStore) -> list[str]:
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        return [key async for key in raw.scan_iter(match=f"{store.prefix}client:*")]
    finally:
        await raw.aclose()


async def whoami(user: str) -> str:
    agent, _ = scripted_agent([("whoami", {})])
    state = await agent.ainvoke(say("whoami"), context={"user_token": mint(user)})
    return test_oauth_accounts.text(tool_messages(state)[0])


async def test_the_document_is_the_same_bytes_every_time_and_may_be_cached(
    onbehalf: httpx.AsyncClient, public: str, document_url: str
) -> None:
    first = await onbehalf.get("/oauth/client-metadata.json")
    second = await onbehalf.get("/oauth/client-metadata.json",
                                headers={"host": "attacker.example", "x-forwarded-host": "x"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content  # byte for byte, whoever asks and however
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "public, max-age=3600"
    assert first.headers["etag"] == second.headers["etag"]
    assert first.json() == {
        "client_id": document_url,
        "redirect_uris": [f"{public}/oauth/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "onbehalf",
        "application_type": "web",
    }
    unchanged = await onbehalf.get("/oauth/client-metadata.json",
                                   headers={"if-none-match": first.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""


async def test_without_a_public_url_there_is_no_document(
    onbehalf: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONBEHALF_ENV", "production")  # no dev fallback to the server's own URL
    monkeypatch.delenv("ONBEHALF_PUBLIC_URL", raising=False)
    answer = await onbehalf.get("/oauth/client-metadata.json")
    assert answer.status_code == 404 and "ONBEHALF_PUBLIC_URL" in answer.json()["detail"]


async def test_alice_connects_through_the_metadata_document_without_registering(
    documents: OAuthWorld, store: OAuthStore, onbehalf: httpx.AsyncClient, document_url: str,
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = notes_at(documents, monkeypatch)
    link = await accounts.start_flow("alice", server)
    assert client_id_of(link) == document_url
    answer = await consent_and_confirm(documents, onbehalf, link, "alice")
    assert answer.status_code == 200, answer.text

    assert documents.count("register") == 0 and documents.application_types == []
    assert await registrations(redis_url, store) == []  # nothing kept for a document client
    assert documents.count("client_metadata_fetch") == 1  # then from its cache (max-age)
    served = (await onbehalf.get("/oauth/client-metadata.json")).json()
    assert documents.client_documents == [served]  # what the AS read is what onbehalf serves
    (grant,) = documents.provider.grants
    assert grant.client_id == document_url  # the code was exchanged as the document's client
    tokens = await store.tokens("alice", "notes")
    assert isinstance(tokens, StoredTokens) and tokens.client_id == document_url
    assert await whoami("alice") == "alice"

    documents.expire_access_tokens("alice")  # refresh, as the same public client
    await store.replace_tokens("alice", "notes", tokens, {
        "access_token": tokens.access_token, "expires_in": 0})
    refreshed = await accounts.access_token("alice", server)
    assert refreshed.access_token != tokens.access_token
    assert documents.count("token_refresh") == 1 and documents.count("refresh_reuse") == 0
    assert await whoami("alice") == "alice"

    gone = await onbehalf.delete("/connections/notes", headers=test_oauth_accounts.bearer("alice"))
    assert gone.json()["revoked_at_authorization_server"] is True
    assert documents.live_grants("alice") == 0
    assert documents.count("register") == 0 and documents.count("client_metadata_refused") == 0


async def test_an_operator_without_the_public_url_revokes_a_document_client(
    documents: OAuthWorld, store: OAuthStore, onbehalf: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = notes_at(documents, monkeypatch)
    link = await accounts.start_flow("alice", server)
    assert (await consent_and_confirm(documents, onbehalf, link, "alice")).status_code == 200
    for name in ("ONBEHALF_PUBLIC_URL", "LANGGRAPH_API_URL"):  # `onbehalf connections delete`
        monkeypatch.delenv(name, raising=False)
    dropped = await accounts.disconnect("alice", server)
    assert dropped["revoked_at_authorization_server"] is True
    assert documents.live_grants("alice") == 0


async def test_the_authorization_server_checks_the_document(
    documents: OAuthWorld, store: OAuthStore, document_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = await accounts.start_flow("alice", notes_at(documents, monkeypatch))
    query = parse_qs(urlsplit(link).query)
    authorize = link.split("?", 1)[0]
    async with httpx.AsyncClient(timeout=10) as browser:
        elsewhere = await browser.get(authorize, params={
            **query, "redirect_uri": "http://127.0.0.1:9/elsewhere"})
        # the document at this URL names another client_id (the URL without its query)
        impostor = await browser.get(authorize, params={
            **query, "client_id": f"{document_url}?v=2"})
    assert elsewhere.status_code == 400 and "redirect" in elsewhere.text.lower()
    assert impostor.status_code == 400
    assert documents.count("client_metadata_refused") == 1
    assert documents.count("consent") == 0 and documents.provider.pending == {}


async def test_a_registration_says_it_is_a_web_application(
    registering: OAuthWorld, store: OAuthStore, onbehalf: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = await accounts.start_flow("alice", notes_at(registering, monkeypatch))
    assert registering.count("register") == 1
    assert registering.application_types == ["web"]
    assert client_id_of(link) in registering.provider.clients
    assert registering.count("client_metadata_fetch") == 0
    assert (await consent_and_confirm(registering, onbehalf, link, "alice")).status_code == 200
    assert await whoami("alice") == "alice"


async def test_a_registration_at_one_authorization_server_is_never_used_at_another(
    registering: OAuthWorld, store: OAuthStore, onbehalf: httpx.AsyncClient, public: str,
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = client_id_of(await accounts.start_flow("alice", notes_at(registering, monkeypatch)))
    (first_key,) = await registrations(redis_url, store)
    with oauth_world() as moved:  # `notes` moved to another AS, under the same name
        server = notes_at(moved, monkeypatch)
        second = client_id_of(await accounts.start_flow("alice", server))
        assert moved.count("register") == 1 and second in moved.provider.clients
        assert second != first and first not in moved.provider.clients
        link = await accounts.start_flow("alice", server)
        assert (await consent_and_confirm(moved, onbehalf, link, "alice")).status_code == 200
        assert await whoami("alice") == "alice"

        # nor does a copy of the first registration pass for the second AS's: it is sealed
        # to its issuer
        issuer = (await accounts.authorization_server(server, accounts.oauth_settings())).issuer
        (second_key,) = set(await registrations(redis_url, store)) - {first_key}
        raw = aioredis.from_url(redis_url, decode_responses=True)
        await raw.set(second_key, await raw.get(first_key))
        await raw.aclose()
        assert await store.registration("notes", issuer, f"{public}/oauth/callback") is None
        assert await store.registration_of("notes", issuer, first) is None
    again = client_id_of(await accounts.start_flow("alice", notes_at(registering, monkeypatch)))
    assert again == first and registering.count("register") == 1
