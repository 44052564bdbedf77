"""A warm user's tool list is listed again after a run, never inside one.

The pool caches a user's tool list for `MCP_TOOLS_CACHE_SECONDS`. Listing it again
when it ran out used to cost the next run one `tools/list` round trip, once a
minute for every warm user (the floor, with its list bound once, never pays it).
A run that gives its session back while the list is in the last quarter of its
TTL now has it listed again over that session in the background, so the next run
finds a fresh list. Against a real HTTP MCP server that counts `tools/list`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.config import get_config

from onbehalf.mcp import run_scope
from onbehalf.mcp.pool import session_pool
from tests.support.agents import echo_run, say, scripted_agent, tool_messages, tool_payload
from tests.support.ending_mcp import EndingMcp, run_ending_mcp
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio
TTL = 2.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EndingMcp]:
    """The counting server, named in the servers file; the pool emptied after the test."""
    with run_ending_mcp() as running:
        entry = {"url": running.url, "auth": {"type": "user_token"}, "timeout_seconds": 5}
        monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"ending": entry}}))
        monkeypatch.setenv("MCP_TOOLS_CACHE_SECONDS", str(TTL))
        yield running
        await session_pool().aclose()


@pytest.fixture
def listed_in_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For every `tools/list` the kit sends: whether a run was waiting for it."""
    seen: list[bool] = []
    real = run_scope.list_server_tools

    async def noting(session: Any) -> Any:
        try:
            get_config()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return await real(session)

    monkeypatch.setattr(run_scope, "list_server_tools", noting)
    return seen


async def eventually(check: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


async def test_a_list_near_its_ttl_is_listed_again_after_the_run_not_inside_the_next(
    server: EndingMcp, listed_in_runs: list[bool]
) -> None:
    token = mint("alice")
    assert await echo_run("one", token) == {"echo": "one"}
    assert listed_in_runs == [True] and server.tool_lists == 1  # a new user lists once

    await asyncio.sleep(TTL * 0.8)  # the list's last quarter
    assert await echo_run("two", token) == {"echo": "two"}  # the cached list, still valid
    await eventually(lambda: server.tool_lists == 2)  # listed again once the run ended
    assert listed_in_runs == [True, False]

    await asyncio.sleep(TTL * 0.5)  # past the first list's TTL, within the second's
    assert await echo_run("three", token) == {"echo": "three"}
    assert await echo_run("four", token) == {"echo": "four"}
    assert listed_in_runs == [True, False] and server.tool_lists == 2
    assert server.initializes == 1  # one session all along


async def test_a_list_past_two_ttls_is_listed_inside_the_run_again(
    server: EndingMcp, listed_in_runs: list[bool]
) -> None:
    token = mint("alice")
    await echo_run("one", token)
    await asyncio.sleep(TTL * 2.1)  # no run gave the session back meanwhile: too old to use
    await echo_run("two", token)
    assert listed_in_runs == [True, True] and server.tool_lists == 2


async def test_a_tool_the_server_adds_is_there_on_the_next_run_after_list_changed(
    server: EndingMcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`notifications/tools/list_changed` drops the user's cached list at once (the cache
    would otherwise keep the old one for its whole TTL), on the pooled session."""
    monkeypatch.setenv("MCP_TOOLS_CACHE_SECONDS", "300")
    pool = session_pool()
    forgotten: list[Any] = []
    forget = pool.forget_tools
    monkeypatch.setattr(pool, "forget_tools", lambda key: (forgotten.append(key), forget(key)))
    token = mint("alice")
    agent, _ = scripted_agent([("grow", {"name": "added_later"})])
    [grew] = tool_messages(await agent.ainvoke(say("grow"), context={"user_token": token}))
    assert tool_payload(grew) == {"grew": "added_later"}
    await eventually(lambda: bool(forgotten))  # the notification reached the session
    agent, _ = scripted_agent([("added_later", {})])
    [added] = tool_messages(await agent.ainvoke(say("use it"), context={"user_token": token}))
    assert added.status != "error", added.content
    assert tool_payload(added) == {"added": "added_later"}
    assert server.initializes == 1  # the same session, listed again
