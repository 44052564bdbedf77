"""Property-based fuzzing of the edge's decoder: `parse_bearer` and `JwtVerifier`.

Whatever arrives — arbitrary text, mutated real tokens, hand-made tokens with
random headers and claims of every JSON type, correctly signed or not — the
only exception is `InvalidToken`, its message never contains the token, and a
token is accepted only when it satisfies every rule of DESIGN.md §7.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onbehalf.jwt_auth import InvalidToken, JwtVerifier, VerifiedClaims, parse_bearer
from onbehalf.settings import AuthSettings
from tests.security.forge import forge
from tests.security.probes import FIGURES
from tests.support.jwks import JwksServer, SigningKey, mint_rs256
from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET, mint

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
LEEWAY = 5.0
WRONG_SECRET = "wrong-" + TEST_SECRET


def hs256_verifier() -> JwtVerifier:
    return JwtVerifier(AuthSettings(
        auth_jwt_secret=TEST_SECRET, auth_jwt_issuer=TEST_ISSUER,
        auth_jwt_audience=[TEST_AUDIENCE], auth_jwt_algorithms=["HS256"],
        auth_leeway_seconds=LEEWAY,
    ))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[JwksServer, SigningKey]]:
    key = SigningKey.generate("fuzz-key")
    with JwksServer([key]) as server:
        yield server, key


def jwks_verifier(server: JwksServer) -> JwtVerifier:
    return JwtVerifier(AuthSettings(
        auth_jwt_secret="", auth_jwks_url=server.url, auth_jwt_algorithms=["RS256"],
        auth_jwt_issuer=TEST_ISSUER, auth_jwt_audience=[TEST_AUDIENCE],
        auth_leeway_seconds=LEEWAY,
    ), jwks_timeout=2.0)


def outcome(verifier: JwtVerifier, loop: asyncio.AbstractEventLoop, token: str) -> Any:
    """Verify with both entry points; they must agree. Returns claims or the InvalidToken."""
    FIGURES["fuzz_examples"] += 1
    results = []
    for call in (lambda: loop.run_until_complete(verifier.verify(token)),
                 lambda: verifier.verify_sync(token)):
        try:
            results.append(call())
        except InvalidToken as exc:
            assert_clean_refusal(exc, token)
            results.append(exc)
    accepted, sync_accepted = (isinstance(r, VerifiedClaims) for r in results)
    assert accepted == sync_accepted, "verify and verify_sync disagree"
    if not accepted:
        assert results[0].check == results[1].check
    return results[0]


def assert_clean_refusal(exc: InvalidToken, token: str) -> None:
    detail = exc.detail
    assert exc.status_code == 401
    assert detail.endswith(f"[check: {exc.check}]")
    assert exc.check and exc.check.replace("_", "").isalpha(), exc.check
    if len(token) >= 16:
        assert token not in detail
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 16:
        assert signature not in detail
    assert not any(ord(ch) < 32 for ch in detail), "control characters in a 401 detail"


def segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]


# --- 1. arbitrary Authorization header values ---------------------------------------------

header_values = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.builds(lambda scheme, rest: f"{scheme} {rest}",
              st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer\t", ""]),
              st.text(max_size=200)),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}",
              st.text(max_size=60), st.text(max_size=60), st.text(max_size=60)),
)


@FUZZ
@given(value=st.one_of(st.none(), header_values))
def test_any_header_value_is_parsed_or_refused_with_invalid_token(
    value: str | None, loop: asyncio.AbstractEventLoop
) -> None:
    verifier = hs256_verifier()
    try:
        token = parse_bearer(value)
    except InvalidToken as exc:
        FIGURES["fuzz_examples"] += 1
        assert_clean_refusal(exc, value or "")
        return
    assert token and token == token.strip()
    result = outcome(verifier, loop, token)
    assert isinstance(result, InvalidToken), "a random header value was accepted as a token"


# --- 2. structured mutations of a valid token ----------------------------------------------

B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def mutated_tokens(draw: st.DrawFn) -> tuple[str, str]:
    token = mint(draw(st.sampled_from(["alice", "bob", "zoë"])))
    parts = token.split(".")
    kind = draw(st.sampled_from([
        "flip", "flip", "flip", "swap", "drop", "duplicate", "truncate", "insert",
        "case", "pad", "reencode_header",
    ]))
    if kind == "flip":
        i = draw(st.integers(0, len(token) - 1))
        ch = draw(st.sampled_from(B64_ALPHABET + "=.+/ "))
        mutated = token[:i] + ch + token[i + 1:]
    elif kind == "swap":
        order = draw(st.permutations([0, 1, 2]))
        mutated = ".".join(parts[i] for i in order)
    elif kind == "drop":
        i = draw(st.integers(0, 2))
        mutated = ".".join(p for j, p in enumerate(parts) if j != i)
    elif kind == "duplicate":
        i = draw(st.integers(0, 2))
        mutated = ".".join([*parts[: i + 1], parts[i], *parts[i + 1:]])
    elif kind == "truncate":
        mutated = token[: draw(st.integers(0, len(token) - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, len(token)))
        mutated = token[:i] + draw(st.text(min_size=1, max_size=5)) + token[i:]
    elif kind == "case":
        i = draw(st.integers(0, 2))
        parts[i] = parts[i].swapcase()
        mutated = ".".join(parts)
    elif kind == "pad":
        i = draw(st.integers(0, 2))
        parts[i] += draw(st.sampled_from(["=", "==", "A", "AA"]))
        mutated = ".".join(parts)
    else:
        header = json.loads(segments(token)[0])
        header[draw(st.sampled_from(["alg", "typ", "kid", "crit", "b64"]))] = draw(json_values)
        raw = json.dumps(header).encode()
        mutated = ".".join([base64.urlsafe_b64encode(raw).decode().rstrip("="), *parts[1:]])
    return token, mutated


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


@FUZZ
@given(case=mutated_tokens())
def test_a_mutated_token_is_refused_unless_it_decodes_to_the_same_bytes(
    case: tuple[str, str], loop: asyncio.AbstractEventLoop
) -> None:
    original, mutated = case
    result = outcome(hs256_verifier(), loop, mutated)
    if isinstance(result, VerifiedClaims):
        # Only a non-canonical spelling of the same token may pass (e.g. base64 padding
        # bits): the same header, payload and signature bytes.
        assert segments(mutated) == segments(original), "a changed token was accepted"


# --- 3. random headers and claims, signed with the right key or not --------------------------

now_offsets = st.one_of(st.integers(-10**6, 10**6), st.sampled_from([-31, -6, -4, 0, 4, 6, 31]))
claim_values = {
    "sub": st.one_of(st.sampled_from(["alice", "", "  ", "bob\n"]), json_values),
    "exp": st.one_of(now_offsets.map(lambda d: int(time.time()) + d), json_values),
    "nbf": st.one_of(now_offsets.map(lambda d: int(time.time()) + d), json_values),
    "iat": st.one_of(now_offsets.map(lambda d: int(time.time()) + d), json_values),
    "iss": st.one_of(st.just(TEST_ISSUER), json_values),
    "aud": st.one_of(st.just(TEST_AUDIENCE), st.just([TEST_AUDIENCE, "x"]), json_values),
}


@st.composite
def forged_tokens(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any], bool]:
    """A valid token with zero to three things changed: claims, header fields, the key."""
    now = int(time.time())
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    payload: dict[str, Any] = {"sub": "alice", "exp": now + 600, "iat": now,
                               "iss": TEST_ISSUER, "aud": TEST_AUDIENCE}
    key: str | None = TEST_SECRET
    for change in draw(st.lists(st.sampled_from(
        ["claim", "claim", "claim", "drop", "alg", "header", "key", "extra"]
    ), max_size=3)):
        if change == "claim":
            name = draw(st.sampled_from(sorted(claim_values)))
            payload[name] = draw(claim_values[name])
        elif change == "drop":
            payload.pop(draw(st.sampled_from(sorted(payload) or ["sub"])), None)
        elif change == "alg":
            header["alg"] = draw(st.one_of(
                st.sampled_from(["HS384", "HS512", "none", "None", "RS256", "ES256", "",
                                 "hs256"]),
                json_values))
        elif change == "header":
            header[draw(st.sampled_from(["typ", "kid", "crit", "jku", "x5u"]))] = \
                draw(json_values)
        elif change == "key":
            key = draw(st.sampled_from([WRONG_SECRET, "", None]))
        else:
            payload.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
    try:
        payload_text = json.dumps(payload)  # NaN and Infinity are written as JSON allows
    except (TypeError, ValueError):
        payload_text = "{}"
    token = forge(payload_text, header, key=key)
    return token, header, json.loads(payload_text), key == TEST_SECRET


def judge(header: dict[str, Any], payload: dict[str, Any], signed: bool) -> bool | None:
    """What DESIGN.md §7 says of a token, computed independently of the verifier.

    True: it must be accepted. False: it must be refused. None: the rules leave it
    open (e.g. `nbf: "0"`, which PyJWT reads as a number), or the example sits within
    two seconds of a time boundary, which may move while it runs.
    """
    now = time.time()

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value)

    def near(value: Any, boundary: float) -> bool:
        return number(value) and abs(value - boundary) < 2

    sub, exp, aud = payload.get("sub"), payload.get("exp"), payload.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if (
        header.get("alg") != "HS256" or not signed
        or not isinstance(sub, str) or not sub.strip()
        or not number(exp) or exp <= now - LEEWAY - 2
        or payload.get("iss") != TEST_ISSUER
        or TEST_AUDIENCE not in audiences
        or any(number(payload.get(c)) and payload[c] > now + LEEWAY + 2 for c in ("nbf", "iat"))
    ):
        return False
    if near(exp, now - LEEWAY) or any(near(payload.get(c), now + LEEWAY) for c in ("nbf", "iat")):
        return None
    clean_header = set(header) <= {"alg", "typ", "jku", "x5u", "kid"} and \
        isinstance(header.get("kid", ""), str)
    clean_times = all(c not in payload or number(payload[c]) for c in ("nbf", "iat"))
    clean_aud = all(isinstance(a, str) for a in audiences)
    return True if clean_header and clean_times and clean_aud else None


@FUZZ
@given(case=forged_tokens())
def test_a_forged_token_is_accepted_only_when_every_rule_holds(
    case: tuple[str, dict[str, Any], dict[str, Any], bool], loop: asyncio.AbstractEventLoop
) -> None:
    token, header, payload, signed = case
    result = outcome(hs256_verifier(), loop, token)
    verdict = judge(header, payload, signed)
    if isinstance(result, VerifiedClaims):
        FIGURES["fuzz_accepted"] += 1
        assert verdict is not False, ("accepted against the rules", header, sorted(payload))
        assert result.subject == payload["sub"]
    else:
        assert verdict is not True, ("refused a valid token", result.detail)


# --- 4. the JWKS path: random kids and headers against a live key set -------------------------


@st.composite
def jwks_tokens(draw: st.DrawFn, key: SigningKey) -> str:
    kind = draw(st.sampled_from(["kid", "header", "mutate"]))
    if kind == "kid":
        return mint_rs256(key, kid=draw(st.one_of(st.text(max_size=30), st.just(key.kid))))
    if kind == "header":
        header = {"alg": draw(st.sampled_from(["RS256", "HS256", "none", "ES256"])),
                  "kid": draw(json_values)}
        return forge(json.dumps({"sub": "alice", "exp": int(time.time()) + 60}), header,
                     key=draw(st.sampled_from([TEST_SECRET, key.public_pem(), None])))
    token = mint_rs256(key)
    i = draw(st.integers(0, len(token) - 1))
    return token[:i] + draw(st.sampled_from(B64_ALPHABET + ".")) + token[i + 1:]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_jwks_verification_only_ever_raises_invalid_token(
    data: st.DataObject, jwks: tuple[JwksServer, SigningKey], loop: asyncio.AbstractEventLoop
) -> None:
    server, key = jwks
    verifier = _shared_jwks_verifier(server)
    token = data.draw(jwks_tokens(key))
    result = outcome(verifier, loop, token)
    if isinstance(result, VerifiedClaims):
        assert result.subject == "alice"


_JWKS_VERIFIERS: dict[str, JwtVerifier] = {}


def _shared_jwks_verifier(server: JwksServer) -> JwtVerifier:
    """One verifier per JWKS URL, so the key cache behaves as in a long-running server."""
    if server.url not in _JWKS_VERIFIERS:
        _JWKS_VERIFIERS[server.url] = jwks_verifier(server)
    return _JWKS_VERIFIERS[server.url]


def test_the_oracle_accepts_a_valid_token_and_refuses_its_variants(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Positive control for the properties above: they can tell good from bad."""
    now = int(time.time())
    good = {"sub": "alice", "exp": now + 600, "iss": TEST_ISSUER, "aud": TEST_AUDIENCE}
    token = forge(good)
    assert judge({"alg": "HS256"}, good, True) is True
    assert isinstance(outcome(hs256_verifier(), loop, token), VerifiedClaims)
    for bad in ({**good, "sub": ""}, {**good, "exp": now - 60}, {**good, "aud": "x"}):
        assert judge({"alg": "HS256"}, bad, True) is False
        assert isinstance(outcome(hs256_verifier(), loop, forge(bad)), InvalidToken)
    assert isinstance(outcome(hs256_verifier(), loop, forge(good, key=WRONG_SECRET)),
                      InvalidToken)
