"""Dev JWTs: what `onbehalf token`, `onbehalf chat` and the dev console's sign-in mint.

Only with the configured HS256 secret (`AUTH_JWT_SECRET`), never with an
identity provider's keys: a deployment on JWKS gets its tokens from its IdP.
Below the CLI and the console, which both mint through `mint_dev_token`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from onbehalf.cli_errors import CliError
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
