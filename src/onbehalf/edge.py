"""The server edge: every request is verified here, and every resource is scoped to its owner.

`authenticate` turns `Authorization: Bearer <jwt>` into a user whose only
copy of the token is sealed (see `onbehalf.sealing`); anything else is a 401
whose `detail` names the failed check. The `@auth.on` handlers stamp an
`owner` on what a user creates and filter every read by it, so somebody
else's thread, run or cron answers 404.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from langgraph_sdk import Auth

from onbehalf.jwt_auth import InvalidToken, parse_bearer, process_verifier
from onbehalf.mcp.prewarm import start_prewarm
from onbehalf.production import enforce_production_settings
from onbehalf.sealing import process_sealing_keys, seal_token
from onbehalf.settings import KitSettings, SettingsError, current

log = logging.getLogger("onbehalf.auth")

enforce_production_settings()  # the server must not start on a dev-only configuration
current(KitSettings)  # nor with a malformed kit setting (the error names the variable)
auth = Auth()


_verifier = process_verifier


@auth.authenticate
async def authenticate(
    authorization: str | Mapping[str, str] | None,
) -> Auth.types.MinimalUserDict:
    """Verify the bearer JWT and return the user with the token sealed, never in clear.

    langgraph-api passes the `Authorization` header by parameter name; Aegra passes the
    whole headers mapping (lower-case names) as the one argument. Both mean one header.
    """
    if isinstance(authorization, Mapping):
        authorization = authorization.get("authorization")
    try:
        token = parse_bearer(authorization)
        known = _verified.get(token)
        if known is not None:
            return known
        claims = await _verifier().verify(token)
    except InvalidToken as exc:
        log.info("request refused: %s", exc.check)
        raise Auth.exceptions.HTTPException(status_code=401, detail=exc.detail) from None
    except SettingsError as exc:
        log.error("auth is misconfigured: %s", exc)
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="the server's token verification is misconfigured"
        ) from None
    user: Auth.types.MinimalUserDict = {
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
    _verified.put(token, user)
    return user


class VerifiedTokens:
    """Users already built for a token, for a short while: one verification and one seal per
    token a minute instead of per request (a streamed run is several requests).

    Keyed by a sha256 of the exact token, under the verifier and sealing keys that produced
    the entry (new settings start empty); an entry is never served at or after the token's
    own expiry, nor after `VERIFIED_CACHE_SECONDS`. Each hit returns a copy, so the server's
    changes to one request's user never reach another's.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._made_by: tuple[object, object] | None = None

    def _current(self) -> None:
        made_by = (_verifier(), process_sealing_keys())
        if self._made_by is None or not all(
            a is b for a, b in zip(made_by, self._made_by, strict=True)
        ):
            self._entries.clear()
            self._made_by = made_by

    def get(self, token: str) -> Any:
        self._current()
        key = hashlib.sha256(token.encode()).hexdigest()
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.time()
        user = entry[1]
        if now >= entry[0] or now >= user["token_expires_at"]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return {**user, "permissions": list(user["permissions"])}

    def put(self, token: str, user: Any) -> None:
        self._current()
        key = hashlib.sha256(token.encode()).hexdigest()
        self._entries[key] = (time.time() + VERIFIED_CACHE_SECONDS,
                              {**user, "permissions": list(user["permissions"])})
        while len(self._entries) > VERIFIED_CACHE_SIZE:
            self._entries.popitem(last=False)


VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_SIZE = 4096
_verified = VerifiedTokens()


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


_NAMESPACE_KEYS = ("namespace", "namespace_prefix", "prefix")


@auth.on.store
async def store_is_per_user(ctx: Auth.types.AuthContext, value: Any) -> None:
    """A user's store lives under a namespace that starts with their identity.

    The namespace comes as `namespace` (put, get, delete; langgraph-api's search too),
    `namespace_prefix` (Aegra's search) or `prefix` (listing namespaces).
    """
    given = next((value[k] for k in _NAMESPACE_KEYS if value.get(k) is not None), None)
    namespace = tuple(given or ())
    if not namespace or namespace[0] != ctx.user.identity:
        raise Auth.exceptions.HTTPException(
            status_code=403,
            detail="store namespaces must start with your own identity",
        )
