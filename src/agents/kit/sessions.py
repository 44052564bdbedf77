"""Where MCP sessions are opened and closed: one owner task per session.

An MCP client session is an async context manager built on an anyio task
group, which must be exited by the task that entered it. LangGraph runs the
model node and each tool call in different tasks, so each session here is
owned by a small dedicated task that opens it, waits, and closes it; every
other task only sends requests over it. That is what lets one session serve
every tool call of a run, and be closed from wherever the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.callbacks import CallbackContext, Callbacks
from langchain_mcp_adapters.sessions import Connection, create_session
from langgraph.types import StreamWriter
from mcp import ClientSession
from mcp.types import (
    LoggingMessageNotificationParams,
    ServerNotification,
    ToolListChangedNotification,
)

from agents.kit.transport import client_factory

log = logging.getLogger("onbehalf.mcp")
T = TypeVar("T")

CLOSE_TIMEOUT_SECONDS = 5.0


class SessionUnavailable(Exception):
    """The server could not be reached, refused the credential, or timed out."""

    def __init__(self, server: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.server = server
        self.reason = reason
        self.status = status


def explain_refusal(server: str, status: int | None) -> str | None:
    """What an HTTP failure of an MCP server means for the user, or None if none seen."""
    if status == 401:
        return (
            f"MCP server {server!r} no longer accepts your sign-in (401): "
            "please sign in again (re-authenticate) and retry"
        )
    if status == 403:
        return f"MCP server {server!r} says you are not permitted to do this (403)"
    if status is not None and status >= 500:
        return f"MCP server {server!r} failed (HTTP {status}); try again later"
    if status is not None and status >= 400 and status != 404:
        return f"MCP server {server!r} rejected the request (HTTP {status})"
    return None


class McpSession:
    """One initialized MCP session, for one server and one credential, owned by its own task."""

    def __init__(
        self,
        server: str,
        connection: dict[str, Any],
        timeout: float,
        *,
        expires_at: float = float("inf"),
        on_tools_changed: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.expires_at = expires_at
        """When the credential inside stops being valid; the pool never lends it after."""
        self.refused_status: int | None = None
        self.ended_by_server = False
        """Set when the server answered 404 for this session's id: it ended the session
        (restart, idle expiry). The request it answered so was not run, so the kit sends it
        again on a fresh session (MCP spec, session management); this one is never lent."""
        self.broken = False
        """Set when a call failed at the transport level: the session is not reused."""
        self.transport_error: str | None = None
        self.bound_tools: dict[tuple[str, str], BaseTool] = {}
        """LangChain tools bound to this session, by (MCP name, public name)."""
        self._on_tools_changed = on_tools_changed
        self.failed = asyncio.Event()
        """Set when the server refused a request or the session ended: calls stop waiting."""
        conn = dict(connection)
        conn["httpx_client_factory"] = client_factory(self._on_refused, self._on_transport_error)
        conn["session_kwargs"] = {
            "message_handler": self._on_message, "logging_callback": self._on_log
        }
        self.notify: StreamWriter | None = None
        """The stream writer of the run that holds this session (set per tool call): the
        server's progress and log notifications become that run's custom stream events.
        A session is lent to one run at a time, so they never reach another run."""
        self.callbacks = Callbacks(on_progress=self._on_progress)
        self._connection: Connection = conn  # type: ignore[assignment]
        self._ready: asyncio.Future[ClientSession] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def __repr__(self) -> str:  # never show the connection: it holds the credential
        return f"McpSession(server={self.server!r}, closed={self.closed})"

    def _on_refused(self, status: int) -> None:
        if status == 404:
            # the SDK answers the waiting request with "Session terminated" itself; the
            # caller replaces the session (RunScope.renew) and sends the request again
            self.ended_by_server = True
            self.broken = True
            return
        self.refused_status = status
        self.broken = True
        self.failed.set()

    def _on_transport_error(self, reason: str) -> None:
        self.transport_error = reason
        self.broken = True
        self.failed.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, ServerNotification) and isinstance(
            message.root, ToolListChangedNotification
        ):
            self.bound_tools.clear()
            if self._on_tools_changed is not None:
                self._on_tools_changed()

    async def _on_progress(
        self, progress: float, total: float | None, message: str | None,
        context: CallbackContext,
    ) -> None:
        self._emit({"type": "mcp_progress", "server": self.server, "tool": context.tool_name,
                    "progress": progress, "total": total, "message": message})

    async def _on_log(self, params: LoggingMessageNotificationParams) -> None:
        self._emit({"type": "mcp_log", "server": self.server, "level": params.level,
                    "logger": params.logger, "data": params.data})

    def _emit(self, event: dict[str, Any]) -> None:
        notify = self.notify
        if notify is not None:
            with contextlib.suppress(Exception):  # a closed stream must not fail the call
                notify(event)

    @property
    def client(self) -> ClientSession:
        """The initialized MCP client session (only after `open` succeeded)."""
        assert self._ready is not None and self._ready.done()
        return self._ready.result()

    @property
    def alive(self) -> bool:
        return not self.closed and self._task is not None and not self._task.done()

    async def open(self) -> ClientSession:
        """Open and initialize the session, bounded by the server's timeout."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        # a fresh context: a pooled session must not keep the opening run's config,
        # runtime or context (and with it that run's token and messages) alive
        self._task = asyncio.create_task(
            self._own(), name=f"mcp-session:{self.server}", context=contextvars.Context()
        )
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(self._ready)
        except TimeoutError:
            await self._abandon()  # stuck in initialize: nothing to close gracefully
            raise SessionUnavailable(
                self.server,
                f"MCP server {self.server!r} did not answer within {self.timeout:g}s",
            ) from None
        except SessionUnavailable:
            await self.aclose()
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self.aclose())
            raise

    async def _own(self) -> None:
        assert self._ready is not None
        try:
            async with create_session(self._connection) as session:
                await session.initialize()
                if not self._ready.done():
                    self._ready.set_result(session)
                await self._stop.wait()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            reason = explain_refusal(self.server, self.refused_status) or (
                f"MCP server {self.server!r} is unavailable: {describe_failure(exc)}"
            )
            if not self._ready.done():
                self._ready.set_exception(
                    SessionUnavailable(self.server, reason, status=self.refused_status)
                )
            else:
                log.info("MCP session to %s ended: %s", self.server, reason)
        finally:
            self.closed = True
            self.failed.set()
            if not self._ready.done():
                self._ready.set_exception(
                    SessionUnavailable(self.server, f"MCP session to {self.server!r} closed")
                )
            # a failure nobody awaited must not be reported as "never retrieved"
            if self._ready.done() and not self._ready.cancelled():
                self._ready.exception()

    async def call(self, work: Awaitable[T], limit_seconds: float) -> T:
        """Await a request over this session, but stop as soon as the session fails.

        The MCP SDK leaves a request waiting when its session dies (e.g. after an
        HTTP 401), so each call races the session's failure and the timeout.
        """
        task = asyncio.ensure_future(work)
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            done, _ = await asyncio.wait(
                {task, failed}, timeout=limit_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            failed.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if not done:
            raise TimeoutError
        raise SessionUnavailable(
            self.server,
            explain_refusal(self.server, self.refused_status)
            or f"MCP server {self.server!r} became unavailable during this run "
            f"({self.transport_error or 'session ended'})",
            status=self.refused_status,
        )

    async def _abandon(self) -> None:
        self._stop.set()
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({self._task}, timeout=1.0)

    async def aclose(self) -> None:
        """Close the session (the server is told with DELETE); bounded in time."""
        self._stop.set()
        task = self._task
        if task is None or task.done():
            self.closed = True
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await asyncio.shield(task)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=1.0)
        self.closed = True


def describe_failure(exc: BaseException) -> str:
    """One line for a (possibly grouped) transport failure, without request details."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}"
