"""`onbehalf token` and `onbehalf chat`: act as a user against a running server.

`token` mints a dev JWT with the configured HS256 secret, issuer and
audience; `chat` sends one message through the LangGraph SDK with that token
as the `Authorization` header, exactly as a real client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import httpx
import jwt

from onbehalf.cli_errors import CliError
from onbehalf.jwt_auth import bearer_header
from onbehalf.settings import SettingsError, auth_settings

DEFAULT_SCOPES = ["tickets:read", "tickets:write"]


def mint_dev_token(user: str, scopes: list[str] | None = None, ttl: int = 3600) -> str:
    """A token the configured server accepts: only for dev, with the shared HS256 secret."""
    if not user.strip():
        raise CliError("the user name must not be empty")
    if ttl <= 0:
        raise CliError("--ttl must be a positive number of seconds")
    try:
        settings = auth_settings()
    except SettingsError as exc:
        raise CliError(f"{exc} (make dev writes a dev secret into .env)") from None
    if settings.auth_jwt_secret is None:
        raise CliError(
            "AUTH_JWT_SECRET is not set: `onbehalf token` can only mint HS256 dev tokens; "
            "with AUTH_JWKS_URL get a token from your identity provider instead"
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "name": user.capitalize(),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(DEFAULT_SCOPES if scopes is None else scopes),
    }
    if settings.auth_jwt_issuer:
        claims["iss"] = settings.auth_jwt_issuer
    if settings.auth_jwt_audience:
        auds = settings.auth_jwt_audience
        claims["aud"] = auds[0] if len(auds) == 1 else auds
    hmac = next((a for a in settings.auth_jwt_algorithms if a.startswith("HS")), "HS256")
    return jwt.encode(claims, settings.auth_jwt_secret.get_secret_value(), algorithm=hmac)


def cmd_token(args: argparse.Namespace) -> int:
    print(mint_dev_token(args.user, args.scopes, args.ttl))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    token = mint_dev_token(args.user, args.scopes)
    url = args.url or os.environ.get("LANGGRAPH_URL", "http://127.0.0.1:2024")
    message = " ".join(args.message)
    answer, thread_id = asyncio.run(_chat(url, token, args.graph, message, args.thread_id))
    print(answer)
    print(f"(thread {thread_id})", file=sys.stderr)
    return 0


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
    except httpx.ConnectError:
        raise CliError(f"cannot reach the LangGraph server at {url} (is `make dev` running?)",
                       4) from None
    except httpx.HTTPStatusError as exc:
        raise CliError(f"the server refused the request: {_detail(exc.response)}", 3) from None
    if isinstance(result, dict) and result.get("__error__"):
        error = result["__error__"]
        raise CliError(f"the run failed: {error.get('message', error)}", 4)
    return _answer(result), thread_id


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
