"""The pool's keys: nothing is lent or listed across identities, tokens, credentials or URLs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from mcp.types import Tool

from onbehalf.mcp.pool import PoolSettings, SessionKey, SessionPool

pytestmark = pytest.mark.anyio

ALICE = SessionKey("tickets", "http://t/mcp", "alice", "fp-token-1", "fp-cred-1")


class FakeSession:
    def __init__(self, expires_at: float = float("inf")) -> None:
        self.alive = True
        self.broken = False
        self.expires_at = expires_at
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True
        self.alive = False


@pytest.mark.parametrize(
    "other",
    [
        replace(ALICE, identity="bob"),
        replace(ALICE, token_fingerprint="fp-token-2"),  # alice signed in again
        replace(ALICE, credential_fingerprint="fp-cred-2"),
        replace(ALICE, url="http://elsewhere/mcp"),
        replace(ALICE, server="billing"),
    ],
)
async def test_a_session_is_lent_only_for_its_exact_key(other: SessionKey) -> None:
    pool = SessionPool(PoolSettings())
    mine = FakeSession()
    pool.release(ALICE, mine, reusable=True)  # type: ignore[arg-type]
    fresh = FakeSession()

    async def open_new() -> FakeSession:
        return fresh

    assert await pool.acquire(other, open_new) is fresh  # type: ignore[arg-type]
    assert await pool.acquire(ALICE, open_new) is mine  # type: ignore[arg-type]
    pool.remember_tools(ALICE, [Tool(name="t", inputSchema={"type": "object"})])
    assert pool.cached_tools(other) is None
    assert pool.cached_tools(ALICE) is not None
    await pool.aclose()


async def test_expired_broken_or_failed_sessions_are_not_kept() -> None:
    pool = SessionPool(PoolSettings())
    expired, broken = FakeSession(expires_at=time.time() - 1), FakeSession()
    broken.broken = True
    pool.release(ALICE, expired, reusable=True)  # type: ignore[arg-type]
    pool.release(ALICE, broken, reusable=True)  # type: ignore[arg-type]
    pool.release(ALICE, FakeSession(), reusable=False)  # type: ignore[arg-type]
    assert pool.idle_count == 0
    await pool.aclose()


async def test_the_pool_is_bounded_least_recently_used_first() -> None:
    pool = SessionPool(PoolSettings(max_sessions=2))
    sessions = [FakeSession() for _ in range(3)]
    for i, session in enumerate(sessions):
        pool.release(replace(ALICE, identity=f"u{i}"), session, reusable=True)  # type: ignore[arg-type]
    assert pool.idle_count == 2
    await pool.aclose()
    assert sessions[0].closed


async def test_the_pool_knows_which_users_are_warm() -> None:
    """`holds_idle` (what spares a warm user's threadless run a prewarm) follows every
    release and take, and never answers for another user or another token."""
    pool = SessionPool(PoolSettings(idle_seconds=60, max_sessions=1))
    bob = replace(ALICE, identity="bob")
    pool.release(ALICE, FakeSession(), reusable=True)  # type: ignore[arg-type]
    assert pool.holds_idle("alice", "fp-token-1")
    assert not pool.holds_idle("alice", "fp-token-2")
    assert not pool.holds_idle("bob", "fp-token-1")
    pool.release(bob, FakeSession(), reusable=True)  # type: ignore[arg-type]  # alice's goes
    assert pool.holds_idle("bob", "fp-token-1")
    assert not pool.holds_idle("alice", "fp-token-1")

    async def never() -> FakeSession:
        raise AssertionError("bob's idle session should have been lent")

    assert await pool.acquire(bob, never) is not None  # type: ignore[arg-type]
    assert not pool.holds_idle("bob", "fp-token-1")
    await pool.aclose()


def _tools(*names: str) -> list[Tool]:
    return [Tool(name=n, inputSchema={"type": "object"}) for n in names]


def _age(pool: SessionPool, key: SessionKey, seconds: float) -> None:
    """Pretend the key's list was stored `seconds` earlier than it was."""
    tools, expires = pool._tools[key]
    pool._tools[key] = (tools, expires - seconds)


async def test_a_list_near_or_past_its_ttl_is_listed_again_after_the_run() -> None:
    """The warm user's once-a-minute `tools/list` no longer holds up their run; the list is
    never older than two TTLs, and a refresh is for the key's own user only."""
    pool = SessionPool(PoolSettings(tools_cache_seconds=60))
    pool.remember_tools(ALICE, _tools("old"))
    assert not pool.tools_due(ALICE)
    _age(pool, ALICE, 50)  # the last quarter of its TTL: listed again when a run gives it back
    assert pool.tools_due(ALICE) and pool.cached_tools(ALICE) is not None
    assert not pool.tools_due(replace(ALICE, identity="bob"))  # nothing cached for bob
    _age(pool, ALICE, 11)
    assert pool.cached_tools(ALICE) is None
    assert [t.name for t in pool.stale_tools(ALICE) or []] == ["old"]
    assert pool.stale_tools(replace(ALICE, identity="bob")) is None

    listed: list[int] = []

    async def list_again() -> list[Tool]:
        listed.append(1)
        return _tools("new")

    pool.refreshing(ALICE, list_again)
    assert not pool.tools_due(ALICE)  # under way: a second run's end lists nothing more
    pool.refreshing(ALICE, list_again)
    for task in list(pool._closing):
        await task
    assert listed == [1]
    assert [t.name for t in pool.cached_tools(ALICE) or []] == ["new"]

    _age(pool, ALICE, 121)  # two TTLs: too old to serve, the run lists it itself
    assert pool.stale_tools(ALICE) is None
    await pool.aclose()


async def test_a_change_announced_during_the_refresh_wins_over_its_answer() -> None:
    pool = SessionPool(PoolSettings(tools_cache_seconds=60))
    pool.remember_tools(ALICE, _tools("old"))
    _age(pool, ALICE, 61)
    answered = asyncio.Event()

    async def slow_list() -> list[Tool]:
        await answered.wait()
        return _tools("listed-before-the-change")

    pool.refreshing(ALICE, slow_list)
    pool.forget_tools(ALICE)  # notifications/tools/list_changed arrives meanwhile
    answered.set()
    for task in list(pool._closing):
        await task
    assert pool.cached_tools(ALICE) is None and pool.stale_tools(ALICE) is None

    async def failing() -> list[Tool]:
        raise RuntimeError("session gone")

    pool.remember_tools(ALICE, _tools("old"))
    _age(pool, ALICE, 61)
    pool.refreshing(ALICE, failing)
    for task in list(pool._closing):
        await task
    assert pool.stale_tools(ALICE) is None  # a failed refresh: the next run lists them
    await pool.aclose()
