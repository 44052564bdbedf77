"""The server edge: every request is verified here, and every resource is scoped to its owner.

`authenticate` turns `Authorization: Bearer <jwt>` into a user whose only
copy of the token is sealed (see `onbehalf.sealing`); anything else is a 401
whose `detail` names the failed check. The `@auth.on` handlers stamp an
`owner` on what a user creates and filter every read by it, so somebody
else's thread, run or cron answers 404.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from langgraph_sdk import Auth

from onbehalf.jwt_auth import InvalidToken, JwtVerifier, parse_bearer
from onbehalf.production import enforce_production_settings
from onbehalf.sealing import process_sealing_keys, seal_token
from onbehalf.settings import SettingsError, auth_settings

log = logging.getLogger("onbehalf.auth")

enforce_production_settings()  # the server must not start on a dev-only configuration
auth = Auth()


@lru_cache(maxsize=1)
def _verifier() -> JwtVerifier:
    return JwtVerifier(auth_settings())


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    """Verify the bearer JWT and return the user with the token sealed, never in clear."""
    try:
        token = parse_bearer(authorization)
        claims = await _verifier().verify(token)
    except InvalidToken as exc:
        log.info("request refused: %s", exc.check)
        raise Auth.exceptions.HTTPException(status_code=401, detail=exc.detail) from None
    except SettingsError as exc:
        log.error("auth is misconfigured: %s", exc)
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="the server's token verification is misconfigured"
        ) from None
    return {
        "identity": claims.subject,
        "display_name": claims.display_name,
        "is_authenticated": True,
        "permissions": claims.permissions,
        "token_expires_at": claims.expires_at,
        "sealed_token": seal_token(
            process_sealing_keys(),
            token,
            identity=claims.subject,
            expires_at=claims.expires_at,
        ),
    }


def _owned(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """Stamp the caller as owner on anything created, and filter everything by it."""
    if isinstance(value, dict):
        metadata = value.get("metadata")
        if metadata is None:
            metadata = {}
            value["metadata"] = metadata
        if isinstance(metadata, dict):
            metadata["owner"] = ctx.user.identity
    return {"owner": ctx.user.identity}


@auth.on.threads
async def threads_are_private(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return _owned(ctx, value)


@auth.on.threads.create_run
async def runs_are_private(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """A run is its thread's; a threadless run on a deployment graph also starts a prewarm.

    Only threadless runs are prewarmed: for a run on a thread, the server checks that
    the thread is the caller's after this handler, so a prewarm here could serve a
    request that is then refused (see docs/performance.md, "Prewarm").
    """
    filters = _owned(ctx, value)
    if isinstance(value, dict) and value.get("thread_id") is None:
        from agents.kit.prewarm import start_prewarm  # the kit only where graphs run

        await start_prewarm(ctx.user, value.get("assistant_id"))
    return filters


@auth.on.crons
async def crons_are_private(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return _owned(ctx, value)


@auth.on.assistants.read
@auth.on.assistants.search
async def assistants_shared_or_owned(ctx: Auth.types.AuthContext, value: Any) -> dict[str, Any]:
    """Everybody uses the deployment's assistants; a user's own assistants stay theirs."""
    return {"$or": [{"owner": ctx.user.identity}, {"created_by": "system"}]}


@auth.on.assistants
async def assistants_owned(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return _owned(ctx, value)


@auth.on.store
async def store_is_per_user(ctx: Auth.types.AuthContext, value: Any) -> None:
    """A user's store lives under a namespace that starts with their identity."""
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        raise Auth.exceptions.HTTPException(
            status_code=403,
            detail="store namespaces must start with your own identity",
        )
