"""Run a graph on the LangGraph server as the user whose token was handed off.

The worker does not act on its own authority: it takes the user's token once
(`TokenHandoff.take_usable`), sends it as the `Authorization` header of every
request to LANGGRAPH_URL, and lets the server's auth edge verify it, exactly
as for a browser. The token is never put in `config`, `context`, metadata or
thread state: `config` sent through `RemoteGraph` does not reach the graph's
runtime context, and strings in `configurable` are copied into checkpoint
metadata (docs/worker.md explains both).

Because the token is deleted from Redis before it is used, a worker killed
mid-run leaves no token behind; the run itself continues or is cancelled on
the server according to its own disconnect policy.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from langgraph.pregel.remote import RemoteException, RemoteGraph
from langgraph_sdk.client import LangGraphClient

from onbehalf.jwt_auth import bearer_header
from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import HandedOffToken, TokenHandoff

logger = logging.getLogger(__name__)

STREAM_MODES = ["updates", "values"]
"""`updates` become one JSON line per node step; `values` is kept only for the final answer."""

CONNECT_RETRIES = 2
"""Connection attempts retried at start (0.5 s apart); a refused server fails in about a second."""

TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)
"""Reads may wait long (a model step between two SSE events); connecting may not."""

Event = dict[str, Any]


class WorkerError(Exception):
    """A run that could not be done; `exit_code` is the CLI's (DESIGN.md §4)."""

    exit_code = 4


class RunRejected(WorkerError):
    """The server refused the request (401, 403, or 404 for a thread that is not ours)."""

    exit_code = 3

    def __init__(self, message: str, *, status_code: int, detail: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class RunFailed(WorkerError):
    """The run started or was attempted but did not finish: run error, 5xx, or no server."""

    exit_code = 4


async def run_execution(
    execution_id: str,
    graph_id: str,
    input: Mapping[str, Any],
    thread_id: str | None = None,
    *,
    settings: HandoffSettings | None = None,
    handoff: TokenHandoff | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Event]:
    """Take the execution's token and stream the run as JSON-able events.

    Events, in order: one `{"event": "start", "thread_id": ..., ...}`; one
    `{"event": "update", "node": ..., "data": ...}` per node step (and
    `{"event": "interrupt", ...}` if the graph pauses); one
    `{"event": "done", "thread_id": ..., "run_id": ..., "output": <last AI text or None>}`.

    Raises a HandoffError (no usable token), RunRejected or RunFailed.
    `transport` replaces the HTTP transport (tests, in-process servers); the
    token still travels only in the `Authorization` header.
    """
    settings = settings if settings is not None else HandoffSettings()
    if handoff is None:
        async with TokenHandoff(settings) as own:
            token = await own.take_usable(execution_id)
    else:
        token = await handoff.take_usable(execution_id)
    logger.info(
        "worker took execution=%s token=%s expires_in=%ds",
        execution_id, token.fingerprint, token.seconds_left,
    )
    calls = _ServerCalls(settings.langgraph_url, token, transport)
    try:
        async for event in calls.stream(execution_id, graph_id, input, thread_id):
            yield event
    finally:
        await calls.aclose()


class _ServerCalls:
    """Everything said to the LangGraph server during one run, and how its failures read."""

    def __init__(
        self,
        url: str,
        token: HandedOffToken,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._url = url
        self._token = token
        self._client = LangGraphClient(
            httpx.AsyncClient(
                base_url=url,
                transport=transport or httpx.AsyncHTTPTransport(retries=CONNECT_RETRIES),
                timeout=TIMEOUT,
                # httpx hides the Authorization value in reprs and its own logs.
                headers={
                    "Authorization": bearer_header(token.value.get_secret_value()),
                    "User-Agent": "onbehalf-worker",
                },
            )
        )
        self._started = False

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(
        self,
        execution_id: str,
        graph_id: str,
        input: Mapping[str, Any],
        thread_id: str | None,
    ) -> AsyncIterator[Event]:
        try:
            created = thread_id is None
            thread_id = await self._open_thread(execution_id, graph_id, thread_id)
            yield {
                "event": "start",
                "execution_id": execution_id,
                "graph": graph_id,
                "thread_id": thread_id,
                "thread_created": created,
            }
            self._started = True
            run: dict[str, Any] = {}
            last_values: Any = None
            paused = False
            remote = RemoteGraph(graph_id, client=self._client)
            async for part in remote.astream(
                dict(input),
                config={"configurable": {"thread_id": thread_id}},
                stream_mode=STREAM_MODES,
                version="v2",
                on_run_created=lambda meta: run.update(meta),
            ):
                if part["type"] == "values":
                    last_values = part["data"]
                    continue
                for event in _update_events(part["data"]):
                    paused = paused or event["event"] == "interrupt"
                    yield event
            if not paused:
                interrupts, last_values = await self._outcome(
                    thread_id, run.get("run_id"), last_values)
                if interrupts:
                    paused = True
                    yield {"event": "interrupt", "interrupts": interrupts}
            yield {
                "event": "done",
                "thread_id": thread_id,
                "run_id": _str_or_none(run.get("run_id")),
                "output": final_answer(last_values),
            }
        except RemoteException as exc:
            message = f"the run failed on the server: {_run_error(exc)}"
            raise RunFailed(self._scrub(message)) from None
        except httpx.HTTPStatusError as exc:
            raise self._status_error(exc, thread_id) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    async def _outcome(self, thread_id: str, run_id: Any, streamed: Any) -> tuple[list[Any], Any]:
        """How the run ended, asked of the server rather than read from the stream, which
        can miss events (Aegra 0.11 replays a run's stored events and then subscribes to
        its live ones; under load an event published in between reaches neither): the
        interrupts it paused on, or none and the thread's values, whose last answer is the
        output (not an earlier step's). A stream that just ends may also be a cancelled
        run: anything but `success`, or a pause, fails."""
        status = await self._final_status(thread_id, run_id)
        state = await self._client.threads.get_state(thread_id)
        interrupts = _pending_interrupts(state)
        # a pause is `success` on langgraph-api, `interrupted` on Aegra
        if interrupts and status in (None, "success", "interrupted"):
            return interrupts, streamed
        if status not in (None, "success"):
            raise RunFailed(
                f"the run did not finish: the server reports status {status!r} "
                "(cancelled, interrupted or failed on the server)"
            )
        values = state.get("values") if isinstance(state, Mapping) else None
        return [], values if values is not None else streamed

    async def _final_status(self, thread_id: str, run_id: Any) -> str | None:
        """The run's status once it is neither pending nor running (None: no run id seen)."""
        if not run_id:
            return None
        status = "pending"
        for _ in range(20):
            record = await self._client.runs.get(thread_id, str(run_id))
            status = str(record.get("status"))
            if status not in ("pending", "running"):
                break
            await asyncio.sleep(0.1)
        return status

    async def _open_thread(self, execution_id: str, graph_id: str, thread_id: str | None) -> str:
        """The user's own thread: created with their token, or checked to be theirs."""
        if thread_id is None:
            thread = await self._client.threads.create(
                graph_id=graph_id, metadata={"execution_id": execution_id}
            )
            return str(thread["thread_id"])
        try:
            await self._client.threads.get(thread_id)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (401, 429):
                detail = self._scrub(_detail(exc))
                why = (
                    "it does not exist or belongs to another user"
                    if status == 404
                    else "the thread id is not acceptable"
                )
                raise RunRejected(
                    f"the server refused thread {thread_id} ({status}: {detail}): {why}; "
                    "omit --thread-id to start a new thread",
                    status_code=status,
                    detail=detail,
                ) from None
            raise
        return thread_id

    def _status_error(self, exc: httpx.HTTPStatusError, thread_id: str | None) -> WorkerError:
        status = exc.response.status_code
        detail = _detail(exc)
        if status == 401:
            message = (
                f"the LangGraph server at LANGGRAPH_URL={self._url} rejected the user's token "
                f"(401: {detail}): the user must sign in again and the API side hand off a "
                "fresh token"
            )
        elif status == 403:
            message = (
                f"the LangGraph server at LANGGRAPH_URL={self._url} does not permit this "
                f"user to do that (403: {detail})"
            )
        elif status == 404:
            what = f"thread {thread_id}" if thread_id else "the resource"
            message = (
                f"the LangGraph server at LANGGRAPH_URL={self._url} answered 404 for {what} "
                f"({detail}): it does not exist or belongs to another user, or the graph id "
                "is unknown"
            )
        elif status < 500:
            return RunFailed(self._scrub(
                f"the LangGraph server at LANGGRAPH_URL={self._url} refused the run request "
                f"({status}: {detail})"
            ))
        else:
            phase = "during" if self._started else "before"
            return RunFailed(self._scrub(
                f"the LangGraph server at LANGGRAPH_URL={self._url} failed {phase} the run "
                f"({status}: {detail}); retry with a freshly handed-off token"
            ))
        return RunRejected(self._scrub(message), status_code=status, detail=self._scrub(detail))

    def _transport_error(self, exc: httpx.TransportError) -> RunFailed:
        reason = _short(exc)
        if not self._started:
            return RunFailed(
                f"cannot reach the LangGraph server at LANGGRAPH_URL={self._url} ({reason}): "
                "start it or point LANGGRAPH_URL at it; the handed-off token was used up, so "
                "hand it off again before retrying"
            )
        return RunFailed(
            f"lost the connection to the LangGraph server at LANGGRAPH_URL={self._url} during "
            f"the run ({reason}); the run may still finish on the server: check its thread"
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: no server message may carry the token (or its signature) out."""
        secret = self._token.value.get_secret_value()
        signature = secret.rsplit(".", 1)[-1]
        text = text.replace(secret, "[token]")
        return text.replace(signature, "[token]") if len(signature) >= 16 else text


def final_answer(values: Any) -> str | None:
    """The text of the last AI message in a graph's final state, or None when there is none."""
    if not isinstance(values, Mapping):
        return None
    for message in reversed(values.get("messages") or []):
        if not isinstance(message, Mapping):
            continue
        if message.get("type") not in ("ai", "AIMessage", "AIMessageChunk") and \
                message.get("role") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(_text_of(part) for part in content)
    return None


def _text_of(part: Any) -> str:
    """A content block's text: plain strings and `{"type": "text"}` blocks; tool calls add none."""
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping) and part.get("type") == "text":
        text = part.get("text")
        return text if isinstance(text, str) else ""
    return ""


def _update_events(data: Any) -> list[Event]:
    """One event per node in an `updates` chunk; the graph pausing becomes an `interrupt`."""
    if not isinstance(data, Mapping):
        return [{"event": "update", "node": None, "data": data}]
    return [
        {"event": "interrupt", "interrupts": update}
        if node == "__interrupt__"
        else {"event": "update", "node": node, "data": update}
        for node, update in data.items()
    ]


def _pending_interrupts(state: Any) -> list[Any]:
    """The interrupts a thread waits on, as the stream's `__interrupt__` update carries them."""
    if not isinstance(state, Mapping):
        return []
    return [pending for task in state.get("tasks") or [] if isinstance(task, Mapping)
            for pending in task.get("interrupts") or []]


def _run_error(exc: RemoteException) -> str:
    data = exc.args[0] if exc.args else None
    if isinstance(data, Mapping):
        kind, message = data.get("error"), data.get("message")
        if kind and message:
            return f"{kind}: {message}"
        return str(message or kind or dict(data))
    return str(data)


def _detail(exc: httpx.HTTPStatusError) -> str:
    """The server's `detail` (or message), read from whatever the SDK kept of the body."""
    body = getattr(exc, "body", None)
    if body is None:
        try:
            body = exc.response.json()
        except (ValueError, httpx.ResponseNotRead, httpx.StreamError):
            body = None
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return _short_text(value)
        return _short_text(str(dict(body)))
    if isinstance(body, str) and body.strip():
        return _short_text(body.strip())
    return exc.response.reason_phrase or str(exc.response.status_code)


def _short(exc: BaseException) -> str:
    return _short_text(str(exc).strip() or type(exc).__name__)


def _short_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value if isinstance(value, str) else None
