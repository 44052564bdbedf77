"""What one run holds: its user, one session per server, and the tools bound to them.

A `RunScope` belongs to exactly one run and one user token: it is created on
the run's first model or tool call, every later call of the run reuses it,
and it is closed when the run ends, fails or is cancelled. A call that
arrives with a different token fingerprint never gets this scope's sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from langchain_core.tools import BaseTool
from mcp.types import Tool as McpTool
from pydantic import SecretStr

from onbehalf.mcp.client import UserMCPClient
from onbehalf.mcp.credentials import (
    AccountNotConnected,
    CredentialUnavailable,
    ServerCredential,
    credential_for,
)
from onbehalf.mcp.failures import no_answer, reconnect_message, unavailable_at_open
from onbehalf.mcp.pool import SessionKey, session_pool
from onbehalf.mcp.sessions import McpSession, SessionUnavailable
from onbehalf.mcp.tokens import UserToken
from onbehalf.mcp.tools import bind_tool, is_allowed, list_server_tools, public_names
from onbehalf.mcp.transport import prepare_transport
from onbehalf.servers import McpServer, McpServersConfig

log = logging.getLogger("onbehalf.mcp")


@dataclass
class BoundTool:
    server: str
    tool: BaseTool
    session: McpSession
    mcp_tool: McpTool


@dataclass
class RunScope:
    """The per-run, per-user MCP state. Never shared between runs or users."""

    identity: str
    fingerprint: str
    config: McpServersConfig
    allowlist: Sequence[str] | None
    client: UserMCPClient = None  # type: ignore[assignment]
    """The run's user's `MultiServerMCPClient`: each server's connection is added as its
    credential is decided, and every session of the run is opened from it."""
    sessions: dict[str, McpSession] = field(default_factory=dict)
    keys: dict[str, SessionKey] = field(default_factory=dict)
    credentials: dict[str, ServerCredential] = field(default_factory=dict)
    tools: dict[str, BoundTool] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    refused_at_open: dict[str, ServerCredential] = field(default_factory=dict)
    """Reconnectable credentials (connected accounts) a server refused with 401 when its
    session opened: the middleware drops them and asks the user to reconnect."""
    not_connected: dict[str, AccountNotConnected] = field(default_factory=dict)
    """`oauth` servers this user has not connected: the model is offered `connect_account`."""
    last_used: float = field(default_factory=time.monotonic)
    _loaded: asyncio.Task[None] | None = None
    _renewing: dict[str, asyncio.Lock] = field(default_factory=dict)
    closed: bool = False

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = UserMCPClient(self.identity)
        if self.client.identity != self.identity:
            raise ValueError("a RunScope is given another user's MCP client")

    def belongs_to(self, user: UserToken) -> bool:
        return user.identity == self.identity and user.fingerprint == self.fingerprint

    async def load(self, user: UserToken) -> None:
        """Open every server's session concurrently and bind its tools (once per run)."""
        if self._loaded is None:
            self._loaded = asyncio.create_task(self._load(user))
        self.last_used = time.monotonic()
        await asyncio.shield(self._loaded)

    async def _load(self, user: UserToken) -> None:
        await prepare_transport()
        names = list(self.config.servers)
        results = await asyncio.gather(
            *(self._open_refreshing(name, self.config.servers[name], user) for name in names),
            return_exceptions=True,
        )
        listed: dict[str, list[McpTool]] = {}
        for name, result in zip(names, results, strict=True):
            credential = self.credentials.get(name)
            if isinstance(result, AccountNotConnected):
                self.not_connected[name] = result
            elif (
                isinstance(result, SessionUnavailable)
                and result.status == 401
                and credential is not None
                and credential.reconnectable
            ):
                self.refused_at_open[name] = credential
                self.unavailable[name] = reconnect_message(name, credential.connect_url)
                log.warning("MCP server %s refused the connected account at session open", name)
            elif isinstance(result, CredentialUnavailable | SessionUnavailable):
                self.unavailable[name] = str(result)
                log.warning("MCP server %s unavailable for this run: %s", name, result)
            elif isinstance(result, BaseException):
                self.unavailable[name] = unavailable_at_open(name, None, result)
                log.warning("MCP server %s failed to load", name, exc_info=result)
            else:
                listed[name] = result
        names_for = public_names(listed)
        for server, mcp_tools in listed.items():
            session = self.sessions[server]
            for mcp_tool in mcp_tools:
                self._bind(server, session, mcp_tool, names_for[(server, mcp_tool.name)])

    def _bind(self, server: str, session: McpSession, mcp_tool: McpTool, public: str) -> None:
        key = (mcp_tool.name, public, self.client.interceptors_key)
        tool = session.bound_tools.get(key)
        if tool is None:
            tool = bind_tool(session.client, server, mcp_tool, public, self.client)
            session.bound_tools[key] = tool
        self.tools[public] = BoundTool(server=server, tool=tool, session=session, mcp_tool=mcp_tool)

    async def renew(self, name: str, ended: McpSession) -> McpSession:
        """Replace a session the server ended (404 on its id) with a fresh one.

        Same key, same credential, a new `initialize`: what the MCP spec asks of a client
        whose session id is no longer known. The ended session is closed, never pooled.
        Concurrent calls of this run that saw the same ended session share one renewal.
        """
        async with self._renewing.setdefault(name, asyncio.Lock()):
            current = self.sessions[name]
            if current is not ended:
                return current  # another call of this run renewed it already
            fresh = await self._fresh_session(name, self.config.servers[name], ended)
            for public, bound in list(self.tools.items()):
                if bound.session is ended:
                    self._bind(name, fresh, bound.mcp_tool, public)
            return fresh

    def detach(self, session: McpSession) -> Callable[[], None]:
        """Take a session out of this run (a call parked on it waits for the user's answer):
        the run's end neither pools nor closes it. Returns what closes it, never pooled."""
        key = self.keys.get(session.server)
        if self.sessions.get(session.server) is session:
            del self.sessions[session.server]
        pool = session_pool()

        def close() -> None:
            session.notify = None
            if key is not None:
                pool.release(key, session, reusable=False)

        return close

    async def reopen(self, name: str, user: UserToken) -> None:
        """Open `name` again on a new credential (after a refresh), rebinding its tools.

        The session that carried the refused tokens is closed, never pooled; the new one
        has its own pool key (the credential fingerprint changed)."""
        old = self.sessions.pop(name, None)
        if old is not None:
            session_pool().release(self.keys[name], old, reusable=False)
        listed = {t.name: t for t in await self._open(name, self.config.servers[name], user)}
        session = self.sessions[name]
        for public, bound in list(self.tools.items()):
            if bound.server == name and bound.mcp_tool.name in listed:
                self._bind(name, session, listed[bound.mcp_tool.name], public)

    async def _open_refreshing(self, name: str, server: McpServer, user: UserToken
                               ) -> list[McpTool]:
        """`_open`, and once more after a refresh when the server refused the tokens (401)."""
        try:
            return await self._open(name, server, user)
        except SessionUnavailable as exc:
            credential = self.credentials.get(name)
            if exc.status != 401 or credential is None or credential.refresh is None:
                raise
            if not await credential.refresh():
                raise
            log.info("MCP server %s refused the account's tokens: refreshed, opening again", name)
            return await self._open(name, server, user)

    async def _fresh_session(self, name: str, server: McpServer, ended: McpSession) -> McpSession:
        log.info("MCP server %s ended our session: opening a new one", name)
        session_pool().release(self.keys[name], ended, reusable=False)
        session = await self._start_session(name, server, ended.expires_at)
        self.sessions[name] = session
        return session

    async def _start_session(self, name: str, server: McpServer, expires_at: float) -> McpSession:
        """Open one session on this run's credential for `name`, under this run's pool key."""
        key = self.keys[name]
        pool = session_pool()
        session = McpSession(
            name, self.client, server.timeout_seconds,
            expires_at=expires_at, on_tools_changed=lambda: pool.forget_tools(key),
            sent_secrets=self.sent_secrets(name),
        )
        await session.open()
        return session

    async def _open(self, name: str, server: McpServer, user: UserToken) -> list[McpTool]:
        credential = await credential_for(name, server, user)
        self.credentials[name] = credential
        self.client.add(name, credential.connection)
        key = SessionKey(
            server=name,
            url=server.url,
            identity=user.identity,
            token_fingerprint=user.fingerprint,
            credential_fingerprint=credential.fingerprint,
        )
        pool = session_pool()
        self.keys[name] = key
        session = await pool.acquire(
            key, lambda: self._start_session(name, server, user.expires_at)
        )
        self.sessions[name] = session
        tools = pool.cached_tools(key) or pool.stale_tools(key)  # (listed again at release)
        if tools is None:
            try:
                tools = await self._list_tools(name, server, session)
            except Exception:
                if not session.ended_by_server:
                    raise
                session = await self._fresh_session(name, server, session)  # once, then as is
                tools = await self._list_tools(name, server, session)
            pool.remember_tools(key, tools)
        return [t for t in tools if is_allowed(t.name, server.tools, self.allowlist)]

    @staticmethod
    async def _list_tools(name: str, server: McpServer, session: McpSession) -> list[McpTool]:
        try:
            async with asyncio.timeout(server.timeout_seconds):
                return await list_server_tools(session.client)
        except TimeoutError:
            session.broken = True
            raise SessionUnavailable(
                name, no_answer(name, server.timeout_seconds, "list its tools")
            ) from None

    def sent_secrets(self, server: str) -> tuple[SecretStr, ...]:
        """The credential this run sends `server`, as a server could echo it."""
        credential = self.credentials.get(server)
        return credential.sent_secrets if credential is not None else ()

    def availability_note(self) -> str | None:
        """What the model is told about servers whose tools are missing this run."""
        if not self.unavailable:
            return None
        lines = "\n".join(f"- {reason}" for reason in self.unavailable.values())
        return (
            "Some tool servers are unavailable for this request, so their tools are missing. "
            "Tell the user if they ask for something those servers provide:\n" + lines
        )

    async def aclose(self, *, reusable: bool = False) -> None:
        """End the run's hold on its sessions: healthy ones go back to the pool after a
        normal end; after a failure or cancellation they are closed."""
        if self.closed:
            return
        self.closed = True
        if self._loaded is not None and not self._loaded.done():
            self._loaded.cancel()
            with contextlib.suppress(BaseException):
                await self._loaded
            reusable = False
        pool = session_pool()
        for name, session in self.sessions.items():
            session.notify = None  # the run's stream writer stays with the run
            key = self.keys.get(name)
            if key is None:
                await session.aclose()
                continue
            if reusable and pool.tools_due(key):
                # listed again now that the run is over: never beside the run's own calls
                # (a second request at once costs a new connection, a round trip)
                server = self.config.servers[name]
                pool.refreshing(key, partial(self._list_tools, name, server, session))
            pool.release(key, session, reusable=reusable)
