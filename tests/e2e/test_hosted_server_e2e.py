"""A hosted-style server that asks the user three ways, end to end for alice.

The demo notes server (its own OAuth AS, which knows onbehalf by its Client ID Metadata
Document, as `make dev`'s does) has `add_note` (step-up: it needs `notes:write`),
`share_note` (asks which notebook during the call: a form) and `link_calendar` (asks
for a visit to a page of its AS during the call: a URL). Through the SDK and in the
dev console in a real browser, alice connects notes and each call pauses, is answered
and runs exactly once: the server counts executions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.e2e import test_elicitation_e2e
from tests.e2e.test_step_up_e2e import grant
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.oauth_provider import OAuthWorld, oauth_world
from tests.support.threads import ask, bearer, last_text, pause_of
from tests.support.tokens import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TOOLS = ("add_note", "share_note", "link_calendar")

browser = test_elicitation_e2e.browser
"""Headless Chromium for the console (skipped without playwright or chromium)."""


@pytest.fixture(scope="module")
def world() -> Iterator[OAuthWorld]:
    with oauth_world(client_id_metadata_documents=True) as running:
        yield running


@pytest.fixture(scope="module")
def server(world: OAuthWorld, redis_url: str) -> Iterator[LangGraphServer]:
    port = free_port()
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "scopes": ["notes"]},
             "timeout_seconds": 10}
    settings = {"MCP_SERVERS": json.dumps({"servers": {"notes": entry}}),
                "REDIS_URL": redis_url, "OAUTH_KEY_PREFIX": f"e2e-hosted-{uuid.uuid4().hex[:8]}:",
                "ONBEHALF_PUBLIC_URL": f"http://127.0.0.1:{port}", "ONBEHALF_DEV_CONSOLE": "1"}
    with run_langgraph_dev(settings, port=port) as running:
        yield running


def disconnect(server: LangGraphServer, user: str) -> None:
    gone = httpx.delete(f"{server.url}/connections/notes", headers=bearer(user), timeout=30)
    assert gone.status_code in (200, 204, 404), gone.text


@pytest.fixture
def nobody_connected(server: LangGraphServer) -> Iterator[None]:
    for user in ("alice", "bob"):
        disconnect(server, user)
    yield
    for user in ("alice", "bob"):
        disconnect(server, user)


@pytest.fixture
async def alice(server: LangGraphServer, nobody_connected: None
                ) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=server.url, api_key=None, headers=bearer("alice"))
    yield client
    await client.aclose()


def executions(world: OAuthWorld) -> dict[str, int]:
    return {tool: world.count(f"{tool}_executed") for tool in TOOLS}


def one_more(before: dict[str, int], tool: str) -> dict[str, int]:
    return {**before, tool: before[tool] + 1}


async def connected_thread(client: LangGraphClient, server: LangGraphServer, world: OAuthWorld,
                           user: str) -> str:
    thread = (await client.threads.create())["thread_id"]
    connect = pause_of(await ask(client, thread, "connect_account server=notes"))
    assert connect["type"] == "connect_account" and connect["server"] == "notes", connect
    await grant(server, world, connect["connect_url"], user)
    await ask(client, thread, resume={"connected": "notes"})
    return thread


def answer(key: str, action: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"action": action}
    if content is not None:
        response["content"] = content
    return {"responses": {key: response}}


async def test_step_up_a_form_and_a_url_each_run_once_through_the_sdk(
    server: LangGraphServer, world: OAuthWorld, alice: LangGraphClient
) -> None:
    thread = await connected_thread(alice, server, world, "alice")
    before = executions(world)

    step_up = pause_of(await ask(alice, thread, "add_note text=sdk-plain"))
    assert step_up["type"] == "grant_scopes" and step_up["scopes"] == ["notes", "notes:write"]
    assert executions(world) == before, "403 insufficient_scope: nothing ran"
    await grant(server, world, step_up["connect_url"], "alice")
    state = await ask(alice, thread, resume={"connected": "notes"})
    assert last_text(state) == "add_note returned: added: sdk-plain"
    assert executions(world) == (before := one_more(before, "add_note"))

    form = pause_of(await ask(alice, thread, "share_note text=sdk-shared"))
    assert form["type"] == "mcp_elicitation", form
    assert form["server"] == "notes" and form["tool_name"] == "share_note", form
    (request,) = form["requests"]
    assert request["mode"] == "form" and "Which notebook" in request["message"], request
    assert request["requested_schema"]["properties"]["notebook"]["enum"] == ["work",
                                                                             "personal"]
    assert executions(world) == one_more(before, "share_note"), "the call waits for the answer"
    state = await ask(alice, thread, resume=answer(request["key"], "accept",
                                                   {"notebook": "personal"}))
    assert not state.get("tasks"), state
    assert last_text(state) == "share_note returned: shared 'sdk-shared' in personal"
    assert executions(world) == (before := one_more(before, "share_note"))

    link = pause_of(await ask(alice, thread, "link_calendar"))
    assert link["type"] == "mcp_elicitation" and link["tool_name"] == "link_calendar", link
    (request,) = link["requests"]
    assert request["mode"] == "url" and request["message"] == "Link your calendar to Notes"
    assert request["url"].startswith(f"{world.as_url}/calendar-consent?id="), request
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as person:  # the browser
        page = await person.get(request["url"])
        assert page.status_code == 200 and "alice" in page.text, page.text
        elicitation_id = request["url"].partition("id=")[2]
        allowed = await person.post(f"{world.as_url}/calendar-consent",
                                     data={"id": elicitation_id})
        assert allowed.status_code == 200 and "linked" in allowed.text, allowed.text
    state = await ask(alice, thread, resume=answer(request["key"], "accept"))
    assert last_text(state) == "link_calendar returned: calendar linked for alice"
    assert executions(world) == one_more(before, "link_calendar")

    state = await ask(alice, thread, "list_notes")
    assert "sdk-plain" in last_text(state) and "sdk-shared (personal)" in last_text(state)

    bob = get_client(url=server.url, api_key=None, headers=bearer("bob"))
    try:
        bobs = await connected_thread(bob, server, world, "bob")
        state = await ask(bob, bobs, "list_notes")
        assert "bob-note-1" in last_text(state), last_text(state)
        assert "alice" not in last_text(state) and "sdk-" not in last_text(state)
    finally:
        await bob.aclose()


# --- the dev console, in a real browser -----------------------------------------------


def consent_in_a_new_tab(w: Any, link: Any, server: LangGraphServer) -> None:
    """The person follows the link: consent at the AS, sign in to the confirm page, Confirm."""
    from tests.e2e.test_console import choose_and_sign_in, expect

    with w.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.fill("#account", "alice")
    tab.click("#allow")
    tab.wait_for_url(f"{server.url}/console**")
    choose_and_sign_in(tab, "alice")
    tab.get_by_role("button", name="Confirm").click()
    expect(tab.get_by_role("alert")).to_contain_text("press Resume", timeout=30_000)
    tab.close()
    w.page.bring_to_front()
    w.page.get_by_role("button", name="Resume").click()


def ran_once(w: Any, world: OAuthWorld, before: dict[str, int], tool: str, said: str
             ) -> dict[str, int]:
    """The run is over: the answer and the tool's card (naming `notes`) show, and the server
    ran `tool` once more and nothing else; the counts now."""
    from tests.e2e.test_console import RUN_SECONDS, expect, head

    expect(w.page.locator("li.ai", has_text=said)).to_be_visible(timeout=RUN_SECONDS)
    expect(w.card(tool).locator(".head")).to_have_text(
        head(f"notes / {tool} / ok"), timeout=RUN_SECONDS, use_inner_text=True)
    w.wait_idle()
    assert executions(world) == one_more(before, tool)
    return executions(world)


def test_the_console_connects_grants_answers_the_form_and_visits_the_url(
    server: LangGraphServer, world: OAuthWorld, browser: Any, nobody_connected: None
) -> None:
    from tests.e2e.test_console import RUN_SECONDS, Watched, expect

    w = Watched(browser, server.url)
    w.sign_in("alice")
    w.ask("connect_account server=notes")
    consent_in_a_new_tab(w, w.page.locator("li.interrupt a", has_text="Connect"), server)
    expect(w.page.locator("li.ai", has_text="connected")).to_be_visible(timeout=RUN_SECONDS)
    w.wait_idle()
    before = executions(world)

    w.ask("add_note text=console-plain")
    allow = w.page.locator("li.interrupt a", has_text="Allow")
    expect(allow).to_be_visible(timeout=RUN_SECONDS)
    expect(w.page.locator("li.interrupt")).to_contain_text("notes:write")
    assert executions(world) == before
    consent_in_a_new_tab(w, allow, server)
    before = ran_once(w, world, before, "add_note", "added: console-plain")

    w.ask("share_note text=console-shared")
    form = w.page.locator("li.interrupt form.elicitation")
    expect(form).to_be_visible(timeout=RUN_SECONDS)
    expect(form).to_contain_text("MCP server notes asks, for share_note:")
    expect(form.locator("legend")).to_contain_text("Which notebook")
    form.get_by_label("Notebook").select_option("work")
    form.get_by_role("button", name="Send").click()
    before = ran_once(w, world, before, "share_note", "shared 'console-shared' in work")

    w.ask("link_calendar")
    link = w.page.locator("li.interrupt form.elicitation a")
    expect(link).to_be_visible(timeout=RUN_SECONDS)
    url = link.get_attribute("href") or ""
    assert url.startswith(f"{world.as_url}/calendar-consent?id="), url
    expect(link).to_have_text(url)  # the whole link, as the server sent it
    expect(w.page.locator("li.interrupt")).to_contain_text("MCP server notes asks")
    with w.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.click("#allow-calendar")
    expect(tab.locator("#done")).to_be_visible()
    tab.close()
    w.page.bring_to_front()
    w.page.locator("li.interrupt").get_by_role("button", name="Accept").click()
    ran_once(w, world, before, "link_calendar", "calendar linked for alice")
    assert w.errors == [], w.errors
    w.context.close()
