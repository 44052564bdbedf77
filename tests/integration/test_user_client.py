"""The user's `MultiServerMCPClient` (kit/client.py): typed connections, no token in clear.

Against the real tickets MCP server: a run builds one client per user, every
pooled object it leaves behind (sessions, their client, connections) is walked
for the raw token, and the graph's own `tool_interceptors` wrap each call
without being able to change whose credential is sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.tools import ToolException
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.interceptors import MCPToolCallRequest
from pydantic import SecretStr

from onbehalf.jwt_auth import token_fingerprint
from onbehalf.mcp import credentials
from onbehalf.mcp.client import CredentialAuth, UserMCPClient
from onbehalf.mcp.pool import session_pool
from onbehalf.mcp.run_scope import RunScope
from onbehalf.mcp.sessions import McpSession
from onbehalf.mcp.tokens import UserToken
from onbehalf.servers import load_servers_config
from tests.support.agents import say, scripted_agent, tool_messages, tool_payload
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]


@pytest.fixture(autouse=True)
def servers_env(tickets_mcp_server: TicketsMcpServer,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MCP_SERVERS", json.dumps(
        {"servers": {"tickets": {"url": tickets_mcp_server.url}}}))
    yield


def clear_text_paths(root: Any, secret: str, *, depth: int = 8) -> list[str]:
    """Where `secret` sits in clear below `root`: containers, objects, closures.

    A `SecretStr` is where it may be; the SDK's live session and tasks are not ours
    and are not entered."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(value: Any, path: str, left: int) -> None:
        if id(value) in seen or left < 0:
            return
        seen.add(id(value))
        if isinstance(value, str | bytes):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if secret in text:
                found.append(path)
            return
        if isinstance(value, SecretStr | int | float | bool | type(None)):
            return
        if type(value).__module__.startswith(("asyncio", "mcp.", "anyio", "httpx", "httpcore")):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, f"{path}[{k!r}] (key)", left - 1)
                walk(v, f"{path}[{k!r}]", left - 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]", left - 1)
        elif callable(value) and getattr(value, "__closure__", None):
            for i, cell in enumerate(value.__closure__):
                walk(cell.cell_contents, f"{path}.<closure {i}>", left - 1)
        elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
            for k, v in vars(value).items():
                walk(v, f"{path}.{k}", left - 1)

    walk(root, "root", depth)
    return found


async def test_a_run_leaves_no_clear_text_token_in_pooled_sessions_or_their_client() -> None:
    token = mint("alice")
    agent, _ = scripted_agent([("whoami", {})])
    state = await agent.ainvoke(say("who am i"), context={"user_token": token})
    assert tool_payload(tool_messages(state)[0])["sub"] == "alice"
    # the walk finds a token where the kit used to keep one: a headers dict, a closure
    assert clear_text_paths({"headers": {"Authorization": f"Bearer {token}"}}, token)
    assert clear_text_paths(lambda: token, token)
    pooled = [entry[1] for entry in session_pool()._idle.values()]
    assert pooled, "the run's session went back to the pool"
    for session in pooled:
        assert isinstance(session, McpSession)
        assert isinstance(session.mcp_client, MultiServerMCPClient)
        assert session.mcp_client.identity == "alice"
        assert clear_text_paths(session, token) == []
        assert token not in repr(session) and token not in repr(session.mcp_client)
        (connection,) = session.mcp_client.connections.values()
        assert "Authorization" not in (connection.get("headers") or {})
        assert isinstance(connection["auth"], CredentialAuth)
        assert token not in repr(connection)


async def test_each_credential_is_an_httpx_auth_with_the_secret_kept_as_secretstr() -> None:
    token = mint("bob")
    user = UserToken(identity="bob", token=SecretStr(token), expires_at=2**40,
                     source="context", fingerprint=token_fingerprint(token))
    (name, server), = load_servers_config().servers.items()
    credential = await credentials.credential_for(name, server, user)
    assert credential.connection["transport"] == "streamable_http"
    assert clear_text_paths(credential, token) == []
    assert token not in repr(credential) and "**" in repr(credential.connection["auth"])
    scope = RunScope(identity="bob", fingerprint=user.fingerprint,
                     config=load_servers_config(), allowlist=None)
    assert isinstance(scope.client, UserMCPClient) and scope.client.identity == "bob"
    with pytest.raises(ValueError, match="another user"):
        RunScope(identity="bob", fingerprint=user.fingerprint, config=load_servers_config(),
                 allowlist=None, client=UserMCPClient("alice"))


class Recorder:
    """A graph's own interceptor: sees every MCP call and result; tries to swap the token."""

    def __init__(self, swap_to: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.swap_to = swap_to

    async def __call__(self, request: MCPToolCallRequest, handler: Any) -> Any:
        self.calls.append((request.server_name, request.name))
        if self.swap_to is not None:
            request = request.override(headers={"Authorization": f"Bearer {self.swap_to}"})
        return await handler(request)


async def test_the_graphs_tool_interceptors_wrap_each_call_but_cannot_change_the_credential(
) -> None:
    recorder = Recorder(swap_to=mint("bob"))
    agent, _ = scripted_agent([("whoami", {}), ("list_tickets", {})],
                              middleware={"tool_interceptors": [recorder]})
    state = await agent.ainvoke(say("hi"), context={"user_token": mint("alice")})
    whoami, tickets = tool_messages(state)
    assert recorder.calls == [("tickets", "whoami"), ("tickets", "list_tickets")]
    assert tool_payload(whoami)["sub"] == "alice"  # not bob: the session's credential stands
    assert tool_payload(tickets)["as_user"] == "alice"


async def test_tools_bound_with_one_graphs_interceptors_are_not_lent_to_another_graph() -> None:
    token = mint("carol")
    first, second = Recorder(), Recorder()
    for recorder in (first, second):  # same user and token: the second run reuses the session
        agent, _ = scripted_agent([("whoami", {})], middleware={"tool_interceptors": [recorder]})
        await agent.ainvoke(say("hi"), context={"user_token": token})
    assert first.calls == [("tickets", "whoami")]
    assert second.calls == [("tickets", "whoami")]
    assert session_pool().reused >= 1


async def test_an_interceptor_that_refuses_a_call_is_read_by_the_model_and_keeps_the_session(
) -> None:
    async def no_deletes(request: MCPToolCallRequest, handler: Any) -> Any:
        if request.name == "list_tickets":
            raise ToolException("this agent does not list tickets")
        return await handler(request)

    agent, _ = scripted_agent([("list_tickets", {}), ("whoami", {})],
                              middleware={"tool_interceptors": [no_deletes]})
    state = await agent.ainvoke(say("hi"), context={"user_token": mint("dave")})
    refused, whoami = tool_messages(state)
    assert refused.status == "error" and "does not list tickets" in str(refused.content)
    assert "unavailable" not in str(refused.content)
    assert tool_payload(whoami)["sub"] == "dave"  # the session was not given up
    assert session_pool().idle_count == 1
