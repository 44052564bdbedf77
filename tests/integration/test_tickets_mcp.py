"""The reference tickets MCP server over real HTTP, with real JWTs (DESIGN.md §5).

One server subprocess serves the whole module. Tests that create tickets use
users of their own, so the seeded users' views stay as seeded.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator

import httpx
import pytest

from onbehalf.demo.tickets.data import Ticket, TicketStore
from onbehalf.demo.tickets.server import build_app
from onbehalf.demo.tickets.verifier import JwtTokenVerifier
from onbehalf.settings import auth_settings
from tests.support.mcp_server import (
    TicketsMcpServer,
    http_statuses,
    mcp_session,
    run_tickets_mcp,
    serve_app_in_thread,
    session_counts,
    tool_data,
    tool_text,
)
from tests.support.tokens import mint, subprocess_env

pytestmark = pytest.mark.anyio

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server() -> Iterator[TicketsMcpServer]:
    with run_tickets_mcp() as running:
        yield running


def fresh_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def rpc(method: str, params: dict[str, object] | None = None) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}


def initialize_params() -> dict[str, object]:
    return {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    }


# --- per-user data ------------------------------------------------------------------------


async def test_alice_sees_her_own_and_shared_tickets_not_bobs_private(
    server: TicketsMcpServer,
) -> None:
    async with mcp_session(server.url, mint("alice")) as session:
        data = tool_data(await session.call_tool("list_tickets", {}))
    assert data["as_user"] == "alice"
    assert [t["id"] for t in data["tickets"]] == ["T-1001", "T-1002", "T-1003", "T-1006"]
    assert {"T-1004", "T-1005"}.isdisjoint(t["id"] for t in data["tickets"])


async def test_list_tickets_filters_by_status(server: TicketsMcpServer) -> None:
    async with mcp_session(server.url, mint("bob")) as session:
        data = tool_data(await session.call_tool("list_tickets", {"status": "closed"}))
    assert data["as_user"] == "bob"
    assert [t["id"] for t in data["tickets"]] == ["T-1005"]


async def test_bob_cannot_get_alices_private_ticket(server: TicketsMcpServer) -> None:
    async with mcp_session(server.url, mint("bob")) as session:
        refused = await session.call_tool("get_ticket", {"ticket_id": "T-1001"})
        shared = tool_data(await session.call_tool("get_ticket", {"ticket_id": "T-1002"}))
    assert refused.isError
    assert "ticket T-1001 not found" in tool_text(refused)
    assert shared["as_user"] == "bob"
    assert shared["ticket"]["owner"] == "alice"


async def test_identity_comes_from_the_token_not_the_arguments(server: TicketsMcpServer) -> None:
    async with mcp_session(server.url, mint("bob")) as session:
        result = await session.call_tool("list_tickets", {"status": None, "user": "alice"})
    data = tool_data(result)
    assert data["as_user"] == "bob"
    assert "T-1001" not in [t["id"] for t in data["tickets"]]


async def test_an_unknown_user_has_no_tickets(server: TicketsMcpServer) -> None:
    async with mcp_session(server.url, mint(fresh_user())) as session:
        data = tool_data(await session.call_tool("list_tickets", {}))
    assert data["tickets"] == []


async def test_create_ticket_without_write_scope_is_a_tool_error_naming_the_scope(
    server: TicketsMcpServer,
) -> None:
    user = fresh_user()
    async with mcp_session(server.url, mint(user, scopes=["tickets:read"])) as session:
        result = await session.call_tool("create_ticket", {"title": "t", "body": "b"})
        after = tool_data(await session.call_tool("list_tickets", {}))
    assert result.isError
    assert "tickets:write" in tool_text(result)
    assert after["tickets"] == []


async def test_created_ticket_is_visible_only_to_its_creator(server: TicketsMcpServer) -> None:
    creator = fresh_user()
    async with mcp_session(server.url, mint(creator)) as session:
        created = tool_data(
            await session.call_tool("create_ticket", {"title": "Desk lamp", "body": "Broken."})
        )
        listed = tool_data(await session.call_tool("list_tickets", {}))
    ticket_id = created["ticket"]["id"]
    assert created["as_user"] == creator
    assert created["ticket"]["owner"] == creator
    assert [t["id"] for t in listed["tickets"]] == [ticket_id]

    async with mcp_session(server.url, mint("alice")) as session:
        foreign = await session.call_tool("get_ticket", {"ticket_id": ticket_id})
        alice_list = tool_data(await session.call_tool("list_tickets", {}))
    assert foreign.isError
    assert f"ticket {ticket_id} not found" in tool_text(foreign)
    assert ticket_id not in [t["id"] for t in alice_list["tickets"]]


# --- the exact token ----------------------------------------------------------------------


async def test_whoami_reports_the_sha256_of_the_exact_token_sent(
    server: TicketsMcpServer,
) -> None:
    token = mint("alice", scopes=["tickets:read"])
    async with mcp_session(server.url, token) as session:
        data = tool_data(await session.call_tool("whoami", {}))
        text = tool_text(await session.call_tool("whoami", {}))
    assert data["sub"] == data["as_user"] == "alice"
    assert data["scopes"] == ["tickets:read"]
    assert data["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in text and token.split(".")[2] not in text


class _FreshTokenPerRequest(httpx.Auth):
    """Sends a different (valid) token of the same user on every HTTP request."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.sent: list[tuple[str, bytes]] = []

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = mint(self.user)
        self.sent.append((token, request.content if request.method == "POST" else b""))
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def token_of(self, json_rpc_method: str) -> str:
        """The token sent with the (last) POST carrying that JSON-RPC method."""
        marker = f'"method":"{json_rpc_method}"'.encode()
        return [token for token, body in self.sent if marker in body.replace(b" ", b"")][-1]


async def test_each_tool_call_sees_the_token_of_its_own_request(
    server: TicketsMcpServer,
) -> None:
    """Not the token that opened the session (DESIGN.md §7, "the exact token")."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    auth = _FreshTokenPerRequest("alice")
    async with (
        httpx.AsyncClient(auth=auth, timeout=10) as client,
        streamable_http_client(server.url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        data = tool_data(await session.call_tool("whoami", {}))
    opened_with, called_with = auth.token_of("initialize"), auth.token_of("tools/call")
    assert opened_with != called_with
    assert data["token_sha256"] == hashlib.sha256(called_with.encode()).hexdigest()


# --- authentication at the HTTP edge ------------------------------------------------------


BAD_TOKENS = {
    "signature": lambda: mint("alice", secret="not-the-secret-" + "y" * 32),
    "exp": lambda: mint("alice", ttl=-120),
    "aud": lambda: mint("alice", audience="someone-else"),
    "iss": lambda: mint("alice", issuer="https://evil.example"),
    "malformed": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("check", sorted(BAD_TOKENS))
async def test_bad_token_is_refused_with_401_naming_the_check(
    server: TicketsMcpServer, check: str
) -> None:
    token = BAD_TOKENS[check]()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            server.url,
            json=rpc("tools/call", {"name": "list_tickets", "arguments": {}}),
            headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    body = response.json()
    assert body["check"] == check
    assert f"[check: {check}]" in body["detail"]
    assert token not in response.text


async def test_bad_token_is_refused_even_for_get_health(server: TicketsMcpServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            server.url,
            json=rpc("initialize", initialize_params()),
            headers={**MCP_HEADERS, "Authorization": f"Bearer {mint('alice', ttl=-120)}"},
        )
    assert response.status_code == 401


async def test_missing_token_on_list_tickets_is_401(server: TicketsMcpServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            server.url,
            json=rpc("tools/call", {"name": "list_tickets", "arguments": {}}),
            headers=MCP_HEADERS,
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["check"] == "authorization_header"


async def test_mcp_client_with_expired_token_fails_with_401(server: TicketsMcpServer) -> None:
    with pytest.raises(BaseException) as caught:
        async with mcp_session(server.url, mint("alice", ttl=-120)):
            pass
    assert 401 in http_statuses(caught.value)


async def test_anonymous_session_may_check_health_but_not_list_tickets(
    server: TicketsMcpServer,
) -> None:
    with pytest.raises(BaseException) as caught:
        async with mcp_session(server.url) as session:
            tools = await session.list_tools()
            health = tool_data(await session.call_tool("get_health", {}))
            await session.call_tool("list_tickets", {})
    assert {t.name for t in tools.tools} == {
        "whoami", "list_tickets", "get_ticket", "create_ticket", "get_health",
    }
    assert health["status"] == "ok"
    assert 401 in http_statuses(caught.value)


async def test_tool_descriptions_tell_a_model_what_each_tool_does(
    server: TicketsMcpServer,
) -> None:
    async with mcp_session(server.url, mint("alice")) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert "tickets:write" in (tools["create_ticket"].description or "")
    assert tools["list_tickets"].inputSchema["properties"]["status"]
    for tool in tools.values():
        assert len(tool.description or "") > 40, tool.name


async def test_a_session_is_bound_to_the_user_who_opened_it(server: TicketsMcpServer) -> None:
    alice = {**MCP_HEADERS, "Authorization": f"Bearer {mint('alice')}"}
    bob = {**MCP_HEADERS, "Authorization": f"Bearer {mint('bob')}"}
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(
            server.url, json=rpc("initialize", initialize_params()), headers=alice
        )
        session_id = opened.headers["mcp-session-id"]
        hijack = await client.post(
            server.url,
            json=rpc("tools/call", {"name": "list_tickets", "arguments": {}}),
            headers={**bob, "mcp-session-id": session_id},
        )
        closed = await client.delete(server.url, headers={**alice, "mcp-session-id": session_id})
    assert opened.status_code == 200
    assert hijack.status_code == 404
    assert closed.status_code == 200


# --- observability ------------------------------------------------------------------------


async def test_session_counters_follow_open_and_close(server: TicketsMcpServer) -> None:
    before = await session_counts(server.url)
    async with mcp_session(server.url, mint("alice")) as session:
        await session.call_tool("list_tickets", {})
        during = await session_counts(server.url)
    after = await session_counts(server.url)

    assert during["sessions_active"] == before["sessions_active"] + 1
    # alice's session and the probe between `before` and `during`
    assert during["sessions_opened"] == before["sessions_opened"] + 2
    assert during["tool_calls"] == before["tool_calls"] + 2
    assert after["sessions_active"] == before["sessions_active"]
    assert after["sessions_opened"] == before["sessions_opened"] + 3


async def test_anonymous_get_health_reports_ok(server: TicketsMcpServer) -> None:
    async with mcp_session(server.url) as session:
        data = tool_data(await session.call_tool("get_health", {}))
    assert data["status"] == "ok"
    assert data["sessions_active"] >= 1
    assert set(data) == {"status", "sessions_opened", "sessions_active", "tool_calls"}


# --- the factory and the command ----------------------------------------------------------


async def test_build_app_serves_a_given_store_in_process() -> None:
    store = TicketStore([Ticket("T-7000", "dave", "In-process", "served from a thread")])
    app = build_app(auth_settings(), store)
    with serve_app_in_thread(app) as url:
        async with mcp_session(url, mint("dave")) as session:
            data = tool_data(await session.call_tool("list_tickets", {}))
    assert [t["id"] for t in data["tickets"]] == ["T-7000"]
    assert app.state.stats.snapshot()["sessions_active"] == 0


def test_server_without_secret_exits_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onbehalf.demo.tickets", "--port", "0"],
        env=subprocess_env(AUTH_JWT_SECRET="", AUTH_JWT_ALGORITHMS=""),
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AUTH_JWT_SECRET" in lines[0], result.stderr


def test_busy_port_is_one_clear_line(server: TicketsMcpServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onbehalf.demo.tickets", "--port", str(server.port)],
        env=subprocess_env(), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(server.port) in lines[0] and "--port" in lines[0]


def test_server_announces_its_url(server: TicketsMcpServer) -> None:
    assert server.stdout_text().strip() == f"tickets MCP server on {server.url}"
    assert "Traceback" not in server.stderr_text()


def test_sigterm_stops_the_server_cleanly() -> None:
    with run_tickets_mcp() as running:
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=10) == 0
        assert "Traceback" not in running.stderr_text()


async def test_verified_token_never_shows_in_repr() -> None:
    verifier = JwtTokenVerifier(auth_settings())
    token = mint("alice", scopes=["tickets:read"])
    access = await verifier.verify_or_raise(token)
    assert (access.client_id, access.subject, access.scopes) == ("alice", "alice", ["tickets:read"])
    assert token not in repr(access) and token not in str(access)
    assert await verifier.verify_token(mint("alice", ttl=-120)) is None
