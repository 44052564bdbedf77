"""MCP servers failing under a run, in process: real servers, a scripted model, a saved thread.

Each case saves a first exchange on the thread, makes the next run meet a
fault (server down, hanging, refusing, garbling, flooding; the token
expiring; the run cancelled), and checks three things: the caller gets a
clear message within a bounded time, the run does not crash (or fails with
a kit error that says what to do), and the first exchange is still saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from langchain_core.messages import ToolMessage

from onbehalf.errors import UserTokenExpired
from onbehalf.mcp.pool import session_pool
from tests.reliability.scripted import Conversation, Turn, text_of, tool_messages
from tests.support.faulty_mcp import FaultyMcpServer, run_faulty_mcp
from tests.support.tokens import mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]

SLACK_SECONDS = 2.5
"""What a bounded failure may take beyond the server's `timeout_seconds` on a slow machine."""


@pytest.fixture
def faulty() -> Iterator[FaultyMcpServer]:
    with run_faulty_mcp() as server:
        yield server


@pytest.fixture
def other() -> Iterator[FaultyMcpServer]:
    with run_faulty_mcp() as server:
        yield server


def configure(monkeypatch: pytest.MonkeyPatch, **servers: dict[str, Any]) -> None:
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))


def no_pooling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions close when their run ends, so every run opens its own."""
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")
    pool = session_pool()
    pool.settings = type(pool.settings).from_env()


@contextlib.contextmanager
def within(seconds: float, what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"{what} took {elapsed:.1f}s, more than {seconds:g}s"


async def down(server: FaultyMcpServer) -> None:
    await asyncio.to_thread(server.down)


# --- a server down or hanging at run start ---------------------------------------------


async def test_a_server_down_at_run_start_leaves_the_others_tools_and_the_model_is_told(
    faulty: FaultyMcpServer, other: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_pooling(monkeypatch)
    configure(monkeypatch, working=faulty.config(tools=["echo", "slow"]),
              billing=other.config(tools=["huge"]))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()
    other.down()
    await some_time_passes()

    with within(SLACK_SECONDS, "a run with one server down"):
        state = await conversation.run("again", [Turn(calls=[("echo", {"text": "still here"})]),
                                                 Turn(text="finished")])
    assert conversation.model is not None
    assert sorted(conversation.model.offered[0]) == ["echo", "slow"]
    prompt = conversation.model.system_prompt()
    assert "'billing'" in prompt and "unavailable" in prompt
    assert "'working'" not in prompt
    (_, result) = tool_messages(state)
    assert result.status == "success" and "echo: still here" in text_of(result)
    assert state["messages"][-1].content == "finished"
    await conversation.assert_first_exchange_kept()


async def some_time_passes() -> None:
    """The user's next run comes some time after the server went down or restarted: the
    `down()`/`up()` of these tests block the event loop, so the cut of the idle session's
    notification stream (what marks it stale) is only read once the loop runs again."""
    await asyncio.sleep(0.2)


async def test_a_server_that_went_down_since_the_users_last_run_is_reported_unavailable(
    faulty: FaultyMcpServer, other: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default pooling the user's previous session is idle in the pool: it must
    not make a dead server look available (its tools offered, the model not told)."""
    configure(monkeypatch, working=faulty.config(tools=["echo", "slow"]),
              billing=other.config(tools=["huge"]))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()
    other.down()
    await some_time_passes()

    with within(SLACK_SECONDS, "a run with one server down"):
        state = await conversation.run("again", [Turn(calls=[("echo", {"text": "still here"})]),
                                                 Turn(text="finished")])
    assert conversation.model is not None
    prompt = conversation.model.system_prompt()
    assert "'billing'" in prompt and "unavailable" in prompt, prompt
    assert sorted(conversation.model.offered[0]) == ["echo", "slow"]
    assert tool_messages(state)[-1].status == "success"
    await conversation.assert_first_exchange_kept()


async def test_a_server_restarted_since_the_users_last_run_serves_the_next_run(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pooled session's id died with the old server process; the next run must not
    fail a tool call on a healthy server because of it."""
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=2))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()
    faulty.down()
    faulty.up()
    await some_time_passes()

    with within(SLACK_SECONDS, "a run after the server restarted"):
        state = await conversation.run("again", [Turn(calls=[("echo", {"text": "back"})]),
                                                 Turn(text="finished")])
    result = tool_messages(state)[-1]
    assert result.status == "success", text_of(result)
    assert "echo: back" in text_of(result)
    await conversation.assert_first_exchange_kept()


async def test_a_server_hanging_on_initialize_is_left_out_after_its_timeout(
    faulty: FaultyMcpServer, other: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_pooling(monkeypatch)
    configure(monkeypatch, working=faulty.config(tools=["echo", "slow"]),
              stuck=other.config(tools=["huge"], timeout_seconds=1))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()
    other.hang(["initialize"])

    with within(1 + SLACK_SECONDS, "a run with one server hanging on initialize"):
        state = await conversation.run("again", [Turn(calls=[("echo", {"text": "still here"})]),
                                                 Turn(text="finished")])
    assert conversation.model is not None
    assert sorted(conversation.model.offered[0]) == ["echo", "slow"]
    prompt = conversation.model.system_prompt()
    assert "'stuck'" in prompt and "did not answer within 1s" in prompt, prompt
    assert other.stats.faulted["initialize"] >= 1
    assert tool_messages(state)[-1].status == "success"
    assert state["messages"][-1].content == "finished"
    await conversation.assert_first_exchange_kept()


# --- a server failing mid-run ------------------------------------------------------------


async def test_a_server_down_between_two_tool_calls_is_a_tool_error_naming_it(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=2))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()

    with within(2 + SLACK_SECONDS, "a run whose server went down between two calls"):
        state = await conversation.run("two calls", [
            Turn(calls=[("echo", {"text": "one"})]),
            Turn(calls=[("echo", {"text": "two"})], before=lambda: down(faulty)),
            Turn(text="finished"),
        ])
    first, second = tool_messages(state)[-2:]
    assert first.status == "success"
    assert second.status == "error"
    assert "'tickets'" in text_of(second) and "became unavailable" in text_of(second)
    assert state["messages"][-1].content == "finished"
    await conversation.assert_first_exchange_kept()


async def test_a_server_down_during_a_call_is_a_tool_error_naming_it(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=5))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()

    async def stop_mid_call() -> None:
        await faulty.wait_for_call("slow")
        await down(faulty)

    stopper = asyncio.create_task(stop_mid_call())
    started = time.monotonic()
    state = await conversation.run("slow", [Turn(calls=[("slow", {"seconds": 30})]),
                                            Turn(text="finished")])
    elapsed = time.monotonic() - started
    await stopper
    (result,) = tool_messages(state)[-1:]
    assert result.status == "error"
    assert "'tickets'" in text_of(result)
    assert "became unavailable" in text_of(result), (
        f"after {elapsed:.1f}s: {text_of(result)}"
    )
    assert elapsed < 5, f"the dropped connection was noticed only after {elapsed:.1f}s"
    assert state["messages"][-1].content == "finished"
    await conversation.assert_first_exchange_kept()


async def one_faulted_call(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch, *, timeout_seconds: int,
    fault: Callable[[], None], limit_seconds: float, what: str, thread: str, text: str,
) -> ToolMessage:
    """A run whose one `echo` call meets `fault`: the call comes back as a tool error within
    `limit_seconds`, the run still finishes, the first exchange is kept. Returns the error."""
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=timeout_seconds))
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()
    fault()

    with within(limit_seconds, what):
        state = await conversation.run(thread, [Turn(calls=[("echo", {"text": text})]),
                                                Turn(text="finished")])
    (result,) = tool_messages(state)[-1:]
    assert result.status == "error"
    assert faulty.stats.faulted["tools/call"] == 1
    assert state["messages"][-1].content == "finished"
    await conversation.assert_first_exchange_kept()
    return result


async def test_a_hanging_tool_call_is_bounded_by_timeout_seconds(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await one_faulted_call(
        faulty, monkeypatch, timeout_seconds=1, fault=faulty.hang,
        limit_seconds=1 + SLACK_SECONDS, what="a run whose tool call hangs", thread="hang",
        text="hello?",
    )
    assert text_of(result) == "MCP server 'tickets' did not answer within 1s"
    # the session that timed out is closed, not kept in the pool for the next run
    await faulty.wait_until(lambda s: not s.open_sessions, "closing the timed-out session", 5)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "sign in again"), (403, "not permitted"), (500, "failed (HTTP 500)")],
)
async def test_a_refused_tool_call_says_why(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch, status: int, expected: str
) -> None:
    result = await one_faulted_call(
        faulty, monkeypatch, timeout_seconds=2, fault=lambda: faulty.http_status(status),
        limit_seconds=SLACK_SECONDS, what=f"a run whose tool call is answered {status}",
        thread="refused", text="x",
    )
    assert "'tickets'" in text_of(result) and expected in text_of(result), text_of(result)


async def test_a_malformed_json_rpc_answer_is_a_bounded_tool_error(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await one_faulted_call(
        faulty, monkeypatch, timeout_seconds=1, fault=faulty.malformed,
        limit_seconds=1 + SLACK_SECONDS, what="a run whose tool call gets a malformed answer",
        thread="garbled", text="x",
    )
    assert "'tickets'" in text_of(result)


@pytest.mark.parametrize(("limit", "setting"), [(50_000, None), (1_000, "1000")])
async def test_an_enormous_tool_result_is_truncated_with_a_note(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch, limit: int, setting: str | None
) -> None:
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=10))
    if setting is None:
        monkeypatch.delenv("MCP_TOOL_RESULT_MAX_CHARS", raising=False)
    else:
        monkeypatch.setenv("MCP_TOOL_RESULT_MAX_CHARS", setting)
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()

    with within(10, "a run with a 5 MB tool result"):
        state = await conversation.run("flood", [Turn(calls=[("huge", {"chars": 5_000_000})]),
                                                 Turn(text="finished")])
    (result,) = tool_messages(state)[-1:]
    text = text_of(result)
    assert "truncated by onbehalf" in text
    assert text.startswith("x" * limit) and "x" * (limit + 1) not in text
    assert len(text) < limit + 500
    assert state["messages"][-1].content == "finished"
    saved = tool_messages(await conversation.messages())[-1]
    assert len(text_of(saved)) < limit + 500
    assert len(json.dumps(saved.artifact, default=str)) < limit + 500
    await conversation.assert_first_exchange_kept()


# --- the token expiring mid-run ------------------------------------------------------


async def expiring_conversation(faulty: FaultyMcpServer) -> tuple[Conversation, Exception | None]:
    """Two `echo` calls; the model sleeps past the token's `exp` before asking for the second.

    AUTH_LEEWAY_SECONDS (5 in tests) still lets the token verify; the kit's own
    expiry check uses the exact `exp`."""
    token = mint("alice", ttl=3)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    conversation = Conversation(token)

    async def sleep_past_expiry() -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.3)

    failure: Exception | None = None
    with within(3 + SLACK_SECONDS, "a run whose token expired mid-way"):
        try:
            await conversation.run("two calls", [
                Turn(calls=[("echo", {"text": "one"})]),
                Turn(calls=[("echo", {"text": "two"})], before=sleep_past_expiry),
                Turn(text="finished"),
            ])
        except Exception as exc:  # judged by the callers
            failure = exc
    return conversation, failure


async def test_a_token_expiring_between_two_tool_calls_stops_the_second_before_the_server(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=2))
    conversation, failure = await expiring_conversation(faulty)
    messages = await conversation.messages()
    first, second = tool_messages(messages)
    assert first.status == "success"
    assert second.status == "error"
    assert "your sign-in expired during this run" in text_of(second)
    assert faulty.stats.started["echo"] == 1  # the second call never reached the server
    if failure is not None:  # if the run ends there, it ends with the kit's own message
        assert isinstance(failure, UserTokenExpired), repr(failure)
        assert "sign in again" in str(failure)


async def test_a_token_expiring_mid_run_lets_the_model_tell_the_user(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/architecture.md: "the next tool call returns an error to the model" — so the
    model must get to read it, rather than the run failing on the next model call."""
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=2))
    conversation, failure = await expiring_conversation(faulty)
    assert failure is None, (
        f"the run failed with {type(failure).__name__}: {failure}; the model never saw the "
        "tool error it was given"
    )
    messages = await conversation.messages()
    assert messages[-1].content == "finished"


# --- the run cancelled mid-call ------------------------------------------------------


async def test_a_run_cancelled_mid_call_leaves_no_mcp_session_open(
    faulty: FaultyMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, tickets=faulty.config(timeout_seconds=30))  # default pooling
    conversation = Conversation(mint("alice"))
    await conversation.save_a_first_exchange()

    run = asyncio.create_task(
        conversation.run("slow", [Turn(calls=[("slow", {"seconds": 20})])])
    )
    await faulty.wait_for_call("slow")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    await faulty.wait_until(lambda s: not s.open_sessions, "closing every session", 5)
    assert faulty.stats.call_sessions["slow"]  # the call did travel over a session
    assert faulty.stats.counts()["sessions_active"] == 0
    assert conversation.middleware is not None and conversation.middleware.open_scopes == 0
    assert session_pool().idle_count == 0
    await conversation.assert_first_exchange_kept()
