"""What only the production engine has: crons it fires itself, and faults of a real deployment.

Aegra's two processes (API only; API + workers) on the suite's private Postgres
and Redis, with short worker leases so that a crashed worker's run is noticed
in seconds. Each fault is the real thing: a worker process killed with SIGKILL
in the middle of a tool call, the Postgres server restarted, the Redis server
restarted (a restarted private Redis is empty).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.aegra_server import AegraServer, run_engine
from tests.support.faulty_mcp import FaultyMcpServer, run_faulty_mcp
from tests.support.leaks import find_leaks
from tests.support.mcp_server import TicketsMcpServer
from tests.support.postgres_server import PrivatePostgres
from tests.support.redis_server import PrivateRedis
from tests.support.tokens import mint

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TOKENS: list[str] = []
FAST_RECOVERY = {"CRON_POLL_INTERVAL_SECONDS": "1", "LEASE_DURATION_SECONDS": "5",
                 "HEARTBEAT_INTERVAL_SECONDS": "2", "REAPER_INTERVAL_SECONDS": "2"}


def bearer(user: str) -> dict[str, str]:
    TOKENS.append(mint(user))
    return {"Authorization": f"Bearer {TOKENS[-1]}"}


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def slow() -> Iterator[FaultyMcpServer]:
    with run_faulty_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def aegra(tickets_mcp_server: TicketsMcpServer, slow: FaultyMcpServer,
          private_postgres: PrivatePostgres, engine_queue_redis: str) -> Iterator[AegraServer]:
    servers = {"servers": {
        "tickets": {"url": tickets_mcp_server.url, "auth": {"type": "user_token"},
                    "timeout_seconds": 10},
        "slow": slow.config(timeout_seconds=60)}}
    # onbehalf's data in the engine's Redis too (database 1): "Redis restarted" is all of it
    env = {"MCP_SERVERS": json.dumps(servers), **FAST_RECOVERY}
    with run_engine("aegra", env, postgres=private_postgres,
                    queue_redis_url=engine_queue_redis) as server:
        assert isinstance(server, AegraServer)
        yield server
        assert find_leaks(server.log_text(), TOKENS) == [], "a token is in the engine's logs"


async def new_thread(http: httpx.AsyncClient) -> str:
    created = await http.post("/threads", json={})
    assert created.status_code == 200, created.text
    return str(created.json()["thread_id"])


async def wait_run(http: httpx.AsyncClient, thread_id: str, text: str) -> dict[str, Any]:
    done = await http.post(f"/threads/{thread_id}/runs/wait",
                           json={"assistant_id": "assistant", "input": say(text)})
    assert done.status_code == 200, done.text
    return dict(done.json())


def last_text(state: dict[str, Any]) -> str:
    return str(state["messages"][-1]["content"])


async def eventually(what: str, check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {seconds:g} s (last: {last!r})")


async def test_a_cron_the_engine_fires_on_its_own_fails_closed_asking_to_sign_in_again(
    aegra: AegraServer,
) -> None:
    """Aegra fires a cron as a user with nothing but the owner's identity: never as nobody,
    never as anyone else, and the owner reads that they must sign in again (DESIGN.md §10)."""
    async with httpx.AsyncClient(base_url=aegra.url, headers=bearer("alice"),
                                 timeout=60) as alice:
        thread_id = await new_thread(alice)
        created = await alice.post(f"/threads/{thread_id}/runs/crons", json={
            "assistant_id": "assistant", "schedule": "0 0 1 1 *", "input": say("whoami")})
        assert created.status_code == 200, created.text
        (cron,) = (await alice.post("/runs/crons/search", json={"thread_id": thread_id})).json()

        async def first_run_done() -> bool:
            runs = (await alice.get(f"/threads/{thread_id}/runs")).json()
            return bool(runs) and all(r["status"] == "success" for r in runs)

        await eventually("the cron's first run (made with alice's own request)", first_run_done)
        state = (await alice.get(f"/threads/{thread_id}/state")).json()
        assert "as_user: alice" in json.dumps(state["values"]["messages"])
        with psycopg.connect(aegra.engine.database_url, autocommit=True) as db:  # due now
            db.execute("UPDATE crons SET next_run_date = now() - interval '1 second' "
                       "WHERE cron_id = %s", [cron["cron_id"]])

        async def fired_run_ended() -> list[dict[str, Any]] | None:
            runs = (await alice.get(f"/threads/{thread_id}/runs")).json()
            done = [r for r in runs if r["status"] not in ("pending", "running")]
            return runs if len(runs) >= 2 and len(done) == len(runs) else None

        runs = await eventually("the fired run", fired_run_ended)
        assert any(r["status"] == "error" for r in runs), runs
        state = (await alice.get(f"/threads/{thread_id}/state")).json()
        texts = json.dumps(state["values"]["messages"])
        assert texts.count("as_user:") == 1, "the fired run acted as somebody"
    assert "sign in again" in aegra.log_text()


async def test_a_worker_killed_mid_call_fails_or_retries_as_the_same_user_only(
    aegra: AegraServer, slow: FaultyMcpServer,
) -> None:
    alice = httpx.AsyncClient(base_url=aegra.url, headers=bearer("alice"), timeout=60)
    bob = httpx.AsyncClient(base_url=aegra.url, headers=bearer("bob"), timeout=60)
    try:
        thread_id = await new_thread(alice)
        started = slow.stats.started["slow"]
        created = await alice.post(f"/threads/{thread_id}/runs", json={
            "assistant_id": "assistant", "input": say("slow seconds=8")})
        assert created.status_code == 200, created.text
        await slow.wait_for_call("slow", started + 1, seconds=30)
        aegra.kill("worker")  # in the middle of alice's tool call
        aegra.start_one("worker")

        async def ended() -> dict[str, Any] | None:
            run = (await alice.get(f"/threads/{thread_id}/runs/{created.json()['run_id']}"))
            status = run.json()["status"]
            return run.json() if status not in ("pending", "running") else None

        run = await eventually("alice's run after the crash", ended, seconds=90)
        assert run["status"] in ("success", "error", "timeout", "interrupted"), run
        state = (await alice.get(f"/threads/{thread_id}/state")).json()
        if run["status"] == "success":  # retried: still alice's, nobody else's
            assert "slow" in json.dumps(state["values"]["messages"])
        bob_thread = await new_thread(bob)
        answer = last_text(await wait_run(bob, bob_thread, "list_tickets"))
        assert "as_user: bob" in answer and "T-1001" not in answer
        bob_state = (await bob.get(f"/threads/{bob_thread}/state")).json()
        assert "slow seconds" not in json.dumps(bob_state)
        again = last_text(await wait_run(alice, await new_thread(alice), "whoami"))
        assert "as_user: alice" in again
    finally:
        await alice.aclose()
        await bob.aclose()
    assert find_leaks((aegra.workdir / "worker.log").read_text(errors="replace"), TOKENS) == []


async def test_postgres_restarted_the_next_runs_work(
    aegra: AegraServer, private_postgres: PrivatePostgres,
) -> None:
    async with httpx.AsyncClient(base_url=aegra.url, headers=bearer("alice"),
                                 timeout=60) as alice:
        thread_id = await new_thread(alice)
        assert "as_user: alice" in last_text(await wait_run(alice, thread_id, "list_tickets"))
        private_postgres.restart()

        async def works() -> bool:
            fresh = await new_thread(alice)
            return "as_user: alice" in last_text(await wait_run(alice, fresh, "list_tickets"))

        await eventually("a run after the Postgres restart", works)

        async def kept() -> bool:  # nothing lost (the API process's pool recovers too)
            state = (await alice.get(f"/threads/{thread_id}/state")).json()
            return "as_user: alice" in json.dumps(state["values"]["messages"])

        await eventually("alice's earlier thread after the restart", kept)


async def test_redis_restarted_the_next_runs_work(
    aegra: AegraServer, engine_redis: PrivateRedis,
) -> None:
    async with httpx.AsyncClient(base_url=aegra.url, headers=bearer("bob"), timeout=60) as bob:
        first = await wait_run(bob, await new_thread(bob), "list_tickets")
        assert "as_user: bob" in last_text(first)
        engine_redis.restart()  # Aegra's queue and onbehalf's data: an empty Redis

        async def works() -> bool:
            fresh = await new_thread(bob)
            return "as_user: bob" in last_text(await wait_run(bob, fresh, "list_tickets"))

        await eventually("a run after the Redis restart", works)
