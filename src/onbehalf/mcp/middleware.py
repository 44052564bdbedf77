"""`McpToolsMiddleware`: the one piece every MCP-using graph adds to its agent.

At run time it resolves the caller's token, opens that user's MCP sessions
(one per server, for the whole run), shows the model the allowed tools and
executes the model's tool calls over those sessions. Nothing per-user happens
at import or graph-build time, so one compiled graph serves every user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_mcp_adapters.interceptors import ToolCallInterceptor
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import get_runtime
from langgraph.types import Command

from onbehalf.errors import UserTokenExpired
from onbehalf.mcp.client import UserMCPClient
from onbehalf.mcp.connect import CONNECT_TOOL, connect_account_tool, run_connect_account
from onbehalf.mcp.interceptors import reconnect_at_open, run_mcp_tool_call
from onbehalf.mcp.prewarm import take_over_prewarm
from onbehalf.mcp.run_scope import RunScope
from onbehalf.mcp.tokens import UserContext, UserToken, resolve_user_token
from onbehalf.mcp.tracing import inline_untraced_langsmith_hops
from onbehalf.servers import aload_servers_config

log = logging.getLogger("onbehalf.mcp")

ABANDONED_SCOPE_SECONDS = 600.0
"""A scope whose run vanished without ending (e.g. cancelled between two steps) is closed
after this long idle; normal ends, failures and cancellations inside a call close at once."""


class McpToolsMiddleware(AgentMiddleware[Any, UserContext, Any]):
    """Per-user MCP tools for an agent built with `langchain.agents.create_agent`.

    Args:
        tools: the graph's own allowlist (tool names as the servers expose them);
            None lets every tool the servers file allows through.
        servers: restrict the graph to these servers from the servers file.
        tool_interceptors: langchain-mcp-adapters `ToolCallInterceptor`s wrapped around
            every MCP request of this graph's tools (logging, argument checks, caching);
            they see the call and its result, never the credential, and cannot change it.
    """

    def __init__(
        self,
        *,
        tools: Sequence[str] | None = None,
        servers: Sequence[str] | None = None,
        tool_interceptors: Sequence[ToolCallInterceptor] = (),
    ) -> None:
        super().__init__()
        inline_untraced_langsmith_hops()
        self.allowlist = list(tools) if tools is not None else None
        self.server_names = list(servers) if servers is not None else None
        self.tool_interceptors = tuple(tool_interceptors)
        self._scopes: dict[int, tuple[object, RunScope]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # --- run lifecycle -------------------------------------------------------------------

    # A run's lifecycle lives in its model calls, not in `before_agent`/`after_agent` hooks:
    # each hook is a graph step of its own on every run (~1 ms each through the server).
    # The first model call of a run checks the token (and fails the run when it cannot be
    # used) and takes over a prewarm; the call that ends the run (a response without tool
    # calls) gives the sessions back to the pool. Failures, cancellations and interrupts
    # close them where they happen (below and in `awrap_tool_call`).

    async def awrap_model_call(
        self,
        request: ModelRequest[UserContext],
        handler: Callable[[ModelRequest[UserContext]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        runtime = request.runtime
        try:
            try:
                scope = await self._scope(runtime, await self._starting_user(runtime))
            except UserTokenExpired as exc:
                if id(_run_of(runtime)) not in self._scopes:
                    raise  # before the run started: fail it, nothing was done
                # expired mid-run: no MCP tools, but the model still answers and can tell
                # the user what to do
                self._close_soon(runtime)
                return await handler(_with_note(request, f"{exc}. No tools are available."))
            if scope.refused_at_open:
                scope = await reconnect_at_open(
                    scope, lambda: self._close_soon(runtime), lambda: self._scope(runtime)
                )
            tools = [bound.tool for bound in scope.tools.values()]
            if scope.not_connected and CONNECT_TOOL not in scope.tools:
                tools.append(connect_account_tool(scope.not_connected))
            note = scope.availability_note()
            if note:
                request = _with_note(request, note)
            response = await handler(request.override(tools=[*request.tools, *tools]))
        except BaseException:
            self._close_soon(runtime)
            raise
        if _ends_the_run(response):
            await self._close(runtime, reusable=True)
        return response

    async def _starting_user(self, runtime: Any) -> UserToken | None:
        """On a run's first model call: the caller's token, usable now (or the run fails
        before any work), with the user's prewarm taken over. Later calls: None."""
        if id(_run_of(runtime)) in self._scopes:
            return None
        user = await resolve_user_token(runtime, _current_config())
        user.ensure_fresh()
        await take_over_prewarm(user)
        return user

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        if request.tool is not None:  # a graph's own (non-MCP) tool
            return await handler(request)
        runtime = _run_runtime()
        config = _current_config()
        call = request.tool_call
        try:
            if call["name"] == CONNECT_TOOL:
                user = await resolve_user_token(runtime, config)
                connected = await run_connect_account(
                    call, await self._scope(runtime, user), lambda: self._reopen(runtime, user)
                )
                if connected is not None:
                    return connected
            return await run_mcp_tool_call(request, handler, runtime, config, self._scope)
        except BaseException:
            self._close_soon(runtime)
            raise

    # --- scopes --------------------------------------------------------------------------

    async def _scope(self, runtime: Any, user: UserToken | None = None) -> RunScope:
        if user is None:
            user = await resolve_user_token(runtime, _current_config())
        user.ensure_fresh(during_run=True)
        control = _run_of(runtime)
        key = id(control)
        self._reap_abandoned()
        entry = self._scopes.get(key)
        if entry is not None and entry[1].closed:
            entry = None
        if entry is not None and not entry[1].belongs_to(user):
            # same run, different credential: never reuse; start over for this token
            self._close_soon_scope(entry[1])
            entry = None
        if entry is None:
            fresh = await self._new_scope(user)
            entry = self._scopes.get(key)  # a concurrent call of this run may have won
            if entry is None or entry[1].closed or not entry[1].belongs_to(user):
                entry = (control, fresh)
                self._scopes[key] = entry
        scope = entry[1]
        await scope.load(user)
        return scope

    async def _reopen(self, runtime: Any, user: UserToken) -> RunScope:
        """The run's scope opened again, with the user's credentials as they are now."""
        await self._close(runtime, reusable=True)
        return await self._scope(runtime, user)

    async def _new_scope(self, user: UserToken) -> RunScope:
        config = await aload_servers_config()
        if self.server_names is not None:
            servers = {k: v for k, v in config.servers.items() if k in self.server_names}
            config = config.model_copy(update={"servers": servers})
        # the run's user's own MultiServerMCPClient (client.py): never another user's
        client = UserMCPClient(user.identity, tool_interceptors=self.tool_interceptors)
        return RunScope(
            identity=user.identity,
            fingerprint=user.fingerprint,
            config=config,
            allowlist=self.allowlist,
            client=client,
        )

    async def _close(self, runtime: Any, *, reusable: bool) -> None:
        entry = self._scopes.pop(id(_run_of(runtime)), None)
        if entry is not None:
            await entry[1].aclose(reusable=reusable)

    def _close_soon(self, runtime: Any) -> None:
        entry = self._scopes.pop(id(_run_of(runtime)), None)
        if entry is not None:
            self._close_soon_scope(entry[1])

    def _close_soon_scope(self, scope: RunScope) -> None:
        # the calling task may be cancelled: close in a task of its own
        task = asyncio.get_running_loop().create_task(scope.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _reap_abandoned(self) -> None:
        now = time.monotonic()
        for key, (_, scope) in list(self._scopes.items()):
            if now - scope.last_used > ABANDONED_SCOPE_SECONDS:
                self._scopes.pop(key, None)
                self._close_soon_scope(scope)

    @property
    def open_scopes(self) -> int:
        """How many runs currently hold MCP sessions (for tests and health checks)."""
        return len(self._scopes)


def _ends_the_run(response: Any) -> bool:
    """A model answer without tool calls: the agent's last step (nothing will use the
    sessions again; another middleware sending the run back to the model only opens them
    again, from the pool)."""
    messages = response.result if isinstance(response, ModelResponse) else [response]
    last = messages[-1] if messages else None
    return isinstance(last, AIMessage) and not last.tool_calls


def _run_of(runtime: Any) -> object:
    """The object that is the same for every node and tool call of one run.

    LangGraph gives each task its own Runtime but one `RunControl` per run; without one
    (never seen in practice) the runtime itself scopes the call.
    """
    return getattr(runtime, "control", None) or runtime


def _current_config() -> dict[str, Any] | None:
    with contextlib.suppress(RuntimeError):
        return dict(get_config())
    return None


def _run_runtime() -> Any:
    """The run's Runtime inside a tool call (ToolRuntime does not carry the run control)."""
    return get_runtime()


def _with_note(request: ModelRequest[UserContext], note: str) -> ModelRequest[UserContext]:
    """The request with `note` appended to its system message (the model must know)."""
    base = request.system_message.content if request.system_message else ""
    text = f"{base}\n\n{note}" if base else note
    return request.override(system_message=SystemMessage(content=text))
