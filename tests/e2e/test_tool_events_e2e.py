"""Every MCP tool call reaches an SDK client tagged with its server (`mcp_tool`, §8.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph_sdk import get_client

from tests.support.ending_mcp import EndingMcp, run_ending_mcp
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def three_servers(tickets_mcp_server: TicketsMcpServer) -> Iterator[LangGraphServer]:
    """tickets, and two servers with the same tools (`left_echo`, `right_echo`)."""
    with run_ending_mcp() as left, run_ending_mcp() as right:
        yield from _serve(tickets_mcp_server, left, right)


def _serve(tickets: TicketsMcpServer, left: EndingMcp, right: EndingMcp
           ) -> Iterator[LangGraphServer]:
    servers = {"servers": {
        "tickets": {"url": tickets.url, "auth": {"type": "user_token"}, "timeout_seconds": 10},
        "left": {"url": left.url, "auth": {"type": "none"}, "timeout_seconds": 10},
        "right": {"url": right.url, "auth": {"type": "none"}, "timeout_seconds": 10},
    }}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        yield server


async def run_streaming(server: LangGraphServer, token: str, text: str
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's `mcp_tool` events and the ids of the tool calls its model made."""
    client = get_client(url=server.url, headers={"Authorization": f"Bearer {token}"})
    events: list[dict[str, Any]] = []
    call_ids: list[str] = []
    try:
        thread = await client.threads.create()
        async for part in client.runs.stream(
            thread["thread_id"], "assistant", stream_mode=["custom", "updates"],
            input={"messages": [{"role": "user", "content": text}]},
        ):
            if part.event == "custom" and part.data.get("type") == "mcp_tool":
                events.append(part.data)
            elif part.event == "updates":
                for update in part.data.values():
                    for message in (update or {}).get("messages", []):
                        call_ids += [c["id"] for c in message.get("tool_calls") or []]
    finally:
        await client.aclose()
    return events, call_ids


async def test_tool_calls_of_two_servers_each_name_their_own(three_servers: LangGraphServer
                                                             ) -> None:
    token = mint("alice")
    tickets, tickets_calls = await run_streaming(three_servers, token, "list_tickets")
    echo, echo_calls = await run_streaming(three_servers, token, "right_echo text=sekrit-arg")

    assert [(e["server"], e["tool"], e["outcome"]) for e in tickets] == [
        ("tickets", "list_tickets", "running"), ("tickets", "list_tickets", "ok")]
    assert "name" not in tickets[0]  # the model's name is the server's own
    assert [(e["server"], e["tool"], e["name"], e["outcome"]) for e in echo] == [
        ("right", "echo", "right_echo", "running"), ("right", "echo", "right_echo", "ok")]
    # each event names the model's tool call, so a front-end can put it on its card
    assert {e["tool_call_id"] for e in tickets} == set(tickets_calls) and tickets_calls
    assert {e["tool_call_id"] for e in echo} == set(echo_calls) and echo_calls
    assert tickets[1]["latency_ms"] > 0 and tickets[0]["latency_ms"] is None

    everything = json.dumps(tickets + echo)
    for secret in (token, token.rsplit(".", 1)[1], "sekrit-arg", "T-1001"):
        assert secret not in everything  # no credential, no argument, no result
