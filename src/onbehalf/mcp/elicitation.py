"""Elicitation (DESIGN.md §8.1): an MCP server asking the user something during a call.

Two shapes reach a call, both paused with the `mcp_elicitation` interrupt:

- `elicitation/create` while the call runs (form or URL mode). The session's receive loop
  hands the `Question` to the call waiting on it (`McpSession.questions`) and waits for
  the answer. The call pauses the run and is *parked*: its session and its in-flight
  request are kept, keyed by thread, tool call, identity and token fingerprint, lent to
  nobody, and closed after `OAUTH_FLOW_TTL_SECONDS`. The resumed tool node finds it
  (`unpark`), checks the answer against the request and gives it to the waiting request,
  so the call runs once.
- the error -32042 (URL elicitation required): the server ran nothing; after the user's
  accept the call is sent again.

No call runs twice because of a pause: when the parked call is gone (another process, its
session died, the TTL passed) it is sent again only for a tool that declares `readOnlyHint`
or `idempotentHint`; any other tool tells the model the answer came too late.

Request keys say which shape asked (`ask-<n>` during a call, `visit-<n>` before it), so a
resume that reaches another process still knows what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
from langgraph.config import get_config
from langgraph.types import interrupt
from mcp.shared.exceptions import McpError
from mcp.types import (
    URL_ELICITATION_REQUIRED,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
)

from onbehalf.mcp.failures import answer_refused
from onbehalf.settings import OAuthSettings, current

if TYPE_CHECKING:
    from mcp.types import Tool as McpTool

log = logging.getLogger("onbehalf.mcp")

ASK = "ask-"
VISIT = "visit-"
ACTIONS = ("accept", "decline", "cancel")


def answer_ttl_seconds() -> float:
    """How long a question waits for the user (and a parked call for its resume)."""
    return float(current(OAuthSettings).oauth_flow_ttl_seconds)


@dataclass
class Question:
    """One `elicitation/create` of a server, waiting in its session for the user's answer."""

    params: ElicitRequestParams
    answer: asyncio.Future[ElicitResult]

    def request(self, key: str) -> dict[str, Any]:
        return as_request(key, self.params)


def as_request(key: str, params: ElicitRequestParams) -> dict[str, Any]:
    """One entry of the interrupt's `requests`; a URL is passed on whole, never fetched."""
    if isinstance(params, ElicitRequestURLParams):
        return {"key": key, "message": params.message, "mode": "url", "url": params.url}
    assert isinstance(params, ElicitRequestFormParams)
    return {"key": key, "message": params.message, "mode": "form",
            "requested_schema": params.requestedSchema}


def pause_payload(server: str, tool: str, requests: list[dict[str, Any]],
                  error: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": "mcp_elicitation", "server": server, "tool_name": tool,
                               "requests": requests}
    if error:
        payload["error"] = error
    return payload


def url_elicitations(exc: BaseException) -> list[ElicitRequestURLParams] | None:
    """The URL elicitations of a -32042 answer to tools/call, else None."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if not isinstance(exc, McpError) or exc.error.code != URL_ELICITATION_REQUIRED:
        return None
    data = exc.error.data if isinstance(exc.error.data, dict) else {}
    found = []
    for raw in data.get("elicitations") or []:
        with contextlib.suppress(ValueError):
            found.append(ElicitRequestURLParams.model_validate(raw))
    return found or None


def repeatable(tool: McpTool) -> bool:
    """A tool that may be sent again after its answer came too late."""
    hints = tool.annotations
    return hints is not None and bool(hints.readOnlyHint or hints.idempotentHint)


# --- the answers of one tool call ------------------------------------------------------

class Dialog:
    """The interrupts of one execution of a tool call, in the order LangGraph replays them.

    Each resume runs the tool node again from its start; `interrupt` returns the answers
    already given, by position. `answers` are those this execution started with."""

    def __init__(self) -> None:
        self.asked = 0
        self.answers = _answers_so_far()

    def skip_to(self, position: int) -> None:
        while self.asked < position:
            interrupt(None)  # answered before: returns at once
            self.asked += 1

    def ask(self, payload: dict[str, Any]) -> Any:
        value = interrupt(payload)
        self.asked += 1
        return value

    def latest_answers(self, prefix: str) -> dict[str, Any] | None:
        """The responses of the newest answer, when it answers requests keyed `prefix`."""
        if not self.answers:
            return None
        responses = _responses(self.answers[-1])
        if responses and all(str(key).startswith(prefix) for key in responses):
            return responses
        return None


def _answers_so_far() -> list[Any]:
    """The resume values of this task: those replayed, then the one just sent (if any)."""
    from langgraph._internal._constants import CONFIG_KEY_SCRATCHPAD  # no public accessor

    with contextlib.suppress(RuntimeError, KeyError):
        scratchpad = get_config()["configurable"][CONFIG_KEY_SCRATCHPAD]
        answers = list(scratchpad.resume)
        latest = scratchpad.get_null_resume(False)
        if latest is not None:
            answers.append(latest)
        return answers
    return []


def _responses(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict) and isinstance(value.get("responses"), dict):
        return value["responses"]
    return None


def check_answer(value: Any, requests: list[dict[str, Any]]) -> dict[str, ElicitResult] | str:
    """The user's resume value as one `ElicitResult` per request, or why it is refused."""
    if not isinstance(value, dict) or set(value) != {"responses"}:
        return 'resume with {"responses": {<key>: {"action": "accept" | "decline" | "cancel"}}}'
    responses = value["responses"]
    keys = [request["key"] for request in requests]
    if not isinstance(responses, dict) or set(responses) != set(keys):
        given = sorted(responses) if isinstance(responses, dict) else responses
        return f"the responses must answer exactly the keys {keys}, not {given!r}"
    results: dict[str, ElicitResult] = {}
    for request in requests:
        key = request["key"]
        response = responses[key]
        if not isinstance(response, dict) or response.get("action") not in ACTIONS:
            return f"{key!r}: the action must be one of {', '.join(ACTIONS)}"
        action = response["action"]
        allowed = {"action", "content"} if action == "accept" else {"action"}
        if set(response) - allowed:
            return f"{key!r}: unexpected {sorted(set(response) - allowed)} for {action!r}"
        if action == "accept" and request["mode"] == "form":
            problem = _content_problem(response.get("content"), request["requested_schema"])
            if problem:
                return f"{key!r}: {problem}"
            results[key] = ElicitResult(action="accept", content=response["content"])
        elif action == "accept" and response.get("content") is not None:
            return f"{key!r}: a URL request is accepted without content"
        else:
            results[key] = ElicitResult(action=action)
    return results


def _content_problem(content: Any, schema: dict[str, Any]) -> str | None:
    if not isinstance(content, dict):
        return "accepting a form needs its content, an object"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(content))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        return f"the content does not match the form{f' at {where}' if where else ''}: " + (
            error.message)
    try:
        ElicitResult(action="accept", content=content)
    except ValueError:
        return "form values must be strings, numbers, booleans or lists of strings"
    return None


# --- parked calls ----------------------------------------------------------------------

@dataclass
class Parked:
    """A paused tool call: its question (or -32042 URLs), session and in-flight request."""

    identity: str
    fingerprint: str
    server: str
    tool: str
    requests: list[dict[str, Any]]
    asked: int
    """The interrupt position the answer to `requests` will have."""
    bound: Any = None
    """The `run_scope.BoundTool` the call runs on (this module sits below the sessions)."""
    work: asyncio.Future[Any] | None = None
    """The tools/call still waiting on the server (None for -32042: nothing runs)."""
    question: Question | None = None
    on_drop: Callable[[], None] | None = None
    expires: float = field(default_factory=lambda: time.monotonic() + answer_ttl_seconds())
    timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        return (self.work is not None and not self.work.done() and self.bound is not None
                and self.bound.session.alive and not self.bound.session.failed.is_set())

    def drop(self) -> None:
        """Give up the call: cancel the request, close its session (never pooled)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.question is not None and not self.question.answer.done():
            self.question.answer.set_result(ElicitResult(action="cancel"))
        if self.work is not None and not self.work.done():
            self.work.cancel()
        if self.on_drop is not None:
            self.on_drop()


_parked: dict[tuple[str, str], Parked] = {}


def park(thread: str, call_id: str, parked: Parked) -> None:
    """Keep a paused call for its resume in this process, for a bounded time."""
    previous = _parked.pop((thread, call_id), None)
    if previous is not None and previous is not parked:
        previous.drop()
    loop = asyncio.get_running_loop()
    if parked.timer is not None:
        parked.timer.cancel()
    parked.timer = loop.call_at(loop.time() + max(0.0, parked.expires - time.monotonic()),
                                lambda: _expire(thread, call_id, parked))
    _parked[(thread, call_id)] = parked


def unpark(thread: str, call_id: str, user: Any) -> Parked | None:
    """The call this tool call left parked, only for the same user and token (`user`: a
    `tokens.UserToken`)."""
    parked = _parked.pop((thread, call_id), None)
    if parked is None:
        return None
    if parked.identity != user.identity or parked.fingerprint != user.fingerprint:
        log.warning("a parked MCP call of thread %s was resumed with other credentials: "
                    "dropped", thread)
        parked.drop()
        return None
    return parked


def _expire(thread: str, call_id: str, parked: Parked) -> None:
    if _parked.get((thread, call_id)) is parked:
        del _parked[(thread, call_id)]
        log.info("the question of MCP server %s for %s was not answered in time", parked.server,
                 parked.tool)
        parked.drop()


def drop_parked() -> int:
    """Drop every parked call (tests; a process shutting down). Returns how many."""
    count = len(_parked)
    for parked in list(_parked.values()):
        parked.drop()
    _parked.clear()
    return count


def parked_count() -> int:
    return len(_parked)


def refuse(dialog: Dialog, thread: str, call_id: str, parked: Parked, reason: str) -> Any:
    """A resume value that does not answer the request: asked again, still paused (the
    next answer, when this execution replays one given already)."""
    parked.asked = dialog.asked
    park(thread, call_id, parked)
    return dialog.ask(pause_payload(parked.server, parked.tool, parked.requests,
                                    answer_refused(reason)))


class Asked(Exception):
    """The server asked the user something while the call waits for it."""

    def __init__(self, question: Question) -> None:
        super().__init__("the MCP server asked the user something")
        self.question = question
