"""Every way a bearer credential is refused at the edge, and the one way it is accepted."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from onbehalf.jwt_auth import (
    MAX_TOKEN_BYTES,
    InvalidToken,
    JwtVerifier,
    parse_bearer,
    token_fingerprint,
    unverified_expiry,
)
from onbehalf.settings import AuthSettings
from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET, mint

pytestmark = pytest.mark.anyio


def verifier(**overrides: object) -> JwtVerifier:
    return JwtVerifier(AuthSettings(**overrides))


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def refused(token: str, check: str, v: JwtVerifier | None = None) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        await (v or verifier()).verify(token)
    assert info.value.check == check, info.value.detail
    assert token not in info.value.detail
    return info.value


async def test_valid_token_is_accepted_with_subject_scopes_and_expiry() -> None:
    token = mint("alice", scopes=["tickets:read"], name="Alice A.")
    claims = await verifier().verify(token)
    assert claims.subject == "alice"
    assert claims.permissions == ["tickets:read"]
    assert claims.display_name == "Alice A."
    assert claims.expires_at > time.time()


@pytest.mark.parametrize(
    ("header", "check"),
    [
        (None, "authorization_header"),
        ("", "authorization_header"),
        ("   ", "authorization_header"),
        ("Basic YWxpY2U6cHc=", "authorization_scheme"),
        ("Token abc", "authorization_scheme"),
        ("Bearer", "bearer_empty"),
        ("Bearer    ", "bearer_empty"),
        ("Bearer " + "a" * (MAX_TOKEN_BYTES + 100), "token_size"),
    ],
)
def test_bad_authorization_headers_are_refused(header: str | None, check: str) -> None:
    with pytest.raises(InvalidToken) as info:
        parse_bearer(header)
    assert info.value.check == check


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "  BeArEr"])
def test_bearer_scheme_is_case_insensitive_and_whitespace_tolerant(scheme: str) -> None:
    assert parse_bearer(f"{scheme}   abc.def.ghi  ") == "abc.def.ghi"


async def test_garbage_is_malformed() -> None:
    await refused("garbage", "malformed")
    await refused("a.b", "malformed")
    await refused("!!!.@@@.###", "malformed")
    await refused("abc.def.ghi", "malformed")  # two dots, not base64 JSON


async def test_alg_none_is_refused() -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'alice', 'exp': 9999999999})}."
    await refused(token, "algorithm")


async def test_algorithm_not_allowed_is_refused() -> None:
    token = mint("alice", algorithm="HS512", secret=TEST_SECRET * 2)
    await refused(token, "algorithm")


async def test_bad_signature_is_refused() -> None:
    await refused(mint("alice", secret="another-secret-" + "y" * 32), "signature")


async def test_expired_token_is_refused() -> None:
    await refused(mint("alice", ttl=-60), "exp")


async def test_expired_within_leeway_is_accepted() -> None:
    claims = await verifier(auth_leeway_seconds=120).verify(mint("alice", ttl=-60))
    assert claims.subject == "alice"


async def test_nbf_in_future_is_refused() -> None:
    await refused(mint("alice", nbf=int(time.time()) + 300), "nbf")


async def test_iat_in_future_beyond_leeway_is_refused() -> None:
    await refused(mint("alice", iat=int(time.time()) + 300), "iat")


async def test_wrong_issuer_is_refused() -> None:
    await refused(mint("alice", issuer="https://evil.example"), "iss")


async def test_wrong_audience_is_refused() -> None:
    await refused(mint("alice", audience="another-api"), "aud")


async def test_audience_list_containing_ours_is_accepted() -> None:
    claims = await verifier().verify(mint("alice", audience=["x", TEST_AUDIENCE]))
    assert claims.subject == "alice"


async def test_missing_sub_is_refused() -> None:
    token = jwt.encode(
        {"exp": int(time.time()) + 60, "iss": TEST_ISSUER, "aud": TEST_AUDIENCE},
        TEST_SECRET,
    )
    await refused(token, "sub")


@pytest.mark.parametrize("sub", ["", "   ", 42, ["alice"], None])
async def test_sub_empty_or_not_a_string_is_refused(sub: object) -> None:
    await refused(mint(sub), "sub")


async def test_missing_exp_is_refused() -> None:
    token = jwt.encode({"sub": "alice", "iss": TEST_ISSUER, "aud": TEST_AUDIENCE}, TEST_SECRET)
    await refused(token, "exp")


async def test_exp_not_a_number_is_refused() -> None:
    token = jwt.encode(
        {"sub": "alice", "exp": "tomorrow", "iss": TEST_ISSUER, "aud": TEST_AUDIENCE},
        TEST_SECRET,
    )
    await refused(token, "exp")


async def test_oversized_token_is_refused() -> None:
    await refused(mint("alice", padding="x" * 65536), "token_size")


async def test_unicode_claims_are_accepted() -> None:
    claims = await verifier().verify(mint("zoë-🚀", name="Zoë Ünïcode"))
    assert claims.subject == "zoë-🚀"
    assert claims.display_name == "Zoë Ünïcode"


async def test_algorithm_confusion_hs256_signed_with_public_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"sub": "mallory", "exp": int(time.time()) + 60}
    header = _b64({"alg": "HS256", "typ": "JWT"})
    import hashlib
    import hmac

    payload = _b64(claims)
    sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"
    # an RS256-only deployment never accepts HS256 at all
    rs_only = JwtVerifier(
        AuthSettings(
            auth_jwt_secret=None, auth_jwks_url="http://127.0.0.1:9/jwks",
            auth_jwt_algorithms="RS256", auth_jwt_issuer=None, auth_jwt_audience="",
        )
    )
    await refused(forged, "algorithm", rs_only)


def test_settings_refuse_none_algorithm_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="none"):
        AuthSettings(auth_jwt_algorithms="HS256,none")
    with pytest.raises(ValueError, match="AUTH_JWKS_URL"):
        AuthSettings(auth_jwt_algorithms="RS256")
    with pytest.raises(ValueError, match="AUTH_JWT_SECRET"):
        AuthSettings(auth_jwt_secret=None, auth_jwks_url=None)


def test_fingerprint_is_a_hash_not_a_substring() -> None:
    token = mint("alice")
    fp = token_fingerprint(token)
    assert fp not in token
    assert len(fp) == 16


def test_unverified_expiry_reads_exp_only() -> None:
    token = mint("alice", ttl=100, secret="not-the-server-secret-" + "z" * 20)
    exp = unverified_expiry(token)
    assert exp is not None and abs(exp - (time.time() + 100)) < 5
    assert unverified_expiry("garbage") is None
