"""The dev console in a real browser (DESIGN.md §9), against a real `langgraph dev`.

Headless Chromium from the system (never `playwright install`), driven by Playwright.
Without Chromium these tests skip, and the skip reason shows in the summary (-ra).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.mcp_server import TicketsMcpServer, run_tickets_mcp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the README's screenshots are refreshed only when asked (ONBEHALF_UPDATE_SCREENSHOTS=1), so
# that `make test` never leaves the checkout modified; otherwise they go to a temporary folder
IMG = (Path(__file__).resolve().parents[2] / "docs" / "img"
       if os.environ.get("ONBEHALF_UPDATE_SCREENSHOTS") == "1"
       else Path(tempfile.gettempdir()) / "onbehalf-screenshots")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="browser tests did not run: no chromium on PATH "
    "(apt-get install -y chromium)")


def _server(mcp: TicketsMcpServer) -> Any:
    servers = {"servers": {"tickets": {"url": mcp.url, "auth": {"type": "user_token"},
                                       "timeout_seconds": 5}}}
    return run_langgraph_dev({"MCP_SERVERS": json.dumps(servers), "ONBEHALF_DEV_CONSOLE": "1"})


@pytest.fixture(scope="module")
def console_server(tickets_mcp_server: TicketsMcpServer) -> Iterator[LangGraphServer]:
    with _server(tickets_mcp_server) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="browser tests did not run: no playwright")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A page whose console errors and every request are recorded."""

    def __init__(self, browser: Any, url: str, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._record)
        self.page.goto(f"{url}/console")

    def _record(self, request: Any) -> None:
        self.requests.append({"url": request.url, "headers": dict(request.headers),
                              "body": request.post_data or ""})

    def sign_in(self, user: str) -> None:
        page = self.page
        if user in ("alice", "bob"):
            page.check(f"input[name=user][value={user}]")
        else:
            page.fill("#other-user", user)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#app:not([hidden])")

    def ask(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.press("#message", "Enter")

    def token(self) -> str:
        return self.page.evaluate(
            "JSON.parse(sessionStorage.getItem('onbehalf.console.session')).token")

    def assert_token_only_in_authorization(self, token: str) -> None:
        signature = token.rsplit(".", 1)[1]
        for r in self.requests:
            assert signature not in r["url"], r["url"]
            assert signature not in r["body"], r["url"]
            for name, value in r["headers"].items():
                if name.lower() != "authorization":
                    assert signature not in value, (r["url"], name)


def test_chat_tool_card_isolation_and_no_leak(console_server, browser) -> None:
    alice = Watched(browser, console_server.url)
    alice.sign_in("alice")
    alice.ask("list_tickets")
    card = alice.page.wait_for_selector("li.tool[data-outcome]", timeout=60000)
    assert card.get_attribute("data-server") == "tickets"
    assert card.get_attribute("data-tool") == "list_tickets"
    assert card.get_attribute("data-outcome") == "ok"
    alice.page.wait_for_selector("li.ai:has-text('T-1001')", timeout=60000)
    first = alice.page.locator("#threads a").first
    for _ in range(120):  # the title arrives after the run (thread_title graph)
        if first.count() and not first.inner_text().startswith("untitled"):
            break
        alice.page.wait_for_timeout(250)
    assert not first.inner_text().startswith("untitled")
    IMG.mkdir(parents=True, exist_ok=True)
    alice.page.screenshot(path=str(IMG / "console-chat.png"))
    thread_url = alice.page.url
    assert "#thread=" in thread_url

    bob = Watched(browser, console_server.url)
    bob.sign_in("bob")
    bob.page.wait_for_timeout(500)
    alice_thread = thread_url.split("#thread=")[1]
    assert alice_thread not in bob.page.inner_text("#threads")
    bob.page.goto(f"{console_server.url}/console#thread={alice_thread}")
    bob.page.reload()
    bob.page.wait_for_selector("li.failure:has-text('not found')", timeout=20000)

    alice.assert_token_only_in_authorization(alice.token())
    bob.assert_token_only_in_authorization(bob.token())
    assert alice.errors == [], alice.errors
    # bob's only console lines are the browser's own network log of the 404 he was meant to get
    assert all("status of 404" in e for e in bob.errors), bob.errors
    alice.context.close()
    bob.context.close()


def test_expired_sign_in_asks_to_sign_in_again(console_server, browser) -> None:
    from onbehalf.dev_tokens import mint_dev_token

    w = Watched(browser, console_server.url)
    w.sign_in("alice")
    expired = mint_dev_token("alice", ["tickets:read"], ttl=1)
    w.page.wait_for_timeout(7000)  # past exp and the 5 s test leeway
    w.page.evaluate(
        "t => sessionStorage.setItem('onbehalf.console.session', "
        "JSON.stringify({token: t, user: 'alice', scopes: ['tickets:read']}))", expired)
    w.page.reload()
    w.page.wait_for_selector("#signin:not([hidden])", timeout=20000)
    assert "sign in again" in w.page.inner_text("#notice").lower()
    w.context.close()


def test_mcp_server_down_page_stays_usable(browser) -> None:
    with run_tickets_mcp() as mcp, _server(mcp) as server:
        w = Watched(browser, server.url, width=390, height=800)
        w.sign_in("alice")
        mcp.process.terminate()
        mcp.process.wait(timeout=15)
        w.ask("list_tickets")
        w.page.wait_for_selector("#log li.ai, #log li.failure", timeout=60000)
        w.page.wait_for_timeout(1500)
        w.page.screenshot(path=str(IMG / "console-server-down.png"))
        # With the server down before the run, the offline model gets no tickets tools and
        # no card may claim success. (That the answer names the server as unavailable is up
        # to the agent kit: today the offline model just answers without tools.)
        assert w.page.locator("li.tool[data-outcome=ok]").count() == 0
        w.ask("hello")
        w.page.wait_for_selector("li.human:has-text('hello')", timeout=10000)
        assert w.errors == [], w.errors
        w.context.close()
