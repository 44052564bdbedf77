"""A session the server ended is replaced, not reported (MCP spec: 404 → new initialize).

Servers end sessions on a graceful restart, or expire idle ones sooner than our pool
keeps them. The next run of that user then meets a 404 on its pooled session id; the
kit opens a fresh session with the same credential and sends the request once more,
so the user sees the tool's normal answer. Each case runs against a real HTTP server
that counts the `initialize` requests it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from onbehalf.mcp.pool import session_pool
from tests.support.agents import echo_run, say, scripted_agent, use_servers
from tests.support.agents import tool_messages as results
from tests.support.ending_mcp import EndingMcp, run_ending_mcp
from tests.support.tokens import mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EndingMcp]:
    with run_ending_mcp(**getattr(request, "param", {})) as running:
        yield running


def configure(monkeypatch: pytest.MonkeyPatch, server: EndingMcp) -> None:
    use_servers(monkeypatch, ending=server.url)


async def test_a_session_the_server_forgot_is_replaced_without_an_error(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, server)
    token = mint("alice")
    assert await echo_run("one", token) == {"echo": "one"}
    server.forget_all()  # ids dropped, the standing GET stream left open
    assert await echo_run("two", token) == {"echo": "two"}
    assert server.not_found >= 1
    assert server.initializes == 2
    assert server.tool_calls == 2


@pytest.mark.parametrize("server", [{"idle_seconds": 0.5}], indirect=True)
async def test_a_session_the_server_expired_while_idle_is_replaced(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, server)
    token = mint("alice")
    await echo_run("one", token)
    await asyncio.sleep(0.8)  # longer than the server keeps an idle session, shorter than ours
    assert await echo_run("two", token) == {"echo": "two"}
    assert server.not_found >= 1
    assert server.initializes == 2


async def test_after_a_server_restart_the_next_run_opens_a_new_session(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, server)
    token = mint("alice")
    await echo_run("one", token)
    await asyncio.to_thread(server.restart)
    assert await echo_run("two", token) == {"echo": "two"}
    assert server.initializes == 2
    await asyncio.sleep(1.5)  # the old session's GET stream has met the new server's 404
    assert await echo_run("three", token) == {"echo": "three"}
    assert server.initializes == 2, "the renewed session is pooled and lent again"


@pytest.mark.parametrize("server", [{"stateless": True}], indirect=True)
async def test_a_stateless_server_with_json_answers_serves_consecutive_runs(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, server)
    token = mint("alice")
    assert await echo_run("one", token) == {"echo": "one"}
    assert await echo_run("two", token) == {"echo": "two"}
    assert server.not_found == 0


@pytest.mark.parametrize("server", [{"end_on_call": True}], indirect=True)
async def test_a_call_ended_again_on_its_new_session_is_reported_after_one_retry(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, server)
    agent, _ = scripted_agent([("echo", {"text": "x"})])
    state = await agent.ainvoke(say("x"), context={"user_token": mint("alice")})
    [message] = results(state)
    assert message.status == "error"
    assert "'ending'" in str(message.content)
    assert server.initializes == 2, "one fresh session, then the failure is reported"
    assert server.tool_calls == 0


@pytest.mark.parametrize("server", [{"post_only": True}], indirect=True)
async def test_a_server_answering_405_to_get_and_delete_keeps_its_sessions(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MCP spec: a server may offer no GET stream and may refuse DELETE, each with a 405.
    Neither is a failure: the session works, is pooled, serves the user's next run and
    closes quietly."""
    configure(monkeypatch, server)
    token = mint("alice")
    assert await echo_run("one", token) == {"echo": "one"}
    assert await echo_run("two", token) == {"echo": "two"}
    assert server.initializes == 1
    assert server.tool_calls == 2
    refused_get = server.refused_405
    assert refused_get >= 1
    await session_pool().aclose()
    assert server.refused_405 > refused_get  # the DELETE, refused, and nothing raised
