"""The one-time token handoff between the API side and a background worker.

The API service, which saw the user's request, stores the user's JWT in Redis
under the execution id; exactly one worker takes it (``GETDEL``) and uses it
as its ``Authorization`` header. The wire contract is deliberately plain so
that a Java or Go producer needs nothing but ``SET``:

    key   = TOKEN_HANDOFF_PREFIX + execution_id      e.g. ``agent-token:run-42``
    value = the raw JWT (ASCII, no quoting, no JSON)
    write = SET key value EX ttl   with ttl <= seconds until exp and <= TOKEN_HANDOFF_TTL_SECONDS

``take`` deletes before anything looks at the value, so a token is never
readable twice, a worker that dies afterwards leaves nothing behind, and an
expired token is gone even though it is refused (DESIGN.md §7).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from onbehalf.jwt_auth import MAX_TOKEN_BYTES, token_fingerprint, unverified_expiry
from onbehalf.settings import HandoffSettings, redact_url, redis_variable

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2.0
"""A Redis that does not accept a connection in 2 s is down for a worker's purposes."""

COMMAND_TIMEOUT_SECONDS = 3.0
"""SET and GETDEL answer in microseconds; 3 s means the server or the network is stuck."""

MAX_EXECUTION_ID_LENGTH = 128
_EXECUTION_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]*[A-Za-z0-9])?")
_JWT_CHARS = re.compile(r"[A-Za-z0-9_.=-]+")


class HandoffError(Exception):
    """The token could not be handed off; the message says what happened and what to do.

    Every handoff failure means the same thing to a worker: there is no token
    it may use, so the CLI exits 2 for all of them (DESIGN.md §4).
    """

    exit_code = 2


class InvalidExecutionId(HandoffError):
    """The execution id could reach keys other than this execution's, or none at all."""


class TokenMissing(HandoffError):
    """Nothing under the key: never stored, already taken, or its TTL ran out."""


class TokenExpired(HandoffError):
    """The token's `exp` has passed; a stored one has been deleted all the same."""


class TokenMalformed(HandoffError):
    """The value is not a JWT with a numeric `exp`, so its lifetime cannot be bounded."""


class RedisUnavailable(HandoffError):
    """Redis could not be reached or refused us; the message names REDIS_URL (redacted)."""


@dataclass(frozen=True)
class HandedOffToken:
    """A token taken from Redis and checked not to be expired (its signature is not checked).

    `value` is a `SecretStr` so that a stray print or log line shows
    `**********`; call `value.get_secret_value()` only where the header is built.
    """

    execution_id: str
    value: SecretStr = field(repr=False)
    expires_at: int
    fingerprint: str

    @property
    def seconds_left(self) -> int:
        return int(self.expires_at - time.time())


def validate_execution_id(execution_id: str) -> str:
    """Return the id if it names exactly one key, else raise InvalidExecutionId.

    The charset keeps glob characters, whitespace and separators out of keys
    (nobody can address `agent-token:*` or another prefix); letters or digits
    at both ends refuse `../x`, `.x`, `x:` and similar look-alikes.
    """
    if not isinstance(execution_id, str) or not execution_id:
        raise InvalidExecutionId("the execution id is empty: pass the id the API side stored")
    if len(execution_id) > MAX_EXECUTION_ID_LENGTH:
        raise InvalidExecutionId(
            f"the execution id is {len(execution_id)} characters long; at most "
            f"{MAX_EXECUTION_ID_LENGTH} are allowed"
        )
    if not _EXECUTION_ID.fullmatch(execution_id):
        raise InvalidExecutionId(
            f"invalid execution id {execution_id!r}: use letters, digits and . _ : - only, "
            "starting and ending with a letter or digit"
        )
    return execution_id


def handoff_ttl(token: str, *, max_ttl: int, requested: int | None = None,
                now: float | None = None) -> int:
    """The TTL a token may be stored with: the least of the setting, the request and its exp.

    Raises TokenMalformed for a value without a readable `exp` and TokenExpired
    for one whose `exp` has passed; never verifies the signature (the server does).
    """
    if requested is not None and requested <= 0:
        raise HandoffError(
            f"the requested TTL must be a positive number of seconds, not {requested}"
        )
    _check_token_shape(token)
    exp = unverified_expiry(token)
    if exp is None:
        raise TokenMalformed(
            "the token has no numeric 'exp' claim (or is not a JWT), so its lifetime cannot "
            "be bounded: hand off the user's access token itself"
        )
    remaining = int(exp - (time.time() if now is None else now))
    if remaining < 1:
        raise TokenExpired(
            f"the token expired at {_iso(exp)} ({-remaining} s ago): nothing was stored; "
            "get a fresh token from the user's session and hand that off"
        )
    candidates = [max_ttl, remaining] + ([requested] if requested is not None else [])
    return min(candidates)


class TokenHandoff:
    """Put and take handed-off tokens in one Redis; one instance per process or event loop.

    Bounded by design: connecting gives up after CONNECT_TIMEOUT_SECONDS,
    commands after COMMAND_TIMEOUT_SECONDS, and a refused connection is
    retried once. Every Redis failure becomes a RedisUnavailable that names
    REDIS_URL (password redacted) and says what to check.
    """

    def __init__(
        self,
        settings: HandoffSettings | None = None,
        *,
        client: aioredis.Redis | None = None,
    ) -> None:
        self._settings = settings if settings is not None else HandoffSettings()
        self._redacted_url = redact_url(self._settings.redis_url)
        self._owns_client = client is None
        self._client = client if client is not None else self._connect()

    def __repr__(self) -> str:
        return (
            f"TokenHandoff(redis_url={self._redacted_url!r}, "
            f"prefix={self._settings.token_handoff_prefix!r})"
        )

    @property
    def settings(self) -> HandoffSettings:
        return self._settings

    def key_for(self, execution_id: str) -> str:
        """The Redis key of an execution's token (the id is validated first)."""
        return self._settings.token_handoff_prefix + validate_execution_id(execution_id)

    async def put(self, execution_id: str, token: str, ttl: int | None = None) -> int:
        """Store `token` for one worker and return the TTL it was given, in seconds.

        The TTL is the least of TOKEN_HANDOFF_TTL_SECONDS, `ttl` and the
        seconds until the token's `exp`, so Redis never holds a token past its
        own expiry. A second `put` for the same id replaces the first.
        """
        key = self.key_for(execution_id)
        token = token.strip()
        given = handoff_ttl(token, max_ttl=self._settings.token_handoff_ttl_seconds,
                            requested=ttl)
        async with self._redis_errors("store the token"):
            await self._client.set(key, token, ex=given)
        logger.info("handoff stored key=%s token=%s ttl=%ds", key, token_fingerprint(token), given)
        return given

    async def take(self, execution_id: str) -> str | None:
        """Read and delete the token in one step (GETDEL); None if there is none.

        Of any number of concurrent takers exactly one gets the token. The
        value is deleted before it is looked at, so even a token the caller
        then refuses (expired, malformed) is gone from Redis.
        """
        key = self.key_for(execution_id)
        async with self._redis_errors("take the token"):
            raw = await self._client.getdel(key)
        if raw is None:
            logger.info("handoff empty key=%s", key)
            return None
        token = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        token = token.strip()
        logger.info("handoff taken key=%s token=%s", key, token_fingerprint(token))
        return token

    async def take_usable(self, execution_id: str) -> HandedOffToken:
        """Take the token and refuse it unless it is a JWT that has not expired.

        Raises TokenMissing, TokenMalformed or TokenExpired; in every case the
        key no longer exists afterwards.
        """
        token = await self.take(execution_id)
        key = self.key_for(execution_id)
        if token is None:
            raise TokenMissing(
                f"no handed-off token for execution {execution_id!r} (key {key}): it was never "
                "stored, another worker already took it, or its TTL ran out; have the API side "
                "hand off the user's token again"
            )
        try:
            _check_token_shape(token)
        except TokenMalformed as exc:
            raise TokenMalformed(f"{exc} (key {key} has been deleted)") from None
        exp = unverified_expiry(token)
        if exp is None:
            raise TokenMalformed(
                f"the value under {key} is not a JWT with a numeric 'exp' claim; it has been "
                "deleted: producers must store the raw access token"
            )
        if exp <= time.time():
            raise TokenExpired(
                f"the token handed off for execution {execution_id!r} expired at {_iso(exp)}; "
                "it has been deleted: the user must sign in again and the API side hand off "
                "the fresh token"
            )
        return HandedOffToken(
            execution_id=execution_id,
            value=SecretStr(token),
            expires_at=exp,
            fingerprint=token_fingerprint(token),
        )

    async def ping(self) -> None:
        """Raise RedisUnavailable unless Redis answers (for health checks at start-up)."""
        async with self._redis_errors("reach Redis"):
            await self._client.ping()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> TokenHandoff:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _connect(self) -> aioredis.Redis:
        try:
            return aioredis.Redis.from_url(
                self._settings.redis_url,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=COMMAND_TIMEOUT_SECONDS,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), retries=1),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise RedisUnavailable(
                f"{redis_variable()}={self._redacted_url} is not a usable Redis URL ({exc}): use "
                "redis://[user:password@]host:port/db, rediss://... or unix:///path"
            ) from None

    def _redis_errors(self, action: str) -> contextlib.AbstractAsyncContextManager[None]:
        return _translated_redis_errors(action, self._redacted_url)


@contextlib.asynccontextmanager
async def _translated_redis_errors(action: str, redacted_url: str) -> AsyncIterator[None]:
    """Translate redis-py exceptions into RedisUnavailable, in exactly one place."""
    try:
        yield
    except RedisError as exc:
        raise RedisUnavailable(_redis_problem(exc, action, redacted_url)) from None


def _redis_problem(exc: RedisError, action: str, redacted_url: str) -> str:
    variable = redis_variable()
    where = f"{variable}={redacted_url}"
    refused = str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    if isinstance(exc, AuthenticationError | AuthorizationError) or (
        isinstance(exc, ResponseError) and refused
    ):
        message = (
            f"Redis at {where} refused our credentials or permissions, so could not "
            f"{action}: fix the user/password in {variable} or the Redis ACL"
        )
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        message = (
            f"cannot {action}: Redis at {where} is unreachable ({_short(exc)}); "
            f"start Redis or point {variable} at it"
        )
    elif isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
        message = (
            f"Redis at {where} does not support GETDEL: the token handoff needs "
            "Redis 6.2 or newer"
        )
    else:
        message = f"Redis at {where} failed to {action}: {_short(exc)}"
    return message


def _check_token_shape(token: str) -> None:
    if not token:
        raise TokenMalformed("the token is empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenMalformed(
            f"the token is over {MAX_TOKEN_BYTES} bytes: that is not an access token"
        )
    if not _JWT_CHARS.fullmatch(token) or token.count(".") != 2:
        raise TokenMalformed(
            "the value is not a JWT (three base64url segments separated by dots); store the raw "
            "token, without 'Bearer ' or quotes"
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")
