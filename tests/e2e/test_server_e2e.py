"""Through a real `langgraph dev` process: users, isolation, 401s, and no token at rest."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client

from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.leaks import find_leaks
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio

ALICE_ONLY = {"T-1001", "T-1003"}
BOB_ONLY = {"T-1004", "T-1005"}


def client_for(server: LangGraphServer, token: str) -> Any:
    return get_client(url=server.url, headers={"Authorization": f"Bearer {token}"})


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def answer(state: dict[str, Any]) -> str:
    return str(state["messages"][-1]["content"])


def assert_no_token(haystack: str | bytes, tokens: list[str], where: str) -> None:
    leaks = find_leaks(haystack, tokens)
    assert not leaks, f"token found in {where}: {leaks}"


async def test_alice_and_bob_each_get_their_own_tickets_concurrently(
    langgraph_server: LangGraphServer,
) -> None:
    async def run_as(user: str) -> str:
        client = client_for(langgraph_server, mint(user))
        thread = await client.threads.create()
        state = await client.runs.wait(thread["thread_id"], "assistant", input=say("list_tickets"))
        return answer(state)

    alice, bob = await asyncio.gather(run_as("alice"), run_as("bob"))
    assert 'as_user: alice' in alice and not any(t in alice for t in BOB_ONLY)
    assert 'as_user: bob' in bob and not any(t in bob for t in ALICE_ONLY)
    assert all(t in alice for t in ALICE_ONLY) and all(t in bob for t in BOB_ONLY)


async def test_remote_graph_runs_as_the_user_of_its_header(
    langgraph_server: LangGraphServer,
) -> None:
    token = mint("bob")
    remote = RemoteGraph(
        "assistant", url=langgraph_server.url, headers={"Authorization": f"Bearer {token}"}
    )
    thread = await client_for(langgraph_server, token).threads.create()
    state = await remote.ainvoke(
        say("whoami"), config={"configurable": {"thread_id": thread["thread_id"]}}
    )
    assert 'as_user: bob' in str(state["messages"][-1]["content"])


async def test_ticket_triage_and_thread_title_through_the_server(
    langgraph_server: LangGraphServer,
) -> None:
    client = client_for(langgraph_server, mint("carol"))
    thread = await client.threads.create()
    state = await client.runs.wait(
        thread["thread_id"], "ticket_triage", input=say("create_ticket title=x body=y")
    )
    assert not any(m.get("name") == "create_ticket" for m in state["messages"])
    titled = await client.runs.wait(
        None, "thread_title", input=say("Please list my open tickets about the VPN outage")
    )
    assert 0 < len(titled["title"]) <= 60


async def test_bob_gets_404_for_everything_of_alices(langgraph_server: LangGraphServer) -> None:
    alice = client_for(langgraph_server, mint("alice"))
    bob = client_for(langgraph_server, mint("bob"))
    thread = await alice.threads.create(metadata={"topic": "private"})
    tid = thread["thread_id"]
    run = await alice.runs.create(tid, "assistant", input=say("whoami"))
    await alice.runs.join(tid, run["run_id"])

    attempts = {
        "get": lambda: bob.threads.get(tid),
        "state": lambda: bob.threads.get_state(tid),
        "history": lambda: bob.threads.get_history(tid),
        "update": lambda: bob.threads.update(tid, metadata={"x": "y"}),
        "copy": lambda: bob.threads.copy(tid),
        "runs.list": lambda: bob.runs.list(tid),
        "runs.get": lambda: bob.runs.get(tid, run["run_id"]),
        "new run": lambda: bob.runs.wait(tid, "assistant", input=say("whoami")),
        "delete": lambda: bob.threads.delete(tid),
    }
    for name, attempt in attempts.items():
        with pytest.raises(httpx.HTTPStatusError) as info:
            await attempt()
        assert info.value.response.status_code == 404, name
    assert tid not in {t["thread_id"] for t in await bob.threads.search()}
    assert (await alice.threads.get(tid))["metadata"]["topic"] == "private"


async def test_everybody_reads_the_deployments_assistants(
    langgraph_server: LangGraphServer,
) -> None:
    found = await client_for(langgraph_server, mint("dave")).assistants.search()
    graphs = {a["graph_id"] for a in found}
    assert {"assistant", "ticket_triage", "thread_title"} <= graphs


async def test_store_namespaces_are_per_user(langgraph_server: LangGraphServer) -> None:
    alice = client_for(langgraph_server, mint("alice"))
    await alice.store.put_item(("alice", "notes"), "k", {"v": 1})
    assert (await alice.store.get_item(("alice", "notes"), "k"))["value"] == {"v": 1}
    with pytest.raises(httpx.HTTPStatusError) as info:
        await client_for(langgraph_server, mint("bob")).store.get_item(("alice", "notes"), "k")
    assert info.value.response.status_code == 403


@pytest.mark.parametrize(
    ("headers", "check"),
    [
        ({}, "authorization_header"),
        ({"Authorization": "Basic abc"}, "authorization_scheme"),
        ({"Authorization": "Bearer not.a.jwt"}, "malformed"),
        ({"Authorization": f"Bearer {mint('alice', ttl=-120)}"}, "exp"),
        ({"Authorization": f"Bearer {mint('alice', audience='other')}"}, "aud"),
        ({"x-auth-scheme": "langsmith"}, "authorization_header"),  # Studio bypass closed
    ],
)
async def test_bad_credentials_are_401_with_a_json_detail(
    langgraph_server: LangGraphServer, headers: dict[str, str], check: str
) -> None:
    async with httpx.AsyncClient(base_url=langgraph_server.url) as http:
        response = await http.post("/threads", json={}, headers=headers)
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert f"[check: {check}]" in detail
    bearer = headers.get("Authorization", "").removeprefix("Bearer ")
    if bearer.count(".") == 2:
        assert bearer not in detail


async def test_the_raw_jwt_appears_nowhere(tickets_mcp_server: TicketsMcpServer) -> None:
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url}}}
    tokens: list[str] = []
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}) as server:
        read_backs: list[Any] = []
        for user in ("alice", "bob"):
            token = mint(user)
            tokens.append(token)
            client = client_for(server, token)
            thread = await client.threads.create()
            tid = thread["thread_id"]
            await client.runs.wait(tid, "assistant", input=say("list_tickets"))
            run = await client.runs.create(tid, "assistant", input=say("whoami"))
            await client.runs.join(tid, run["run_id"])
            read_backs += [
                await client.runs.get(tid, run["run_id"]),
                await client.runs.list(tid),
                await client.threads.get(tid),
                await client.threads.get_state(tid),
                await client.threads.get_history(tid),
                await client.threads.search(),
            ]
        assert_no_token(json.dumps(read_backs, default=str), tokens, "API read-backs")
        server.stop()  # the inmem runtime writes .langgraph_api/ on shutdown
        files = server.written_files()
        assert files, "langgraph dev wrote no state files to scan"
        for path in files:
            assert_no_token(path.read_bytes(), tokens, str(path.name))
        assert_no_token(server.log_text(), tokens, "server log")


async def test_a_token_in_config_context_or_metadata_is_refused_before_it_is_stored(
    langgraph_server: LangGraphServer,
) -> None:
    token = mint("alice")
    client = client_for(langgraph_server, token)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    attempts = {
        "run config": lambda: client.runs.create(
            tid, "assistant", input=say("whoami"),
            config={"configurable": {"_user_token": token}},
        ),
        "run context": lambda: client.runs.create(
            tid, "assistant", input=say("whoami"), context={"user_token": token}
        ),
        "thread metadata": lambda: client.threads.update(tid, metadata={"jwt": token}),
        "new thread metadata": lambda: client.threads.create(metadata={"t": f"Bearer {token}"}),
    }
    for name, attempt in attempts.items():
        with pytest.raises(httpx.HTTPStatusError) as info:
            await attempt()
        assert info.value.response.status_code == 400, name
        assert "Authorization: Bearer" in info.value.response.json()["detail"], name
    assert await client.runs.list(tid) == []  # nothing was created or stored
    assert_no_token(json.dumps(await client.threads.get(tid), default=str), [token], "thread")
    ok = await client.runs.wait(tid, "assistant", input=say("whoami"),
                                metadata={"ticket": "T-1001"})  # ordinary metadata is fine
    assert "as_user: alice" in answer(ok)
