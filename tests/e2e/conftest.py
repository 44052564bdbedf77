"""One tickets MCP server and one real `langgraph dev` process for the e2e session."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.mcp_server import run_tickets_mcp


@pytest.fixture(scope="session")
def tickets_mcp() -> Iterator[object]:
    with run_tickets_mcp() as server:
        yield server


@pytest.fixture(scope="session")
def langgraph_server(tickets_mcp: object) -> Iterator[LangGraphServer]:
    servers = {"servers": {"tickets": {"url": tickets_mcp.url, "auth": {"type": "user_token"},
                                       "timeout_seconds": 10}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        yield server
