"""A server that declares no `tools` capability is not asked for tools (MCP spec).

Servers that offer only prompts or resources answer `tools/list` with "method not
found"; asking anyway made every run tell the model that server was unavailable. A real
streamable-HTTP server (the SDK's low-level `Server` with a prompt and no tools) beside a
server with tools: the run uses the tools, no `tools/list` reaches the prompts server,
and the model is told of no outage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mcp.types as types
import pytest
from mcp.server.lowlevel import Server
from starlette.applications import Starlette

from tests.support.agents import say, scripted_agent, tool_messages, tool_payload, use_servers
from tests.support.asgi_server import lowlevel_mcp_app, serve_in_thread
from tests.support.ending_mcp import run_ending_mcp
from tests.support.tokens import free_port, mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]


def prompts_only(methods: list[str]) -> Starlette:
    server: Server[Any, Any] = Server("prompts-only")

    @server.list_prompts()
    async def list_prompts() -> list[types.Prompt]:
        return [types.Prompt(name="greeting", description="Say hello.")]

    return lowlevel_mcp_app(server, methods.append)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    methods: list[str] = []
    port = free_port()
    with serve_in_thread(prompts_only(methods), port), run_ending_mcp() as tools:
        use_servers(monkeypatch, prompts=f"http://127.0.0.1:{port}/mcp/", ending=tools.url)
        yield methods


async def test_a_server_without_tools_is_not_asked_for_them_nor_reported_unavailable(
    servers: list[str],
) -> None:
    agent, model = scripted_agent([("echo", {"text": "hi"})])
    [echoed] = tool_messages(await agent.ainvoke(say("hi"), context={"user_token": mint("alice")}))
    assert tool_payload(echoed) == {"echo": "hi"}
    assert "initialize" in servers  # the prompts server was opened like any other
    assert "tools/list" not in servers
    assert all("unavailable" not in system for system in model.seen_system), model.seen_system
    assert model.seen_tools[0] == ["echo", "count", "grow"]
