"""Connected accounts (DESIGN.md §8) end to end: a real `langgraph dev`, a real AS and RS.

The graph runs in `langgraph dev` with an `oauth` server in its servers file; the
authorization server and the MCP resource server are real HTTP servers
(tests/support/oauth_provider.py) that `langgraph dev` reaches over loopback; the
connection is made by the same steps a person takes: the run pauses with a link,
the person consents at the AS, the AS redirects to onbehalf's callback, and the
person, signed in, confirms. The SDK tests take those steps with httpx; the
browser test takes them in headless Chromium, through the dev console.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.support.aegra_server import ENGINES, AegraServer, picked_up, run_engine
from tests.support.langgraph_server import LangGraphServer
from tests.support.leaks import find_leaks
from tests.support.oauth_provider import OAuthWorld, oauth_world
from tests.support.pg_scan import scan_postgres
from tests.support.threads import ask, bearer, last_text, pause_of, printed_link
from tests.support.tokens import free_port, mint, subprocess_env

pytestmark = [pytest.mark.e2e]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONNECT = "connect_account server=notes"
PROCESS_TIMEOUT = 90


class Secrets:
    """Every one-time value the flows produced, to scan the server's log and files for.

    `state` is kept apart: it is in the connect link, and the link is in the run's
    interrupt, which the thread's checkpoint keeps so that any client can show the
    pending link later. It grants nothing alone: the code it brings back is only
    exchanged for the JWT identity that started the flow (docs/connected-accounts.md).
    """

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.states: set[str] = set()

    def add_link(self, url: str, *names: str) -> None:
        query = parse_qs(urlsplit(url).query)
        for name in names:
            (self.states if name == "state" else self.values).update(query.get(name, []))


@pytest.fixture(scope="module")
def world() -> Iterator[OAuthWorld]:
    with oauth_world() as running:
        yield running


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="module")
def settings(world: OAuthWorld, redis_url: str) -> dict[str, str]:
    """What the server and the `onbehalf` commands share: servers file, store, public URL."""
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "description": "Your notes"},
             "timeout_seconds": 10}
    port = free_port()
    return {
        "MCP_SERVERS": json.dumps({"servers": {"notes": entry}}),
        "REDIS_URL": redis_url,
        "OAUTH_KEY_PREFIX": f"e2e-oauth-{uuid.uuid4().hex[:8]}:",
        "ONBEHALF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LANGGRAPH_URL": f"http://127.0.0.1:{port}",
    }


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, world: OAuthWorld, settings: dict[str, str],
           secrets: Secrets) -> Iterator[LangGraphServer | AegraServer]:
    """`langgraph dev`, or Aegra with both processes executing runs (so that concurrent runs
    spread over two processes); flows start through one process and are confirmed through
    the other (`confirm`)."""
    port = int(settings["ONBEHALF_PUBLIC_URL"].rsplit(":", 1)[1])
    env = {**settings, "ONBEHALF_DEV_CONSOLE": "1"}
    extra: dict[str, Any] = {}
    if request.param == "aegra":
        extra = {"postgres": request.getfixturevalue("private_postgres"),
                 "queue_redis_url": request.getfixturevalue("engine_queue_redis"),
                 "api_workers": 1}
    with run_engine(request.param, env, port=port, **extra) as running:
        yield running
        # after every test of the module: nothing the flows produced is in the log or files
        found = {s for s in world.seen_secrets | secrets.values if len(s) >= 12}
        if world.count("token_code"):  # a connection was made: codes, tokens, confirm secrets
            assert len(found) >= 6, "the scan has nothing to look for: it would prove nothing"
        log = running.log_text()
        assert not [s for s in found | secrets.states if s in log], "an OAuth secret is logged"
        for path in running.written_files():
            data = path.read_bytes()
            assert not [s for s in found if s.encode() in data], f"an OAuth secret is in {path}"
            assert not find_leaks(data, [mint("alice"), mint("bob")])
        if isinstance(running, AegraServer):  # every table of its Postgres, with SQL
            # (`state` is in the interrupt's connect link, kept with the checkpoint: Secrets)
            tables, _, findings = scan_postgres(running.engine.database_url,
                                                sorted(found))
            assert tables >= 5 and findings == []


@pytest.fixture
async def alice(server: LangGraphServer) -> AsyncIterator[LangGraphClient]:
    client = client_as(server, "alice")
    yield client
    await disconnect(server, "alice")
    await client.aclose()


def client_as(server: LangGraphServer, user: str) -> LangGraphClient:
    return get_client(url=server.url, api_key=None,
                      headers={"Authorization": f"Bearer {mint(user)}"})


async def disconnect(server: LangGraphServer, user: str) -> None:
    await asyncio.to_thread(disconnect_now, server, user)


def disconnect_now(server: LangGraphServer, user: str) -> None:
    answer = httpx.delete(f"{server.url}/connections/notes", headers=bearer(user), timeout=10)
    assert answer.status_code == 200, answer.text


async def status(server: LangGraphServer, user: str) -> str:
    return await asyncio.to_thread(status_now, server, user)


def status_now(server: LangGraphServer, user: str) -> str:
    answer = httpx.get(f"{server.url}/connections", headers=bearer(user), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    (entry,) = answer.json()["connections"]
    assert entry["server"] == "notes"
    return str(entry["status"])


async def consent_and_callback(world: OAuthWorld, server: LangGraphServer, link: str,
                               account: str, secrets: Secrets) -> tuple[str, str]:
    """Consent at the AS as `account`; the browser's stop at onbehalf's callback."""
    location = await asyncio.to_thread(world.approve_url, link, account)
    assert location.startswith(f"{server.url}/oauth/callback?"), location
    secrets.add_link(location, "code", "state")
    async with httpx.AsyncClient(timeout=10) as http:
        landed = await http.get(location)
    assert landed.status_code == 303, landed.text
    assert landed.headers["referrer-policy"] == "no-referrer"
    target = landed.headers["location"]
    assert target.startswith(f"{server.url}/console?"), target
    secrets.add_link(target, "confirm")
    query = parse_qs(urlsplit(target).query)
    return query["flow"][0], query["confirm"][0]


async def confirm(server: Any, flow: str, secret: str, user: str) -> httpx.Response:
    """The confirm step; on Aegra through the process that did not start the flow."""
    async with httpx.AsyncClient(base_url=getattr(server, "other_url", server.url),
                                 timeout=20) as http:
        return await http.post(f"/oauth/flows/{flow}/confirm", json={"confirm": secret},
                               headers=bearer(user))


@pytest.mark.anyio
async def test_sdk_run_pauses_connects_resumes_and_acts_as_the_user(
    server: LangGraphServer, world: OAuthWorld, alice: LangGraphClient, secrets: Secrets
) -> None:
    assert await status(server, "alice") == "not_connected"
    thread = await alice.threads.create()
    pause = pause_of(await ask(alice, thread["thread_id"], CONNECT))
    assert pause["type"] == "connect_account" and pause["server"] == "notes"
    assert pause["connect_url"].startswith(f"{world.as_url}/authorize?")
    assert "Your notes" in pause["message"] and pause["connect_url"] in pause["message"]
    secrets.add_link(pause["connect_url"], "state")

    flow, secret = await consent_and_callback(world, server, pause["connect_url"], "alice",
                                              secrets)
    answer = await confirm(server, flow, secret, "alice")
    assert answer.status_code == 200, answer.text
    assert await status(server, "alice") == "connected"

    state = await ask(alice, thread["thread_id"], "", resume={"connected": "notes"})
    assert not state.get("tasks"), state
    assert "connected" in last_text(state)
    # the link is for the person: no message, hence no model, ever reads it
    assert pause["connect_url"] not in json.dumps(state["values"])
    state = await ask(alice, thread["thread_id"], "whoami")
    assert last_text(state) == "whoami returned: alice"
    state = await ask(alice, thread["thread_id"], "list_notes")
    assert "alice-note-1" in last_text(state) and "bob" not in last_text(state)

    # bob, on the same server and the same servers file, has no account connected
    bob = client_as(server, "bob")
    try:
        other = await bob.threads.create()
        state = await ask(bob, other["thread_id"], "whoami")
        assert "alice" not in json.dumps(state["values"])
        assert await status(server, "bob") == "not_connected"
    finally:
        await bob.aclose()

    await disconnect(server, "alice")
    assert await status(server, "alice") == "not_connected"
    assert world.live_grants("alice") == 0, "DELETE /connections did not revoke at the AS"


async def connect_through(server: LangGraphServer, world: OAuthWorld, secrets: Secrets,
                          pause: dict[str, Any], user: str) -> None:
    """The person's part: consent at the AS as themself, then confirm signed in."""
    secrets.add_link(pause["connect_url"], "state")
    flow, secret = await consent_and_callback(world, server, pause["connect_url"], user, secrets)
    answer = await confirm(server, flow, secret, user)
    assert answer.status_code == 200, answer.text


@pytest.mark.anyio
async def test_ten_concurrent_runs_refresh_once_and_a_revoked_grant_reconnects(
    server: LangGraphServer, world: OAuthWorld, alice: LangGraphClient, secrets: Secrets
) -> None:
    thread = await alice.threads.create()
    await connect_through(server, world, secrets,
                          pause_of(await ask(alice, thread["thread_id"], CONNECT)), "alice")
    await ask(alice, thread["thread_id"], "", resume={"connected": "notes"})

    world.expire_access_tokens("alice")  # the RS now answers 401 to alice's access token
    before = world.count("token_refresh")

    async def one_run() -> str:
        own = await alice.threads.create()
        return last_text(await ask(alice, own["thread_id"], "whoami"))

    picked = [picked_up(server, kind) for kind in ("api", "worker")] if isinstance(
        server, AegraServer) else []
    answers = await asyncio.gather(*(one_run() for _ in range(10)))
    assert answers == ["whoami returned: alice"] * 10
    assert world.count("token_refresh") - before == 1, "one refresh for ten concurrent runs"
    if picked:  # on Aegra the ten runs were executed by both processes
        now = [picked_up(server, kind) for kind in ("api", "worker")]
        assert all(after > earlier for after, earlier in zip(now, picked, strict=True)), now
    assert world.count("refresh_reuse") == 0, "a rotated refresh token was spent twice"

    world.revoke_account("alice")  # alice removes the app at the provider
    state = await ask(alice, thread["thread_id"], "whoami")
    pause = pause_of(state)
    assert pause["type"] == "reconnect_account" and pause["server"] == "notes"
    assert await status(server, "alice") == "needs_reconnect"
    await connect_through(server, world, secrets, pause, "alice")
    state = await ask(alice, thread["thread_id"], "", resume={"connected": "notes"})
    assert not state.get("tasks") and last_text(state) == "whoami returned: alice"


async def bobs_flow_at_the_callback(server: Any, world: OAuthWorld, secrets: Secrets,
                                    consenting: str) -> tuple[str, str, str]:
    """Bob's run pauses to connect; `consenting` consents at the AS; the browser lands on
    onbehalf's callback. Bob's thread, and the flow and secret the confirm step needs."""
    bob = client_as(server, "bob")
    try:
        thread = await bob.threads.create()
        pause = pause_of(await ask(bob, thread["thread_id"], CONNECT))
    finally:
        await bob.aclose()
    secrets.add_link(pause["connect_url"], "state")
    flow, secret = await consent_and_callback(world, server, pause["connect_url"], consenting,
                                              secrets)
    return thread["thread_id"], flow, secret


@pytest.mark.anyio
async def test_a_forwarded_link_connects_nobody(
    server: LangGraphServer, world: OAuthWorld, secrets: Secrets
) -> None:
    """Bob starts a flow and gets alice to consent: her account must not become bob's."""
    _, flow, secret = await bobs_flow_at_the_callback(server, world, secrets, "alice")
    refused = await confirm(server, flow, secret, "alice")  # alice's browser, signed in as alice
    assert refused.status_code == 403, refused.text
    assert "another user" in refused.json()["detail"]
    again = await confirm(server, flow, secret, "bob")  # the code burned on the refusal
    assert again.status_code == 404, again.text
    assert await status(server, "bob") == "not_connected"
    assert await status(server, "alice") == "not_connected"


@pytest.mark.anyio
async def test_worker_run_exits_5_with_the_connect_link(
    server: LangGraphServer, redis_url: str, secrets: Secrets
) -> None:
    execution = f"bob-{uuid.uuid4().hex[:10]}"
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_URL=server.url)
    with anyio.fail_after(PROCESS_TIMEOUT):
        put = await anyio.run_process(
            [sys.executable, "-m", "onbehalf", "handoff", "put", execution],
            input=mint("bob").encode(), env=env, check=False)
        assert put.returncode == 0, put.stderr
        run = await anyio.run_process(
            [sys.executable, "-m", "onbehalf", "worker", "run", "--execution-id", execution,
             "--graph", "assistant", CONNECT], env=env, check=False)
    stdout, stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 5, (run.returncode, stderr)
    events = [json.loads(line) for line in stdout.splitlines()]
    (pause,) = [e for e in events if e.get("event") == "interrupt"]
    assert events[-1]["event"] == "done" and events[-1]["thread_id"], events[-1]  # to resume
    secrets.add_link(json.dumps(pause), "state")
    assert "connect_account" in json.dumps(pause) and "/authorize?" in json.dumps(pause)
    assert stderr.startswith("onbehalf: the run paused") and "Traceback" not in stderr


@pytest.mark.anyio
async def test_chat_prints_the_link_waits_for_the_connection_and_resumes(
    server: LangGraphServer, world: OAuthWorld, settings: dict[str, str], secrets: Secrets
) -> None:
    env = subprocess_env(**settings)
    with anyio.fail_after(PROCESS_TIMEOUT):
        async with await anyio.open_process(
            [sys.executable, "-m", "onbehalf", "chat", "--as", "alice", CONNECT], env=env,
        ) as chat:
            assert chat.stdout is not None and chat.stderr is not None
            link = await printed_link(chat.stdout, f"{world.as_url}/authorize?")
            secrets.add_link(link, "state")
            flow, secret = await consent_and_callback(world, server, link, "alice", secrets)
            assert (await confirm(server, flow, secret, "alice")).status_code == 200
            rest = b"".join([chunk async for chunk in chat.stdout]).decode()
            errors = b"".join([chunk async for chunk in chat.stderr]).decode()
            assert await chat.wait() == 0, errors
    assert "connected" in rest, rest
    assert "waiting for 'notes' to be connected" in errors and "Traceback" not in errors

    def onbehalf(*args: str) -> Any:
        return anyio.run_process([sys.executable, "-m", "onbehalf", "connections", *args],
                                 env=env, check=False)

    listed = await onbehalf("list", "--as", "alice")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["connections"]
    assert entry["status"] == "connected" and "access_token" not in listed.stdout.decode()
    dropped = await onbehalf("delete", "--as", "alice", "notes")
    assert dropped.returncode == 0, dropped.stderr
    assert await status(server, "alice") == "not_connected"
    assert world.live_grants("alice") == 0
    unknown = await onbehalf("delete", "--as", "alice", "nope")
    assert unknown.returncode != 0 and b"nope" in unknown.stderr
    assert b"Traceback" not in unknown.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="browser tests did not run: no chromium on PATH "
                    "(apt-get install -y chromium)")
def test_console_connects_an_account_in_a_real_browser(
    server: LangGraphServer, world: OAuthWorld, secrets: Secrets
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="browser tests did not run: no playwright")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            _connect_in_browser(browser, server, world, secrets)
        finally:
            browser.close()
            disconnect_now(server, "alice")


def _sign_in(page: Any, user: str) -> None:
    page.check(f"input[name=user][value={user}]")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")


def _connect_in_browser(browser: Any, server: LangGraphServer, world: OAuthWorld,
                        secrets: Secrets) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/console")
    _sign_in(page, "alice")
    page.fill("#message", CONNECT)
    page.press("#message", "Enter")
    link = page.wait_for_selector("li.interrupt a:has-text('Connect')", timeout=60000)
    href = link.get_attribute("href") or ""
    assert href.startswith(f"{world.as_url}/authorize?"), href
    secrets.add_link(href, "state")

    with context.expect_page() as opened:
        link.click()
    consent = opened.value  # a new tab, as a person gets it (target=_blank, noopener)
    consent.wait_for_selector("#account")
    consent.fill("#account", "alice")
    consent.click("#allow")
    # AS -> onbehalf's callback -> the console's confirm step; a new tab signs in first
    consent.wait_for_url(f"{server.url}/console**")
    consent.check("input[name=user][value=alice]")  # the new tab signs in first
    consent.click("#signin-form button[type=submit]")
    consent.get_by_role("button", name="Confirm").click()  # says what it connects, then asks
    consent.wait_for_selector("#notice:has-text('Account connected')", timeout=30000)
    assert "confirm=" not in consent.url, "the one-time secret stayed in the address bar"
    assert status_now(server, "alice") == "connected"

    page.bring_to_front()
    page.click("li.interrupt button:has-text('Resume')")
    page.wait_for_selector("li.ai:has-text('connected')", timeout=60000)
    page.wait_for_selector("#send button:enabled", timeout=60000)  # the resumed run is done
    page.fill("#message", "whoami")
    page.press("#message", "Enter")
    page.wait_for_selector("li.ai:has-text('whoami returned: alice')", timeout=60000)
    assert errors == [], errors
    context.close()


@pytest.mark.anyio
async def test_the_process_that_started_a_flow_stops_before_the_confirm(
    server: Any, world: OAuthWorld, secrets: Secrets
) -> None:
    """Aegra: bob's flow starts through the API process, which holds the code at the
    callback and then stops; the confirm and the resume go through the other process."""
    if not isinstance(server, AegraServer):
        pytest.skip("langgraph dev is one process: there is no other to confirm through")
    thread_id, flow, secret = await bobs_flow_at_the_callback(server, world, secrets, "bob")
    server.stop_one("api")
    try:
        answer = await confirm(server, flow, secret, "bob")  # through the other process
        assert answer.status_code == 200, answer.text
        other = get_client(url=server.other_url, api_key=None, headers=bearer("bob"))
        try:
            state = await ask(other, thread_id, "", resume={"connected": "notes"})
            assert not state.get("tasks") and "connected" in last_text(state)
            state = await ask(other, thread_id, "whoami")
            assert last_text(state) == "whoami returned: bob"
        finally:
            await other.aclose()
        async with httpx.AsyncClient(base_url=server.other_url, headers=bearer("bob"),
                                     timeout=10) as http:
            assert (await http.delete("/connections/notes")).status_code == 200
    finally:
        server.start_one("api")
