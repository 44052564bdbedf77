"""The `mcp_tool` stream event (DESIGN.md §8.1): every MCP tool call names its server.

In process, against real MCP servers over streamable HTTP: the events a client
streaming `custom` gets, one "running" when the call starts on its server and one
with the audit outcome when it ends; never the arguments, the result or the token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from onbehalf.mcp.pool import session_pool
from tests.support.agents import Calls, say, scripted_agent
from tests.support.ending_mcp import EndingMcp, run_ending_mcp
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio

KEYS = {"type", "server", "tool", "tool_call_id", "outcome", "latency_ms"}


@pytest.fixture(scope="module")
def counters() -> Iterator[tuple[EndingMcp, EndingMcp]]:
    """Two servers with the same tools (`echo`, `count`)."""
    with run_ending_mcp() as left, run_ending_mcp() as right:
        yield left, right


@pytest.fixture
async def use_servers(monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[Callable[[dict[str, dict[str, Any]]], None]]:
    """Runs of this test see these MCP servers; their pooled sessions close after it."""
    yield lambda servers: monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))
    await session_pool().aclose()


@pytest.fixture
def tickets_and_counter(use_servers: Any, tickets_mcp_server: TicketsMcpServer,
                        counters: tuple[EndingMcp, EndingMcp]) -> None:
    use_servers({
        "tickets": {"url": tickets_mcp_server.url},
        "counter": {"url": counters[0].url, "auth": {"type": "none"}, "timeout_seconds": 1},
    })


async def tool_events(calls: Calls, token: str) -> list[dict[str, Any]]:
    """The `mcp_tool` events of one run whose model makes `calls`, as a client streams them."""
    agent, _ = scripted_agent(calls)
    events = []
    async for event in agent.astream(say("go"), context={"user_token": token},
                                     stream_mode="custom"):
        if isinstance(event, dict) and event.get("type") == "mcp_tool":
            events.append(event)
    return events


async def test_every_call_names_its_server_when_it_starts_and_when_it_ends(
    tickets_and_counter: None,
) -> None:
    events = await tool_events(
        [("list_tickets", {}), ("echo", {"text": "hello"}), ("get_ticket", {"ticket_id": "T-1"})],
        mint("alice"),
    )
    seen = [(e["tool_call_id"], e["server"], e["tool"], e["outcome"]) for e in events]
    assert seen == [
        ("call_0", "tickets", "list_tickets", "running"),
        ("call_0", "tickets", "list_tickets", "ok"),
        ("call_1", "counter", "echo", "running"), ("call_1", "counter", "echo", "ok"),
        ("call_2", "tickets", "get_ticket", "running"),
        ("call_2", "tickets", "get_ticket", "tool_error"),  # no such ticket: the tool says so
    ]
    assert all(set(e) == KEYS for e in events)
    assert [e["latency_ms"] for e in events[::2]] == [None] * 3
    assert all(e["latency_ms"] > 0 for e in events[1::2])


async def test_the_event_carries_no_argument_result_or_token(
    tickets_and_counter: None, caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint("alice")
    with caplog.at_level("INFO", logger="onbehalf.audit"):
        events = await tool_events(
            [("get_ticket", {"ticket_id": "T-1001"}), ("echo", {"text": "pass=hunter2"})], token)
    text = json.dumps(events)
    for secret in (token, token.rsplit(".", 1)[1], "T-1001", "hunter2", "alice"):
        assert secret not in text
    # the outcome and the latency a client sees are the audit record's
    records = [r.audit for r in caplog.records if hasattr(r, "audit")]
    ended = [e for e in events if e["outcome"] != "running"]
    assert [(r["server"], r["outcome"], r["latency_ms"]) for r in records] == [
        (e["server"], e["outcome"], e["latency_ms"]) for e in ended]
    assert [e["outcome"] for e in ended] == ["ok", "ok"]


async def test_a_prefixed_tool_carries_the_models_name_as_well(
    use_servers: Any, counters: tuple[EndingMcp, EndingMcp],
) -> None:
    left, right = counters
    use_servers({"left": {"url": left.url, "auth": {"type": "none"}},
                 "right": {"url": right.url, "auth": {"type": "none"}}})
    events = await tool_events([("right_echo", {"text": "x"})], mint("alice"))
    assert [(e["server"], e["tool"], e["name"], e["outcome"]) for e in events] == [
        ("right", "echo", "right_echo", "running"), ("right", "echo", "right_echo", "ok")]


async def test_a_call_that_never_reached_a_server_ends_with_no_server(
    tickets_and_counter: None,
) -> None:
    events = await tool_events([("drop_database", {})], mint("alice"))
    assert events == [{"type": "mcp_tool", "server": None, "tool": "drop_database",
                       "tool_call_id": "call_0", "outcome": "not_allowed",
                       "latency_ms": events[0]["latency_ms"]}]


async def test_a_call_that_times_out_says_so(tickets_and_counter: None) -> None:
    events = await tool_events([("count", {"steps": 100})], mint("alice"))  # 5 s, limit 1 s
    assert [(e["server"], e["outcome"]) for e in events] == [
        ("counter", "running"), ("counter", "timeout")]
    assert 900 < events[1]["latency_ms"] < 5000
