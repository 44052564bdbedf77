"""The pool's keys: nothing is lent or listed across identities, tokens, credentials or URLs."""

from __future__ import annotations

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
