"""Custom HTTP layer for the LangGraph server (`http.app` in langgraph.json).

One app for every engine: a FastAPI app (Aegra mounts only FastAPI apps, and
mounts its own API onto it; langgraph-api takes any Starlette app, FastAPI
included, and merges its routes), so the middleware below wraps the whole API
on both.

`RefuseStoredTokens` answers 400 to a request that would persist a JWT (or a
token-named key) in a thread's, run's, assistant's or cron's config, context or
metadata — before anything is written (DESIGN.md §1).

DESIGN.md §7: somebody else's thread or run answers 404 — every operation
alike, so that nothing hints it exists. langgraph-api differs in two places,
which this middleware aligns:

- copying a thread the caller may not see answers 409 Conflict;
- joining the stream of a thread or run the caller may not see answers
  200 with a single SSE `error` event saying "404: ... not found".

Aegra differs in one more: listing the runs of a thread the caller may not see
answers 200 `[]`; an empty list is answered only once the thread itself is
found for the caller.

`ErrorDetail` gives every JSON error body the `detail` that DESIGN.md §6 promises
(Aegra's own errors are `{"error", "message"}`; langgraph-api's already have it).
"""

from __future__ import annotations

import json
import re

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onbehalf.console import routes as console_routes
from onbehalf.jwt_auth import TOKEN_KEY_NAMES, looks_like_jwt
from onbehalf.oauth.routes import routes as oauth_routes

_COPY = re.compile(r"^/threads/[^/]+/copy/?$")
_JOIN_STREAM = re.compile(r"^/threads/[^/]+(/runs/[^/]+)?/stream/?$")
_RUNS_LIST = re.compile(r"^(/threads/[^/]+)/runs/?$")
_SSE_NOT_FOUND = re.compile(rb"^event: *error\r?\ndata: *.*\b404\b.*not found", re.I | re.S)
_PEEK_BYTES = 4096
_STORED_FIELDS = ("config", "context", "metadata", "kwargs")
_MAX_SCANNED_BODY = 8 * 1024 * 1024
_REFUSED = json.dumps({
    "detail": "refusing to store a token: this request carries a JWT (or a token key) in its "
    "config, context or metadata, where the server would persist it (langgraph copies "
    "configurable strings into checkpoint metadata). Send the user's token only as "
    "'Authorization: Bearer <jwt>'; the graph gets it from there."
}).encode()
_NOT_FOUND = json.dumps({"detail": "Thread not found"}).encode()


async def _send_not_found(send: Send) -> None:
    await send({
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(_NOT_FOUND)).encode())],
    })
    await send({"type": "http.response.body", "body": _NOT_FOUND})


def _carries_token(value: object, depth: int = 0) -> bool:
    """A JWT-shaped string, or a token-named key, anywhere in what would be stored."""
    if depth > 8:
        return False
    if isinstance(value, str):
        return looks_like_jwt(value)
    if isinstance(value, dict):
        return any(
            (str(k).lower() in TOKEN_KEY_NAMES and v) or _carries_token(v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_carries_token(v, depth + 1) for v in value)
    return False


class RefuseStoredTokens:
    """Refuse (400) a request that would persist a token with a thread, run, assistant or cron.

    DESIGN.md §1: never the token in `configurable`, thread config or metadata. The graph
    refuses `configurable["_user_token"]` too, but by then the server has already stored
    the run; this refuses it before anything is written.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or not (
            scope["path"].startswith(("/threads", "/runs", "/assistants", "/crons"))
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if size <= _MAX_SCANNED_BODY:
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            if isinstance(data, dict) and _carries_token(
                {k: data.get(k) for k in _STORED_FIELDS}
            ):
                await send({
                    "type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_REFUSED)).encode())],
                })
                await send({"type": "http.response.body", "body": _REFUSED})
                return
        await self.app(scope, _replay([body], None, receive), send)


def _replay(bodies: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    queue: list[Message] = [
        {"type": "http.request", "body": b, "more_body": False} for b in bodies
    ]
    if pending is not None:
        queue.append(pending)

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed


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
        elif scope["type"] == "http" and scope["method"] == "GET" and (
            runs := _RUNS_LIST.match(scope["path"])
        ):
            await self.app(scope, receive, self._empty_runs_checked(scope, runs.group(1), send))
        else:
            await self.app(scope, receive, send)

    def _empty_runs_checked(self, scope: Scope, thread_path: str, send: Send) -> Send:
        """Hold a 200 `[]` until the thread itself answers the caller (else 404)."""
        held: list[Message] = []

        async def wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                held.append(message)
                return
            if held and message["type"] == "http.response.body":
                held.append(message)
                if message.get("more_body", False):
                    return
                body = b"".join(m.get("body", b"") for m in held[1:])
                if body.strip() == b"[]" and not await self._thread_found(scope, thread_path):
                    held.clear()
                    await _send_not_found(send)
                    return
                for pending in held:
                    await send(pending)
                held.clear()
                return
            await send(message)

        return wrapper

    async def _thread_found(self, scope: Scope, thread_path: str) -> bool:
        """`GET {thread_path}` through the same app as the same caller: 200 or not."""
        status: list[int] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def collect(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        probe = {**scope, "path": thread_path, "raw_path": thread_path.encode(),
                 "query_string": b""}
        await self.app(probe, receive, collect)
        return status[:1] == [200]


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


_MAX_ERROR_BODY = 64 * 1024


class ErrorDetail:
    """Add `detail` (the engine's own `message`) to a JSON error body that has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_detail(send))


def _with_detail(send: Send) -> Send:
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapper(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if message["status"] >= 400 and dict(message.get("headers") or []).get(
                b"content-type", b""
            ).startswith(b"application/json"):
                start = message  # hold it until the body shows whether `detail` is there
                return
            await send(message)
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False) and sum(map(len, chunks)) <= _MAX_ERROR_BODY:
            return
        body = b"".join(chunks)
        held, start = start, None
        if not message.get("more_body", False):
            body = _add_detail(body)
            held = {**held, "headers": [
                (k, str(len(body)).encode() if k == b"content-length" else v)
                for k, v in held.get("headers") or []]}
        await send(held)
        await send({**message, "body": body})

    return wrapper


def _add_detail(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and "detail" not in data and isinstance(data.get("message"), str):
        return json.dumps({"detail": data["message"], **data}).encode()
    return body


app = FastAPI(
    # the dev console (404 unless ONBEHALF_DEV_CONSOLE=1, never in production) and the
    # connected-account routes of DESIGN.md §8
    routes=[*console_routes, *oauth_routes],
    middleware=[Middleware(ErrorDetail), Middleware(RefuseStoredTokens),
                Middleware(ConcealForeignThreads)],
    # the engine serves its own API docs: none of ours may shadow them
    docs_url=None, redoc_url=None, openapi_url=None,
)
