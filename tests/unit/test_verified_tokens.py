"""The server edge verifies and seals a token once a minute, not once per request."""

from __future__ import annotations

import pytest
from langgraph_sdk import Auth

from onbehalf import edge as auth
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio


async def test_the_same_token_is_verified_once_and_each_request_gets_its_own_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = mint("alice")
    first = await auth.authenticate(f"Bearer {token}")
    calls = []
    monkeypatch.setattr(auth._verifier(), "verify", lambda t: calls.append(t))
    second = await auth.authenticate(f"Bearer {token}")
    assert calls == []
    assert second == first and second is not first
    second["permissions"].append("tickets:admin")
    assert "tickets:admin" not in (await auth.authenticate(f"Bearer {token}"))["permissions"]


async def test_another_token_or_an_expired_one_is_verified_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = await auth.authenticate(f"Bearer {mint('alice')}")
    bob = await auth.authenticate(f"Bearer {mint('bob')}")
    assert (alice["identity"], bob["identity"]) == ("alice", "bob")
    assert alice["sealed_token"] != bob["sealed_token"]
    short = mint("carol", ttl=1)
    await auth.authenticate(f"Bearer {short}")
    monkeypatch.setattr(auth.time, "time", lambda: alice["token_expires_at"] + 1.0)
    assert auth._verified.get(short) is None


async def test_a_refused_token_is_never_remembered() -> None:
    with pytest.raises(Auth.exceptions.HTTPException):
        await auth.authenticate("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    assert auth._verified.get("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.") is None
