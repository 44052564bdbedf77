"""One real `langgraph dev` process for the e2e session, wired to its tickets MCP server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.mcp_server import TicketsMcpServer


@pytest.fixture(scope="session")
def langgraph_server(tickets_mcp_server: TicketsMcpServer) -> Iterator[LangGraphServer]:
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url,
                                       "auth": {"type": "user_token"}, "timeout_seconds": 10}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        yield server
