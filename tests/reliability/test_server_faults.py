"""Failures under a real `langgraph dev`: cancelled runs, MCP faults, and a server restart.

The MCP servers are `FaultyMcpServer`s in this process; the graphs run the
offline model, which calls the tool named in the message with its `key=value`
arguments ("slow seconds=20"). The server keeps the kit's default session
pooling (60 s idle), so "no session left open" after a cancellation proves
that cancelled runs do not pool.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.support.faulty_mcp import FaultyMcpServer, run_faulty_mcp
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.tokens import free_port, mint, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ONBEHALF = [sys.executable, "-c", "import sys; from onbehalf.cli import main; sys.exit(main())"]
PREFIX = "agent-token:"
SLOW = "slow seconds=20"
FLAKY_TIMEOUT = 2


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyMcpServer]:
    with run_faulty_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def flaky() -> Iterator[FaultyMcpServer]:
    with run_faulty_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def langgraph(faulty: FaultyMcpServer, flaky: FaultyMcpServer) -> Iterator[LangGraphServer]:
    servers = {"servers": {
        "faulty": faulty.config(timeout_seconds=30, tools=["echo", "slow"]),
        "flaky": flaky.config(timeout_seconds=FLAKY_TIMEOUT, tools=["huge"]),
    }}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        yield server


@pytest.fixture
async def alice(langgraph: LangGraphServer) -> AsyncIterator[LangGraphClient]:
    client = client_for(langgraph, mint("alice"))
    yield client
    await client.aclose()


def client_for(server: LangGraphServer, token: str) -> LangGraphClient:
    return get_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {token}"})


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def contents(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["type"], str(m["content"])) for m in state["values"]["messages"]]


async def a_saved_exchange(client: LangGraphClient) -> str:
    """A new thread with one finished run: `echo text=kept` and its answer."""
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    await client.runs.wait(thread_id, "assistant", input=say("echo text=kept"))
    assert_saved_exchange_kept(await client.threads.get_state(thread_id))
    return thread_id


def assert_saved_exchange_kept(state: dict[str, Any]) -> None:
    messages = contents(state)
    assert messages[0] == ("human", "echo text=kept"), messages
    assert any(kind == "ai" and "echo: kept" in text for kind, text in messages[1:4]), messages


async def wait_for_status(client: LangGraphClient, thread_id: str, run_id: str,
                          seconds: float = 15) -> str:
    deadline = time.monotonic() + seconds
    while True:
        status = (await client.runs.get(thread_id, run_id))["status"]
        if status not in ("pending", "running"):
            return status
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {seconds}s"
        await asyncio.sleep(0.2)


async def assert_sessions_of_slow_calls_closed(faulty: FaultyMcpServer, known: set[str]) -> None:
    """The sessions that carried the new `slow` call(s) were ended by their client (DELETE)."""
    await faulty.wait_until(
        lambda s: bool(s.call_sessions["slow"] - known)
        and not ((s.call_sessions["slow"] - known) & s.open_sessions),
        "closing the MCP session of the cancelled run", 10,
    )


# --- cancelled runs ----------------------------------------------------------------------


async def test_cancelling_a_server_run_mid_tool_call_closes_its_mcp_session(
    faulty: FaultyMcpServer, alice: LangGraphClient
) -> None:
    thread_id = await a_saved_exchange(alice)
    known = set(faulty.stats.call_sessions["slow"])
    active_before = faulty.stats.counts()["sessions_active"]
    calls = faulty.stats.started["slow"]

    run = await alice.runs.create(thread_id, "assistant", input=say(SLOW))
    await faulty.wait_for_call("slow", calls + 1, seconds=20)
    await alice.runs.cancel(thread_id, run["run_id"])

    assert await wait_for_status(alice, thread_id, run["run_id"]) == "interrupted"
    await assert_sessions_of_slow_calls_closed(faulty, known)
    assert faulty.stats.counts()["sessions_active"] <= active_before
    assert_saved_exchange_kept(await alice.threads.get_state(thread_id))
    history = await alice.threads.get_history(thread_id, limit=50)
    assert any(("human", "echo text=kept") in contents(h) for h in history)


async def test_cancelling_a_worker_started_run_leaves_no_session_and_no_token(
    faulty: FaultyMcpServer, langgraph: LangGraphServer, alice: LangGraphClient,
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    execution_id = f"cancel-{uuid.uuid4().hex[:12]}"
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_URL=langgraph.url)
    put = await asyncio.create_subprocess_exec(
        *ONBEHALF, "handoff", "put", execution_id, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    _, put_err = await asyncio.wait_for(put.communicate(mint("alice").encode()), 30)
    assert put.returncode == 0, put_err.decode()
    known = set(faulty.stats.call_sessions["slow"])
    calls = faulty.stats.started["slow"]

    worker = await asyncio.create_subprocess_exec(
        *ONBEHALF, "worker", "run", "--execution-id", execution_id, SLOW,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        assert worker.stdout is not None
        start = json.loads(await asyncio.wait_for(worker.stdout.readline(), 30))
        thread_id = start["thread_id"]
        await faulty.wait_for_call("slow", calls + 1, seconds=20)
        assert await redis_client.exists(PREFIX + execution_id) == 0
        (run,) = await alice.runs.list(thread_id)
        await alice.runs.cancel(thread_id, run["run_id"])
        rest, err = await asyncio.wait_for(worker.communicate(), 30)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()

    assert await wait_for_status(alice, thread_id, run["run_id"]) == "interrupted"
    await assert_sessions_of_slow_calls_closed(faulty, known)
    assert await redis_client.exists(PREFIX + execution_id) == 0
    state = await alice.threads.get_state(thread_id)
    assert contents(state)[0] == ("human", SLOW)
    for line in rest.decode().splitlines():
        assert isinstance(json.loads(line), dict)
    # a cancelled run is not "done": exit 4 (the run failed) with one reason line
    stderr = err.decode()
    assert worker.returncode == 4, (
        f"exit {worker.returncode} for a run cancelled on the server; stdout ends with "
        f"{rest.decode().splitlines()[-1:]}"
    )
    assert len(stderr.splitlines()) == 1 and stderr.startswith("onbehalf: "), stderr


# --- an MCP server failing under a server run ------------------------------------------


async def test_a_hanging_mcp_server_under_a_server_run_is_a_bounded_tool_error(
    flaky: FaultyMcpServer, alice: LangGraphClient
) -> None:
    thread_id = await a_saved_exchange(alice)
    flaky.hang()
    try:
        started = time.monotonic()
        state = await alice.runs.wait(thread_id, "assistant", input=say("huge chars=10"))
        elapsed = time.monotonic() - started
    finally:
        flaky.normal()
    assert elapsed < FLAKY_TIMEOUT + 5, f"the run took {elapsed:.1f}s"
    answer = str(state["messages"][-1]["content"])
    assert f"MCP server 'flaky' did not answer within {FLAKY_TIMEOUT}s" in answer, answer
    assert_saved_exchange_kept(await alice.threads.get_state(thread_id))


# --- the LangGraph server restarted ------------------------------------------------------


async def test_a_thread_continues_after_the_langgraph_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    with run_faulty_mcp() as mcp:
        env = {"MCP_SERVERS": json.dumps({"servers": {"faulty": mcp.config()}})}
        with run_langgraph_dev(env, port=port, workdir=tmp_path) as server:
            client = client_for(server, mint("alice"))
            thread_id = (await client.threads.create())["thread_id"]
            await client.runs.wait(thread_id, "assistant", input=say("echo text=before"))
            await client.aclose()

        with run_langgraph_dev(env, port=port, workdir=tmp_path) as server:
            client = client_for(server, mint("alice"))  # a fresh sign-in of the same user
            bob = client_for(server, mint("bob"))
            try:
                await client.runs.wait(thread_id, "assistant", input=say("echo text=after"))
                state = await client.threads.get_state(thread_id)
                history = await client.threads.get_history(thread_id, limit=50)
                refusals = [
                    await _status_of(bob.threads.get(thread_id)),
                    await _status_of(bob.threads.get_state(thread_id)),
                    await _status_of(bob.runs.wait(thread_id, "assistant",
                                                   input=say("echo text=bob"))),
                ]
            finally:
                await client.aclose()
                await bob.aclose()

    messages = contents(state)
    humans = [text for kind, text in messages if kind == "human"]
    answers = [text for kind, text in messages if kind == "ai" and text]
    assert humans == ["echo text=before", "echo text=after"], messages
    assert "echo: before" in answers[0] and "echo: after" in answers[-1], messages
    assert len(history) >= 2 * 4, "the first run's checkpoints are gone"
    assert refusals == [404, 404, 404]


async def _status_of(call: Any) -> int:
    try:
        await call
    except httpx.HTTPStatusError as exc:
        return exc.response.status_code
    return 200
