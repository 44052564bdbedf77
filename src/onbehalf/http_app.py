"""Custom HTTP layer for the LangGraph server (`http.app` in langgraph.json).

DESIGN.md §7: somebody else's thread or run answers 404 — every operation
alike, so that nothing hints it exists. langgraph-api differs in two places,
which this middleware aligns:

- copying a thread the caller may not see answers 409 Conflict;
- joining the stream of a thread or run the caller may not see answers
  200 with a single SSE `error` event saying "404: ... not found".
"""

from __future__ import annotations

import json
import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COPY = re.compile(r"^/threads/[^/]+/copy/?$")
_JOIN_STREAM = re.compile(r"^/threads/[^/]+(/runs/[^/]+)?/stream/?$")
_SSE_NOT_FOUND = re.compile(rb"^event: *error\r?\ndata: *.*\b404\b.*not found", re.I | re.S)
_PEEK_BYTES = 4096
_NOT_FOUND = json.dumps({"detail": "Thread not found"}).encode()


async def _send_not_found(send: Send) -> None:
    await send({
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(_NOT_FOUND)).encode())],
    })
    await send({"type": "http.response.body", "body": _NOT_FOUND})


class ConcealForeignThreads:
    """Answer 404 wherever langgraph-api reveals a foreign thread or run differently."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _COPY.match(scope["path"]):
            await self.app(scope, receive, _copy_conflict_as_404(send))
        elif (
            scope["type"] == "http" and scope["method"] == "GET"
            and _JOIN_STREAM.match(scope["path"])
        ):
            await self.app(scope, receive, _stream_error_as_404(send))
        else:
            await self.app(scope, receive, send)


def _copy_conflict_as_404(send: Send) -> Send:
    concealed = False

    async def wrapper(message: Message) -> None:
        nonlocal concealed
        if message["type"] == "http.response.start" and message["status"] == 409:
            concealed = True
            await _send_not_found(send)
        elif not concealed:
            await send(message)

    return wrapper


def _stream_error_as_404(send: Send) -> Send:
    """Hold the start of a stream until its first event shows whether it is a 404."""
    held: list[Message] = []
    buffered = b""
    decided = False
    concealed = False

    async def wrapper(message: Message) -> None:
        nonlocal buffered, decided, concealed
        if decided:
            if not concealed:
                await send(message)
            return
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                decided = True
                await send(message)
                return
            held.append(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        held.append(message)
        buffered += message.get("body", b"")
        first_event_complete = b"\n\n" in buffered or b"\r\n\r\n" in buffered
        if not (first_event_complete or len(buffered) >= _PEEK_BYTES
                or not message.get("more_body", False)):
            return
        decided = True
        if _SSE_NOT_FOUND.match(buffered.lstrip()):
            concealed = True
            await _send_not_found(send)
            return
        for pending in held:
            await send(pending)

    return wrapper


app = Starlette(middleware=[Middleware(ConcealForeignThreads)])
