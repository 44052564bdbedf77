"""Fifty users at once, through every way in, and then each one trying the next one's things.

Round one and round two run the same mix — SDK runs through `langgraph dev`,
in-process `graph.ainvoke(..., context={"user_token": jwt})` and background
worker runs (Redis handoff + RemoteGraph) — so the second round runs with
every MCP session pool warm. Every tool result must belong to its caller:
`as_user` is the caller, `whoami`'s `token_sha256` is the sha256 of the
caller's own token (of this round: some users sign in again between rounds),
and no ticket outside the caller's visibility ever appears.

Then user i tries everything on user i-1's thread, run, cron and store
namespace: 404 for threads, runs and crons, 403 for the store, nothing in
searches, and the victim's things are intact afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agents.assistant.graph import graph as assistant
from onbehalf.mcp.pool import session_pool
from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import TokenHandoff
from onbehalf.worker.runner import run_execution
from tests.security.probes import (
    AS_USER,
    FIGURES,
    TOKEN_SHA,
    client_for,
    final_text,
    say,
    sha256,
    tool_payloads,
)
from tests.support.langgraph_server import LangGraphServer
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio

USERS = 50
SHARED_NAMES = 8
"""Display names (`name` claim) are shared: user i is called "Pat <i % 8>"."""
SEEDED_PRIVATE = {"alice": {"T-1001", "T-1003"}, "bob": {"T-1004", "T-1005"}}


@dataclass
class Caller:
    sub: str
    name: str
    tokens: list[str] = field(default_factory=list)  # one per round (refreshed or reused)
    thread_id: str = ""
    run_id: str = ""


@dataclass
class Observation:
    caller: Caller
    token: str
    path: str
    message: str
    messages: list[Any]
    answer: str


def make_callers() -> list[Caller]:
    subs = ["alice", "bob", "carol"] + [f"load-{i:02d}-{uuid.uuid4().hex[:6]}"
                                        for i in range(3, USERS)]
    callers = []
    for i, sub in enumerate(subs):
        caller = Caller(sub=sub, name=f"Pat {i % SHARED_NAMES}")
        first = mint(sub, name=caller.name)
        # Every tenth user signs in again between the rounds: a new token, same identity.
        second = mint(sub, name=caller.name) if i % 10 == 9 else first
        caller.tokens = [first, second]
        callers.append(caller)
    assert len({c.name for c in callers}) == SHARED_NAMES < USERS
    return callers


@pytest.fixture
async def in_process_servers(
    tickets_mcp_server: TicketsMcpServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url, "timeout_seconds": 20}}}
    monkeypatch.setenv("MCP_SERVERS", json.dumps(servers))
    yield
    await session_pool().aclose()


async def via_sdk(server: LangGraphServer, caller: Caller, token: str, message: str,
                  record: bool) -> Observation:
    client = client_for(server.url, token)
    thread = await client.threads.create(metadata={"purpose": "load"})
    run = await client.runs.create(thread["thread_id"], "assistant", input=say(message))
    values = await client.runs.join(thread["thread_id"], run["run_id"])
    if record:
        caller.thread_id, caller.run_id = thread["thread_id"], run["run_id"]
    messages = values["messages"]
    return Observation(caller, token, "sdk", message, messages, final_text(messages))


async def in_process(caller: Caller, token: str, message: str) -> Observation:
    state = await assistant.ainvoke(say(message), context={"user_token": token})
    messages = state["messages"]
    return Observation(caller, token, "in-process", message, messages, final_text(messages))


async def via_worker(server: LangGraphServer, redis_url: str, caller: Caller, token: str,
                     message: str) -> Observation:
    settings = HandoffSettings(redis_url=redis_url, langgraph_url=server.url)
    execution_id = f"exec-{uuid.uuid4().hex}"
    async with TokenHandoff(settings) as handoff:
        await handoff.put(execution_id, token)
    messages: list[Any] = []
    answer = ""
    async for event in run_execution(execution_id, "assistant", say(message), settings=settings):
        if event["event"] == "update" and isinstance(event.get("data"), dict):
            messages += event["data"].get("messages") or []
        elif event["event"] == "done":
            answer = event["output"] or ""
    return Observation(caller, token, "worker", message, messages, answer)


def check(observation: Observation) -> None:
    """The one tool result of this run is the caller's, with the caller's own token."""
    sub, path = observation.caller.sub, observation.path
    where = f"{path} run of {sub} ({observation.message})"
    payloads = tool_payloads(observation.messages)
    assert len(payloads) == 1, f"{where}: expected one tool result, got {len(payloads)}"
    (payload,) = payloads
    FIGURES["tool_results_checked"] += 1
    assert payload["as_user"] == sub, f"{where}: the tool acted as {payload['as_user']!r}"
    assert AS_USER.search(observation.answer) and \
        AS_USER.search(observation.answer).group(1) == sub, f"{where}: answer names another user"
    if observation.message == "whoami":
        assert payload["sub"] == sub
        assert payload["token_sha256"] == sha256(observation.token), \
            f"{where}: the MCP server received another token than the caller's"
        assert TOKEN_SHA.search(observation.answer).group(1) == sha256(observation.token)
    else:
        ids = set()
        for ticket in payload["tickets"]:
            ids.add(ticket["id"])
            assert ticket["owner"] == sub or sub in ticket["shared_with"], \
                f"{where}: saw {ticket['id']} of {ticket['owner']}"
        assert SEEDED_PRIVATE.get(sub, set()) <= ids, f"{where}: own tickets missing"
        for owner, private in SEEDED_PRIVATE.items():
            if owner != sub:
                assert not private & ids, f"{where}: saw {owner}'s private tickets"


async def run_round(
    server: LangGraphServer, redis_url: str, callers: list[Caller], round_no: int
) -> list[Observation]:
    jobs: list[Awaitable[Observation]] = []
    for i, caller in enumerate(callers):
        token = caller.tokens[round_no - 1]
        message = "whoami" if (i + round_no) % 2 else "list_tickets"
        jobs.append(via_sdk(server, caller, token, message, record=round_no == 1))
        if i % 5 == 0:
            jobs.append(in_process(caller, token, message))
        elif i % 5 == 1:
            # a worker is its own process with its own event loop: give it one, so that the
            # in-process agents' CPU on this loop cannot starve its Redis connect (2 s bound)
            worker = via_worker(server, redis_url, caller, token, message)
            jobs.append(asyncio.to_thread(asyncio.run, worker))
    return await asyncio.gather(*jobs)


async def test_every_tool_result_belongs_to_its_caller_under_load(
    langgraph_server: LangGraphServer, redis_url: str, in_process_servers: None,
) -> None:
    callers = make_callers()
    observations: list[Observation] = []
    for round_no in (1, 2):
        observations += await run_round(langgraph_server, redis_url, callers, round_no)
    paths = {o.path for o in observations}
    assert paths == {"sdk", "in-process", "worker"}
    assert len(observations) >= 140
    FIGURES["load_users"] = USERS
    FIGURES["load_runs"] += len(observations)
    for path in sorted(paths):
        FIGURES[f"load_runs_{path}"] += sum(o.path == path for o in observations)
    for observation in observations:
        check(observation)
    # Across all runs: a user's results only ever carry fingerprints of that user's tokens.
    seen: dict[str, set[str]] = {}
    for o in observations:
        for payload in tool_payloads(o.messages):
            if "token_sha256" in payload:
                seen.setdefault(o.caller.sub, set()).add(payload["token_sha256"])
    for caller in callers:
        assert seen.get(caller.sub, set()) <= {sha256(t) for t in caller.tokens}, caller.sub
    assert sum(len(v) for v in seen.values()) >= USERS


# --- cross-access ------------------------------------------------------------------------


async def _status(call: Callable[[], Awaitable[Any]]) -> int | Any:
    """The HTTP status of a refused call, or the result of one that was not refused."""
    try:
        return await call()
    except httpx.HTTPStatusError as exc:
        return exc.response.status_code


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [part async for part in stream]


@dataclass
class Victim:
    caller: Caller
    token: str
    thread_id: str
    run_id: str
    cron_id: str | None


async def _prepare_victim(server: LangGraphServer, caller: Caller, with_cron: bool) -> Victim:
    token = caller.tokens[-1]
    client = client_for(server.url, token)
    thread = await client.threads.create(metadata={"diary": f"private to {caller.sub}"})
    tid = thread["thread_id"]
    run = await client.runs.create(tid, "thread_title", input=say(f"notes of {caller.sub}"))
    await client.runs.join(tid, run["run_id"])
    await client.store.put_item((caller.sub, "notes"), "k", {"secret": caller.sub})
    cron_id = None
    if with_cron:
        cron = await client.crons.create_for_thread(tid, "thread_title",
                                                    schedule="0 0 1 1 *", input=say("x"))
        cron_id = cron["cron_id"]
    return Victim(caller, token, tid, run["run_id"], cron_id)


async def _attack(server: LangGraphServer, attacker: Caller, victim: Victim) -> int:
    """Everything the attacker may try on the victim's things; returns attempts made."""
    me = client_for(server.url, attacker.tokens[-1])
    tid, rid, ns = victim.thread_id, victim.run_id, (victim.caller.sub, "notes")
    not_found: dict[str, Callable[[], Awaitable[Any]]] = {
        "threads.get": lambda: me.threads.get(tid),
        "threads.get_state": lambda: me.threads.get_state(tid),
        "threads.get_history": lambda: me.threads.get_history(tid),
        "threads.update": lambda: me.threads.update(tid, metadata={"diary": "mine now"}),
        "threads.update_state": lambda: me.threads.update_state(tid, {"messages": []}),
        "threads.copy": lambda: me.threads.copy(tid),
        "threads.delete": lambda: me.threads.delete(tid),
        "runs.list": lambda: me.runs.list(tid),
        "runs.get": lambda: me.runs.get(tid, rid),
        "runs.join": lambda: me.runs.join(tid, rid),
        "runs.cancel": lambda: me.runs.cancel(tid, rid),
        "runs.delete": lambda: me.runs.delete(tid, rid),
        "runs.create": lambda: me.runs.create(tid, "assistant", input=say("whoami")),
        "runs.wait": lambda: me.runs.wait(tid, "assistant", input=say("list_tickets")),
        "runs.stream (new run)": lambda: _collect(
            me.runs.stream(tid, "assistant", input=say("whoami"), stream_mode="values")),
        "crons.create_for_thread": lambda: me.crons.create_for_thread(
            tid, "assistant", schedule="0 0 1 1 *", input=say("whoami")),
    }
    if victim.cron_id:
        not_found["crons.delete"] = lambda: me.crons.delete(victim.cron_id)
    forbidden: dict[str, Callable[[], Awaitable[Any]]] = {
        "store.get_item": lambda: me.store.get_item(ns, "k"),
        "store.put_item": lambda: me.store.put_item(ns, "k", {"secret": "overwritten"}),
        "store.search_items": lambda: me.store.search_items((victim.caller.sub,)),
        "store.delete_item": lambda: me.store.delete_item(ns, "k"),
        "store.list_namespaces": lambda: me.store.list_namespaces(prefix=[victim.caller.sub]),
    }
    who = f"{attacker.sub} on {victim.caller.sub}'s"
    for name, call in not_found.items():
        assert await _status(call) == 404, f"{who} {name}"
    for name, call in forbidden.items():
        assert await _status(call) == 403, f"{who} {name}"
    # Joining the victim's run stream answers 404 like everything else.
    assert await _status(lambda: _collect(me.runs.join_stream(tid, rid))) == 404, (
        f"{who} runs.join_stream"
    )
    # Searches show none of the victim's things, whatever the filter says.
    for found in (await me.threads.search(limit=1000),
                  await me.threads.search(metadata={"owner": victim.caller.sub}, limit=1000),
                  await me.threads.search(metadata={"diary": f"private to {victim.caller.sub}"})):
        assert tid not in {t["thread_id"] for t in found}, f"{who} thread in threads.search"
        assert all(t["metadata"].get("owner") == attacker.sub for t in found), who
    crons = await me.crons.search(limit=1000)
    assert all(c.get("thread_id") != tid for c in crons), f"{who} cron in crons.search"
    attempts = len(not_found) + len(forbidden) + 5
    FIGURES["cross_access_attempts"] += attempts
    return attempts


async def test_nobody_reaches_anothers_threads_runs_crons_or_store(
    langgraph_server: LangGraphServer,
) -> None:
    callers = make_callers()
    victims = await asyncio.gather(*[
        _prepare_victim(langgraph_server, c, with_cron=i % 10 == 0)
        for i, c in enumerate(callers)
    ])
    limit = asyncio.Semaphore(10)

    async def attack(i: int) -> int:
        async with limit:
            return await _attack(langgraph_server, callers[(i + 1) % USERS], victims[i])

    attempts = await asyncio.gather(*[attack(i) for i in range(USERS)])
    assert sum(attempts) >= USERS * 20
    # Positive control, and proof that nothing was changed: every victim still has it all.
    for victim in victims:
        owner = client_for(langgraph_server.url, victim.token)
        thread = await owner.threads.get(victim.thread_id)
        assert thread["metadata"]["diary"] == f"private to {victim.caller.sub}"
        assert (await owner.runs.get(victim.thread_id, victim.run_id))["status"] == "success"
        item = await owner.store.get_item((victim.caller.sub, "notes"), "k")
        assert item["value"] == {"secret": victim.caller.sub}
        if victim.cron_id:
            mine = await owner.crons.search(thread_id=victim.thread_id)
            assert victim.cron_id in {c["cron_id"] for c in mine}
            await owner.crons.delete(victim.cron_id)


async def test_forged_owner_metadata_changes_nothing(langgraph_server: LangGraphServer) -> None:
    """`owner` is stamped by the server: a client cannot give its thread to someone else."""
    alice = client_for(langgraph_server.url, mint("alice"))
    mallory = client_for(langgraph_server.url, mint("mallory"))
    forged = await mallory.threads.create(metadata={"owner": "alice", "tag": "forged"})
    assert forged["metadata"]["owner"] == "mallory"
    own = await mallory.threads.create()
    updated = await mallory.threads.update(own["thread_id"], metadata={"owner": "alice"})
    assert updated["metadata"]["owner"] == "mallory"
    assert await _status(lambda: alice.threads.get(forged["thread_id"])) == 404
    assert await _status(lambda: alice.threads.get(own["thread_id"])) == 404
    assert forged["thread_id"] not in {t["thread_id"] for t in await alice.threads.search(
        metadata={"tag": "forged"})}


async def test_streaming_someone_elses_run_answers_404(
    langgraph_server: LangGraphServer,
) -> None:
    """DESIGN.md §7: someone else's run answers 404 — the stream endpoints included.

    langgraph-api answers these GETs with 200 and an SSE `error` event carrying
    "404: Thread not found"; no data is revealed (a random id gets the same), but
    the status says the request succeeded.
    """
    alice = client_for(langgraph_server.url, mint("alice"))
    thread = await alice.threads.create()
    run = await alice.runs.create(thread["thread_id"], "thread_title", input=say("hello"))
    await alice.runs.join(thread["thread_id"], run["run_id"])
    paths = [f"/threads/{thread['thread_id']}/runs/{run['run_id']}/stream",
             f"/threads/{thread['thread_id']}/stream"]
    async with httpx.AsyncClient(base_url=langgraph_server.url, timeout=30) as http:
        own = await http.get(paths[0], headers={"Authorization": f"Bearer {mint('alice')}"})
        assert own.status_code == 200  # positive control: the owner may join
        for path in paths:
            response = await http.get(path, headers={"Authorization": f"Bearer {mint('bob')}"})
            assert response.status_code == 404, (path, response.status_code, response.text[:200])
