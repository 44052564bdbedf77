"""Real JWTs for tests: minted with the same secret, issuer and audience the servers check."""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from typing import Any

import jwt

TEST_SECRET = "test-secret-" + "x" * 32
TEST_ISSUER = "https://idp.onbehalf.test"
TEST_AUDIENCE = "onbehalf-api"
TEST_SEALING_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


def mint(
    sub: Any,
    *,
    scopes: list[str] | None = None,
    ttl: int = 600,
    secret: str = TEST_SECRET,
    issuer: str | None = TEST_ISSUER,
    audience: str | list[str] | None = TEST_AUDIENCE,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    """A signed token; every call gives a distinct token (fresh `jti`)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(["tickets:read", "tickets:write"] if scopes is None else scopes),
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    claims.update(extra)
    return jwt.encode(claims, secret, algorithm=algorithm)


def auth_env() -> dict[str, str]:
    """The environment every server the tests start shares (and nothing from a developer's .env)."""
    return {
        "AUTH_JWT_SECRET": TEST_SECRET,
        "AUTH_JWT_ISSUER": TEST_ISSUER,
        "AUTH_JWT_AUDIENCE": TEST_AUDIENCE,
        "AUTH_JWT_ALGORITHMS": "HS256",
        "AUTH_LEEWAY_SECONDS": "5",
        "TOKEN_SEALING_KEY": TEST_SEALING_KEY,
        "AGENT_MODEL": "offline",
        "ONBEHALF_NO_DOTENV": "1",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**overrides: str) -> dict[str, str]:
    """os.environ minus anything onbehalf reads, plus the test settings and overrides."""
    prefixes = ("AUTH_", "TOKEN_", "MCP_", "AGENT_", "REDIS_", "LANGGRAPH_", "ONBEHALF_", "OAUTH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(auth_env())
    env.update(overrides)
    return env
