"""`onbehalf token` and `onbehalf chat`: act as a user against a running server.

`token` mints a dev JWT with the configured HS256 secret, issuer and
audience; `chat` sends one message through the LangGraph SDK with that token
as the `Authorization` header, exactly as a real client would. When the run
pauses for a connection (`connect_account` / `reconnect_account`), `chat`
prints the link, waits until `GET /connections` shows the account connected
(or, for other accounts, until Enter), and resumes the thread. When an MCP
server asks the user something (`mcp_elicitation`), `chat` asks on the terminal:
one prompt per field of a form, or the URL and accept/decline; without a
terminal it exits 5 with the thread id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from onbehalf.cli_errors import CliError
from onbehalf.dev_tokens import mint_dev_token
from onbehalf.jwt_auth import bearer_header
from onbehalf.settings import HandoffSettings, OAuthSettings


def cmd_token(args: argparse.Namespace) -> int:
    print(mint_dev_token(args.user, args.scopes, args.ttl))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    token = mint_dev_token(args.user, args.scopes)
    url = args.url or HandoffSettings().langgraph_url
    message = " ".join(args.message)
    answer, thread_id = asyncio.run(_chat(url, token, args.graph, message, args.thread_id))
    print(answer)
    print(f"(thread {thread_id})", file=sys.stderr)
    return 0


CONNECT_POLL_SECONDS = 2.0
PAUSED_EXIT_CODE = 5


async def _chat(
    url: str, token: str, graph: str, message: str, thread_id: str | None
) -> tuple[str, str]:
    from langgraph_sdk import get_client

    client = get_client(url=url, headers={"Authorization": bearer_header(token)})
    try:
        if thread_id is None:
            thread_id = (await client.threads.create())["thread_id"]
        result = await client.runs.wait(
            thread_id, graph, input={"messages": [{"role": "user", "content": message}]}
        )
        while (pause := await _pending_interrupt(client, thread_id)) is not None:
            resume = await _wait_for_user(url, token, pause, thread_id)
            result = await client.runs.wait(thread_id, graph, command={"resume": resume})
    except httpx.ConnectError:
        raise CliError(f"cannot reach the LangGraph server at {url} (is `make dev` running?)",
                       4) from None
    except httpx.HTTPStatusError as exc:
        raise CliError(f"the server refused the request: {_detail(exc.response)}", 3) from None
    if isinstance(result, dict) and result.get("__error__"):
        error = result["__error__"]
        raise CliError(f"the run failed: {error.get('message', error)}", 4)
    return _answer(result), thread_id


async def _pending_interrupt(client: Any, thread_id: str) -> dict[str, Any] | None:
    """The value of the interrupt the thread is paused on, if any."""
    state = await client.threads.get_state(thread_id)
    for task in state.get("tasks") or []:
        for pending in task.get("interrupts") or []:
            value = pending.get("value")
            return value if isinstance(value, dict) else {"value": value}
    return None


async def _wait_for_user(url: str, token: str, pause: dict[str, Any],
                         thread_id: str) -> dict[str, Any]:
    """Print the link; come back when the account is connected (what resuming sends)."""
    kind = pause.get("type")
    server = str(pause.get("server") or "")
    if kind == "mcp_elicitation":
        return await asyncio.to_thread(answer_on_terminal, pause, thread_id)
    wanted = set(pause.get("scopes") or []) if kind == "grant_scopes" else set()
    if kind not in ("connect_account", "reconnect_account", "grant_scopes"):
        raise CliError(f"the run paused: {json.dumps(pause)[:500]} (thread {thread_id})",
                       PAUSED_EXIT_CODE)
    print(pause.get("message") or f"connect your {server!r} account")
    if pause.get("connect_url"):
        print(pause["connect_url"], flush=True)
    headers = {"Authorization": bearer_header(token)}
    deadline = time.monotonic() + OAuthSettings().oauth_flow_ttl_seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        listed = await _connection(http, server)
        if listed is None:  # not an oauth server (e.g. user_secret): the user says when
            if not sys.stdin.isatty():
                raise CliError(
                    f"the run paused for the user to connect {server!r}; resume thread "
                    f"{thread_id} once they are done", PAUSED_EXIT_CODE,
                )
            await asyncio.to_thread(input, "press Enter once the account is connected: ")
            return {"connected": server}
        what = f"{' '.join(sorted(wanted))} to be granted on" if wanted else "to be connected"
        print(f"(waiting for {server!r} {what}...)", file=sys.stderr, flush=True)
        while time.monotonic() < deadline:
            entry = await _connection(http, server) or {}
            if entry.get("status") == "connected" and wanted <= set(entry.get("scopes") or []):
                return {"connected": server}
            await asyncio.sleep(CONNECT_POLL_SECONDS)
    raise CliError(f"{server!r} was not connected in time; resume thread {thread_id} later",
                   PAUSED_EXIT_CODE)


def answer_on_terminal(pause: dict[str, Any], thread_id: str) -> dict[str, Any]:
    """The user's answers to an `mcp_elicitation`, asked on the terminal (what resuming
    sends). A URL is printed whole, never opened here."""
    server, tool = pause.get("server"), pause.get("tool_name")
    requests = pause.get("requests") or []
    print(f"MCP server {server!r} asks, for {tool!r}:", file=sys.stderr)
    for request in requests:
        print(f"  {request.get('message')}", file=sys.stderr)
        if request.get("mode") == "url":
            print(f"  {request.get('url')}", file=sys.stderr)
    if pause.get("error"):
        print(f"({pause['error']})", file=sys.stderr)
    if not sys.stdin.isatty():
        raise CliError(f"the run paused for the user to answer MCP server {server!r}; resume "
                       f"thread {thread_id} with {{\"responses\": ...}}", PAUSED_EXIT_CODE)
    sys.stderr.flush()
    return {"responses": {request["key"]: _ask(request) for request in requests}}


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("mode") == "url":
        choice = _choose("open it yourself; done and accept? [y]es, [n]o (decline), [c]ancel: ")
        return {"action": choice}
    choice = _choose("answer? [y]es, [n]o (decline), [c]ancel: ")
    if choice != "accept":
        return {"action": choice}
    schema = request.get("requested_schema") or {}
    required = set(schema.get("required") or [])
    content: dict[str, Any] = {}
    for name, field in (schema.get("properties") or {}).items():
        value = _field(name, field, name in required)
        if value is not None:
            content[name] = value
    return {"action": "accept", "content": content}


def _choose(prompt: str) -> str:
    while True:
        reply = input(prompt).strip().lower()[:1]
        if reply in ("y", "n", "c"):
            return {"y": "accept", "n": "decline", "c": "cancel"}[reply]


def _field(name: str, field: dict[str, Any], required: bool) -> Any:
    """One form field from the terminal, as its schema type (empty: left out if optional)."""
    kind = field.get("type", "string")
    hints = [kind, *(["one of " + ", ".join(map(str, field["enum"]))] if "enum" in field else []),
             *([str(field["description"])] if field.get("description") else [])]
    while True:
        raw = input(f"{field.get('title') or name} ({'; '.join(hints)}): ").strip()
        if not raw and not required:
            return None
        try:
            return _typed(raw, kind)
        except ValueError:
            print(f"  not a {kind}", file=sys.stderr)


def _typed(raw: str, kind: str) -> Any:
    if kind == "boolean":
        if raw.lower() in ("y", "yes", "true", "1"):
            return True
        if raw.lower() in ("n", "no", "false", "0"):
            return False
        raise ValueError(raw)
    if kind == "integer":
        return int(raw)
    if kind == "number":
        return float(raw)
    if kind == "array":
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


async def _connection(http: httpx.AsyncClient, server: str) -> dict[str, Any] | None:
    """`GET /connections`'s entry for `server` (status, scopes), None for no oauth server."""
    response = await http.get("/connections")
    response.raise_for_status()
    for entry in response.json().get("connections", []):
        if entry.get("server") == server:
            return dict(entry)
    return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('detail', body)}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def _answer(state: Any) -> str:
    if not isinstance(state, dict):
        return json.dumps(state)
    if state.get("title"):
        return str(state["title"])
    for message in reversed(state.get("messages") or []):
        if message.get("type") == "ai" and message.get("content"):
            content = message["content"]
            if isinstance(content, list):
                content = " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict)
                )
            return str(content)
    return json.dumps(state, default=str)[:2000]
