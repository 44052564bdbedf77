"""Custom HTTP layer for the LangGraph server (`http.app` in langgraph.json).

langgraph-api answers a copy of a thread the caller may not see with 409
Conflict, which differs from every other thread operation and hints that the
thread exists. DESIGN.md §7: somebody else's thread answers 404, for copy
too. This middleware turns that one response into the same 404 as a read.
"""

from __future__ import annotations

import json
import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COPY = re.compile(r"^/threads/[^/]+/copy/?$")


class ConcealForeignThreads:
    """Answer 404 (not 409) when a thread to copy is not visible to the caller."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _COPY.match(
            scope["path"]
        ):
            await self.app(scope, receive, send)
            return
        concealed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal concealed
            if message["type"] == "http.response.start" and message["status"] == 409:
                concealed = True
                body = json.dumps({"detail": "Thread not found"}).encode()
                await send({
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())],
                })
                await send({"type": "http.response.body", "body": body})
                return
            if concealed:
                return  # drop the original 409 body
            await send(message)

        await self.app(scope, receive, send_wrapper)


app = Starlette(middleware=[Middleware(ConcealForeignThreads)])
