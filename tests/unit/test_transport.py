"""The shared HTTP pool outlives each session's client; credentials stay on the client."""

from __future__ import annotations

import httpx
import pytest

from agents.kit.transport import client_factory, shared_transport

pytestmark = pytest.mark.anyio


async def test_closing_a_session_client_keeps_the_shared_pool_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = shared_transport()._pool
    closed: list[str] = []

    async def spy_close(*args: object) -> None:
        closed.append("closed")

    monkeypatch.setattr(pool, "aclose", spy_close)
    monkeypatch.setattr(pool, "__aexit__", spy_close, raising=False)
    monkeypatch.setattr(type(pool), "__aexit__", lambda self, *a: spy_close())
    factory = client_factory()
    async with factory(headers={"Authorization": "Bearer a"}) as first:
        assert first._transport is shared_transport()
    await factory(headers={"Authorization": "Bearer b"}).aclose()
    assert closed == []


async def test_each_client_has_its_own_authorization_header() -> None:
    factory = client_factory()
    alice, bob = factory(headers={"Authorization": "Bearer A"}), factory(
        headers={"Authorization": "Bearer B"}
    )
    assert alice.headers["authorization"] == "Bearer A"
    assert bob.headers["authorization"] == "Bearer B"
    assert "authorization" not in {k.lower() for k in shared_transport().__dict__}
    await alice.aclose()
    await bob.aclose()


async def test_refusals_are_reported_to_the_session() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    client = client_factory(seen.append)()
    client._transport = httpx.MockTransport(handler)
    await client.get("http://mcp.test/mcp")
    assert seen == [401]
    await client.aclose()
