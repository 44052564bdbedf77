"""Servers the security suite shares, and the figures it reports at the end of a run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.security.probes import FIGURES
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.mcp_server import TicketsMcpServer

FIGURES_FILE_ENV = "ONBEHALF_SECURITY_FIGURES"
"""Set to a path to get the figures as JSON too (docs/security.md quotes them)."""


@pytest.fixture(scope="session")
def langgraph_server(tickets_mcp_server: TicketsMcpServer) -> Iterator[LangGraphServer]:
    """One `langgraph dev` for the security session, wired to the session's tickets server."""
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url,
                                       "auth": {"type": "user_token"}, "timeout_seconds": 10}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}, n_jobs=16) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    figures = dict(sorted(FIGURES.items()))
    terminalreporter.write_line(f"security figures: {json.dumps(figures)}")
    path = os.environ.get(FIGURES_FILE_ENV)
    if path:
        with open(path, "w") as out:
            json.dump(figures, out, indent=2)
