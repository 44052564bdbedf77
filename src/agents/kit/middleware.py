"""`McpToolsMiddleware`: the one piece every MCP-using graph adds to its agent.

At run time it resolves the caller's token, opens that user's MCP sessions
(one per server, for the whole run), shows the model the allowed tools and
executes the model's tool calls over those sessions. Nothing per-user happens
at import or graph-build time, so one compiled graph serves every user.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import SystemMessage, ToolMessage
from langgraph.config import get_config, get_stream_writer
from langgraph.errors import GraphInterrupt
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Command, StreamWriter, interrupt

from agents.kit.audit import record_tool_call, run_coordinates
from agents.kit.connect import CONNECT_TOOL, connect_account_tool, connect_message
from agents.kit.credentials import ServerCredential, reconnect_message
from agents.kit.errors import OnBehalfError, UserTokenExpired
from agents.kit.results import bound_result
from agents.kit.run_scope import RunScope
from agents.kit.servers import aload_servers_config
from agents.kit.sessions import describe_failure, explain_refusal
from agents.kit.tokens import UserContext, UserToken, resolve_user_token
from agents.kit.tracing import inline_untraced_langsmith_hops
from onbehalf.oauth.accounts import OAuthProblem

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
    """

    def __init__(
        self,
        *,
        tools: Sequence[str] | None = None,
        servers: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        inline_untraced_langsmith_hops()
        self.allowlist = list(tools) if tools is not None else None
        self.server_names = list(servers) if servers is not None else None
        self._scopes: dict[int, tuple[object, RunScope]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # --- run lifecycle -------------------------------------------------------------------

    async def abefore_agent(self, state: Any, runtime: Runtime[UserContext]) -> None:
        """Fail before any work when the caller has no usable token."""
        user = await resolve_user_token(runtime, _current_config())
        user.ensure_fresh()
        return None

    async def aafter_agent(self, state: Any, runtime: Runtime[UserContext]) -> None:
        await self._close(runtime, reusable=True)
        return None

    async def awrap_model_call(
        self,
        request: ModelRequest[UserContext],
        handler: Callable[[ModelRequest[UserContext]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        runtime = request.runtime
        try:
            try:
                scope = await self._scope(runtime)
            except UserTokenExpired as exc:
                # expired mid-run (the start is guarded by abefore_agent): no MCP tools,
                # but the model still answers and can tell the user what to do
                self._close_soon(runtime)
                return await handler(_with_note(request, f"{exc}. No tools are available."))
            if scope.refused_at_open:
                scope = await self._reconnect_at_open(runtime, scope)
            tools = [bound.tool for bound in scope.tools.values()]
            if scope.not_connected and CONNECT_TOOL not in scope.tools:
                tools.append(connect_account_tool(scope.not_connected))
            note = scope.availability_note()
            if note:
                request = _with_note(request, note)
            return await handler(request.override(tools=[*request.tools, *tools]))
        except BaseException:
            self._close_soon(runtime)
            raise

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
        if call["name"] == CONNECT_TOOL:
            connected = await self._connect_account(call, runtime, config)
            if connected is not None:
                return connected
        started = time.perf_counter()
        audit = {"identity": "?", "server": None, "outcome": "failed"}
        try:
            result = await self._call_mcp_tool(request, handler, runtime, config, audit)
            return result
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                audit["outcome"] = "cancelled"
            elif not isinstance(exc, GraphInterrupt):
                audit["outcome"] = "failed"
            self._close_soon(runtime)
            raise
        finally:
            record_tool_call(
                identity=str(audit["identity"]),
                coordinates=run_coordinates(config, runtime),
                server=audit["server"],
                tool=call["name"],
                outcome=audit["outcome"],  # type: ignore[arg-type]
                started=started,
            )

    async def _call_mcp_tool(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
        runtime: Any,
        config: dict[str, Any] | None,
        audit: dict[str, Any],
    ) -> ToolMessage | Command[Any]:
        """Run one tool call over the run's session; every failure becomes a tool error."""
        call = request.tool_call
        try:
            user = await resolve_user_token(runtime, config)
            audit["identity"] = user.identity
            scope = await self._scope(runtime, user)
            bound = scope.tools.get(call["name"])
            if bound is None:
                audit["outcome"] = "not_allowed"
                why = "".join(f" {reason}." for reason in scope.unavailable.values())
                return _tool_error(
                    call, f"tool {call['name']!r} is not available to you here.{why}"
                )
            audit["server"] = bound.server
            if not scope.belongs_to(user):
                audit["outcome"] = "refused"
                return _tool_error(call, "your credentials changed during this run: retry")
            user.ensure_fresh(during_run=True)
        except UserTokenExpired as exc:
            audit["outcome"] = "expired"
            return _tool_error(call, str(exc))
        timeout = scope.config.servers[bound.server].timeout_seconds
        renewed = refreshed = False
        try:
            while True:
                bound.session.notify = _stream_writer()
                try:
                    result = await bound.session.call(
                        handler(request.override(tool=bound.tool)), timeout
                    )
                    break
                except Exception:
                    if bound.session.ended_by_server and not renewed:
                        renewed = True
                        # the server ended the session (404) without running the call:
                        # once more on a fresh session, before the user sees anything (MCP spec)
                        await scope.renew(bound.server, bound.session)
                    elif not refreshed and await self._refreshed(scope, bound, user):
                        # 401 on OAuth tokens: the server did not run the call; refreshed
                        # tokens on a new session, then the same call once more
                        refreshed = True
                    else:
                        raise
                    bound = scope.tools[call["name"]]
        except TimeoutError:
            bound.session.broken = True
            audit["outcome"] = "timeout"
            return _tool_error(
                call, f"MCP server {bound.server!r} did not answer within {timeout:g}s"
            )
        except (OnBehalfError, asyncio.CancelledError):
            raise
        except Exception as exc:
            bound.session.broken = True
            status = bound.session.refused_status
            audit["outcome"] = "refused" if status in (401, 403) else "unavailable"
            credential = scope.credentials.get(bound.server)
            if status == 401 and credential is not None and credential.reconnectable:
                return await _ask_to_reconnect(call, bound.server, credential)
            reason = explain_refusal(bound.server, status) or (
                f"MCP server {bound.server!r} became unavailable during this run "
                f"({describe_failure(exc)})"
            )
            log.warning("tool call %s on %s failed: %s", call["name"], bound.server, reason)
            return _tool_error(call, reason)
        if isinstance(result, ToolMessage):
            audit["outcome"] = "tool_error" if result.status == "error" else "ok"
            return bound_result(result)
        audit["outcome"] = "ok"
        return result

    @staticmethod
    async def _refreshed(scope: RunScope, bound: Any, user: UserToken) -> bool:
        """After a 401: refresh the account's tokens and reopen its session, if it has any."""
        credential = scope.credentials.get(bound.server)
        if bound.session.refused_status != 401 or credential is None or credential.refresh is None:
            return False
        bound.session.broken = True
        if not await credential.refresh():
            return False
        await scope.reopen(bound.server, user)
        return call_still_bound(scope, bound)

    async def _connect_account(
        self, call: dict[str, Any], runtime: Any, config: dict[str, Any] | None
    ) -> ToolMessage | None:
        """The `connect_account` tool: pause the run with a connect link (lazy consent).

        Resuming re-runs this call on a new scope: if the account is connected by then, the
        model reads "connected" and the server's tools are in its next call. None when the
        name belongs to an MCP server's own tool."""
        user = await resolve_user_token(runtime, config)
        scope = await self._scope(runtime, user)
        if CONNECT_TOOL in scope.tools:
            return None
        server = str((call.get("args") or {}).get("server", ""))
        pending = scope.not_connected.get(server)
        if pending is None:
            if server in scope.sessions:
                return _tool_result(call, f"connected: {server!r} is connected; its tools are "
                                    "available")
            known = ", ".join(sorted(scope.not_connected)) or "none"
            return _tool_error(call, f"there is no account {server!r} to connect here "
                               f"(to connect: {known})")
        try:
            link = await pending.connect()
        except OAuthProblem as exc:
            return _tool_error(call, f"cannot start connecting {server!r}: {exc}")
        interrupt({
            "type": "connect_account",
            "server": server,
            "connect_url": link,
            "message": connect_message(server, pending, link),
        })
        # resumed without the account connected (the check at the top found none)
        await self._close(runtime, reusable=True)
        scope = await self._scope(runtime, user)
        if server in scope.sessions:
            return _tool_result(call, f"connected: {server!r} is connected; its tools are "
                                "available")
        return _tool_error(call, f"{server!r} is not connected yet: the user has not finished "
                           "connecting it; ask them to open the link, then resume")

    async def _reconnect_at_open(self, runtime: Any, scope: RunScope) -> RunScope:
        """A connected account refused when its session opened: drop it (only if unchanged),
        pause the run for the user to reconnect, then start over with what they connected.

        The scope that holds the refused credential is closed, never reused; if the
        reconnected account is refused again, the model is told (no second pause)."""
        server, credential = next(iter(scope.refused_at_open.items()))
        self._close_soon(runtime)
        await _revoke_and_pause(server, credential)
        return await self._scope(runtime)

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

    async def _new_scope(self, user: UserToken) -> RunScope:
        config = await aload_servers_config()
        if self.server_names is not None:
            servers = {k: v for k, v in config.servers.items() if k in self.server_names}
            config = config.model_copy(update={"servers": servers})
        return RunScope(
            identity=user.identity,
            fingerprint=user.fingerprint,
            config=config,
            allowlist=self.allowlist,
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


def _stream_writer() -> StreamWriter | None:
    """Where this run's custom stream events go (None outside a run).

    MCP notifications arrive in the session's own task, outside the run's context,
    where LangGraph's writer cannot find the run: it is called in a copy of this
    call's context."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return None
    context = contextvars.copy_context()
    return lambda event: context.run(writer, event)


def _run_runtime() -> Any:
    """The run's Runtime inside a tool call (ToolRuntime does not carry the run control)."""
    return get_runtime()


def _with_note(request: ModelRequest[UserContext], note: str) -> ModelRequest[UserContext]:
    """The request with `note` appended to its system message (the model must know)."""
    base = request.system_message.content if request.system_message else ""
    text = f"{base}\n\n{note}" if base else note
    return request.override(system_message=SystemMessage(content=text))


async def _ask_to_reconnect(
    call: dict[str, Any], server: str, credential: ServerCredential
) -> ToolMessage:
    """Drop the refused credential (only if unchanged), then pause the run for the user.

    Resuming the thread after reconnecting re-runs this tool call with the new
    credential. If the resumed call is refused again, the model is told.
    """
    await _revoke_and_pause(server, credential)
    where = f" at {credential.connect_url}" if credential.connect_url else ""
    return _tool_error(
        call, f"MCP server {server!r} refused your reconnected account again: reconnect it{where}"
    )


async def _revoke_and_pause(server: str, credential: ServerCredential) -> None:
    """Compare-and-delete the refused credential, then the `reconnect_account` interrupt."""
    if credential.revoke is not None:
        await credential.revoke()
    link = await credential.link()
    interrupt(
        {
            "type": "reconnect_account",
            "server": server,
            "connect_url": link,
            "message": reconnect_message(server, credential, link),
        }
    )


def call_still_bound(scope: RunScope, bound: Any) -> bool:
    """The reopened session still offers the tool (a server may drop it for new tokens)."""
    return any(b.server == bound.server and b.mcp_tool.name == bound.mcp_tool.name
               for b in scope.tools.values())


def _tool_result(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=call["id"], name=call["name"])


def _tool_error(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(
        content=text, tool_call_id=call["id"], name=call["name"], status="error"
    )
