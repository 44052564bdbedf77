"""Prewarm at run creation, against the real tickets MCP server (sessions counted on the server).

The server edge is driven as the LangGraph server drives it: `authenticate`
turns the bearer into the sealed user, then the `threads.create_run`
handler runs with that user; the run itself is the `assistant` graph in
process, with the same token.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from agents.assistant.graph import graph as assistant
from onbehalf.jwt_auth import token_fingerprint
from onbehalf.mcp import prewarm
from onbehalf.mcp.pool import session_pool
from tests.support.agents import say, tool_messages, tool_payload
from tests.support.mcp_server import TicketsMcpServer, run_tickets_mcp, session_counts
from tests.support.tokens import free_port, mint

DEPLOYMENT_GRAPHS = prewarm._deployment_graphs

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]

ASSISTANT_ID = "453d1cbf-0bdd-5d35-a224-394f372c0502"  # uuid5(NAMESPACE_GRAPH, "assistant")


@pytest.fixture(autouse=True)
def deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prewarm, "_deployment_graphs", lambda: {"assistant": assistant})
    monkeypatch.delenv("ONBEHALF_PREWARM", raising=False)


@pytest.fixture
def tickets(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TicketsMcpServer]:
    configure(monkeypatch, tickets_mcp_server.url)
    yield tickets_mcp_server


def configure(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    servers = {"tickets": {"url": url, "auth": {"type": "user_token"}, "timeout_seconds": 5}}
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))


class ServerUser(dict[str, Any]):
    """Like the server's proxy of the authenticated user: items and attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


async def create_run(token: str, *, thread_id: str | None = None,
                     assistant_id: str = ASSISTANT_ID) -> dict[str, Any]:
    """What the server does on POST /runs/stream: authenticate, then the create_run handler."""
    from onbehalf.edge import authenticate, runs_are_private

    user = ServerUser(await authenticate(f"Bearer {token}"))
    ctx = SimpleNamespace(user=user, resource="threads", action="create_run", permissions=[])
    value = {"thread_id": thread_id, "assistant_id": assistant_id, "metadata": {}}
    return await runs_are_private(ctx, value)


async def settled() -> None:
    """Every prewarm of this loop has ended."""
    for _ in range(200):
        if not prewarm.prewarmer()._inflight:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("a prewarm did not end")


async def opened(url: str) -> int:
    return (await session_counts(url))["sessions_opened"]


async def run_as(token: str) -> dict[str, Any]:
    state = await assistant.ainvoke(say("whoami"), context={"user_token": token})
    return tool_payload(tool_messages(state)[0])


async def test_a_prewarmed_session_is_lent_only_to_its_identity_and_token(
    tickets: TicketsMcpServer,
) -> None:
    alice = mint("alice")
    before = await opened(tickets.url)
    assert await create_run(alice) == {"owner": "alice"}
    await settled()
    assert await opened(tickets.url) - before == 2  # alice's prewarm (+1 the probe's own)
    assert session_pool().idle_count == 1

    before = await opened(tickets.url)
    assert (await run_as(mint("bob")))["as_user"] == "bob"
    assert (await run_as(mint("alice", ttl=1800)))["as_user"] == "alice"  # another token
    assert await opened(tickets.url) - before == 3  # bob's and alice-new's own (+1 probe)

    before = await opened(tickets.url)
    reused = session_pool().reused
    assert (await run_as(alice))["as_user"] == "alice"
    assert await opened(tickets.url) - before == 1  # only the probe: the prewarmed session
    assert session_pool().reused == reused + 1


async def test_a_run_takes_over_its_prewarm_instead_of_opening_a_second_session(
    tickets: TicketsMcpServer,
) -> None:
    alice = mint("alice")
    before = await opened(tickets.url)
    await create_run(alice)
    assert prewarm.prewarmer()._inflight  # still opening when the run starts
    assert (await run_as(alice))["as_user"] == "alice"
    assert await opened(tickets.url) - before == 2  # one session for both (+1 probe)


async def test_a_refused_or_unknown_request_prewarms_nothing(
    tickets: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langgraph_sdk import Auth

    from onbehalf.edge import authenticate

    before = await opened(tickets.url)
    with pytest.raises(Auth.exceptions.HTTPException):
        await authenticate("Bearer not-a-jwt")  # a 401: no handler runs at all
    # a run on a thread: ownership is checked by the server after the handler
    await create_run(mint("alice"), thread_id="0195f1a4-0000-7000-8000-000000000001")
    # an assistant this deployment does not define (e.g. a user's own): no prewarm
    await create_run(mint("alice"), assistant_id="00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("ONBEHALF_PREWARM", "0")
    await create_run(mint("alice"))
    await settled()
    assert prewarm.prewarmer().started == 0
    assert await opened(tickets.url) - before == 1  # only the probe
    assert session_pool().idle_count == 0


async def test_a_failed_prewarm_leaves_the_run_its_own_open_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    configure(monkeypatch, f"http://127.0.0.1:{port}/mcp")
    alice = mint("alice")
    await create_run(alice)  # the server is down: the prewarm opens nothing
    await settled()
    assert session_pool().idle_count == 0
    with run_tickets_mcp(port=port) as server:
        before = await opened(server.url)
        assert (await run_as(alice))["as_user"] == "alice"
        assert await opened(server.url) - before == 2  # the run's own (+1 probe)


@pytest.mark.anyio
async def test_no_prewarm_where_the_process_is_not_a_langgraph_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Aegra's API process (or an in-process caller) never loads langgraph-api's graphs: a
    prewarm there would open sessions in a process that never executes the run."""
    monkeypatch.setattr(prewarm, "_deployment_graphs", DEPLOYMENT_GRAPHS)  # the real one
    monkeypatch.delitem(sys.modules, "langgraph_api.graph", raising=False)
    assert prewarm.graph_tools_for("assistant") is None


async def test_a_warm_users_run_starts_no_prewarm(tickets: TicketsMcpServer) -> None:
    """Sessions of this user and token already wait in the pool: the run takes them, and a
    prewarm would only borrow and give them back."""
    alice = mint("alice")
    assert (await run_as(alice))["as_user"] == "alice"
    assert session_pool().holds_idle("alice", token_fingerprint(alice))
    started = prewarm.prewarmer().started
    await create_run(alice)
    await settled()
    assert prewarm.prewarmer().started == started
    assert not prewarm.prewarmer()._inflight
