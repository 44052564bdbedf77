"""The contract on every engine: written once, run on `langgraph dev` and on Aegra.

On Aegra (DESIGN.md §10) the server is two processes on Postgres and Redis: the
test's client talks to the API-only process, and the runs it creates are
executed by the other process's queue workers. Each test proves one part of
the contract there exactly as on the dev server: users act as themselves,
someone else's thread, run or cron is 404 on every route, the worker acts as
the user it was handed, and no token is at rest anywhere (Postgres, both
Redis databases, the logs, every read-back).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests.support.aegra_server import ENGINES, AegraServer, run_engine
from tests.support.langgraph_server import LangGraphServer
from tests.support.leaks import find_leaks
from tests.support.mcp_server import TicketsMcpServer
from tests.support.pg_scan import scan_postgres
from tests.support.tokens import mint, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ALICE_ONLY = {"T-1001", "T-1003"}
BOB_ONLY = {"T-1004", "T-1005"}
TOKENS: list[str] = []
"""Every token this module sent: the at-rest scan looks for each of them."""


def token(user: str) -> str:
    TOKENS.append(mint(user))
    return TOKENS[-1]


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, tickets_mcp_server: TicketsMcpServer,
           redis_url: str) -> Iterator[LangGraphServer | AegraServer]:
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url,
                                       "auth": {"type": "user_token"}, "timeout_seconds": 10}}}
    env = {"MCP_SERVERS": json.dumps(servers), "REDIS_URL": redis_url}
    extra = {}
    if request.param == "aegra":
        extra = {"postgres": request.getfixturevalue("private_postgres"),
                 "queue_redis_url": request.getfixturevalue("engine_queue_redis")}
    with run_engine(request.param, env, **extra) as running:
        yield running


async def run_as(server: Any, user: str, text: str, thread_id: str | None = None
                 ) -> tuple[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(user), timeout=60) as http:
        if thread_id is None:
            created = await http.post("/threads", json={})
            assert created.status_code == 200, created.text
            thread_id = created.json()["thread_id"]
        done = await http.post(f"/threads/{thread_id}/runs/wait",
                               json={"assistant_id": "assistant", "input": say(text)})
        assert done.status_code == 200, done.text
        return thread_id, done.json()


def last_text(state: dict[str, Any]) -> str:
    return str(state["messages"][-1]["content"])


async def test_alice_and_bob_act_as_themselves_through_the_api_process(server: Any) -> None:
    (_, alice), (_, bob) = await asyncio.gather(run_as(server, "alice", "list_tickets"),
                                                run_as(server, "bob", "list_tickets"))
    assert "as_user: alice" in last_text(alice) and "as_user: bob" in last_text(bob)
    assert all(t in last_text(alice) for t in ALICE_ONLY)
    assert not any(t in last_text(alice) for t in BOB_ONLY)
    assert all(t in last_text(bob) for t in BOB_ONLY)
    assert not any(t in last_text(bob) for t in ALICE_ONLY)


async def test_on_aegra_the_runs_execute_in_the_other_process(server: Any) -> None:
    if not isinstance(server, AegraServer):
        pytest.skip("langgraph dev is one process")
    await run_as(server, "alice", "whoami")
    assert "Worker picked up run" not in (server.workdir / "api.log").read_text()
    assert "Worker picked up run" in (server.workdir / "worker.log").read_text()


async def test_every_route_of_alices_thread_run_and_cron_is_404_for_bob(server: Any) -> None:
    thread_id, _ = await run_as(server, "alice", "whoami")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("alice"),
                                 timeout=60) as alice:
        (run,) = (await alice.get(f"/threads/{thread_id}/runs")).json()
        cron = await alice.post(f"/threads/{thread_id}/runs/crons", json={
            "assistant_id": "assistant", "schedule": "0 0 1 1 *", "input": say("whoami")})
        assert cron.status_code == 200, cron.text
        # one engine answers with the cron, the other with its first run: search for it
        found = await alice.post("/runs/crons/search", json={"thread_id": thread_id})
        assert found.status_code == 200, found.text
        (cron_id,) = {c["cron_id"] for c in found.json()}
    t, r = f"/threads/{thread_id}", f"/threads/{thread_id}/runs/{run['run_id']}"
    start = {"assistant_id": "assistant", "input": say("whoami")}
    routes = [
        ("GET", t, None), ("PATCH", t, {"metadata": {"x": 1}}), ("GET", f"{t}/state", None),
        ("POST", f"{t}/state", {"values": {}}), ("POST", f"{t}/history", {}),
        ("GET", f"{t}/history", None), ("POST", f"{t}/copy", {}), ("GET", f"{t}/runs", None),
        ("POST", f"{t}/runs", start), ("POST", f"{t}/runs/wait", start),
        ("POST", f"{t}/runs/stream", start), ("GET", r, None), ("GET", f"{r}/join", None),
        ("GET", f"{r}/stream", None), ("POST", f"{r}/cancel", {}), ("GET", f"{t}/stream", None),
        ("POST", f"{t}/runs/crons", {**start, "schedule": "0 0 1 1 *"}),
        ("PATCH", f"/runs/crons/{cron_id}", {"schedule": "0 0 2 1 *"}),
        ("DELETE", f"/runs/crons/{cron_id}", None), ("DELETE", r, None), ("DELETE", t, None),
    ]
    seen = {}
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("bob"), timeout=60) as bob:
        for method, path, body in routes:
            answer = await bob.request(method, path, json=body)
            seen[f"{method} {path.replace(thread_id, 'T').replace(run['run_id'], 'R')}"] = (
                answer.status_code)
            if answer.status_code == 404 and answer.headers.get("content-type", "").startswith(
                    "application/json"):
                assert "detail" in answer.json(), (method, path, answer.text)
        searched = await bob.post("/runs/crons/search", json={})
        assert cron_id not in searched.text
        threads = await bob.post("/threads/search", json={})
        assert thread_id not in threads.text
    assert {route: code for route, code in seen.items() if code != 404} == {}
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("alice"),
                                 timeout=60) as alice:  # and nothing of alice's was touched
        assert (await alice.get(t)).status_code == 200
        assert (await alice.get(r)).status_code == 200


async def test_a_threadless_run_and_a_missing_token_behave_alike(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        refused = await http.post("/threads", json={})
        assert refused.status_code == 401 and "detail" in refused.json()
        done = await http.post("/runs/wait", headers=bearer("carol"), json={
            "assistant_id": "assistant", "input": say("whoami")})
        assert done.status_code == 200, done.text
        assert "as_user: carol" in last_text(done.json()) or "carol" in last_text(done.json())


async def test_the_worker_runs_the_graph_as_the_user_it_was_handed(
    server: Any, redis_url: str
) -> None:
    execution = f"bob-{uuid.uuid4().hex[:10]}"
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_URL=server.url)
    with anyio.fail_after(120):
        put = await anyio.run_process([sys.executable, "-m", "onbehalf", "handoff", "put",
                                       execution], input=token("bob").encode(), env=env,
                                      check=False)
        assert put.returncode == 0, put.stderr
        run = await anyio.run_process([sys.executable, "-m", "onbehalf", "worker", "run",
                                       "--execution-id", execution, "list_tickets"],
                                      env=env, check=False)
    assert run.returncode == 0, run.stderr.decode()
    out = run.stdout.decode()
    assert "as_user: bob" in out and not any(t in out for t in ALICE_ONLY)


async def test_no_token_at_rest_in_storage_logs_or_read_backs(
    server: Any, redis_url: str
) -> None:
    thread_id, _ = await run_as(server, "alice", "list_tickets")
    assert len(TOKENS) >= 6, "the scan has little to look for: it would prove little"
    haystacks: dict[str, str | bytes] = {"server log": server.log_text()}
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("alice"),
                                 timeout=60) as alice:
        for path in (f"/threads/{thread_id}", f"/threads/{thread_id}/state",
                     f"/threads/{thread_id}/runs"):
            haystacks[f"GET {path}"] = (await alice.get(path)).text
        haystacks["history"] = (await alice.post(f"/threads/{thread_id}/history",
                                                 json={})).text
    for path in server.written_files():
        haystacks[str(path)] = path.read_bytes()
    redis_urls = {redis_url}
    if isinstance(server, AegraServer):
        redis_urls |= {server.engine.queue_redis_url, server.engine.onbehalf_redis_url}
        tables, scanned, findings = scan_postgres(server.engine.database_url, TOKENS)
        assert tables >= 5 and scanned > 0, (tables, scanned)
        assert findings == []
    for url in redis_urls:
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(count=500):
                kind = client.type(key)
                value = client.dump(key) or b""
                haystacks[f"redis {url.rsplit('/', 1)[-1]} {kind!r}"] = key + b" " + value
    leaks = {where: found for where, text in haystacks.items()
             if (found := find_leaks(text, TOKENS))}
    assert leaks == {}
