"""Where the user's token is resolved: the one function every graph calls.

Two safe paths exist (DESIGN.md §1): the LangGraph server's authenticated
user, whose `sealed_token` we open here, and, for in-process calls, the
runtime context (`context={"user_token": jwt}`), which is never
checkpointed. Everything else is refused with a message naming the safe path.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from pydantic import SecretStr

from onbehalf.errors import MissingUserToken, UnsafeTokenPath, UserTokenExpired, UserTokenRejected
from onbehalf.jwt_auth import (
    TOKEN_KEY_NAMES,
    InvalidToken,
    process_verifier,
    token_fingerprint,
    without_bearer_scheme,
)
from onbehalf.sealing import SealingError, process_sealing_keys, unseal_token
from onbehalf.settings import SettingsError


class UserContext(TypedDict, total=False):
    """The runtime context of MCP-using graphs: only for in-process calls."""

    user_token: str


@dataclass(frozen=True)
class UserToken:
    """A verified token and whose it is; the token itself never shows in repr or logs."""

    identity: str
    token: SecretStr = field(repr=False)
    expires_at: int
    source: Literal["server", "context"]
    fingerprint: str

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (now if now is not None else time.time())

    def ensure_fresh(self, *, during_run: bool = False) -> None:
        """Raise UserTokenExpired if the token can no longer be used."""
        if self.seconds_left() <= 0:
            when = "during this run" if during_run else "before this run started"
            raise UserTokenExpired(
                f"your sign-in expired {when}: sign in again and retry "
                "(nothing already saved in the thread was lost)"
            )


_verifier = process_verifier


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    try:
        return obj[key]
    except (KeyError, TypeError, IndexError):
        return getattr(obj, key, None)


def _refuse_unsafe_config(config: dict[str, Any] | None) -> None:
    configurable = (config or {}).get("configurable") or {}
    for key in sorted(TOKEN_KEY_NAMES):
        if configurable.get(key):
            raise UnsafeTokenPath(
                f"refusing configurable[{key!r}]: langgraph copies every string in "
                "config['configurable'] into checkpoint metadata, so the token would be "
                "persisted. Send it as 'Authorization: Bearer <jwt>' to the LangGraph server, "
                "or in process pass graph.ainvoke(input, context={'user_token': jwt})"
            )


async def resolve_user_token(runtime: Any, config: dict[str, Any] | None = None) -> UserToken:
    """The caller's token for this run, verified; raises a kit error saying why not.

    `runtime` is the LangGraph `Runtime` (or `ToolRuntime`) of the node; `config`
    its RunnableConfig when at hand (checked for unsafe token paths).
    """
    _refuse_unsafe_config(config)
    server_info = getattr(runtime, "server_info", None)
    user = getattr(server_info, "user", None)
    if user is None:
        user = ((config or {}).get("configurable") or {}).get("langgraph_auth_user")
    context = getattr(runtime, "context", None)
    context_token = _get(context, "user_token")

    if user is not None and _get(user, "sealed_token"):
        if context_token:
            raise UnsafeTokenPath(
                "refusing context['user_token'] on a server run: the server stores a run's "
                "context with the run record. The Authorization header is all the server needs."
            )
        key = ("server", str(_get(user, "identity")), str(_get(user, "token_expires_at")),
               str(_get(user, "sealed_token")))
        return _remembered(key) or _remember(key, _from_server_user(user))
    if context_token:
        key = ("context", context_token if isinstance(context_token, str) else "")
        return _remembered(key) or _remember(key, await _from_context(context_token))
    if user is not None and _get(user, "identity"):
        # a run the server started for a user without their sign-in: a cron fired by an
        # engine that keeps only the owner's identity (Aegra). It never acts as nobody.
        raise MissingUserToken(
            f"this run carries no sign-in of {_get(user, 'identity')!r} (the server started "
            "it on its own, e.g. a scheduled cron run): sign in again and run it yourself"
        )
    raise MissingUserToken(
        "no user token for this run: call the LangGraph server with 'Authorization: Bearer "
        "<jwt>', or in process pass graph.ainvoke(input, context={'user_token': jwt})"
    )


_RESOLVED_MAX = 1024
_resolved: OrderedDict[str, UserToken] = OrderedDict()


def _cache_key(parts: tuple[str, ...]) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _remembered(parts: tuple[str, ...]) -> UserToken | None:
    """A token already verified (or unsealed) in this process, while it is still valid.

    A run's model and tool calls each resolve the token; verifying the same JWT
    again every time was half of the kit's own cost. The key is a sha256 of the
    exact input, so a different token (or seal, or identity) never matches.
    Expiry is not judged here: every caller checks `ensure_fresh()`.
    """
    if not parts[-1]:
        return None
    key = _cache_key(parts)
    found = _resolved.get(key)
    if found is None:
        return None
    if found.seconds_left() <= 0:
        del _resolved[key]  # callers' ensure_fresh() says when it expired
    else:
        _resolved.move_to_end(key)
    return found


def _remember(parts: tuple[str, ...], user: UserToken) -> UserToken:
    if parts[-1]:
        _resolved[_cache_key(parts)] = user
        while len(_resolved) > _RESOLVED_MAX:
            _resolved.popitem(last=False)
    return user


def _from_server_user(user: Any) -> UserToken:
    identity = str(_get(user, "identity"))
    expires_at = _get(user, "token_expires_at")
    if not isinstance(expires_at, int | float):
        raise UserTokenRejected("the server user has no token expiry: sign in again")
    try:
        token = unseal_token(
            process_sealing_keys(),
            str(_get(user, "sealed_token")),
            identity=identity,
            expires_at=int(expires_at),
        )
    except SealingError as exc:
        if exc.reason == "expired":
            raise UserTokenExpired(str(exc)) from None
        raise UserTokenRejected(str(exc)) from None
    return UserToken(
        identity=identity,
        token=token,
        expires_at=int(expires_at),
        source="server",
        fingerprint=token_fingerprint(token.get_secret_value()),
    )


async def _from_context(raw: Any) -> UserToken:
    if isinstance(raw, SecretStr):
        raw = raw.get_secret_value()
    if not isinstance(raw, str):
        raise UserTokenRejected("context['user_token'] must be the JWT as a string")
    token = without_bearer_scheme(raw)
    try:
        claims = await _verifier().verify(token)
    except InvalidToken as exc:
        if exc.check == "exp":
            raise UserTokenExpired(
                "your sign-in expired before this run started: sign in again"
            ) from None
        raise UserTokenRejected(f"the user token was refused: {exc.detail}") from None
    except SettingsError as exc:
        raise UserTokenRejected(
            f"cannot verify context['user_token']: {exc}"
        ) from None
    return UserToken(
        identity=claims.subject,
        token=SecretStr(token),
        expires_at=claims.expires_at,
        source="context",
        fingerprint=token_fingerprint(token),
    )
