"""The graphs in process against the real tickets MCP server over streamable HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from agents.assistant.graph import graph as assistant
from agents.ticket_triage.graph import graph as ticket_triage
from onbehalf.errors import UnsafeTokenPath, UserTokenExpired
from onbehalf.mcp.pool import session_pool
from tests.support.agents import say, scripted_agent, tool_messages, tool_payload
from tests.support.mcp_server import TicketsMcpServer, run_tickets_mcp, session_counts
from tests.support.tokens import free_port, mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]


@pytest.fixture(autouse=True)
def servers_env(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    configure(monkeypatch, {"tickets": {"url": tickets_mcp_server.url}})
    yield


def configure(monkeypatch: pytest.MonkeyPatch, servers: dict[str, dict[str, Any]]) -> None:
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    """What happened between two probes, not counting the first probe itself."""
    if key == "sessions_active":
        return after[key] - before[key]
    return after[key] - before[key] - 1


async def test_alice_sees_her_own_and_shared_tickets() -> None:
    state = await assistant.ainvoke(say("list_tickets"), context={"user_token": mint("alice")})
    (result,) = tool_messages(state)
    data = tool_payload(result)
    assert data["as_user"] == "alice"
    assert {t["id"] for t in data["tickets"]} == {"T-1001", "T-1002", "T-1003", "T-1006"}
    assert "T-1001" in state["messages"][-1].content


async def test_bob_sees_only_his_own_and_shared_tickets() -> None:
    state = await assistant.ainvoke(say("list_tickets"), context={"user_token": mint("bob")})
    data = tool_payload(tool_messages(state)[0])
    assert data["as_user"] == "bob"
    ids = {t["id"] for t in data["tickets"]}
    assert "T-1001" not in ids and "T-1003" not in ids
    assert {"T-1004", "T-1005"} <= ids


async def test_bob_cannot_read_alices_private_ticket() -> None:
    state = await assistant.ainvoke(
        say("get_ticket ticket_id=T-1001"), context={"user_token": mint("bob")}
    )
    (result,) = tool_messages(state)
    assert result.status == "error"
    assert "not found" in str(result.content)


async def test_the_server_receives_exactly_the_users_token() -> None:
    token = mint("alice")
    state = await assistant.ainvoke(say("whoami"), context={"user_token": token})
    data = tool_payload(tool_messages(state)[0])
    assert data["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()


async def test_ticket_triage_offers_only_read_tools() -> None:
    state = await ticket_triage.ainvoke(
        say("create_ticket title=x body=y"), context={"user_token": mint("alice")}
    )
    assert not any(m.name == "create_ticket" for m in tool_messages(state))


async def test_a_read_only_graph_refuses_create_ticket_even_when_the_model_asks(
    tickets_mcp_server: TicketsMcpServer,
) -> None:
    before = await session_counts(tickets_mcp_server.url)
    agent, _ = scripted_agent(
        [("create_ticket", {"title": "sneaky", "body": "x"})],
        middleware={"tools": ["list_tickets", "get_ticket"]},
    )
    state = await agent.ainvoke(say("go"), context={"user_token": mint("alice")})
    (result,) = tool_messages(state)
    assert result.status == "error" and "not available" in str(result.content)
    after = await session_counts(tickets_mcp_server.url)
    assert delta(before, after, "tool_calls") == 0  # nothing reached the server


async def test_missing_scope_comes_back_as_a_tool_error_not_a_crash() -> None:
    state = await assistant.ainvoke(
        say('create_ticket title="VPN down" body="since 9am"'),
        context={"user_token": mint("alice", scopes=["tickets:read"])},
    )
    (result,) = tool_messages(state)
    assert result.status == "error"
    assert "tickets:write" in str(result.content)
    assert "tickets:write" in state["messages"][-1].content


async def test_one_session_per_server_per_run_reused_for_every_call(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")  # strict: close at run end
    session_pool().settings = type(session_pool().settings).from_env()
    before = await session_counts(tickets_mcp_server.url)
    agent, _ = scripted_agent(
        [("list_tickets", {}), ("get_ticket", {"ticket_id": "T-1001"}), ("whoami", {})]
    )
    state = await agent.ainvoke(say("go"), context={"user_token": mint("alice")})
    assert [m.status for m in tool_messages(state)] == ["success"] * 3
    await session_pool().aclose()
    after = await session_counts(tickets_mcp_server.url)
    assert delta(before, after, "sessions_opened") == 1
    assert delta(before, after, "tool_calls") == 3
    assert delta(before, after, "sessions_active") == 0  # closed when the run ended


async def test_a_users_next_run_reuses_the_pooled_session_never_another_users(
    tickets_mcp_server: TicketsMcpServer,
) -> None:
    pool = session_pool()
    alice = mint("alice")
    before = await session_counts(tickets_mcp_server.url)
    await assistant.ainvoke(say("whoami"), context={"user_token": alice})
    await assistant.ainvoke(say("whoami"), context={"user_token": alice})
    state = await assistant.ainvoke(say("whoami"), context={"user_token": mint("bob")})
    assert tool_payload(tool_messages(state)[0])["as_user"] == "bob"
    refreshed = mint("alice")  # a new sign-in of the same user
    state = await assistant.ainvoke(say("whoami"), context={"user_token": refreshed})
    data = tool_payload(tool_messages(state)[0])
    assert data["token_sha256"] == hashlib.sha256(refreshed.encode()).hexdigest()
    after = await session_counts(tickets_mcp_server.url)
    # alice once (reused), bob once, alice's refreshed token once
    assert delta(before, after, "sessions_opened") == 3
    assert pool.reused >= 1


async def test_an_unreachable_server_leaves_the_others_working(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, {
        "tickets": {"url": tickets_mcp_server.url},
        "billing": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeout_seconds": 2},
    })
    state = await assistant.ainvoke(say("list_tickets"), context={"user_token": mint("alice")})
    assert tool_payload(tool_messages(state)[0])["as_user"] == "alice"


async def test_the_model_is_told_which_server_is_unavailable(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, {
        "tickets": {"url": tickets_mcp_server.url},
        "billing": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeout_seconds": 2},
    })
    agent, model = scripted_agent([])
    await agent.ainvoke(say("hi"), context={"user_token": mint("alice")})
    assert "billing" in model.seen_system[0] and "unavailable" in model.seen_system[0]


async def test_a_token_in_configurable_is_refused() -> None:
    with pytest.raises(UnsafeTokenPath, match="checkpoint metadata"):
        await assistant.ainvoke(
            say("list_tickets"), config={"configurable": {"_user_token": mint("alice")}}
        )


async def test_an_expired_token_stops_the_run_before_it_starts() -> None:
    with pytest.raises(UserTokenExpired, match="sign in again"):
        await assistant.ainvoke(say("list_tickets"), context={"user_token": mint("alice", ttl=-60)})


async def test_every_tool_call_leaves_one_audit_record_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint("alice")
    with caplog.at_level("INFO", logger="onbehalf.audit"):
        await assistant.ainvoke(say("get_ticket ticket_id=T-1001"), context={"user_token": token})
    records = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert len(records) == 1
    (record,) = records
    assert record["identity"] == "alice" and record["tool"] == "get_ticket"
    assert record["server"] == "tickets" and record["outcome"] == "ok"
    assert record["latency_ms"] > 0
    assert token not in caplog.text and token.rsplit(".", 1)[1] not in caplog.text
    assert "T-1001" not in json.dumps(record)  # arguments are not recorded


async def test_a_pooled_session_is_closed_when_its_token_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a server of its own: the suite's tickets server also sees the long-running dev
    # server's pooled sessions idle out, which would move the count in this window
    with run_tickets_mcp() as server:
        configure(monkeypatch, {"tickets": {"url": server.url}})
        pool = session_pool()
        token = mint("erin", ttl=2)
        await assistant.ainvoke(say("whoami"), context={"user_token": token})
        assert pool.idle_count == 1
        during = await session_counts(server.url)
        await asyncio.sleep(2.5)
        pool.sweep()
        assert pool.idle_count == 0
        await asyncio.sleep(0.5)  # the close (DELETE) runs in the background
        after = await session_counts(server.url)
        assert delta(during, after, "sessions_active") == -1  # closed on the server too


async def test_each_new_sign_in_of_a_user_gets_its_own_session(
    tickets_mcp_server: TicketsMcpServer,
) -> None:
    pool = session_pool()
    before = await session_counts(tickets_mcp_server.url)
    for _ in range(2):  # same user, each a fresh short-lived token: never the other's session
        await assistant.ainvoke(say("whoami"), context={"user_token": mint("frank", ttl=30)})
    after = await session_counts(tickets_mcp_server.url)
    assert delta(before, after, "sessions_opened") == 2
    assert pool.reused == 0


@pytest.mark.anyio
async def test_the_kit_adds_no_step_to_a_run() -> None:
    """The token check, the prewarm take-over and giving the sessions back live in the
    model-call wrapper: the graph is the agent's own model and tools nodes, nothing more."""
    assert list(assistant.get_graph().nodes) == ["__start__", "model", "tools", "__end__"]
    assert list(ticket_triage.get_graph().nodes) == ["__start__", "model", "tools", "__end__"]
