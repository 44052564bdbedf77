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
from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.tools import BaseTool
from mcp.types import Tool as McpTool

from agents.kit.credentials import CredentialUnavailable, connection_for
from agents.kit.servers import McpServer, McpServersConfig
from agents.kit.sessions import McpSession, SessionUnavailable
from agents.kit.tokens import UserToken
from agents.kit.tools import bind_tool, is_allowed, list_server_tools, public_names
from agents.kit.transport import prepare_transport

log = logging.getLogger("onbehalf.mcp")


@dataclass
class BoundTool:
    server: str
    tool: BaseTool
    session: McpSession


@dataclass
class RunScope:
    """The per-run, per-user MCP state. Never shared between runs or users."""

    identity: str
    fingerprint: str
    config: McpServersConfig
    allowlist: Sequence[str] | None
    sessions: dict[str, McpSession] = field(default_factory=dict)
    tools: dict[str, BoundTool] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)
    _loaded: asyncio.Task[None] | None = None
    closed: bool = False

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
            *(self._open(name, self.config.servers[name], user) for name in names),
            return_exceptions=True,
        )
        listed: dict[str, list[McpTool]] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, CredentialUnavailable | SessionUnavailable):
                self.unavailable[name] = str(result)
                log.warning("MCP server %s unavailable for this run: %s", name, result)
            elif isinstance(result, BaseException):
                self.unavailable[name] = f"MCP server {name!r} failed: {type(result).__name__}"
                log.warning("MCP server %s failed to load", name, exc_info=result)
            else:
                listed[name] = result
        names_for = public_names(listed)
        for server, mcp_tools in listed.items():
            session = self.sessions[server]
            assert session._ready is not None
            client = session._ready.result()
            for mcp_tool in mcp_tools:
                public = names_for[(server, mcp_tool.name)]
                self.tools[public] = BoundTool(
                    server=server, tool=bind_tool(client, server, mcp_tool, public), session=session
                )

    async def _open(self, name: str, server: McpServer, user: UserToken) -> list[McpTool]:
        connection = await connection_for(name, server, user)
        session = McpSession(name, connection, server.timeout_seconds)
        self.sessions[name] = session
        client = await session.open()
        try:
            async with asyncio.timeout(server.timeout_seconds):
                tools = await list_server_tools(client)
        except TimeoutError:
            raise SessionUnavailable(
                name, f"MCP server {name!r} did not list its tools within "
                f"{server.timeout_seconds:g}s"
            ) from None
        return [t for t in tools if is_allowed(t.name, server.tools, self.allowlist)]

    def availability_note(self) -> str | None:
        """What the model is told about servers whose tools are missing this run."""
        if not self.unavailable:
            return None
        lines = "\n".join(f"- {reason}" for reason in self.unavailable.values())
        return (
            "Some tool servers are unavailable for this request, so their tools are missing. "
            "Tell the user if they ask for something those servers provide:\n" + lines
        )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loaded is not None and not self._loaded.done():
            self._loaded.cancel()
            with contextlib.suppress(BaseException):
                await self._loaded
        await asyncio.gather(*(s.aclose() for s in self.sessions.values()),
                             return_exceptions=True)
