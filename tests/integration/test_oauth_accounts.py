"""Connected accounts over OAuth, in process, against a real AS and MCP resource server.

The routes run in the test's event loop through `httpx.ASGITransport` on the
real `http_app`; the AS and RS (tests/support/oauth_provider.py) are real HTTP
servers; tokens live in the suite's real Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from onbehalf.http_app import app
from onbehalf.mcp.pool import session_pool
from onbehalf.oauth import accounts
from onbehalf.oauth.discovery import forget_discovery
from onbehalf.oauth.store import OAuthStore
from tests.support.agents import say, scripted_agent, tool_messages
from tests.support.oauth_provider import OAuthWorld, oauth_world
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio
PUBLIC = "http://127.0.0.1:9"  # where browsers would reach onbehalf; the ASGI client uses it


@pytest.fixture
def world() -> Iterator[OAuthWorld]:
    with oauth_world() as running:
        yield running


@pytest.fixture
async def store(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OAuthStore]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    store = OAuthStore(client, url=redis_url)
    accounts.use_oauth_store(store)
    monkeypatch.setenv("ONBEHALF_PUBLIC_URL", PUBLIC)
    forget_discovery()
    yield store
    accounts.use_oauth_store(None)
    await session_pool().aclose()
    await store.aclose()


@pytest.fixture
async def notes(world: OAuthWorld, monkeypatch: pytest.MonkeyPatch) -> str:
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "description": "Your notes"}}
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"notes": entry}}))
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")
    from onbehalf.mcp.pool import PoolSettings

    session_pool().settings = PoolSettings.from_env()
    return "notes"


@pytest.fixture
async def onbehalf() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as c:
        yield c


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(user)}"}


async def callback(onbehalf: httpx.AsyncClient, location: str) -> httpx.Response:
    """The browser arriving at onbehalf's callback from the AS."""
    assert location.startswith(f"{PUBLIC}/oauth/callback?")
    return await onbehalf.get(location.removeprefix(PUBLIC))


def confirm_link(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 303, response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{PUBLIC}/console"
    query = parse_qs(target.query)
    return query["flow"][0], query["confirm"][0]


async def connect(world: OAuthWorld, onbehalf: httpx.AsyncClient, link: str, *,
                  account: str, confirmer: str) -> httpx.Response:
    """Consent at the AS as `account`, land on the callback, confirm as `confirmer`."""
    location = await asyncio.to_thread(world.approve_url, link, account)
    flow, secret = confirm_link(await callback(onbehalf, location))
    return await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                               headers=bearer(confirmer))


async def connected(world: OAuthWorld, onbehalf: httpx.AsyncClient, user: str) -> None:
    link = await accounts.start_flow(user, server_of(world))
    answer = await connect(world, onbehalf, link, account=user, confirmer=user)
    assert answer.status_code == 200, answer.text


def server_of(world: OAuthWorld) -> accounts.OAuthServer:
    return accounts.OAuthServer(name="notes", url=world.mcp_url, description="Your notes")


def text(message: Any) -> str:
    """A tool message's text, whether a plain string or MCP content blocks."""
    content = message.content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def pause_of(state: dict[str, Any], kind: str) -> dict[str, Any]:
    (pause,) = state["__interrupt__"]
    assert pause.value["type"] == kind and pause.value["server"] == "notes"
    return pause.value


async def test_lazy_consent_then_alice_acts_as_herself(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    agent, model = scripted_agent([("connect_account", {"server": "notes"}), ("whoami", {})],
                                  checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "alice-notes"}}
    context = {"user_token": mint("alice")}
    state = await agent.ainvoke(say("my notes?"), config=config, context=context)
    assert "connect_account" in model.seen_tools[0] and "whoami" not in model.seen_tools[0]
    pause = pause_of(state, "connect_account")
    assert pause["connect_url"].startswith(f"{world.as_url}/authorize?")
    assert "Your notes" in pause["message"]
    query = parse_qs(urlsplit(pause["connect_url"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["resource"] == [world.mcp_url]
    assert query["redirect_uri"] == [f"{PUBLIC}/oauth/callback"]
    assert world.count("register") == 1  # dynamic registration, once

    answer = await connect(world, onbehalf, pause["connect_url"], account="alice",
                           confirmer="alice")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "connected"

    state = await agent.ainvoke(Command(resume={"connected": "notes"}), config=config,
                                context=context)
    results = [text(m) for m in tool_messages(state)]
    assert results[0].startswith("connected")
    assert results[1] == "alice"  # the RS saw alice's own token
    assert "whoami" in model.seen_tools[-1] and "connect_account" not in model.seen_tools[-1]

    listed = (await onbehalf.get("/connections", headers=bearer("alice"))).json()
    (entry,) = listed["connections"]
    assert entry["server"] == "notes" and entry["status"] == "connected"
    assert not any(secret in json.dumps(listed) for secret in world.seen_secrets)


async def test_bob_is_unconnected_and_sees_only_connect_account(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    await connected(world, onbehalf, "alice")
    agent, model = scripted_agent([("whoami", {})])
    state = await agent.ainvoke(say("who am i"), context={"user_token": mint("bob")})
    assert model.seen_tools[0] == ["connect_account"]
    assert "not available" in text(tool_messages(state)[0])
    listed = (await onbehalf.get("/connections", headers=bearer("bob"))).json()
    assert listed["connections"][0]["status"] == "not_connected"


async def test_phishing_bob_completing_alices_link_stores_nothing(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    link = await accounts.start_flow("alice", server_of(world))  # alice sends this to bob
    location = await asyncio.to_thread(world.approve_url, link, "bob")  # bob consents as bob
    flow, secret = confirm_link(await callback(onbehalf, location))
    refused = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                                  headers=bearer("bob"))  # in bob's browser, signed in as bob
    assert refused.status_code == 403
    assert "started by another user" in refused.json()["detail"]
    again = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                                headers=bearer("alice"))  # the code is burnt for everyone
    assert again.status_code == 404
    assert world.count("token_code") == 0
    for user in ("alice", "bob"):
        assert await store.tokens(user, "notes") is None


async def test_a_wrong_confirm_secret_is_refused_and_burns_the_flow(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    flow, secret = confirm_link(await callback(onbehalf, location))
    wrong = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": "guess"},
                                headers=bearer("alice"))
    assert wrong.status_code == 403
    late = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                               headers=bearer("alice"))
    assert late.status_code == 404
    unsigned = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret})
    assert unsigned.status_code == 401
    assert await store.tokens("alice", "notes") is None


async def test_state_replayed_unknown_or_expired_is_refused(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    confirm_link(await callback(onbehalf, location))
    replayed = await callback(onbehalf, location)
    assert replayed.status_code == 400 and "already used or expired" in replayed.text
    unknown = await onbehalf.get("/oauth/callback", params={"code": "x", "state": "forged"})
    assert unknown.status_code == 400

    monkeypatch.setenv("OAUTH_FLOW_TTL_SECONDS", "1")
    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    await asyncio.sleep(1.2)
    expired = await callback(onbehalf, location)
    assert expired.status_code == 400 and "expired" in expired.text

    # the state of another flow does not carry this flow's code anywhere useful
    first = await accounts.start_flow("alice", server_of(world))
    second = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, first, "alice")
    other_state = parse_qs(urlsplit(second).query)["state"][0]
    code = parse_qs(urlsplit(location).query)["code"][0]
    swapped = await onbehalf.get("/oauth/callback", params={
        "code": code, "state": other_state, "iss": world.as_url})
    flow, secret = confirm_link(swapped)
    refused = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                                  headers=bearer("alice"))
    assert refused.status_code == 400  # the code's PKCE challenge is the other flow's
    assert await store.tokens("alice", "notes") is None


async def test_mix_up_and_a_missing_iss_are_refused(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    query = parse_qs(urlsplit(location).query)
    forged = {"code": query["code"][0], "state": query["state"][0],
              "iss": "https://attacker.example"}
    mixed = await onbehalf.get("/oauth/callback", params=forged)
    assert mixed.status_code == 400 and "mix-up" in mixed.text

    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    query = parse_qs(urlsplit(location).query)
    bare = await onbehalf.get("/oauth/callback", params={
        "code": query["code"][0], "state": query["state"][0]})
    assert bare.status_code == 400 and "iss" in bare.text
    assert world.count("token_code") == 0 and await store.tokens("alice", "notes") is None


async def test_a_wrong_pkce_verifier_gets_no_token(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient,
    redis_url: str,
) -> None:
    link = await accounts.start_flow("alice", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "alice")
    flow, secret = confirm_link(await callback(onbehalf, location))
    raw = aioredis.from_url(redis_url, decode_responses=True)
    key = f"{store.prefix}held:{flow}"
    held = json.loads(await raw.get(key))
    from onbehalf.sealing import seal_value

    held["verifier"] = seal_value(store.keys, "not-the-verifier" * 4,
                                  store._flow_aad(flow, "verifier"))
    await raw.set(key, json.dumps(held), ex=60)
    refused = await onbehalf.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                                  headers=bearer("alice"))
    assert refused.status_code == 400 and "refused the code" in refused.json()["detail"]
    assert world.count("token_code") == 0 and await store.tokens("alice", "notes") is None
    await raw.aclose()


async def test_ten_concurrent_runs_with_an_expired_token_refresh_once(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await connected(world, onbehalf, "alice")
    world.expire_access_tokens("alice")
    tokens = await store.tokens("alice", "notes")
    assert not isinstance(tokens, str | None)
    await store.replace_tokens("alice", "notes", tokens, {
        "access_token": tokens.access_token, "expires_in": 0})  # onbehalf sees it expired too

    class EveryCallIsAnotherProcess(dict):  # no in-process lock: only Redis serialises
        def setdefault(self, key: Any, default: Any) -> Any:
            return default

    monkeypatch.setattr(accounts, "_local_locks", EveryCallIsAnotherProcess())
    token = mint("alice")

    async def one_run() -> str:
        agent, _ = scripted_agent([("whoami", {})])
        state = await agent.ainvoke(say("whoami"), context={"user_token": token})
        return text(tool_messages(state)[0])

    assert await asyncio.gather(*(one_run() for _ in range(10))) == ["alice"] * 10
    assert world.count("token_refresh") == 1
    assert world.count("refresh_reuse") == 0


async def test_a_revoked_grant_asks_to_reconnect_then_the_thread_resumes(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    await connected(world, onbehalf, "alice")
    world.revoke_account("alice")  # alice removes the app at the provider
    agent, _ = scripted_agent([("whoami", {})], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "alice-revoked"}}
    context = {"user_token": mint("alice")}
    state = await agent.ainvoke(say("whoami"), config=config, context=context)
    pause = pause_of(state, "reconnect_account")
    assert pause["connect_url"].startswith(f"{world.as_url}/authorize?")
    assert await store.tokens("alice", "notes") == "needs_reconnect"
    assert world.count("token_refresh") == 1  # the refresh was tried, and refused
    listed = (await onbehalf.get("/connections", headers=bearer("alice"))).json()
    assert listed["connections"][0]["status"] == "needs_reconnect"

    answer = await connect(world, onbehalf, pause["connect_url"], account="alice",
                           confirmer="alice")
    assert answer.status_code == 200
    state = await agent.ainvoke(Command(resume={"connected": "notes"}), config=config,
                                context=context)
    assert text(tool_messages(state)[-1]) == "alice"


async def test_a_401_mid_session_refreshes_and_the_call_goes_through(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient,
) -> None:
    from langchain_core.tools import tool

    await connected(world, onbehalf, "alice")

    @tool
    def provider_expires_tokens() -> str:
        """The AS expires alice's access token early, after her session opened."""
        world.expire_access_tokens("alice")
        return "expired"

    agent, _ = scripted_agent([("provider_expires_tokens", {}), ("whoami", {})],
                              tools=[provider_expires_tokens])
    state = await agent.ainvoke(say("go"), context={"user_token": mint("alice")})
    assert text(tool_messages(state)[-1]) == "alice"
    assert world.count("token_refresh") == 1


async def test_delete_connection_revokes_at_the_authorization_server(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient
) -> None:
    await connected(world, onbehalf, "alice")
    tokens = await store.tokens("alice", "notes")
    assert not isinstance(tokens, str | None)
    gone = await onbehalf.delete("/connections/notes", headers=bearer("alice"))
    assert gone.status_code == 200
    assert gone.json() == {"server": "notes", "status": "not_connected",
                           "revoked_at_authorization_server": True}
    assert hashlib.sha256(tokens.refresh_token.encode()).hexdigest() in world.revoked
    assert world.live_grants("alice") == 0
    assert await store.tokens("alice", "notes") is None
    unknown = await onbehalf.delete("/connections/nope", headers=bearer("alice"))
    assert unknown.status_code == 404


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.7/.well-known/oauth-protected-resource",
    "https://[fd00::1]/metadata",
])
async def test_hostile_discovery_is_refused_before_any_request(
    target: str, store: OAuthStore, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with oauth_world(hostile_resource_metadata=target) as hostile:
        entry = {"url": hostile.mcp_url, "auth": {"type": "oauth"}}
        monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"notes": entry}}))
        agent, _ = scripted_agent([("connect_account", {"server": "notes"})])
        state = await agent.ainvoke(say("connect"), context={"user_token": mint("alice")})
        refusal = text(tool_messages(state)[0])
        assert "cannot start connecting 'notes'" in refusal and "refused" in refusal
        assert hostile.count("metadata") == 0 and hostile.count("register") == 0


async def test_nothing_secret_is_at_rest_or_in_logs(
    world: OAuthWorld, store: OAuthStore, notes: str, onbehalf: httpx.AsyncClient,
    redis_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await connected(world, onbehalf, "alice")
    world.expire_access_tokens("alice")
    tokens = await store.tokens("alice", "notes")
    assert not isinstance(tokens, str | None)
    await accounts.refresh("alice", server_of(world), tokens)
    link = await accounts.start_flow("bob", server_of(world))
    location = await asyncio.to_thread(world.approve_url, link, "bob")
    await callback(onbehalf, location)  # a held code and verifier, waiting for bob
    raw = aioredis.from_url(redis_url, decode_responses=True)
    values = [str(await raw.get(k)) for k in await raw.keys("*")]
    await raw.aclose()
    secrets = {s for s in world.seen_secrets if len(s) >= 12}
    secrets.add(parse_qs(urlsplit(link).query)["state"][0])
    # httpx logs every URL it fetches; the test's own browser stand-in fetches the
    # authorize URL (state in the query), so its records are the test's, not ours.
    # The service's own outbound URLs (discovery, token, revoke) carry no secret.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert len(values) >= 3  # tokens, registration, the held code
    for secret in secrets:
        assert not any(secret in value for value in values), "a secret is stored in clear"
        assert not any(secret in line for line in ours), "a secret is in the logs"
