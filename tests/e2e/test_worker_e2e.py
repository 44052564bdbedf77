"""The background worker end to end: real Redis, real `langgraph dev`, real tickets MCP server.

A worker takes the user's token from Redis once and runs a graph through
`RemoteGraph` with it as the `Authorization` header; the server's auth edge
verifies it and the graph calls the tickets MCP server as that user
(docs/worker.md). These tests run `python -m onbehalf` as real processes,
exactly as a workflow engine would, and check exit codes, output, ownership
on the server, and that the token is left nowhere afterwards (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import TokenHandoff
from onbehalf.worker.runner import RunRejected, run_execution
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.leaks import find_leaks, leak_needles
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import free_port, mint, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ONBEHALF = [sys.executable, "-m", "onbehalf"]
PREFIX = "agent-token:"
ALICE_TICKETS = {"T-1001", "T-1002", "T-1003", "T-1006"}
BOB_TICKETS = {"T-1002", "T-1004", "T-1005", "T-1006"}
TICKET_ID = re.compile(r"\bT-\d{4}\b")
AS_USER = re.compile(r'\bas_user"?\s*:\s*"?([\w.@-]+)')
PROCESS_TIMEOUT = 60
WRONG_SECRET = "not-the-servers-secret-" + "s" * 32


@dataclass
class Outcome:
    """What one `onbehalf` process did: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        """Stdout as JSON lines; fails the test on any line that is not a JSON object."""
        events = []
        for line in self.stdout.splitlines():
            event = json.loads(line)
            assert isinstance(event, dict), line
            events.append(event)
        return events

    def done(self) -> dict[str, Any]:
        events = self.events()
        assert events, f"no output; stderr: {self.stderr}"
        assert events[0]["event"] == "start", events[0]
        assert events[-1]["event"] == "done", events[-1]
        return events[-1]

    def reason(self, code: int) -> str:
        """The one `onbehalf: ...` stderr line of a failed command with exit code `code`."""
        assert self.returncode == code, (self.returncode, self.stderr)
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("onbehalf: "), lines[0]
        assert "Traceback" not in self.stderr
        self.events()  # stdout stays JSON lines even on failure
        return lines[0]


async def onbehalf(*args: str, redis_url: str, langgraph_url: str, stdin: str = "") -> Outcome:
    """Run `python -m onbehalf ARGS` with only the worker's settings in its environment."""
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_URL=langgraph_url)
    with anyio.fail_after(PROCESS_TIMEOUT):
        process = await asyncio.create_subprocess_exec(
            *ONBEHALF, *args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode())


async def worker_run(
    execution_id: str, message: str, *, redis_url: str, langgraph_url: str,
    thread_id: str | None = None, graph: str = "assistant",
) -> Outcome:
    args = ["worker", "run", "--execution-id", execution_id, "--graph", graph]
    if thread_id is not None:
        args += ["--thread-id", thread_id]
    return await onbehalf(*args, message, redis_url=redis_url, langgraph_url=langgraph_url)


def settings_for(redis_url: str, langgraph_url: str | None = None) -> HandoffSettings:
    """In-process worker settings, explicit so that no developer environment leaks in."""
    return HandoffSettings(
        redis_url=redis_url,
        langgraph_url=langgraph_url or f"http://127.0.0.1:{free_port()}",
        token_handoff_prefix=PREFIX,
        token_handoff_ttl_seconds=600,
    )


async def hand_off(redis_url: str, execution_id: str, token: str) -> None:
    """What the API side does: `SET agent-token:<id> <jwt> EX <ttl>` (docs/worker.md)."""
    async with TokenHandoff(settings_for(redis_url)) as handoff:
        await handoff.put(execution_id, token)


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def client_as(server: LangGraphServer, token: str) -> LangGraphClient:
    return get_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {token}"})


def tickets_in(text: str) -> set[str]:
    return set(TICKET_ID.findall(text))


def users_in(text: str) -> set[str]:
    return set(AS_USER.findall(text))


def assert_no_leak(where: str, haystack: str | bytes, tokens: Iterable[str]) -> None:
    leaks = find_leaks(haystack, list(tokens))
    assert not leaks, f"token found in {where}: {leaks}"


# --- runs as the user -------------------------------------------------------------------


async def test_concurrent_workers_each_see_only_their_own_users_tickets(
    langgraph_server: LangGraphServer, redis_url: str, redis_client: aioredis.Redis
) -> None:
    alice, bob = mint("alice"), mint("bob")
    alice_id, bob_id = new_id("alice"), new_id("bob")
    puts = await asyncio.gather(
        onbehalf("handoff", "put", alice_id, stdin=alice, redis_url=redis_url,
                 langgraph_url=langgraph_server.url),
        onbehalf("handoff", "put", bob_id, stdin=bob, redis_url=redis_url,
                 langgraph_url=langgraph_server.url),
    )
    for put, execution_id in zip(puts, (alice_id, bob_id), strict=True):
        assert put.returncode == 0, put.stderr
        assert re.fullmatch(rf"stored {PREFIX}{execution_id} ttl=\d+s\n", put.stdout)

    alice_run, bob_run = await asyncio.gather(
        worker_run(alice_id, "list_tickets", redis_url=redis_url,
                   langgraph_url=langgraph_server.url),
        worker_run(bob_id, "list_tickets", redis_url=redis_url,
                   langgraph_url=langgraph_server.url),
    )

    for run, user, expected in ((alice_run, "alice", ALICE_TICKETS),
                                (bob_run, "bob", BOB_TICKETS)):
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""
        done = run.done()
        output = done["output"]
        assert isinstance(output, str) and "list_tickets" in output, output
        assert users_in(output) == {user}, output
        assert tickets_in(output) == expected, output
        assert done["thread_id"] == run.events()[0]["thread_id"]
        assert any(e["event"] == "update" for e in run.events())
    assert await redis_client.exists(PREFIX + alice_id, PREFIX + bob_id) == 0

    # Each thread was created with its user's token: owned by that user, invisible to the other.
    alice_thread, bob_thread = alice_run.done()["thread_id"], bob_run.done()["thread_id"]
    as_alice, as_bob = client_as(langgraph_server, mint("alice")), \
        client_as(langgraph_server, mint("bob"))
    try:
        assert (await as_alice.threads.get(alice_thread))["metadata"]["owner"] == "alice"
        assert (await as_bob.threads.get(bob_thread))["metadata"]["owner"] == "bob"
        for client, other in ((as_alice, bob_thread), (as_bob, alice_thread)):
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await client.threads.get(other)
            assert refused.value.response.status_code == 404
    finally:
        await as_alice.aclose()
        await as_bob.aclose()


async def test_worker_with_bobs_token_cannot_run_on_alices_thread(
    langgraph_server: LangGraphServer, redis_url: str, redis_client: aioredis.Redis
) -> None:
    as_alice = client_as(langgraph_server, mint("alice"))
    try:
        thread = await as_alice.threads.create(graph_id="assistant")
        thread_id = thread["thread_id"]
        await as_alice.runs.wait(
            thread_id, "assistant",
            input={"messages": [{"role": "user", "content": "list_tickets"}]},
        )
        state_before = await as_alice.threads.get_state(thread_id)
        history_before = await as_alice.threads.get_history(thread_id, limit=100)
        runs_before = await as_alice.runs.list(thread_id, limit=100)
        assert tickets_in(json.dumps(state_before["values"])) == ALICE_TICKETS

        bob_id = new_id("bob-on-alice")
        await hand_off(redis_url, bob_id, mint("bob"))
        refused = await worker_run(
            bob_id, "list_tickets and get_ticket ticket_id=T-1001", thread_id=thread_id,
            redis_url=redis_url, langgraph_url=langgraph_server.url,
        )
        reason = refused.reason(3)
        assert "404" in reason and thread_id in reason, reason
        assert "another user" in reason, reason
        assert refused.stdout == ""
        assert await redis_client.exists(PREFIX + bob_id) == 0

        # The same refusal through the Python API.
        bob_again = new_id("bob-on-alice")
        await hand_off(redis_url, bob_again, mint("bob"))
        settings = settings_for(redis_url, langgraph_server.url)
        with pytest.raises(RunRejected) as rejected:
            async for _ in run_execution(
                bob_again, "assistant",
                {"messages": [{"role": "user", "content": "list_tickets"}]},
                thread_id, settings=settings,
            ):
                pytest.fail("a refused thread must not start a run")
        assert rejected.value.status_code == 404

        state_after = await as_alice.threads.get_state(thread_id)
        assert state_after["checkpoint"] == state_before["checkpoint"]
        assert state_after["values"] == state_before["values"]
        assert len(await as_alice.threads.get_history(thread_id, limit=100)) == \
            len(history_before)
        assert await as_alice.runs.list(thread_id, limit=100) == runs_before
        assert (await as_alice.threads.get(thread_id))["metadata"]["owner"] == "alice"
    finally:
        await as_alice.aclose()


async def test_the_output_is_the_runs_last_answer_when_the_stream_misses_its_last_values(
    langgraph_server: LangGraphServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aegra 0.11 can lose a stream event under load (replay, then subscribe): here the
    run's last `values` event never arrives, and the worker still reports the last answer."""
    import onbehalf.worker.runner as runner

    class MissesLastValues(runner.RemoteGraph):
        async def astream(self, *args: Any, **kwargs: Any) -> Any:
            held = None
            async for part in super().astream(*args, **kwargs):
                if part["type"] == "values":
                    if held is not None:
                        yield held
                    held = part  # the last one is never delivered
                else:
                    yield part

    monkeypatch.setattr(runner, "RemoteGraph", MissesLastValues)
    execution_id = new_id("alice-lost-event")
    await hand_off(redis_url, execution_id, mint("alice"))
    events = [event async for event in run_execution(
        execution_id, "assistant", {"messages": [{"role": "user", "content": "list_tickets"}]},
        settings=settings_for(redis_url, langgraph_server.url),
    )]
    output = events[-1]["output"]
    assert events[-1]["event"] == "done"
    assert isinstance(output, str) and "list_tickets" in output, output
    assert tickets_in(output) == ALICE_TICKETS, output


# --- the token is left nowhere ---------------------------------------------------------


def test_leak_scanner_finds_every_form_of_a_token_and_never_prints_it() -> None:
    token, other = mint("alice"), mint("bob")
    signature = token.rsplit(".", 1)[1]
    assert find_leaks(f"x{other}y" + json.dumps({"sig": other.rsplit(".", 1)[1]}), token) == []
    for secret in (token, signature):
        for padding in (b"", b"a", b"ab", b"abc"):
            blob = padding + b'{"authorization": "Bearer ' + secret.encode() + b'"}'
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                haystack = json.dumps({"blob": encode(blob).decode()})
                found = find_leaks(haystack, [other, token])
                assert found and all(f.startswith("token 2 ") for f in found), found
                assert all(signature not in f for f in found)
        assert find_leaks(b"raw:" + secret.encode(), [token])
    assert set(leak_needles(token)) >= {token, signature}


async def test_token_is_found_nowhere_after_worker_runs(
    tickets_mcp_server: TicketsMcpServer, redis_url: str, redis_client: aioredis.Redis
) -> None:
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url,
                                       "auth": {"type": "user_token"}, "timeout_seconds": 10}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        url = server.url
        tokens: list[str] = []
        outcomes: list[Outcome] = []

        def token_for(sub: str, **kwargs: Any) -> str:
            tokens.append(mint(sub, **kwargs))
            return tokens[-1]

        # Two users at once, each on a new thread.
        alice_id, bob_id = new_id("leak-alice"), new_id("leak-bob")
        await hand_off(redis_url, alice_id, token_for("alice"))
        await hand_off(redis_url, bob_id, token_for("bob"))
        first = await asyncio.gather(
            worker_run(alice_id, "list_tickets", redis_url=redis_url, langgraph_url=url),
            worker_run(bob_id, "list_tickets", redis_url=redis_url, langgraph_url=url),
        )
        outcomes += first
        assert [o.returncode for o in first] == [0, 0], [o.stderr for o in first]
        alice_thread, bob_thread = (o.done()["thread_id"] for o in first)

        # Alice continues her own thread (CLI); bob continues his (Python API);
        # bob tries alice's thread and a forged token tries to get in (both refused).
        again_id, api_id = new_id("leak-alice-again"), new_id("leak-bob-api")
        refused_id, forged_id = new_id("leak-refused"), new_id("leak-forged")
        await hand_off(redis_url, again_id, token_for("alice"))
        await hand_off(redis_url, api_id, token_for("bob"))
        await hand_off(redis_url, refused_id, token_for("bob"))
        await hand_off(redis_url, forged_id, token_for("alice", secret=WRONG_SECRET))

        async def through_api() -> list[dict[str, Any]]:
            settings = settings_for(redis_url, url)
            return [event async for event in run_execution(
                api_id, "assistant",
                {"messages": [{"role": "user", "content": "get_ticket ticket_id=T-1004"}]},
                bob_thread, settings=settings,
            )]

        again, api_events, refused, forged = await asyncio.gather(
            worker_run(again_id, "whoami", thread_id=alice_thread,
                       redis_url=redis_url, langgraph_url=url),
            through_api(),
            worker_run(refused_id, "list_tickets", thread_id=alice_thread,
                       redis_url=redis_url, langgraph_url=url),
            worker_run(forged_id, "list_tickets", redis_url=redis_url, langgraph_url=url),
        )
        outcomes += [again, refused, forged]
        assert again.returncode == 0, again.stderr
        assert "alice" in (again.done()["output"] or "")
        assert api_events[-1]["event"] == "done" and "T-1004" in api_events[-1]["output"]
        refused.reason(3)
        forged.reason(3)

        # Read back everything the API offers, as each user (with tokens also scanned for).
        readback: list[Any] = [api_events]
        seen_threads: set[str] = set()
        for user in ("alice", "bob"):
            client = client_as(server, token_for(user))
            try:
                threads = await client.threads.search(limit=100)
                readback.append(threads)
                for thread in threads:
                    thread_id = thread["thread_id"]
                    seen_threads.add(thread_id)
                    readback.append(await client.threads.get(thread_id))
                    readback.append(await client.threads.get_state(thread_id))
                    readback.append(await client.threads.get_history(thread_id, limit=100))
                    runs = await client.runs.list(thread_id, limit=100)
                    assert runs, f"no runs on {user}'s thread {thread_id}"
                    readback.append(runs)
                    for run in runs:
                        readback.append(await client.runs.get(thread_id, run["run_id"]))
            finally:
                await client.aclose()
        assert {alice_thread, bob_thread} <= seen_threads
        assert_no_leak("API read-backs", json.dumps(readback, default=str), tokens)

        # Redis: every key and every value, in every database.
        assert_no_leak("Redis", await redis_dump(redis_url), tokens)

        for index, outcome in enumerate(outcomes):
            assert_no_leak(f"worker {index} stdout", outcome.stdout, tokens)
            assert_no_leak(f"worker {index} stderr", outcome.stderr, tokens)

        # The inmem runtime writes .langgraph_api/ on shutdown.
        server.stop()
        files = server.written_files()
        assert any(alice_thread.encode() in path.read_bytes() for path in files), \
            "the .langgraph_api files hold no record of the runs: the scan would prove nothing"
        for path in files:
            assert_no_leak(str(path.relative_to(server.workdir)), path.read_bytes(), tokens)
        log = server.log_text()
        assert "POST /threads" in log or "/runs" in log, "the server log shows no requests"
        assert_no_leak("the server log", log, tokens)


async def redis_dump(redis_url: str) -> bytes:
    """Every key and value of every database of the private Redis, as one blob to scan."""
    parts: list[bytes] = []
    admin = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        databases = int((await admin.config_get("databases"))["databases"])
    finally:
        await admin.aclose()
    for db in range(databases):
        client = aioredis.Redis.from_url(redis_url, db=db, socket_timeout=5)
        try:
            async for key in client.scan_iter(count=500):
                parts.append(key)
                parts.append(repr(await _value_of(client, key)).encode())
        finally:
            await client.aclose()
    return b"\n".join(parts)


async def _value_of(client: aioredis.Redis, key: bytes) -> Any:
    kind = (await client.type(key)).decode()
    if kind == "string":
        return await client.get(key)
    if kind == "hash":
        return await client.hgetall(key)
    if kind == "list":
        return await client.lrange(key, 0, -1)
    if kind == "set":
        return await client.smembers(key)
    if kind == "zset":
        return await client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return await client.xrange(key)
    return await client.dump(key)


# --- failures, with real processes -------------------------------------------------------


async def test_worker_with_redis_down_exits_2_naming_redis_url(
    langgraph_server: LangGraphServer,
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    outcome = await worker_run(new_id("redis-down"), "list_tickets", redis_url=closed,
                               langgraph_url=langgraph_server.url)
    reason = outcome.reason(2)
    assert "REDIS_URL" in reason, reason
    assert outcome.stdout == ""


async def test_worker_with_the_server_down_exits_4_naming_langgraph_url_and_leaves_no_token(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id("server-down")
    token = mint("alice")
    await hand_off(redis_url, execution_id, token)
    outcome = await worker_run(execution_id, "list_tickets", redis_url=redis_url,
                               langgraph_url=f"http://127.0.0.1:{free_port()}")
    reason = outcome.reason(4)
    assert "LANGGRAPH_URL" in reason, reason
    assert await redis_client.exists(PREFIX + execution_id) == 0
    assert_no_leak("Redis", await redis_dump(redis_url), [token])
    assert_no_leak("stderr", outcome.stderr, [token])


async def test_worker_with_an_expired_token_exits_2(
    langgraph_server: LangGraphServer, redis_url: str, redis_client: aioredis.Redis
) -> None:
    # One handed off properly (its TTL is bounded by exp, so Redis drops it), one by a
    # producer that ignored exp (the worker must refuse it and still delete it).
    bounded_id, careless_id = new_id("expired-bounded"), new_id("expired-careless")
    bounded, careless = mint("alice", ttl=2), mint("bob", ttl=2)
    await hand_off(redis_url, bounded_id, bounded)
    await redis_client.set(PREFIX + careless_id, careless, ex=60)
    expires_at = max(_exp(bounded), _exp(careless))
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.3)

    gone, expired = await asyncio.gather(
        worker_run(bounded_id, "list_tickets", redis_url=redis_url,
                   langgraph_url=langgraph_server.url),
        worker_run(careless_id, "list_tickets", redis_url=redis_url,
                   langgraph_url=langgraph_server.url),
    )
    assert "no handed-off token" in gone.reason(2)
    assert "expired" in expired.reason(2)
    assert await redis_client.exists(PREFIX + bounded_id, PREFIX + careless_id) == 0


async def test_second_worker_run_on_the_same_execution_id_exits_2(
    langgraph_server: LangGraphServer, redis_url: str
) -> None:
    execution_id = new_id("reused")
    await hand_off(redis_url, execution_id, mint("alice"))
    first = await worker_run(execution_id, "list_tickets", redis_url=redis_url,
                             langgraph_url=langgraph_server.url)
    assert first.returncode == 0, first.stderr
    assert tickets_in(first.done()["output"]) == ALICE_TICKETS

    second = await worker_run(execution_id, "list_tickets", redis_url=redis_url,
                              langgraph_url=langgraph_server.url)
    reason = second.reason(2)
    assert "no handed-off token" in reason and execution_id in reason, reason
    assert second.stdout == ""


async def test_worker_with_a_badly_signed_token_exits_3_with_the_servers_detail(
    langgraph_server: LangGraphServer, redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id("forged")
    forged = mint("alice", secret=WRONG_SECRET)
    await hand_off(redis_url, execution_id, forged)
    outcome = await worker_run(execution_id, "list_tickets", redis_url=redis_url,
                               langgraph_url=langgraph_server.url)
    reason = outcome.reason(3)
    assert "401" in reason and "LANGGRAPH_URL" in reason, reason
    assert "[check: signature]" in reason, reason
    assert outcome.stdout == ""
    assert_no_leak("stderr", outcome.stderr, [forged])
    assert await redis_client.exists(PREFIX + execution_id) == 0


async def test_handoff_put_of_an_expired_token_exits_2_and_stores_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    execution_id = new_id("put-expired")
    token = mint("alice", ttl=-5)
    outcome = await onbehalf("handoff", "put", execution_id, stdin=token, redis_url=redis_url,
                             langgraph_url=f"http://127.0.0.1:{free_port()}")
    reason = outcome.reason(2)
    assert "expired" in reason and "nothing was stored" in reason, reason
    assert outcome.stdout == ""
    assert await redis_client.exists(PREFIX + execution_id) == 0
    assert_no_leak("stderr", outcome.stderr, [token])


def _exp(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])
