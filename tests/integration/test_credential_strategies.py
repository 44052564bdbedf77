"""Each credential strategy end to end against real HTTP counterparts, alone and mixed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agents.assistant.graph import graph as assistant
from onbehalf.mcp.credentials import use_secret_store
from onbehalf.mcp.pool import PoolSettings, session_pool
from onbehalf.user_secrets import UserSecretStore
from tests.support.agents import say, scripted_agent
from tests.support.agents import tool_messages as results
from tests.support.agents import tool_payload as payload
from tests.support.apikey_mcp import ApiKeyMcp, run_apikey_mcp
from tests.support.exchange_server import ExchangeServer, run_token_exchange
from tests.support.mcp_server import TicketsMcpServer, run_tickets_mcp
from tests.support.tokens import TEST_AUDIENCE, mint

pytestmark = pytest.mark.anyio

EXCHANGE_AUDIENCE = "tickets-api"


@pytest.fixture(scope="module")
def exchange() -> Iterator[ExchangeServer]:
    with run_token_exchange() as server:
        yield server


@pytest.fixture(scope="module")
def audience_bound_tickets() -> Iterator[TicketsMcpServer]:
    """A tickets server that only accepts tokens issued for `tickets-api`."""
    with run_tickets_mcp(env={"AUTH_JWT_AUDIENCE": EXCHANGE_AUDIENCE}) as server:
        yield server


@pytest.fixture
def github() -> Iterator[ApiKeyMcp]:
    with run_apikey_mcp({"ghk-alice-0001": "alice"}) as server:
        yield server


@pytest.fixture
async def secrets(redis_url: str) -> AsyncIterator[UserSecretStore]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    store = UserSecretStore(client, url=redis_url)
    use_secret_store(store)
    yield store
    use_secret_store(None)
    await store.aclose()


@pytest.fixture(autouse=True)
async def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setenv("EXCHANGE_CLIENT_ID", "onbehalf-agent")
    monkeypatch.setenv("EXCHANGE_CLIENT_SECRET", "exchange-secret")
    yield
    await session_pool().aclose()


def configure(monkeypatch: pytest.MonkeyPatch, **servers: dict[str, Any]) -> None:
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))


def exchange_server_entry(exchange: ExchangeServer, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "auth": {
            "type": "token_exchange", "token_url": exchange.token_url,
            "audience": EXCHANGE_AUDIENCE, "scope": "tickets:read",
            "client_id_env": "EXCHANGE_CLIENT_ID", "client_secret_env": "EXCHANGE_CLIENT_SECRET",
            "connect_url": "https://app.example/consent/tickets",
        },
        "timeout_seconds": 5,
    }


def github_entry(server: ApiKeyMcp) -> dict[str, Any]:
    return {
        "url": server.url,
        "auth": {"type": "user_secret", "secret": "github",
                 "connect_url": "https://app.example/connect/github"},
        "timeout_seconds": 5,
    }


def reconnect_pause(state: dict[str, Any]) -> Any:
    """The run's one interrupt, which asks alice to reconnect her github account."""
    (pause,) = state["__interrupt__"]
    assert pause.value["type"] == "reconnect_account"
    assert pause.value["server"] == "github"
    assert pause.value["connect_url"] == "https://app.example/connect/github"
    return pause


async def reconnect_and_resume(
    github: ApiKeyMcp, secrets: UserSecretStore, agent: Any, config: dict[str, Any], token: str
) -> None:
    """alice connects a new key, resumes the thread, and the paused call acts as her."""
    github.keys["ghk-alice-0002"] = "alice"
    await secrets.set("alice", "github", "ghk-alice-0002")
    state = await agent.ainvoke(
        Command(resume="reconnected"), config=config, context={"user_token": token}
    )
    assert payload(results(state)[-1])["as_user"] == "alice"
    assert state["messages"][-1].content == "done"


async def test_token_exchange_sends_an_audience_bound_token_the_server_accepts(
    exchange: ExchangeServer, audience_bound_tickets: TicketsMcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, tickets=exchange_server_entry(exchange, audience_bound_tickets.url))
    before = len(exchange.exchanges)
    state = await assistant.ainvoke(say("whoami"), context={"user_token": mint("alice")})
    data = payload(results(state)[0])
    assert data["as_user"] == "alice"
    assert len(exchange.exchanges) == before + 1
    assert exchange.exchanges[-1].audience == EXCHANGE_AUDIENCE


async def test_exchange_client_auth_form_encodes_a_secret_with_plus_slash_and_equals(
    audience_bound_tickets: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr+t/with=="  # base64 secrets carry these; RFC 6749 §2.3.1 encodes them
    monkeypatch.setenv("EXCHANGE_CLIENT_ID", "onbehalf agent+1")
    monkeypatch.setenv("EXCHANGE_CLIENT_SECRET", secret)
    with run_token_exchange(client_id="onbehalf agent+1", client_secret=secret) as strict:
        configure(monkeypatch, tickets=exchange_server_entry(strict, audience_bound_tickets.url))
        state = await assistant.ainvoke(say("whoami"), context={"user_token": mint("alice")})
        assert payload(results(state)[0])["as_user"] == "alice"
        assert len(strict.exchanges) == 1


async def test_exchanged_tokens_are_cached_per_user_token_until_near_expiry(
    exchange: ExchangeServer, audience_bound_tickets: TicketsMcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, tickets=exchange_server_entry(exchange, audience_bound_tickets.url))
    session_pool().settings = PoolSettings(idle_seconds=0)  # force new sessions: cache only
    alice = mint("alice")
    before = len(exchange.exchanges)
    for _ in range(3):
        await assistant.ainvoke(say("whoami"), context={"user_token": alice})
    assert len(exchange.exchanges) == before + 1  # one exchange, two cache hits
    await assistant.ainvoke(say("whoami"), context={"user_token": mint("alice")})
    assert len(exchange.exchanges) == before + 2  # a new sign-in never reuses the old one
    await assistant.ainvoke(say("whoami"), context={"user_token": mint("bob")})
    assert len(exchange.exchanges) == before + 3


async def test_an_exchanged_token_close_to_expiry_is_exchanged_again(
    audience_bound_tickets: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_token_exchange(token_ttl=31) as short:  # margin is 30 s: valid for ~1 s
        configure(monkeypatch, tickets=exchange_server_entry(short, audience_bound_tickets.url))
        session_pool().settings = PoolSettings(idle_seconds=0)
        alice = mint("alice")
        await assistant.ainvoke(say("whoami"), context={"user_token": alice})
        await asyncio.sleep(1.5)
        await assistant.ainvoke(say("whoami"), context={"user_token": alice})
        assert len(short.exchanges) == 2


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("invalid_grant", "sign in again"), ("unauthorized_client", "not allowed"),
     ("server_error", "HTTP 500")],
)
async def test_an_exchange_failure_removes_only_that_servers_tools(
    exchange: ExchangeServer, audience_bound_tickets: TicketsMcpServer,
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch,
    mode: str, expected: str,
) -> None:
    configure(
        monkeypatch,
        billing=exchange_server_entry(exchange, audience_bound_tickets.url),
        tickets={"url": tickets_mcp_server.url},
    )
    exchange.fail_mode = mode
    try:
        agent, model = scripted_agent([("list_tickets", {})])
        state = await agent.ainvoke(say("go"), context={"user_token": mint("carol")})
    finally:
        exchange.fail_mode = None
    assert payload(results(state)[0])["as_user"] == "carol"  # the user_token server works
    assert "billing" in model.seen_system[0] and expected in model.seen_system[0]


async def test_user_secret_sends_the_users_connected_account(
    github: ApiKeyMcp, secrets: UserSecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, github=github_entry(github))
    await secrets.set("alice", "github", "ghk-alice-0001")
    state = await assistant.ainvoke(say("list_repos"), context={"user_token": mint("alice")})
    assert payload(results(state)[0])["as_user"] == "alice"


async def test_a_user_without_the_connected_account_is_told_where_to_connect(
    github: ApiKeyMcp, secrets: UserSecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, github=github_entry(github))
    agent, model = scripted_agent([])
    await agent.ainvoke(say("hi"), context={"user_token": mint("bob")})
    assert "https://app.example/connect/github" in model.seen_system[0]
    assert github.sessions_opened == 0


async def test_a_revoked_account_is_dropped_then_the_run_pauses_and_resumes_after_reconnect(
    github: ApiKeyMcp, secrets: UserSecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, github=github_entry(github))
    await secrets.set("alice", "github", "ghk-alice-0001")

    @tool
    def provider_revokes() -> str:
        """The provider revokes alice's key after her session opened (a graph's own tool)."""
        github.keys.clear()
        return "revoked"

    agent, _ = scripted_agent([("provider_revokes", {}), ("whoami", {})],
                              checkpointer=InMemorySaver(), tools=[provider_revokes])
    config = {"configurable": {"thread_id": "alice-github"}}
    token = mint("alice")
    state = await agent.ainvoke(say("go"), config=config, context={"user_token": token})
    reconnect_pause(state)
    assert await secrets.get("alice", "github") is None  # the refused secret was dropped

    await reconnect_and_resume(github, secrets, agent, config, token)


async def test_an_account_revoked_between_runs_pauses_at_session_open_and_resumes(
    github: ApiKeyMcp, secrets: UserSecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")  # each run opens its own session
    session_pool().settings = PoolSettings.from_env()
    configure(monkeypatch, github=github_entry(github))
    await secrets.set("alice", "github", "ghk-alice-0001")
    token = mint("alice")
    state = await assistant.ainvoke(say("whoami"), context={"user_token": token})
    assert payload(results(state)[0])["as_user"] == "alice"

    github.keys.clear()  # the provider revokes alice's key between her two runs
    agent, _ = scripted_agent([("whoami", {})], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "alice-github-at-open"}}
    state = await agent.ainvoke(say("go"), config=config, context={"user_token": token})
    pause = reconnect_pause(state)
    assert "reconnect it at https://app.example/connect/github" in pause.value["message"]
    assert await secrets.get("alice", "github") is None  # the refused secret was dropped
    assert not results(state), "no tool ran on the refused account"

    await reconnect_and_resume(github, secrets, agent, config, token)


async def test_a_user_token_refused_at_session_open_still_says_sign_in_again(
    monkeypatch: pytest.MonkeyPatch, audience_bound_tickets: TicketsMcpServer
) -> None:
    entry = {"url": audience_bound_tickets.url, "auth": {"type": "user_token"},
             "timeout_seconds": 5}  # this server accepts only tokens for another audience
    configure(monkeypatch, tickets=entry)
    agent, model = scripted_agent([])
    state = await agent.ainvoke(say("hi"), context={"user_token": mint("alice")})
    assert "__interrupt__" not in state
    assert "sign in again" in model.seen_system[0]


async def test_a_user_token_server_with_another_audience_never_receives_the_token(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, other={
        "url": tickets_mcp_server.url, "auth": {"type": "user_token", "audience": "other-api"},
    })
    agent, model = scripted_agent([])
    await agent.ainvoke(say("hi"), context={"user_token": mint("alice")})
    assert "no token passthrough" in model.seen_system[0]
    configure(monkeypatch, same={
        "url": tickets_mcp_server.url, "auth": {"type": "user_token", "audience": TEST_AUDIENCE},
    })
    state = await assistant.ainvoke(say("whoami"), context={"user_token": mint("alice")})
    assert payload(results(state)[0])["as_user"] == "alice"


async def test_static_and_none_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with run_apikey_mcp({"svc-key-1": "service"}) as catalogue:
        configure(monkeypatch, catalogue={
            "url": catalogue.url, "auth": {"type": "static", "value_env": "CATALOGUE_KEY"},
        })
        agent, model = scripted_agent([])
        await agent.ainvoke(say("hi"), context={"user_token": mint("alice")})
        assert "CATALOGUE_KEY" in model.seen_system[0]  # unset: named, tools missing
        monkeypatch.setenv("CATALOGUE_KEY", "svc-key-1")
        state = await assistant.ainvoke(say("whoami"), context={"user_token": mint("alice")})
        assert payload(results(state)[0])["as_user"] == "service"


async def test_mixed_strategies_work_together_in_one_run(
    exchange: ExchangeServer, audience_bound_tickets: TicketsMcpServer,
    tickets_mcp_server: TicketsMcpServer, github: ApiKeyMcp, secrets: UserSecretStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(
        monkeypatch,
        tickets={"url": tickets_mcp_server.url},
        billing=exchange_server_entry(exchange, audience_bound_tickets.url),
        github=github_entry(github),
    )
    await secrets.set("alice", "github", "ghk-alice-0001")
    agent, _ = scripted_agent([("tickets_whoami", {}), ("billing_whoami", {}), ("list_repos", {})])
    state = await agent.ainvoke(say("go"), context={"user_token": mint("alice")})
    found = [payload(m) for m in results(state)]
    assert [d["as_user"] for d in found] == ["alice", "alice", "alice"]
    assert found[0]["token_sha256"] != found[1]["token_sha256"]  # billing got its own token
