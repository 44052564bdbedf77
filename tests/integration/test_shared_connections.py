"""Sessions of different users share TCP connections, never a credential.

A real tickets MCP server runs in process behind a recorder that notes, for
every HTTP request, the client's port (one TCP connection each), the method,
the MCP session id and a sha256 of the `Authorization` header. The kit's
sessions for alice and bob then work interleaved on the shared pool.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from onbehalf.demo.tickets.server import build_app
from onbehalf.mcp.client import bearer_client
from onbehalf.mcp.sessions import McpSession
from onbehalf.mcp.tools import list_server_tools
from onbehalf.mcp.transport import aclose_request_pool
from onbehalf.settings import auth_settings
from tests.support.mcp_server import serve_app_in_thread, tool_data
from tests.support.tokens import auth_env, mint

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Seen:
    port: int
    method: str
    session_id: str | None
    credential: str


class Recorder:
    """ASGI middleware: one `Seen` per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            session_id = headers.get(b"mcp-session-id")
            self.seen.append(Seen(
                port=scope["client"][1],
                method=scope["method"],
                session_id=session_id.decode() if session_id else None,
                credential=hashlib.sha256(headers.get(b"authorization", b"")).hexdigest(),
            ))
        await self.app(scope, receive, send)


def _digest(token: str) -> str:
    return hashlib.sha256(f"Bearer {token}".encode()).hexdigest()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Recorder]]:
    for key, value in auth_env().items():
        monkeypatch.setenv(key, value)
    auth_settings.cache_clear()
    recorder = Recorder(build_app(auth_settings()))
    with serve_app_in_thread(recorder) as url:
        yield url, recorder
    auth_settings.cache_clear()


@pytest.fixture
async def fresh_pool() -> AsyncIterator[None]:
    await aclose_request_pool()
    yield
    await aclose_request_pool()


def _session(url: str, token: str) -> McpSession:
    return McpSession("tickets", bearer_client("user", "tickets", url, token), 10.0)


async def _work(session: McpSession, rounds: int) -> list[str]:
    users = []
    for _ in range(rounds):
        await list_server_tools(session.client)
        users.append(tool_data(await session.client.call_tool("whoami", {}))["sub"])
    return users


async def test_users_share_connections_but_every_request_carries_its_own_token(
    recorded: tuple[str, Recorder], fresh_pool: None
) -> None:
    url, recorder = recorded
    tokens = {"alice": mint("alice"), "bob": mint("bob")}
    sessions = {user: _session(url, token) for user, token in tokens.items()}
    await asyncio.gather(*(s.open() for s in sessions.values()))
    try:
        for _ in range(3):  # each turn both users at once
            answers = await asyncio.gather(*(_work(s, 2) for s in sessions.values()))
            assert answers == [["alice"] * 2, ["bob"] * 2]
        # then one after the other: with nothing in flight, each request takes an idle
        # connection, whichever user's request it carried before (at once, each user can
        # keep finding their own free, so sharing there depends on scheduling)
        for _ in range(2):
            for user, session in sessions.items():
                assert await _work(session, 1) == [user]
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions.values()))

    by_credential = {_digest(t): user for user, t in tokens.items()}
    assert {by_credential[s.credential] for s in recorder.seen} == {"alice", "bob"}
    # an MCP session only ever saw the token of the user who opened it
    owners: dict[str, set[str]] = {}
    for s in recorder.seen:
        if s.session_id:
            owners.setdefault(s.session_id, set()).add(by_credential[s.credential])
    assert len(owners) == 2 and all(len(users) == 1 for users in owners.values())
    # requests reuse connections, across users too
    posts = [s for s in recorder.seen if s.method != "GET"]
    ports_by_user: dict[str, set[int]] = {}
    for s in posts:
        ports_by_user.setdefault(by_credential[s.credential], set()).add(s.port)
    assert len({s.port for s in posts}) < len(posts) / 3, "requests did not reuse connections"
    assert ports_by_user["alice"] & ports_by_user["bob"], "no connection served both users"
    # each standing GET stream has a connection of its own, never used for requests
    get_ports = {s.port for s in recorder.seen if s.method == "GET"}
    assert len(get_ports) == 2 and not get_ports & {s.port for s in posts}


async def test_closing_a_session_leaves_the_shared_pool_working(
    recorded: tuple[str, Recorder], fresh_pool: None
) -> None:
    url, _ = recorded
    first = _session(url, mint("alice"))
    await first.open()
    await _work(first, 1)
    await first.aclose()
    second = _session(url, mint("bob"))
    await second.open()
    try:
        assert await _work(second, 2) == ["bob", "bob"]
    finally:
        await second.aclose()
