"""Refusing to run production on a development configuration.

With `ONBEHALF_ENV=production` the server will not start while a setting is
dev-only: an ephemeral sealing key (lost on restart, different per replica),
no issuer or audience check (any token from the IdP for any API would do),
or a short HS256 secret. The error names every variable at fault.
"""

from __future__ import annotations

import os

from onbehalf.settings import SettingsError

MIN_SECRET_BYTES = 32


def production_problems(env: dict[str, str] | None = None) -> list[str]:
    """What keeps this environment from being a production configuration."""
    env = dict(os.environ) if env is None else env
    problems = []
    if not env.get("TOKEN_SEALING_KEY", "").strip():
        problems.append(
            "TOKEN_SEALING_KEY is not set (an ephemeral key loses every sealed token on "
            "restart and differs between replicas)"
        )
    if not env.get("AUTH_JWT_ISSUER", "").strip():
        problems.append("AUTH_JWT_ISSUER is not set (tokens of any issuer would be accepted)")
    if not env.get("AUTH_JWT_AUDIENCE", "").strip():
        problems.append(
            "AUTH_JWT_AUDIENCE is not set (tokens issued for any other API would be accepted)"
        )
    secret = env.get("AUTH_JWT_SECRET", "").strip()
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        problems.append(
            f"AUTH_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes (use AUTH_JWKS_URL "
            "with your identity provider, or a long random secret)"
        )
    if env.get("ONBEHALF_DEV_CONSOLE", "").strip() not in ("", "0"):
        problems.append(
            "ONBEHALF_DEV_CONSOLE is set (the dev console mints tokens with the dev secret; "
            "unset it in production)"
        )
    return problems


def enforce_production_settings(env: dict[str, str] | None = None) -> None:
    """Raise SettingsError when ONBEHALF_ENV=production and the configuration is dev-only."""
    env = dict(os.environ) if env is None else env
    if env.get("ONBEHALF_ENV", "").strip().lower() != "production":
        return
    problems = production_problems(env)
    if problems:
        raise SettingsError(
            "refusing to start with ONBEHALF_ENV=production: " + "; ".join(problems)
        )
