"""What every sealed per-user store in Redis shares: one client, one error, compare-and-delete.

The connected-account secrets (`user_secrets`) and the OAuth connections
(`oauth.store`) live in the same `REDIS_URL`; a Redis failure becomes one
error that names the setting, never a traceback with the URL's password.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from onbehalf.sealing import SealingKeys, process_sealing_keys
from onbehalf.settings import RedisSettings, redis_variable

CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 3.0
HEALTH_CHECK_SECONDS = 10
"""A pooled connection idle this long is PINGed before use: Redis servers (`timeout`),
proxies and cloud load balancers close idle connections, and the server's store may
sit unused for minutes between two users' connects."""
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

T = TypeVar("T")


class StoreError(Exception):
    """A store in REDIS_URL cannot be used as asked; the message says what to do."""


class RedisStore:
    """A Redis client with sealing keys; subclasses name what they store in `what`."""

    what = "the store"
    error: type[StoreError] = StoreError

    def __init__(
        self,
        client: aioredis.Redis | None = None,
        *,
        url: str | None = None,
        prefix: str | None = None,
        keys: SealingKeys | None = None,
    ) -> None:
        self.url = url or RedisSettings().redis_url
        self.prefix = prefix or self.default_prefix()
        self._client = client or aioredis.from_url(
            self.url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            health_check_interval=HEALTH_CHECK_SECONDS,
            retry=Retry(ExponentialBackoff(cap=0.5), 1),
            retry_on_error=[RedisConnectionError],
            decode_responses=True,
        )
        self._keys = keys

    def default_prefix(self) -> str:
        """The key prefix when none is given: each store reads its own setting."""
        return "onbehalf:"

    @property
    def keys(self) -> SealingKeys:
        return self._keys or process_sealing_keys()

    def require_durable_keys(self) -> None:
        """A value sealed with an ephemeral key could never be opened by another process."""
        if self.keys.ephemeral:
            raise self.error(
                "TOKEN_SEALING_KEY is not set: a value sealed with this process's ephemeral "
                "key could never be opened by the server; set the same key the server uses"
            )

    async def compare_and_delete(self, key: str, expected: str) -> bool:
        """Delete `key` only while it still holds `expected` (never a newer value)."""
        return bool(await self._run(self._client.eval(COMPARE_AND_DELETE, 1, key, expected)))

    async def compare_and_set(self, key: str, expected: str, value: str) -> bool:
        """Replace `key` only while it still holds `expected`."""
        return bool(
            await self._run(self._client.eval(COMPARE_AND_SET, 1, key, expected, value))
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except RedisError as exc:
            raise self.error(
                f"{self.what} at {redis_variable()} is unreachable ({type(exc).__name__}): "
                f"check {redis_variable()} and that Redis is running"
            ) from None


S = TypeVar("S", bound=RedisStore)


class ProcessStore(Generic[S]):
    """The process's store of one kind: made on first use (from REDIS_URL), replaceable
    by tests and embedding applications with `use`."""

    def __init__(self, make: Callable[[], S]) -> None:
        self._make = make
        self._store: S | None = None

    def get(self) -> S:
        if self._store is None:
            self._store = self._make()
        return self._store

    def use(self, store: S | None) -> None:
        self._store = store
