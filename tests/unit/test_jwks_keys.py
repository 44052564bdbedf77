"""Keys from a JWKS endpoint: checked on the event loop while known, withdrawn keys refused.

A real identity provider (`tests.support.jwks`, HTTP on loopback) and real RS256 tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import onbehalf.jwt_auth as jwt_auth
from onbehalf.jwt_auth import InvalidToken, JwtVerifier
from onbehalf.settings import AuthSettings
from tests.support.jwks import JwksServer, SigningKey, mint_rs256
from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER

pytestmark = pytest.mark.anyio


@pytest.fixture
def keys() -> tuple[SigningKey, SigningKey]:
    return SigningKey.generate("key-old"), SigningKey.generate("key-new")


@pytest.fixture
def jwks(keys: tuple[SigningKey, SigningKey]) -> Iterator[JwksServer]:
    with JwksServer(list(keys)) as server:
        yield server


def verifier_for(server: JwksServer) -> JwtVerifier:
    return JwtVerifier(AuthSettings(
        auth_jwt_secret="", auth_jwks_url=server.url, auth_jwt_algorithms=["RS256"],
        auth_jwt_issuer=TEST_ISSUER, auth_jwt_audience=[TEST_AUDIENCE],
    ), jwks_timeout=2.0)


async def test_a_known_key_is_checked_without_leaving_the_event_loop(
    jwks: JwksServer, keys: tuple[SigningKey, SigningKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[Any] = []
    real = asyncio.to_thread

    async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(jwt_auth.asyncio, "to_thread", counted)
    verifier = verifier_for(jwks)
    for i in range(20):
        claims = await verifier.verify(mint_rs256(keys[i % 2], f"user-{i}"))
        assert claims.subject == f"user-{i}"
    assert len(hops) == 1, "only the first verify, which fetched the JWKS, may use a thread"
    assert jwks.requests == 1
    # the blocking entry point takes the same keys
    assert verifier.verify_sync(mint_rs256(keys[0], "carol")).subject == "carol"
    assert jwks.requests == 1


@pytest.mark.parametrize("entry", ["verify", "verify_sync"])
async def test_a_withdrawn_key_is_refused_once_the_set_is_fetched_again(
    jwks: JwksServer, keys: tuple[SigningKey, SigningKey], monkeypatch: pytest.MonkeyPatch,
    entry: str,
) -> None:
    monkeypatch.setattr(jwt_auth, "JWKS_LIFESPAN_SECONDS", 0.3)
    verifier = verifier_for(jwks)
    old, new = keys

    async def check(token: str) -> Any:
        if entry == "verify":
            return await verifier.verify(token)
        return verifier.verify_sync(token)

    assert (await check(mint_rs256(old, "alice"))).subject == "alice"
    jwks.keys = [new]  # the identity provider withdraws the old key
    await asyncio.sleep(0.4)  # the fetched set expires
    with pytest.raises(InvalidToken) as refused:
        await check(mint_rs256(old, "alice"))
    assert refused.value.check == "kid"
    assert (await check(mint_rs256(new, "bob"))).subject == "bob"
    assert jwks.requests == 2
