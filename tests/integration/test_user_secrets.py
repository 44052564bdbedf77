"""Connected-account secrets: sealed at rest, per user, compare-and-delete, CLI shows names only."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from onbehalf.user_secrets import UserSecretError, UserSecretStore
from tests.support.tokens import subprocess_env

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(redis_url: str) -> UserSecretStore:
    client = aioredis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    return UserSecretStore(client, url=redis_url)


async def test_round_trip_and_sealed_at_rest(store: UserSecretStore, redis_url: str) -> None:
    await store.set("alice", "github", "ghp_alicesecret123")
    stored = await store.get("alice", "github")
    assert stored is not None and stored.value.get_secret_value() == "ghp_alicesecret123"
    raw = aioredis.from_url(redis_url, decode_responses=True)
    for key in await raw.keys("*"):
        assert "ghp_alicesecret123" not in (await raw.get(key))
    assert "ghp_" not in repr(stored)


async def test_a_value_copied_to_another_user_does_not_open(
    store: UserSecretStore, redis_url: str
) -> None:
    await store.set("alice", "github", "ghp_alice")
    raw = aioredis.from_url(redis_url, decode_responses=True)
    await raw.set(store.key_for("bob", "github"), await raw.get(store.key_for("alice", "github")))
    with pytest.raises(UserSecretError, match="reconnect"):
        await store.get("bob", "github")


async def test_compare_and_delete_keeps_a_concurrent_reconnect(store: UserSecretStore) -> None:
    await store.set("alice", "github", "old")
    used = await store.get("alice", "github")
    assert used is not None
    await store.set("alice", "github", "new")  # the user reconnected meanwhile
    assert not await store.delete_if_unchanged("alice", used)
    kept = await store.get("alice", "github")
    assert kept is not None and kept.value.get_secret_value() == "new"
    assert await store.delete_if_unchanged("alice", kept)
    assert await store.get("alice", "github") is None


async def test_names_are_per_user(store: UserSecretStore) -> None:
    await store.set("alice", "github", "a")
    await store.set("alice", "jira", "b")
    await store.set("alice:evil", "x", "c")
    assert await store.names("alice") == ["github", "jira"]


async def test_bad_names_are_refused(store: UserSecretStore) -> None:
    with pytest.raises(UserSecretError):
        await store.set("alice", "../x", "v")


def test_cli_set_list_delete_never_prints_the_value(redis_url: str) -> None:
    env = subprocess_env(REDIS_URL=redis_url)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "onbehalf", "secrets", *args], env=env,
                              input=stdin, capture_output=True, text=True, timeout=60)

    result = run("set", "--as", "carol", "github", stdin="ghp_carol_value\n")
    assert result.returncode == 0, result.stderr
    listed = run("list", "--as", "carol")
    assert listed.stdout.split() == ["github"]
    deleted = run("delete", "--as", "carol", "github")
    assert deleted.returncode == 0
    assert run("list", "--as", "carol").stdout.strip() == ""
    for r in (result, listed, deleted):
        assert "ghp_carol_value" not in r.stdout + r.stderr
    empty = run("set", "--as", "carol", "github", stdin="")
    assert empty.returncode != 0 and "stdin" in empty.stderr


async def test_rotation_old_secrets_open_with_old_and_new_keys(redis_url: str) -> None:
    import base64
    import os

    from onbehalf.sealing import SealingKeys

    def ring(*keys: bytes) -> SealingKeys:
        return SealingKeys.parse(",".join(base64.urlsafe_b64encode(k).decode() for k in keys))

    old, new = os.urandom(32), os.urandom(32)
    client = aioredis.from_url(redis_url, decode_responses=True)
    await UserSecretStore(client, url=redis_url, keys=ring(old)).set("dana", "github", "v1")
    rotated = UserSecretStore(client, url=redis_url, keys=ring(new, old))
    stored = await rotated.get("dana", "github")
    assert stored is not None and stored.value.get_secret_value() == "v1"
    with pytest.raises(UserSecretError, match="reconnect"):
        await UserSecretStore(client, url=redis_url, keys=ring(new)).get("dana", "github")


async def test_the_store_outlives_redis_closing_its_connections(redis_url: str) -> None:
    """Redis's `timeout`, proxies and load balancers drop idle connections: the next use works.

    Found in e2e: the server's store sat idle past the suite's Redis `timeout 30`, and
    the next `DELETE /connections` answered 503."""
    store = UserSecretStore(url=redis_url)  # the store's own client, as the server builds it
    await store.set("alice", "github", "ghp_first")
    admin = aioredis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        await admin.aclose()
    stored = await store.get("alice", "github")
    assert stored is not None and stored.value.get_secret_value() == "ghp_first"
    await store.aclose()
