"""Elicitation (DESIGN.md §8.1) end to end: a real `langgraph dev`, a real MCP server.

The `asks` server (tests/support/elicit_mcp.py) asks the user during a call (form and
URL mode) or before it (-32042). The run pauses with `mcp_elicitation`; the resume's
answer reaches the request still waiting in the same server process, so every call runs
once (the server counts executions). A parked call that is gone by the time the answer
comes is sent again only for a read-only tool; any other tool tells the model.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import TokenHandoff
from onbehalf.worker.runner import run_execution
from tests.support.elicit_mcp import ElicitMcpServer, run_elicit_mcp
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.threads import ask, bearer, last_text, pause_of, worker_run
from tests.support.tokens import mint, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PARKED_SECONDS = 4
"""OAUTH_FLOW_TTL_SECONDS of this server: how long a paused call stays parked."""


@pytest.fixture(scope="module")
def asks() -> Iterator[ElicitMcpServer]:
    with run_elicit_mcp() as running:
        yield running


@pytest.fixture(scope="module")
def settings(asks: ElicitMcpServer) -> dict[str, str]:
    return {"MCP_SERVERS": json.dumps({"servers": {"asks": asks.config()}}),
            "OAUTH_FLOW_TTL_SECONDS": str(PARKED_SECONDS)}


@pytest.fixture(scope="module")
def server(settings: dict[str, str]) -> Iterator[LangGraphServer]:
    with run_langgraph_dev({**settings, "ONBEHALF_DEV_CONSOLE": "1"}) as running:
        yield running


@pytest.fixture
async def alice(server: LangGraphServer) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=server.url, api_key=None, headers=bearer("alice"))
    yield client
    await client.aclose()


def answer(key: str, action: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"action": action}
    if content is not None:
        response["content"] = content
    return {"responses": {key: response}}


async def paused_on(client: LangGraphClient, text: str, tool: str) -> tuple[str, dict[str, Any]]:
    thread = (await client.threads.create())["thread_id"]
    pause = pause_of(await ask(client, thread, text))
    assert pause["type"] == "mcp_elicitation", pause
    assert pause["server"] == "asks" and pause["tool_name"] == tool, pause
    return thread, pause


async def test_the_request_is_shown_as_the_server_asked_it(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    _, form = await paused_on(alice, "pick_repository", "pick_repository")
    (request,) = form["requests"]
    assert request["mode"] == "form" and request["message"] == "Which repository?"
    assert set(request["requested_schema"]["properties"]) == {"repository", "private"}
    assert request["requested_schema"]["required"] == ["repository"]
    _, link = await paused_on(alice, "link_account", "link_account")
    (request,) = link["requests"]
    assert request == {"key": request["key"], "message": "Link your billing account",
                       "mode": "url", "url": asks.visit_url("billing")}, "the URL whole"


@pytest.mark.parametrize(("text", "action", "content", "said"), [
    pytest.param("pick_repository", "accept", {"repository": "acme/web", "private": True},
                 "pick_repository returned: picked acme/web (private=True)", id="form-accepted"),
    pytest.param("delete_branch branch=main", "decline", None,
                 "delete_branch returned: kept main (decline)", id="form-declined"),
    pytest.param("link_account", "accept", None, "link_account returned: link_account: accept",
                 id="url-accepted-during-the-call"),
])
async def test_the_answer_reaches_the_waiting_call_which_runs_once(
    asks: ElicitMcpServer, alice: LangGraphClient, text: str, action: str,
    content: dict[str, Any] | None, said: str,
) -> None:
    tool = text.split()[0]
    before = asks.executed[tool]
    thread, pause = await paused_on(alice, text, tool)
    state = await ask(alice, thread, resume=answer(pause["requests"][0]["key"], action, content))
    assert not state.get("tasks"), state
    assert last_text(state) == said, "the model is told what the server did with the answer"
    assert asks.executed[tool] == before + 1, "one call, run exactly once"


async def test_content_that_does_not_match_the_form_is_refused_and_stays_paused(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    before = asks.executed["pick_repository"]
    thread, pause = await paused_on(alice, "pick_repository", "pick_repository")
    key = pause["requests"][0]["key"]
    again = pause_of(await ask(alice, thread, resume=answer(key, "accept", {"private": "yes"})))
    assert again["requests"] == pause["requests"], again
    assert "refused" in again["error"] and "repository" in again["error"], again
    wrong = pause_of(await ask(alice, thread, resume=answer("other", "accept",
                                                            {"repository": "a/b"})))
    assert wrong["requests"] == pause["requests"] and "keys" in wrong["error"], wrong
    odd = pause_of(await ask(alice, thread, resume={"responses": {key: {"action": "maybe"}},
                                                    "extra": 1}))
    assert "refused" in odd["error"], odd
    state = await ask(alice, thread, resume=answer(key, "accept", {"repository": "acme/api"}))
    assert last_text(state) == "pick_repository returned: picked acme/api (private=False)"
    assert asks.executed["pick_repository"] == before + 1, "refused answers never ran it again"


async def test_url_elicitation_required_pauses_and_after_the_visit_the_call_runs_once(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    asks.visited.discard("files")
    thread, pause = await paused_on(alice, "list_files", "list_files")
    (request,) = pause["requests"]
    assert request["mode"] == "url" and request["url"] == asks.visit_url("files"), pause
    assert request["message"] == "Sign in to the file store"
    assert asks.executed["list_files"] == 0, "-32042: the server ran nothing"
    async with httpx.AsyncClient() as browser:  # the user, in their browser
        assert (await browser.get(request["url"])).status_code == 200
    state = await ask(alice, thread, resume=answer(request["key"], "accept"))
    assert last_text(state) == "list_files returned: files: a.txt b.txt"
    assert asks.executed["list_files"] == 1


async def test_declining_a_required_url_tells_the_model_and_runs_nothing(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    asks.visited.discard("files")
    before = asks.executed["list_files"]
    thread, pause = await paused_on(alice, "list_files", "list_files")
    state = await ask(alice, thread, resume=answer(pause["requests"][0]["key"], "decline"))
    assert "declined" in last_text(state) and "not run" in last_text(state), last_text(state)
    assert asks.executed["list_files"] == before


async def test_a_late_answer_is_not_sent_again_to_a_tool_that_is_not_idempotent(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    before = asks.executed["delete_branch"]
    thread, pause = await paused_on(alice, "delete_branch branch=dev", "delete_branch")
    await anyio.sleep(PARKED_SECONDS + 1.5)  # the parked call is dropped
    state = await ask(alice, thread, resume=answer(pause["requests"][0]["key"], "accept",
                                                   {"confirm": True}))
    assert "too late" in last_text(state) and "not sent again" in last_text(state), state
    assert asks.executed["delete_branch"] == before + 1, "sent once, never again"


async def test_a_late_answer_sends_a_read_only_tool_again(
    asks: ElicitMcpServer, alice: LangGraphClient
) -> None:
    before = asks.executed["pick_repository"]
    thread, pause = await paused_on(alice, "pick_repository", "pick_repository")
    await anyio.sleep(PARKED_SECONDS + 1.5)
    again = pause_of(await ask(alice, thread, resume=answer(
        pause["requests"][0]["key"], "accept", {"repository": "late/one"})))
    assert again["type"] == "mcp_elicitation" and again["tool_name"] == "pick_repository"
    assert asks.executed["pick_repository"] == before + 2, "read-only: sent again"
    state = await ask(alice, thread, resume=answer(again["requests"][0]["key"], "accept",
                                                   {"repository": "late/two"}))
    assert last_text(state) == "pick_repository returned: picked late/two (private=False)"


async def test_bob_cannot_resume_alices_paused_thread(
    server: LangGraphServer, alice: LangGraphClient
) -> None:
    thread, pause = await paused_on(alice, "pick_repository", "pick_repository")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer("bob")) as bob:
        resumed = await bob.post(f"/threads/{thread}/runs/wait", json={
            "assistant_id": "assistant",
            "command": {"resume": answer(pause["requests"][0]["key"], "accept",
                                         {"repository": "bob/evil"})}})
    assert resumed.status_code == 404, resumed.text
    state = await ask(alice, thread, resume=answer(pause["requests"][0]["key"], "cancel"))
    assert last_text(state) == "pick_repository returned: no repository picked (cancel)"


async def test_the_worker_exits_5_with_the_elicitation_in_its_lines(
    settings: dict[str, str], server: LangGraphServer, redis_url: str
) -> None:
    env = subprocess_env(**settings, REDIS_URL=redis_url, LANGGRAPH_URL=server.url)
    run = await worker_run(env, "alice", f"alice-{uuid.uuid4().hex[:10]}", "pick_repository")
    assert run.returncode == 5, run.stderr.decode()
    assert '"mcp_elicitation"' in run.stdout.decode()


async def test_the_worker_reports_the_pause_when_the_stream_missed_it(
    server: LangGraphServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aegra 0.11 can lose a stream event under load: here the `__interrupt__` update never
    arrives, and the worker still reports the pause (the CLI's exit 5), read from the
    thread, instead of a failed run."""
    import onbehalf.worker.runner as runner

    class MissesThePause(runner.RemoteGraph):
        async def astream(self, *args: Any, **kwargs: Any) -> Any:
            async for part in super().astream(*args, **kwargs):
                if part["type"] == "updates" and "__interrupt__" in part["data"]:
                    continue
                yield part

    monkeypatch.setattr(runner, "RemoteGraph", MissesThePause)
    execution = f"alice-{uuid.uuid4().hex[:10]}"
    settings = HandoffSettings(redis_url=redis_url, langgraph_url=server.url)
    async with TokenHandoff(settings) as handoff:
        await handoff.put(execution, mint("alice"))
    events = [event async for event in run_execution(
        execution, "assistant", {"messages": [{"role": "user", "content": "pick_repository"}]},
        settings=settings,
    )]
    assert [e["event"] for e in events][-2:] == ["interrupt", "done"], events
    [pending] = events[-2]["interrupts"]
    assert pending["value"]["type"] == "mcp_elicitation", pending


async def test_chat_without_a_terminal_exits_5_with_the_thread_id(
    settings: dict[str, str], server: LangGraphServer, asks: ElicitMcpServer
) -> None:
    env = subprocess_env(**settings, LANGGRAPH_URL=server.url)
    with anyio.fail_after(60):
        run = await anyio.run_process(
            [sys.executable, "-m", "onbehalf", "chat", "--as", "alice", "pick_repository"],
            env=env, check=False)
    assert run.returncode == 5, run.stderr.decode()
    assert "Which repository?" in run.stderr.decode() and "thread" in run.stderr.decode()


async def test_chat_asks_each_form_field_on_the_terminal(
    settings: dict[str, str], server: LangGraphServer, asks: ElicitMcpServer
) -> None:
    before = asks.executed["pick_repository"]
    env = subprocess_env(**settings, LANGGRAPH_URL=server.url)
    terminal, tty = os.openpty()
    try:
        os.write(terminal, b"y\nacme/cli\nyes\n")  # answer? / repository / private
        with anyio.fail_after(60):
            run = await anyio.run_process(
                [sys.executable, "-m", "onbehalf", "chat", "--as", "alice", "pick_repository"],
                env=env, stdin=tty, check=False)
    finally:
        os.close(tty)
        os.close(terminal)
    assert run.returncode == 0, run.stderr.decode()
    assert "picked acme/cli (private=True)" in run.stdout.decode()
    assert "Which repository?" in run.stderr.decode()
    assert asks.executed["pick_repository"] == before + 1


# --- the dev console, in a real browser -----------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    console = pytest.importorskip("tests.e2e.test_console",
                                  reason="browser tests did not run: no playwright")
    if console.CHROMIUM is None:
        pytest.skip("browser tests did not run: no chromium on PATH")
    with console.sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=console.CHROMIUM, args=console.ARGS,
                                      headless=True)
        yield launched
        launched.close()


def test_the_console_shows_the_form_says_which_server_and_resumes(
    server: LangGraphServer, asks: ElicitMcpServer, browser: Any
) -> None:
    from tests.e2e.test_console import RUN_SECONDS, Watched, expect

    before = asks.executed["pick_repository"]
    w = Watched(browser, server.url)
    w.sign_in("alice")
    w.ask("pick_repository")
    form = w.page.locator("li.interrupt form.elicitation")
    expect(form).to_be_visible(timeout=RUN_SECONDS)
    expect(form).to_contain_text("MCP server asks asks, for pick_repository:")
    expect(form.locator("legend")).to_have_text("Which repository?")
    form.get_by_label("Private").check()
    form.get_by_role("button", name="Send").click()  # the repository left empty: refused
    form = w.page.locator("li.interrupt form.elicitation")
    expect(form.get_by_role("alert")).to_contain_text("'repository' is a required property",
                                                      timeout=RUN_SECONDS)
    assert asks.executed["pick_repository"] == before + 1, "nothing reached the server"
    form.get_by_label("Repository").fill("acme/console")
    form.get_by_label("Private").check()
    form.get_by_role("button", name="Send").click()
    expect(w.page.locator("li.ai", has_text="picked acme/console (private=True)")).to_be_visible(
        timeout=RUN_SECONDS)
    assert asks.executed["pick_repository"] == before + 1
    assert not w.errors, w.errors


def test_the_console_shows_a_url_whole_and_accepts_it(
    server: LangGraphServer, asks: ElicitMcpServer, browser: Any
) -> None:
    from tests.e2e.test_console import RUN_SECONDS, Watched, expect

    w = Watched(browser, server.url)
    w.sign_in("alice")
    w.ask("link_account")
    link = w.page.locator("li.interrupt form.elicitation a")
    expect(link).to_have_text(asks.visit_url("billing"), timeout=RUN_SECONDS)
    assert link.get_attribute("href") == asks.visit_url("billing")
    w.page.locator("li.interrupt").get_by_role("button", name="Accept").click()
    expect(w.page.locator("li.ai", has_text="link_account: accept")).to_be_visible(
        timeout=RUN_SECONDS)
    assert not w.errors, w.errors
