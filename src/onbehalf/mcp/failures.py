"""Every sentence the model or the user reads about a failed MCP server, in one place.

Below everything that reports a failure (the sessions that open, the scope that
lists tools, the per-call policy, `connect_account`), so that none of them has to
import the others for its wording: each sentence names the server, the cause and,
where there is one, what the user can do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.messages import ToolMessage
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED


def explain_refusal(server: str, status: int | None,
                    missing_scopes: Sequence[str] | None = None) -> str | None:
    """What an HTTP failure of an MCP server means for the user, or None if none seen."""
    if status == 401:
        return (
            f"MCP server {server!r} no longer accepts your sign-in (401): "
            "please sign in again (re-authenticate) and retry"
        )
    if status == 403 and missing_scopes:
        return (f"MCP server {server!r} says you are not permitted to do this (403): it needs "
                f"the scope {' '.join(missing_scopes)}, which your sign-in does not carry")
    if status == 403:
        return f"MCP server {server!r} says you are not permitted to do this (403)"
    if status is not None and status >= 500:
        return f"MCP server {server!r} failed (HTTP {status}); try again later"
    if status is not None and status >= 400 and status != 404:
        return f"MCP server {server!r} rejected the request (HTTP {status})"
    return None


def _first_cause(exc: BaseException) -> BaseException:
    """The failure itself, out of the task groups (anyio) that wrap it."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_failure(exc: BaseException) -> str:
    """One line for a (possibly grouped) transport failure, without request details."""
    exc = _first_cause(exc)
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.is_redirect:
        return _redirected(exc.response)
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}"


def _redirected(response: httpx.Response) -> str:
    """A redirect, which is never followed: it could take the user's credential to another
    address. The developer reads where to (without its query) and what to change."""
    location = httpx.URL(response.headers.get("location", ""))
    target = response.request.url.join(location).copy_with(query=None, fragment=None)
    return (f"HTTP {response.status_code}: it redirects to {str(target)[:200]}, and redirects "
            "are not followed (they could carry the user's credential elsewhere): put the "
            "address it redirects to in the servers file")


_RESULT_CHECKS = (
    "Invalid structured content returned by tool",
    "has an output schema but did not return structured content",
    "Invalid schema for tool",
)
"""How the `mcp` client words a result that fails the tool's own `outputSchema` (it checks
every result against it, after the server answered; tests/integration/test_tool_results.py
pins the wording)."""


def result_off_schema(server: str, tool: str, exc: BaseException) -> str | None:
    """A call the server ran and answered, whose result the client refused: not a server
    outage (the session is fine), and the call must not be repeated blindly."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not any(check in text for check in _RESULT_CHECKS):
        return None
    detail = text.splitlines()[0][:300]
    return (f"MCP server {server!r} ran tool {tool!r}, but its result does not match the "
            f"output schema the tool declares ({detail}); the call is not repeated")


_NO_ANSWER_CODES = (CONNECTION_CLOSED, httpx.codes.REQUEST_TIMEOUT)


def refused_call(server: str, tool: str, exc: BaseException) -> str | None:
    """The server answered the call with a JSON-RPC error (an unknown tool, invalid
    arguments, its own failure): it is up and said no, so the model reads the server's
    reason, not an outage. None for anything else, and for the errors the SDK makes up
    itself when no answer came (connection closed, its own request timeout)."""
    exc = _first_cause(exc)
    if not isinstance(exc, McpError) or exc.error.code in _NO_ANSWER_CODES:
        return None
    message = (exc.error.message or "no reason given").splitlines()[0][:300]
    return (f"MCP server {server!r} refused the call to {tool!r}: {message} "
            f"(JSON-RPC error {exc.error.code})")


def no_answer(server: str, seconds: float, doing: str = "answer") -> str:
    """A server that let a request wait past its `timeout_seconds`."""
    return f"MCP server {server!r} did not {doing} within {seconds:g}s"


def lost_during_run(server: str, detail: str) -> str:
    """A server that answered before and stopped answering within this run."""
    return f"MCP server {server!r} became unavailable during this run ({detail})"


def unavailable_at_open(server: str, status: int | None, exc: BaseException) -> str:
    """Why a server's session could not be opened for this run."""
    return explain_refusal(server, status) or (
        f"MCP server {server!r} is unavailable: {describe_failure(exc)}"
    )


def reconnect_message(server: str, link: str | None) -> str:
    """What the user reads when a server no longer accepts their connected account."""
    where = f" at {link}" if link else ""
    return (
        f"MCP server {server!r} no longer accepts your connected account: "
        f"reconnect it{where}, then resume this thread"
    )


def grant_message(server: str, scopes: Sequence[str], link: str | None) -> str:
    """What the user reads when a server needs more access than they granted (step-up)."""
    where = f" at {link}" if link else ""
    return (f"MCP server {server!r} needs more access for this: allow {' '.join(scopes)}"
            f"{where}, then resume this thread")


def asked_again(server: str, scopes: Sequence[str]) -> str:
    """A server that asks again for scopes it was just given: reported, never looped."""
    return (f"MCP server {server!r} asked again for {' '.join(scopes)} although you just "
            "granted it: it does not accept this account for that tool; nothing was done")


def tool_result(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=call["id"], name=call["name"])


def tool_error(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=call["id"], name=call["name"], status="error")


def answered_too_late(server: str, tool: str) -> str:
    """A server's question (elicitation) answered after its call was gone: not sent again."""
    return (f"MCP server {server!r} asked the user something during {tool!r}, and the answer "
            "came too late: the call waiting for it is gone (its session ended, the wait timed "
            f"out, or another server process resumed). {tool!r} is not marked idempotent, so it "
            "was not sent again; it may have done part of its work: check before retrying")


def elicitation_refused_by_user(server: str, tool: str, action: str) -> str:
    """The user declined or cancelled what a server asked before running a call (-32042)."""
    verb = "declined" if action == "decline" else "cancelled"
    return (f"the user {verb} what MCP server {server!r} asked for before running {tool!r}: "
            "the call was not run")


def answer_refused(reason: str) -> str:
    """A resume value that does not answer the pending request; never sent to the server."""
    return f"this answer was refused and nothing was sent to the server: {reason}. Answer again"
