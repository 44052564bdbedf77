"""Through a real `langgraph dev`: a new user's run finds the session its prewarm opened."""

from __future__ import annotations

import uuid

import pytest
from langgraph_sdk import get_client

from tests.support.langgraph_server import LangGraphServer
from tests.support.mcp_server import TicketsMcpServer, session_counts
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio


async def test_a_new_users_threadless_run_is_prewarmed_and_opens_no_second_session(
    langgraph_server: LangGraphServer, tickets_mcp_server: TicketsMcpServer
) -> None:
    user = f"prewarm-{uuid.uuid4().hex[:8]}"
    client = get_client(url=langgraph_server.url,
                        headers={"Authorization": f"Bearer {mint(user)}"})
    prewarmed_before = langgraph_server.log_text().count("prewarmed 1 MCP session(s)")
    before = await session_counts(tickets_mcp_server.url)
    try:
        state = await client.runs.wait(
            None, "assistant", input={"messages": [{"role": "user", "content": "whoami"}]}
        )
    finally:
        await client.aclose()
    after = await session_counts(tickets_mcp_server.url)
    assert user in str(state["messages"][-1]["content"])
    assert after["sessions_opened"] - before["sessions_opened"] - 1 == 1  # -1: the probe
    assert langgraph_server.log_text().count("prewarmed 1 MCP session(s)") == prewarmed_before + 1
