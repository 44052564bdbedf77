"""Step-up (DESIGN.md §8.1) end to end: a real `langgraph dev`, a real AS and RS.

The notes server's `add_note` needs `notes:write`, which a first connection does not
grant: the RS answers 403 `insufficient_scope` naming the scopes it needs, before the
tool runs. The run pauses with `grant_scopes` (the union of what alice granted and what
the server asks for) and the §8 flow's link; alice consents, confirms, resumes, and the
call runs once (the server counts executions). The AS identifies onbehalf by its Client
ID Metadata Document, as `make dev`'s does.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.oauth_provider import OAuthWorld, oauth_world
from tests.support.threads import ask, bearer, last_text, pause_of, printed_link, worker_run
from tests.support.tokens import free_port, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def world() -> Iterator[OAuthWorld]:
    with oauth_world(client_id_metadata_documents=True) as running:
        yield running


@pytest.fixture(scope="module")
def settings(world: OAuthWorld, redis_url: str) -> dict[str, str]:
    port = free_port()
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "scopes": ["notes"]},
             "timeout_seconds": 10}
    return {"MCP_SERVERS": json.dumps({"servers": {"notes": entry}}), "REDIS_URL": redis_url,
            "OAUTH_KEY_PREFIX": f"e2e-stepup-{uuid.uuid4().hex[:8]}:",
            "ONBEHALF_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LANGGRAPH_URL": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def server(settings: dict[str, str]) -> Iterator[LangGraphServer]:
    port = int(settings["ONBEHALF_PUBLIC_URL"].rsplit(":", 1)[1])
    with run_langgraph_dev({**settings, "ONBEHALF_DEV_CONSOLE": "1"}, port=port) as running:
        yield running


@pytest.fixture
async def alice(server: LangGraphServer) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=server.url, api_key=None, headers=bearer("alice"))
    yield client
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("alice")) as http:
        await http.delete("/connections/notes")
    await client.aclose()


async def grant(server: LangGraphServer, world: OAuthWorld, link: str, user: str) -> None:
    """The person: consent at the AS, land on onbehalf's callback, confirm signed in."""
    location = await anyio.to_thread.run_sync(world.approve_url, link, user)
    async with httpx.AsyncClient(timeout=10) as http:
        landed = await http.get(location)
        assert landed.status_code == 303, landed.text
        query = parse_qs(urlsplit(landed.headers["location"]).query)
        done = await http.post(f"{server.url}/oauth/flows/{query['flow'][0]}/confirm",
                               json={"confirm": query["confirm"][0]}, headers=bearer(user))
        assert done.status_code == 200, done.text


async def test_a_tool_needing_more_scope_pauses_for_the_grant_and_runs_once(
    server: LangGraphServer, world: OAuthWorld, alice: LangGraphClient
) -> None:
    thread = (await alice.threads.create())["thread_id"]
    connect = pause_of(await ask(alice, thread, "connect_account server=notes"))
    await grant(server, world, connect["connect_url"], "alice")
    await ask(alice, thread, resume={"connected": "notes"})

    before = world.count("add_note_executed")
    pause = pause_of(await ask(alice, thread, "add_note text=hello"))
    assert pause["type"] == "grant_scopes" and pause["server"] == "notes"
    assert pause["scopes"] == ["notes", "notes:write"], pause
    assert "notes:write" in pause["message"] and pause["connect_url"] in pause["message"]
    assert "scope=notes+notes%3Awrite" in pause["connect_url"], pause["connect_url"]
    assert world.count("add_note_executed") == before, "the server ran the refused call"

    await grant(server, world, pause["connect_url"], "alice")
    state = await ask(alice, thread, resume={"connected": "notes"})
    assert not state.get("tasks"), state
    assert last_text(state) == "add_note returned: added: hello"
    assert world.count("add_note_executed") == before + 1, "one call, run exactly once"
    state = await ask(alice, thread, "list_notes")
    assert "hello" in last_text(state)


async def test_the_worker_exits_5_and_chat_waits_for_the_grant(
    server: LangGraphServer, world: OAuthWorld, alice: LangGraphClient,
    settings: dict[str, str],
) -> None:
    thread = (await alice.threads.create())["thread_id"]
    connect = pause_of(await ask(alice, thread, "connect_account server=notes"))
    await grant(server, world, connect["connect_url"], "alice")
    await ask(alice, thread, resume={"connected": "notes"})

    execution = f"alice-{uuid.uuid4().hex[:10]}"
    env = subprocess_env(**settings)
    run = await worker_run(env, "alice", execution, "add_note text=from-worker")
    assert run.returncode == 5, run.stderr.decode()
    assert '"grant_scopes"' in run.stdout.decode()

    before = world.count("add_note_executed")
    with anyio.fail_after(90):
        async with await anyio.open_process(
            [sys.executable, "-m", "onbehalf", "chat", "--as", "alice", "add_note text=chat"],
            env=env,
        ) as chat:
            assert chat.stdout is not None and chat.stderr is not None
            link = await printed_link(chat.stdout, f"{world.as_url}/authorize?")
            await grant(server, world, link, "alice")
            rest = b"".join([chunk async for chunk in chat.stdout]).decode()
            errors = b"".join([chunk async for chunk in chat.stderr]).decode()
            assert await chat.wait() == 0, errors
    assert "added: chat" in rest and "notes:write to be granted" in errors
    assert world.count("add_note_executed") == before + 1
