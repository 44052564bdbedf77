"""Where MCP sessions are opened and closed: one owner task per session.

An MCP client session is an async context manager built on an anyio task
group, which must be exited by the task that entered it. LangGraph runs the
model node and each tool call in different tasks, so each session here is
owned by a small dedicated task that opens it (`client.session(name)` of the
user's `MultiServerMCPClient`, client.py), waits, and closes it; every other
task only sends requests over it. That is what lets one session serve every
tool call of a run, and be closed from wherever the run ends.

The owner task marks itself as `serving_session`; everything the session's
HTTP client and receive loop do runs in that task's context, so the client's
shared `Callbacks` and `httpx_client_factory` reach the right session (and
through it, only the run that holds it) without a per-session connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.callbacks import CallbackContext, Callbacks
from langgraph.types import StreamWriter
from mcp import ClientSession
from mcp.shared.context import RequestContext
from mcp.types import (
    ElicitRequestParams,
    ElicitResult,
    LoggingMessageNotificationParams,
    ServerNotification,
    ToolListChangedNotification,
)
from pydantic import SecretStr

from onbehalf.mcp.elicitation import Question, answer_ttl_seconds
from onbehalf.mcp.failures import no_answer, unavailable_at_open
from onbehalf.mcp.results import credentials_removed
from onbehalf.mcp.transport import client_factory

if TYPE_CHECKING:
    from langchain_mcp_adapters.client import MultiServerMCPClient

log = logging.getLogger("onbehalf.mcp")

CLOSE_TIMEOUT_SECONDS = 5.0


class SessionUnavailable(Exception):
    """The server could not be reached, refused the credential, or timed out."""

    def __init__(self, server: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.server = server
        self.reason = reason
        self.status = status


class McpSession:
    """One initialized MCP session, for one server and one credential, owned by its own task."""

    def __init__(
        self,
        server: str,
        client: MultiServerMCPClient,
        timeout: float,
        *,
        expires_at: float = float("inf"),
        on_tools_changed: Callable[[], None] | None = None,
        sent_secrets: tuple[SecretStr, ...] = (),
    ) -> None:
        self.server = server
        self._sent_secrets = sent_secrets
        """The credential the session sends, as its server could echo it into the progress
        and log messages streamed to the run (results.py)."""
        self.timeout = timeout
        self.expires_at = expires_at
        """When the credential inside stops being valid; the pool never lends it after."""
        self.refused_status: int | None = None
        self.missing_scopes: tuple[str, ...] | None = None
        """What a 403 `insufficient_scope` asked for (step-up), else None."""
        self.ended_by_server = False
        """Set when the server answered 404 for this session's id: it ended the session
        (restart, idle expiry). The request it answered so was not run, so the kit sends it
        again on a fresh session (MCP spec, session management); this one is never lent."""
        self.broken = False
        """Set when a call failed at the transport level: the session is not reused."""
        self.transport_error: str | None = None
        self.bound_tools: dict[tuple[str, str, tuple[int, ...]], BaseTool] = {}
        """LangChain tools bound to this session, by (MCP name, public name, interceptors)."""
        self._on_tools_changed = on_tools_changed
        self.failed = asyncio.Event()
        """Set when the server refused a request or the session ended: calls stop waiting."""
        self.mcp_client = client
        """The user's client whose connection for `server` this session was opened with."""
        self.notify: StreamWriter | None = None
        """The stream writer of the run that holds this session (set per tool call): the
        server's progress and log notifications become that run's custom stream events.
        A session is lent to one run at a time, so they never reach another run."""
        self.questions: asyncio.Queue[Question] = asyncio.Queue()
        """What the server asked the user (`elicitation/create`) during a call, for the call
        waiting on this session to pause the run with (elicitation.py)."""
        self._ready: asyncio.Future[ClientSession] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def __repr__(self) -> str:  # never show the client: its connections hold credentials
        return f"McpSession(server={self.server!r}, closed={self.closed})"

    def _on_refused(self, status: int, missing_scopes: tuple[str, ...] | None = None) -> None:
        if status == 404:
            # the SDK answers the waiting request with "Session terminated" itself; the
            # caller replaces the session (RunScope.renew) and sends the request again
            self.ended_by_server = True
            self.broken = True
            return
        self.refused_status = status
        self.missing_scopes = missing_scopes
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

    async def _on_log(self, params: LoggingMessageNotificationParams,
                      context: CallbackContext) -> None:
        self._emit({"type": "mcp_log", "server": self.server, "level": params.level,
                    "logger": params.logger, "data": params.data})

    async def _on_elicitation(self, params: ElicitRequestParams) -> ElicitResult:
        """Hand the question to the call waiting on this session; wait for the user's
        answer (bounded: unanswered, the server is told "cancel")."""
        question = Question(params, asyncio.get_running_loop().create_future())
        self.questions.put_nowait(question)
        try:
            async with asyncio.timeout(answer_ttl_seconds()):
                return await asyncio.shield(question.answer)
        except TimeoutError:
            return ElicitResult(action="cancel")

    def _emit(self, event: dict[str, Any]) -> None:
        notify = self.notify
        if notify is not None:
            with contextlib.suppress(Exception):  # a closed stream must not fail the call
                notify(credentials_removed(event, self._sent_secrets))

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
                no_answer(self.server, self.timeout),
            ) from None
        except SessionUnavailable:
            await self.aclose()
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self.aclose())
            raise

    async def _own(self) -> None:
        assert self._ready is not None
        serving_session.set(self)  # this task's context only (see `open`)
        try:
            async with self.mcp_client.session(self.server) as session:  # sends initialize
                if not self._ready.done():
                    self._ready.set_result(session)
                await self._stop.wait()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            reason = unavailable_at_open(self.server, self.refused_status, exc)
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


serving_session: contextvars.ContextVar[McpSession | None] = contextvars.ContextVar(
    "onbehalf_serving_session", default=None
)
"""The session whose owner task (and receive loop, and HTTP client) this code runs in."""


def session_http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """The `httpx_client_factory` of every connection: the kit's transport, reporting to
    the session being opened (the status of refused requests, connections lost)."""
    session = serving_session.get()
    if session is None:
        return client_factory()(headers=headers, timeout=timeout, auth=auth)
    factory = client_factory(session._on_refused, session._on_transport_error)
    return factory(headers=headers, timeout=timeout, auth=auth)


async def route_message(message: Any) -> None:
    """The `message_handler` of every connection: notifications to the session served."""
    session = serving_session.get()
    if session is not None:
        await session._on_message(message)


async def _route_progress(progress: float, total: float | None, message: str | None,
                          context: CallbackContext) -> None:
    session = serving_session.get()
    if session is not None:
        await session._on_progress(progress, total, message, context)


async def _route_log(params: LoggingMessageNotificationParams, context: CallbackContext) -> None:
    session = serving_session.get()
    if session is not None:
        await session._on_log(params, context)


async def _route_elicitation(mcp_context: RequestContext[Any, Any], params: ElicitRequestParams,
                             context: CallbackContext) -> ElicitResult:
    session = serving_session.get()
    if session is None:
        return ElicitResult(action="decline")
    return await session._on_elicitation(params)


ROUTED_CALLBACKS = Callbacks(on_logging_message=_route_log, on_progress=_route_progress,
                             on_elicitation=_route_elicitation)
"""The callbacks of every user's client: each notification goes to the session it came on."""
