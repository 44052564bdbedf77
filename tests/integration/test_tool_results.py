"""A call the server answered is never "the server is unavailable".

Two answers that are not results: a result the tool's own `outputSchema` refuses (the
`mcp` client checks every result against it, after the server ran the call: the model
must read that the call ran, so that it is not repeated blindly), and a JSON-RPC error
(servers of other SDKs answer an unknown tool or invalid arguments that way: the model
reads the server's reason and can correct its call). Either way the session is fine and
stays pooled. A real streamable-HTTP server (the SDK's low-level `Server`, which, unlike
FastMCP, does not check its own results) counts what it received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mcp.types as types
import pytest
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError
from starlette.applications import Starlette

from tests.support.agents import say, scripted_agent, tool_messages, tool_payload, use_servers
from tests.support.asgi_server import lowlevel_mcp_app, serve_in_thread
from tests.support.tokens import free_port, mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]

_ANY = {"type": "object", "properties": {"text": {"type": "string"}}}


@dataclass
class OffSchemaServer:
    url: str
    calls: int = 0
    initializes: int = 0


def _app(state: OffSchemaServer) -> Starlette:
    server: Server[Any, Any] = Server("off-schema")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(name="counted", description="Structured: {n: integer}.", inputSchema=_ANY,
                       outputSchema={"type": "object", "required": ["n"],
                                     "properties": {"n": {"type": "integer"}}}),
            types.Tool(name="echo", description="Say `text` back.", inputSchema=_ANY),
            types.Tool(name="picky", description="Refuses with a JSON-RPC error.",
                       inputSchema=_ANY),
        ]

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        state.calls += 1
        if name == "counted":  # a string where the declared schema says integer
            return types.CallToolResult(content=[types.TextContent(type="text", text="n=?")],
                                        structuredContent={"n": "not a number"})
        return [types.TextContent(type="text", text=json.dumps({"echo": arguments["text"]}))]

    answer_call = server.request_handlers[types.CallToolRequest]

    async def refusing(request: types.CallToolRequest) -> Any:
        if request.params.name == "picky":  # as other SDKs answer invalid arguments
            state.calls += 1
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS,
                                           message="Invalid params: 'ticket_id' is required"))
        return await answer_call(request)

    server.request_handlers[types.CallToolRequest] = refusing

    def heard(method: str | None) -> None:
        state.initializes += method == "initialize"

    return lowlevel_mcp_app(server, heard)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OffSchemaServer]:
    port = free_port()
    state = OffSchemaServer(url=f"http://127.0.0.1:{port}/mcp/")
    with serve_in_thread(_app(state), port):
        use_servers(monkeypatch, strict=state.url)
        yield state


async def test_a_result_off_its_declared_schema_is_the_tools_error_and_the_session_stays(
    server: OffSchemaServer,
) -> None:
    token = mint("alice")
    agent, _ = scripted_agent([("counted", {"text": "x"}), ("echo", {"text": "after"})])
    off, after = tool_messages(await agent.ainvoke(say("go"), context={"user_token": token}))
    assert off.status == "error"
    text = str(off.content)
    assert "ran tool 'counted'" in text and "does not match the output schema" in text, text
    assert "not repeated" in text and "unavailable" not in text, text
    assert after.status != "error" and tool_payload(after) == {"echo": "after"}
    assert server.calls == 2  # the off-schema call ran once, and was not sent again

    agent, _ = scripted_agent([("echo", {"text": "next run"})])
    [again] = tool_messages(await agent.ainvoke(say("go"), context={"user_token": token}))
    assert tool_payload(again) == {"echo": "next run"}
    assert server.initializes == 1  # the session was never dropped


async def test_a_json_rpc_error_is_the_servers_refusal_and_the_session_stays(
    server: OffSchemaServer,
) -> None:
    token = mint("alice")
    agent, _ = scripted_agent([("picky", {"text": "x"}), ("echo", {"text": "after"})])
    refused, after = tool_messages(await agent.ainvoke(say("go"), context={"user_token": token}))
    assert refused.status == "error"
    text = str(refused.content)
    assert text == ("MCP server 'strict' refused the call to 'picky': Invalid params: "
                    "'ticket_id' is required (JSON-RPC error -32602)"), text
    assert tool_payload(after) == {"echo": "after"}
    assert server.calls == 2
    assert server.initializes == 1


async def test_the_mcp_client_still_words_an_off_schema_result_as_we_recognise_it() -> None:
    """If the SDK rewords its check, this fails first (failures.py matches the wording)."""
    import inspect

    from mcp.client.session import ClientSession

    from onbehalf.mcp.failures import _RESULT_CHECKS

    source = inspect.getsource(ClientSession._validate_tool_result)
    for wording in _RESULT_CHECKS:
        assert wording.split("{")[0] in source, wording
