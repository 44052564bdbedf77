"""Which exceptions after a call mean "the server answered" and which mean "no answer".

The integration tests (tests/integration/test_tool_results.py) prove the answered cases
against a real server; these pin the line between them for the errors the `mcp` SDK
makes up itself, which a server cannot be made to send.
"""

from __future__ import annotations

import httpx
import pytest
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED, INVALID_PARAMS, ErrorData

from onbehalf.mcp.failures import describe_failure, refused_call, result_off_schema


def error(code: int, message: str) -> McpError:
    return McpError(ErrorData(code=code, message=message))


@pytest.mark.parametrize("made_up", [
    error(CONNECTION_CLOSED, "Connection closed"),
    error(httpx.codes.REQUEST_TIMEOUT, "Timed out while waiting for response"),
])
def test_what_the_sdk_makes_up_without_an_answer_is_not_a_refusal(made_up: McpError) -> None:
    assert refused_call("tickets", "list_tickets", made_up) is None


def test_a_servers_json_rpc_error_is_its_refusal_even_inside_a_task_group() -> None:
    grouped = ExceptionGroup("task group", [error(INVALID_PARAMS, "Unknown tool: nope\nmore")])
    assert refused_call("tickets", "nope", grouped) == (
        "MCP server 'tickets' refused the call to 'nope': Unknown tool: nope "
        "(JSON-RPC error -32602)"
    )


@pytest.mark.parametrize("other", [
    RuntimeError("boom"), ValueError("Invalid structured content returned by tool x"),
    httpx.ConnectError("refused"),
])
def test_only_the_clients_own_schema_check_is_an_off_schema_result(other: Exception) -> None:
    assert result_off_schema("tickets", "x", other) is None
    assert refused_call("tickets", "x", other) is None


def test_a_redirect_names_where_to_without_its_query_and_what_to_change() -> None:
    request = httpx.Request("POST", "https://mcp.example.com/mcp")
    response = httpx.Response(307, request=request,
                              headers={"location": "/v2/mcp/?session=secret-ish#frag"})
    exc = httpx.HTTPStatusError("redirect", request=request, response=response)
    text = describe_failure(exc)
    assert text.startswith("HTTP 307: it redirects to https://mcp.example.com/v2/mcp/,"), text
    assert "secret-ish" not in text and "frag" not in text
    assert "servers file" in text and "not followed" in text
    assert describe_failure(httpx.HTTPStatusError(
        "nope", request=request, response=httpx.Response(502, request=request))) == "HTTP 502"
