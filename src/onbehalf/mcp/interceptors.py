"""Per-call policy: everything that happens around one MCP tool call, in one room.

The middleware hands every MCP tool call here (`run_mcp_tool_call`). This
module decides, for that call:

- which session runs it, and that the run's user still owns that session;
- how long it may take: the call races its timeout and its session's failure
  (the MCP SDK leaves a request waiting when its session dies);
- what to do when the server ended the session (404 on its id: a fresh
  session and the same request once more, MCP spec) or refused OAuth tokens
  (refresh, reopen, once more);
- what the model reads when it fails (the sentences themselves are in
  `failures`, below every module that reports one);
- when a refused credential leads to reconnecting: a 401 on a connected
  account, during a call or when its session opens, drops the credential only
  if unchanged (compare-and-delete) and pauses the run with the
  `reconnect_account` interrupt (`revoke_and_pause`);
- the audit outcome, and the bound on the result the conversation keeps;
- what the run's stream is told: an `mcp_tool` custom event when the call starts on its
  server and another with the audit outcome when it ends (`announce`);
- what happens when the server asks the user something (elicitation, DESIGN.md §8.1): the
  run pauses with `mcp_elicitation`, the waiting call is parked and gets the answer on
  resume, and no call runs twice because of the pause (`_awaiting`, `_after_pause`; the
  rules themselves are in `elicitation`).

The graph's own `tool_interceptors` (langchain-mcp-adapters' `ToolCallInterceptor`,
given to `McpToolsMiddleware`) run inside this, around the MCP request itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from langchain_core.messages import ToolMessage
from langchain_core.tools import ToolException
from langgraph.config import get_stream_writer
from langgraph.errors import GraphInterrupt
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, StreamWriter, interrupt
from mcp.types import ElicitResult

from onbehalf.errors import OnBehalfError, UserTokenExpired
from onbehalf.mcp.audit import record_tool_call, run_coordinates
from onbehalf.mcp.credentials import ServerCredential
from onbehalf.mcp.elicitation import (
    ASK,
    VISIT,
    Asked,
    Dialog,
    Parked,
    answer_ttl_seconds,
    as_request,
    check_answer,
    park,
    pause_payload,
    refuse,
    repeatable,
    unpark,
    url_elicitations,
)
from onbehalf.mcp.failures import (
    answered_too_late,
    asked_again,
    describe_failure,
    elicitation_refused_by_user,
    explain_refusal,
    grant_message,
    lost_during_run,
    no_answer,
    reconnect_message,
    refused_call,
    result_off_schema,
    tool_error,
)
from onbehalf.mcp.results import bound_result, credentials_removed
from onbehalf.mcp.run_scope import BoundTool, RunScope
from onbehalf.mcp.tokens import UserToken, resolve_user_token
from onbehalf.oauth.accounts import OAuthProblem, scope_union

log = logging.getLogger("onbehalf.mcp")

T = TypeVar("T")
ToolHandler = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]
ScopeOf = Callable[[Any, UserToken], Awaitable[RunScope]]


# --- a refused credential: reconnect ---------------------------------------------------

async def revoke_and_pause(server: str, credential: ServerCredential) -> None:
    """Compare-and-delete the refused credential, then the `reconnect_account` interrupt.

    Resuming the thread re-runs the paused step with what the user reconnected."""
    if credential.revoke is not None:
        await credential.revoke()
    link = await credential.link()
    interrupt({
        "type": "reconnect_account",
        "server": server,
        "connect_url": link,
        "message": reconnect_message(server, link),
    })


async def reconnect_at_open(
    scope: RunScope, give_up: Callable[[], None], reopen: Callable[[], Awaitable[RunScope]]
) -> RunScope:
    """A connected account refused when its session opened (e.g. revoked between two
    runs): the same path as a 401 during a call. The scope holding the refused
    credential is given up, never reused; after the resume `reopen` opens the run's
    servers with what the user reconnected (refused again: the model is told)."""
    server, credential = next(iter(scope.refused_at_open.items()))
    give_up()
    await revoke_and_pause(server, credential)
    return await reopen()


async def _ask_to_reconnect(
    call: dict[str, Any], server: str, credential: ServerCredential
) -> ToolMessage:
    await revoke_and_pause(server, credential)
    where = f" at {credential.connect_url}" if credential.connect_url else ""
    return tool_error(
        call, f"MCP server {server!r} refused your reconnected account again: reconnect it{where}"
    )


async def _ask_to_grant(call: dict[str, Any], server: str, credential: ServerCredential,
                        asked: tuple[str, ...]) -> ToolMessage:
    """403 `insufficient_scope` on a connected account (step-up, DESIGN.md §8.1): pause with
    `grant_scopes`, the union of what the user granted and what the server asks for, and the
    §8 flow's link (confirm step included). The server ran nothing. Resuming runs the tool
    node again, so the call is sent once more with the tokens the user granted; a server
    that still refuses for scopes the user just gave it is reported, never looped."""
    if set(asked) <= set(credential.granted_scopes):
        return tool_error(call, asked_again(server, asked))
    scopes = scope_union(credential.granted_scopes, asked)
    try:
        link = await credential.grant(scopes) if credential.grant is not None else None
    except OAuthProblem as exc:
        return tool_error(call, f"MCP server {server!r} needs {' '.join(asked)}, but a new "
                          f"grant cannot be started: {exc}")
    interrupt({"type": "grant_scopes", "server": server, "scopes": scopes,
               "connect_url": link, "message": grant_message(server, scopes, link)})
    # resumed, and the server refused once more within this same call: report it
    return tool_error(call, asked_again(server, asked))


async def _refreshed(scope: RunScope, bound: BoundTool, user: UserToken) -> bool:
    """After a 401: refresh the account's tokens and reopen its session, if it has any."""
    credential = scope.credentials.get(bound.server)
    if bound.session.refused_status != 401 or credential is None or credential.refresh is None:
        return False
    bound.session.broken = True
    if not await credential.refresh():
        return False
    await scope.reopen(bound.server, user)
    # the reopened session still offers the tool (a server may drop it for new tokens)
    return any(b.server == bound.server and b.mcp_tool.name == bound.mcp_tool.name
               for b in scope.tools.values())


# --- one call ---------------------------------------------------------------------------

async def run_mcp_tool_call(
    request: ToolCallRequest, handler: ToolHandler, runtime: Any,
    config: dict[str, Any] | None, scope_of: ScopeOf,
) -> ToolMessage | Command[Any]:
    """One MCP tool call of a run, with its audit record, whatever happens."""
    call = request.tool_call
    started = time.perf_counter()
    audit: dict[str, Any] = {"identity": "?", "server": None, "tool": call["name"],
                             "outcome": "failed"}
    try:
        return await _call(request, handler, runtime, config, scope_of, audit)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            audit["outcome"] = "cancelled"
        elif not isinstance(exc, GraphInterrupt):
            audit["outcome"] = "failed"
        raise
    finally:
        record = record_tool_call(
            identity=str(audit["identity"]),
            coordinates=run_coordinates(config, runtime),
            server=audit["server"],
            tool=call["name"],
            outcome=audit["outcome"],
            started=started,
        )
        announce(call, record.server, audit["tool"], record.outcome, record.latency_ms)


async def _call(
    request: ToolCallRequest, handler: ToolHandler, runtime: Any,
    config: dict[str, Any] | None, scope_of: ScopeOf, audit: dict[str, Any],
) -> ToolMessage | Command[Any]:
    """Run one tool call over the run's session; every failure becomes a tool error."""
    call = request.tool_call
    try:
        user = await resolve_user_token(runtime, config)
        audit["identity"] = user.identity
        scope = await scope_of(runtime, user)
        bound = scope.tools.get(call["name"])
        if bound is None:
            audit["outcome"] = "not_allowed"
            why = "".join(f" {reason}." for reason in scope.unavailable.values())
            return tool_error(call, f"tool {call['name']!r} is not available to you here.{why}")
        audit["server"], audit["tool"] = bound.server, bound.mcp_tool.name
        announce(call, bound.server, bound.mcp_tool.name, "running", None)
        if not scope.belongs_to(user):
            audit["outcome"] = "refused"
            return tool_error(call, "your credentials changed during this run: retry")
        user.ensure_fresh(during_run=True)
    except UserTokenExpired as exc:
        audit["outcome"] = "expired"
        return tool_error(call, str(exc))
    timeout = scope.config.servers[bound.server].timeout_seconds
    pause = _Pause(call, user, scope, _thread_of(config))
    answer = await _answer(request, handler, scope, bound, user, pause, timeout, audit)
    # after the call: a refresh during it may have replaced the credential that was sent
    return credentials_removed(answer, scope.sent_secrets(bound.server))


async def _answer(
    request: ToolCallRequest, handler: ToolHandler, scope: RunScope, bound: BoundTool,
    user: UserToken, pause: _Pause, limit_seconds: float, audit: dict[str, Any],
) -> ToolMessage | Command[Any]:
    """The call's answer: its result, or what the model and the user read instead."""
    call = request.tool_call
    try:
        after = await _after_pause(pause, bound)
    except GraphInterrupt:
        audit["outcome"] = "paused"  # waiting for the user's answer (elicitation)
        raise
    if isinstance(after, ToolMessage):
        audit["outcome"] = "tool_error"
        return after
    renewed = refreshed = False
    try:
        while True:
            if after is not None:  # the parked call, answered: no retry can resend it
                bound = after.bound or bound
                bound.session.notify = _stream_writer()
                result = await _awaiting(pause, bound, after.work, limit_seconds, after)
                break
            bound.session.notify = _stream_writer()
            try:
                work = asyncio.ensure_future(handler(request.override(tool=bound.tool)))
                result = await _awaiting(pause, bound, work, limit_seconds)
                break
            except GraphInterrupt:
                raise
            except Exception as exc:
                if (visits := url_elicitations(exc)) is not None:
                    # -32042: the server ran nothing; after the user's accept, sent again
                    await _ask_to_visit(pause, bound, visits)
                    continue
                if bound.session.ended_by_server and not renewed:
                    renewed = True
                    # the server ended the session (404) without running the call:
                    # once more on a fresh session, before the user sees anything (MCP spec)
                    await scope.renew(bound.server, bound.session)
                elif not refreshed and await _refreshed(scope, bound, user):
                    # 401 on OAuth tokens: the server did not run the call; refreshed
                    # tokens on a new session, then the same call once more
                    refreshed = True
                else:
                    raise
                bound = scope.tools[call["name"]]
    except TimeoutError:
        bound.session.broken = True
        audit["outcome"] = "timeout"
        return tool_error(call, no_answer(bound.server, limit_seconds))
    except GraphInterrupt:
        audit["outcome"] = "paused"
        raise
    except (OnBehalfError, asyncio.CancelledError):
        raise
    except ToolException as exc:  # the tool's own refusal (a graph's interceptor, conversion)
        audit["outcome"] = "tool_error"
        return tool_error(call, str(exc) or f"tool {call['name']!r} failed")
    except Exception as exc:
        answered = not bound.session.broken and (  # the server is up and answered the call
            result_off_schema(bound.server, call["name"], exc)
            or refused_call(bound.server, call["name"], exc))
        if answered:
            audit["outcome"] = "tool_error"
            return tool_error(call, answered)
        bound.session.broken = True
        status = bound.session.refused_status
        audit["outcome"] = "refused" if status in (401, 403) else "unavailable"
        credential = scope.credentials.get(bound.server)
        if status == 401 and credential is not None and credential.reconnectable:
            return await _ask_to_reconnect(call, bound.server, credential)
        missing = bound.session.missing_scopes
        if (status == 403 and missing is not None and credential is not None
                and credential.grant is not None):
            return await _ask_to_grant(call, bound.server, credential, missing)
        if isinstance(exc, SessionFailed):
            detail = bound.session.transport_error or "session ended"
        else:
            detail = describe_failure(exc)
        reason = credentials_removed(explain_refusal(bound.server, status, missing)
                                     or lost_during_run(bound.server, detail),
                                     scope.sent_secrets(bound.server))
        log.warning("tool call %s on %s failed: %s", call["name"], bound.server, reason)
        return tool_error(call, reason)
    if isinstance(result, ToolMessage):
        audit["outcome"] = "tool_error" if result.status == "error" else "ok"
        return bound_result(result)
    audit["outcome"] = "ok"
    return result


async def race(bound: BoundTool, work: Awaitable[T], limit_seconds: float) -> T:
    """Await a request over the bound session, but stop as soon as the session fails.

    The MCP SDK leaves a request waiting when its session dies (e.g. after an
    HTTP 401), so each call races the session's failure and the timeout. A question of
    the server to the user (elicitation) raises `Asked`, the request still waiting."""
    session = bound.session
    task = asyncio.ensure_future(work)
    failed = asyncio.ensure_future(session.failed.wait())
    asked = asyncio.ensure_future(session.questions.get())
    try:
        done, _ = await asyncio.wait(
            {task, failed, asked}, timeout=limit_seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        failed.cancel()
        if not asked.done():
            asked.cancel()
    if asked in done and not asked.cancelled():
        if task not in done:
            raise Asked(asked.result())
        session.questions.put_nowait(asked.result())  # not this call's: left for the next
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    if not done:
        raise TimeoutError
    raise SessionFailed(bound.server)


# --- the server asks the user (elicitation) ---------------------------------------------

class _Pause:
    """Where one execution of a tool call stands with the user's answers."""

    def __init__(self, call: dict[str, Any], user: UserToken, scope: RunScope,
                 thread: str | None) -> None:
        self.call = call
        self.user = user
        self.scope = scope
        self.thread = thread
        self.dialog = Dialog()

    def parked(self, at: BoundTool, requests: list[dict[str, Any]], **held: Any) -> Parked:
        # what the server asks goes into the interrupt, so into the checkpoint and the
        # user's screen: never with the credential it was sent (results.py)
        requests = credentials_removed(requests, self.scope.sent_secrets(at.server))
        return Parked(identity=self.user.identity, fingerprint=self.user.fingerprint,
                      server=at.server, tool=at.mcp_tool.name, requests=requests,
                      asked=self.dialog.asked, **held)

    def park_and_ask(self, parked: Parked) -> NoReturn:
        """Pause the run on `parked`'s requests: GraphInterrupt (every earlier answer was
        replayed, so none is there for this one)."""
        assert self.thread is not None
        park(self.thread, self.call["id"], parked)
        self.dialog.ask(pause_payload(parked.server, parked.tool, parked.requests))
        raise RuntimeError("an interrupt returned an answer nobody gave")

    def answer(self, parked: Parked) -> dict[str, Any]:
        """The user's answer to `parked` (already given: this execution is its resume),
        checked against its requests; a bad one pauses again with the reason."""
        assert self.thread is not None
        self.dialog.skip_to(parked.asked)
        value = self.dialog.ask(pause_payload(parked.server, parked.tool, parked.requests))
        while isinstance(checked := check_answer(value, parked.requests), str):
            value = refuse(self.dialog, self.thread, self.call["id"], parked, checked)
        return checked


async def _after_pause(pause: _Pause, bound: BoundTool) -> ToolMessage | Parked | None:
    """On a resume of this tool call: the answered parked call to go on with, what the
    model reads, or None to send the call (again). Nothing runs twice because of a pause."""
    call, dialog = pause.call, pause.dialog
    parked = unpark(pause.thread, call["id"], pause.user) if pause.thread else None
    if parked is not None:
        answers = pause.answer(parked)
        if parked.work is None:  # -32042: sent again only when the user accepted
            return _visit_outcome(call, parked.server, parked.tool, answers)
        if parked.waiting and parked.question is not None:
            parked.question.answer.set_result(next(iter(answers.values())))
            return parked
        parked.drop()
        return _too_late(call, bound, parked.server, parked.tool)
    if dialog.latest_answers(ASK) is not None:  # asked during a call no longer here
        dialog.skip_to(len(dialog.answers))
        return _too_late(call, bound, bound.server, bound.mcp_tool.name)
    if (visited := dialog.latest_answers(VISIT)) is not None:  # -32042, in another process
        dialog.skip_to(len(dialog.answers))
        answers = {key: ElicitResult(action=value.get("action", "cancel"))
                   if isinstance(value, dict) and value.get("action") in ("accept", "decline")
                   else ElicitResult(action="cancel") for key, value in visited.items()}
        return _visit_outcome(call, bound.server, bound.mcp_tool.name, answers)
    return None


def _visit_outcome(call: dict[str, Any], server: str, tool: str,
                   answers: dict[str, ElicitResult]) -> ToolMessage | None:
    refused = next((a.action for a in answers.values() if a.action != "accept"), None)
    return None if refused is None else tool_error(
        call, elicitation_refused_by_user(server, tool, refused))


def _too_late(call: dict[str, Any], bound: BoundTool, server: str, tool: str
              ) -> ToolMessage | None:
    """The answer's call is gone: sent again only when the tool says that is harmless."""
    if repeatable(bound.mcp_tool):
        return None
    return tool_error(call, answered_too_late(server, tool))


async def _ask_to_visit(pause: _Pause, bound: BoundTool, asked: list[Any]) -> None:
    """-32042: pause with the URL(s); returns once the user accepted (send the call again)."""
    if pause.thread is None:
        raise ToolException(f"MCP server {bound.server!r} needs the user to visit "
                            f"{' '.join(a.url for a in asked)} first")
    pause.dialog.skip_to(len(pause.dialog.answers))
    requests = [as_request(f"{VISIT}{pause.dialog.asked + 1}-{n}", params)
                for n, params in enumerate(asked, 1)]
    pause.park_and_ask(pause.parked(bound, requests))


async def _awaiting(pause: _Pause, bound: BoundTool, work: Any, limit_seconds: float,
                    parked: Parked | None = None) -> Any:
    """The call's result; each question of the server on the way pauses the run, the call
    parked (session and request kept for its resume, lent to nobody)."""
    try:
        while True:
            try:
                result = await race(bound, work, limit_seconds)
            except Asked as asked:
                question = asked.question
                if pause.thread is None:  # no thread to pause: nobody can answer
                    question.answer.set_result(ElicitResult(action="cancel"))
                    continue
                pause.dialog.skip_to(len(pause.dialog.answers))
                key = f"{ASK}{pause.dialog.asked + 1}"
                if parked is None:
                    parked = pause.parked(bound, [question.request(key)], bound=bound,
                                          work=work, question=question,
                                          on_drop=pause.scope.detach(bound.session))
                else:
                    parked.requests, parked.question = [question.request(key)], question
                    parked.asked = pause.dialog.asked
                    parked.expires = time.monotonic() + answer_ttl_seconds()
                pause.park_and_ask(parked)
            break
    except BaseException as exc:
        if parked is not None and not isinstance(exc, GraphInterrupt):
            parked.drop()
        raise
    if parked is not None:
        parked.drop()  # done: its session closes, never pooled
    return result


class SessionFailed(Exception):
    """The session a call was waiting on failed (refused, cut, or ended) before it answered."""

    def __init__(self, server: str) -> None:
        super().__init__(f"the session to {server!r} failed")


def _thread_of(config: dict[str, Any] | None) -> str | None:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return str(thread) if thread is not None else None


def announce(
    call: dict[str, Any], server: str | None, tool: str, outcome: str, latency_ms: float | None
) -> None:
    """Tell the run's stream which MCP server runs this call, and how the call went.

    The custom event `mcp_tool` (DESIGN.md §8.1): "running" once the server is known,
    then the audit outcome when the call ends. `tool` is the server's own name for it;
    `name`, the model's, only where the two differ (a `<server>_` prefix). Never the
    arguments, the result or a credential."""
    writer = _stream_writer()
    if writer is None:
        return
    event: dict[str, Any] = {"type": "mcp_tool", "server": server, "tool": tool,
                             "tool_call_id": call.get("id"), "outcome": outcome,
                             "latency_ms": latency_ms}
    if call["name"] != tool:
        event["name"] = call["name"]
    with contextlib.suppress(Exception):  # a closed stream must not fail the call
        writer(event)


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
