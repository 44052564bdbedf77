"""A server that echoes the credential it was sent never gets it into a run.

Debugging tools return the request's headers; error messages quote them. Whatever a
server answers goes into the thread's state (checkpointed), the model's context and the
logs, none of which may ever hold a token (DESIGN.md §7). A real FastMCP server echoes
its `Authorization` header in a result, in structured content and in an error; the run
keeps none of it, for the user's own JWT (`user_token`) and for a service key (`static`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel

from onbehalf.mcp.elicitation import drop_parked
from onbehalf.mcp.results import REMOVED
from tests.support.agents import say, scripted_agent, tool_messages
from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port, mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]
SERVICE_KEY = "svc-key-" + "k" * 32
SERVER_SIDE = ("sse_starlette", "mcp.server", "uvicorn")
"""The echoing server runs in this process: its own logs are not the run's."""


class Confirm(BaseModel):
    ok: bool


def _echoing() -> FastMCP:
    mcp = FastMCP("echoing")

    def received(ctx: Context) -> str:
        request = ctx.request_context.request
        assert request is not None
        return str(request.headers.get("authorization", ""))

    @mcp.tool()
    def headers(ctx: Context) -> str:
        """The Authorization header this request carried."""
        return f"you sent: {received(ctx)}"

    @mcp.tool()
    def structured(ctx: Context) -> dict[str, Any]:
        """The same, as structured content."""
        return {"authorization": received(ctx), "token": received(ctx).partition(" ")[2]}

    @mcp.tool()
    async def asking(ctx: Context) -> str:
        """Ask the user, quoting the request in the question."""
        answer = await ctx.elicit(f"Go on with Authorization={received(ctx)}?", Confirm)
        return f"answered {answer.action}"

    @mcp.tool()
    async def progressing(ctx: Context) -> str:
        """Report progress and a log line, quoting the request."""
        await ctx.report_progress(1, 2, f"working for {received(ctx)}")
        await ctx.info(f"request had {received(ctx)}")
        return "done"

    @mcp.tool()
    def failing(ctx: Context) -> str:
        """An error that quotes the request."""
        raise ValueError(f"cannot serve a request with Authorization={received(ctx)}")

    return mcp


@pytest.fixture
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    auth: dict[str, Any] = request.param
    if auth["type"] == "static":
        monkeypatch.setenv("ECHO_SERVICE_KEY", SERVICE_KEY)
    with serve_in_thread(_echoing().streamable_http_app(), port):
        entry = {"url": f"http://127.0.0.1:{port}/mcp", "auth": auth, "timeout_seconds": 5}
        monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"echoing": entry}}))
        yield auth["type"]


@pytest.mark.parametrize("server", [{"type": "user_token"},
                                    {"type": "static", "value_env": "ECHO_SERVICE_KEY"}],
                         indirect=True)
async def test_an_echoed_credential_is_in_no_result_artifact_error_or_log(
    server: str, caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint("alice")
    sent = token if server == "user_token" else SERVICE_KEY
    agent, _ = scripted_agent([("headers", {}), ("structured", {}), ("failing", {})])
    with caplog.at_level(logging.INFO):  # (the `mcp` client logs whole messages at DEBUG)
        state = await agent.ainvoke(say("echo"), context={"user_token": token})
    results = tool_messages(state)
    assert [m.name for m in results] == ["headers", "structured", "failing"]
    for message in results:
        kept = json.dumps([message.content, message.artifact], default=str)
        assert sent not in kept, message
        assert REMOVED in kept, message  # the server did echo it, and it was replaced
    assert f"you sent: {REMOVED}" in str(results[0].content)
    assert sent not in json.dumps(state["messages"], default=str)
    ours = [r for r in caplog.records if not r.name.startswith(SERVER_SIDE)]
    leaked = {r.name for r in ours if sent in r.getMessage()}
    assert not leaked, leaked


@pytest.mark.parametrize("server", [{"type": "user_token"}], indirect=True)
async def test_an_echoed_credential_is_not_in_the_question_a_server_asks(server: str) -> None:
    token = mint("alice")
    saver = InMemorySaver()
    agent, _ = scripted_agent([("asking", {})], checkpointer=saver)
    try:
        state = await agent.ainvoke(say("ask me"), context={"user_token": token},
                                    config={"configurable": {"thread_id": "t-1"}})
    finally:
        drop_parked()  # the paused call is not resumed: nothing left for later tests
    [paused] = state["__interrupt__"]
    question = paused.value["requests"][0]["message"]
    assert question == f"Go on with Authorization={REMOVED}?", question
    assert token not in repr(saver.storage) and token not in repr(saver.writes)


@pytest.mark.parametrize("server", [{"type": "user_token"}], indirect=True)
async def test_an_echoed_credential_is_not_in_the_progress_streamed_to_the_run(
    server: str,
) -> None:
    token = mint("alice")
    agent, _ = scripted_agent([("progressing", {})])
    streamed = [part async for part in agent.astream(
        say("work"), stream_mode="custom", context={"user_token": token})]
    kinds = {event.get("type") for event in streamed if isinstance(event, dict)}
    assert {"mcp_progress", "mcp_log"} <= kinds, streamed
    assert token not in json.dumps(streamed, default=str)
    assert REMOVED in json.dumps(streamed, default=str)
