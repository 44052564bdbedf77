"""Sessions share one TLS context but nothing that carries a credential."""

from __future__ import annotations

import httpx
import pytest

from agents.kit.transport import client_factory, shared_ssl_context

pytestmark = pytest.mark.anyio


def _inner(client: httpx.AsyncClient) -> httpx.AsyncHTTPTransport:
    transport = client._transport
    return getattr(transport, "_inner", transport)  # type: ignore[return-value]


async def test_every_session_client_reuses_the_one_tls_context() -> None:
    factory = client_factory(on_error=lambda reason: None)
    alice, bob = factory(headers={"Authorization": "Bearer A"}), factory(
        headers={"Authorization": "Bearer B"}
    )
    for client in (alice, bob):
        pool = _inner(client)._pool
        assert pool._ssl_context is shared_ssl_context()
    assert _inner(alice) is not _inner(bob)  # pools (and their connections) are per session
    await alice.aclose()
    await bob.aclose()


async def test_each_client_has_its_own_authorization_header() -> None:
    factory = client_factory()
    alice, bob = factory(headers={"Authorization": "Bearer A"}), factory(
        headers={"Authorization": "Bearer B"}
    )
    assert alice.headers["authorization"] == "Bearer A"
    assert bob.headers["authorization"] == "Bearer B"
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


async def test_a_lost_connection_is_reported_to_the_session() -> None:
    reasons: list[str] = []
    client = client_factory(on_error=reasons.append)()
    with pytest.raises(httpx.ConnectError):
        await client.get("http://127.0.0.1:9/mcp")  # nothing listens on the discard port
    assert reasons and "connection failed" in reasons[0]
    await client.aclose()
