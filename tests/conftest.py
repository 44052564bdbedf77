"""Suite-wide settings: every test sees the test identity provider, never a developer's .env."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.tokens import auth_env

pytest_plugins: list[str] = [
    "tests.support.redis_server", "tests.support.mcp_server", "tests.support.postgres_server",
    "tests.support.aegra_server",
]


@pytest.fixture(autouse=True)
def _test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in auth_env().items():
        monkeypatch.setenv(key, value)
    for key in ("AUTH_JWKS_URL", "MCP_SERVERS", "MCP_SERVERS_FILE", "ONBEHALF_ENV"):
        monkeypatch.delenv(key, raising=False)
    from onbehalf.sealing import process_sealing_keys
    from onbehalf.settings import auth_settings

    auth_settings.cache_clear()
    process_sealing_keys.cache_clear()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def empty_pool() -> AsyncIterator[None]:
    """After the test, every pooled MCP session of its event loop is closed (a module asks
    for it with `pytest.mark.usefixtures("empty_pool")`)."""
    yield
    from onbehalf.mcp.pool import session_pool

    await session_pool().aclose()
