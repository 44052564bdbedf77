"""Bearer JWT verification shared by the LangGraph auth edge and the reference MCP server.

One verifier, one error type. Every rejection names the check that failed
(`InvalidToken.check`) and never echoes the token, so the message can go
straight into a 401 `detail` and a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
from jwt import PyJWKClient

from onbehalf.settings import AuthSettings, auth_settings

JWKS_LIFESPAN_SECONDS = 300
"""How long a fetched JWKS is trusted: a withdrawn key is refused at most this long after."""
MAX_TOKEN_BYTES = 8192
"""Real access tokens are well under 4 KB; anything far larger is an attack or a mistake."""

TOKEN_KEY_NAMES = frozenset({"_user_token", "user_token", "access_token", "token", "authorization"})
"""Keys under which a token would be persisted if sent in config, context or metadata."""

_BEARER = re.compile(r"^\s*bearer\s+(?P<token>\S.*?)\s*$", re.IGNORECASE | re.DOTALL)
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_HMAC = frozenset({"HS256", "HS384", "HS512"})


class InvalidToken(Exception):
    """The credential was refused; `check` names the rule, the message says what to do."""

    def __init__(self, check: str, message: str, *, status_code: int = 401) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.status_code = status_code

    @property
    def detail(self) -> str:
        return f"{self.message} [check: {self.check}]"


def token_fingerprint(token: str) -> str:
    """A non-reversible name for a token, for cache keys and logs (never a substring)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def parse_bearer(authorization: str | None) -> str:
    """Extract the JWT from an `Authorization` header value, or say why not."""
    if authorization is None or not authorization.strip():
        raise InvalidToken(
            "authorization_header",
            "missing Authorization header: send 'Authorization: Bearer <your JWT>'",
        )
    if len(authorization) > MAX_TOKEN_BYTES + 64:
        raise InvalidToken(
            "token_size", f"token too large (over {MAX_TOKEN_BYTES} bytes): send a normal JWT"
        )
    match = _BEARER.match(authorization)
    if match is None:
        if authorization.strip().lower() == "bearer":
            raise InvalidToken("bearer_empty", "empty bearer token: send 'Bearer <your JWT>'")
        raise InvalidToken(
            "authorization_scheme",
            "unsupported Authorization scheme: use 'Bearer <your JWT>'",
        )
    return match.group("token")


def bearer_header(token: str) -> str:
    """The `Authorization` value that presents `token` (the one place it is spelled)."""
    return f"Bearer {token}"


def without_bearer_scheme(value: str) -> str:
    """`value` with a leading `Bearer` scheme (any case) and surrounding whitespace removed."""
    match = _BEARER.match(value)
    return match.group("token") if match is not None else value.strip()


def looks_like_jwt(value: str) -> bool:
    """A JWT in compact form (an `eyJ` header), bare or behind a `Bearer` scheme."""
    token = without_bearer_scheme(value)
    return token.startswith("eyJ") and bool(_JWT_SHAPE.match(token))


@lru_cache(maxsize=1)
def process_verifier() -> JwtVerifier:
    """The process's verifier (one JWKS cache) for the server edge and in-process runs."""
    return JwtVerifier(auth_settings())


@dataclass(frozen=True)
class VerifiedClaims:
    """The claims of a token whose signature and time window were checked."""

    subject: str
    expires_at: int
    claims: dict[str, Any] = field(repr=False)

    @property
    def permissions(self) -> list[str]:
        """Scopes from the usual claims: OAuth `scope` (space separated), `scp`, `permissions`."""
        found: list[str] = []
        for key in ("scope", "scp", "permissions"):
            value = self.claims.get(key)
            if isinstance(value, str):
                found.extend(value.split())
            elif isinstance(value, list):
                found.extend(str(v) for v in value if isinstance(v, str | int))
        return list(dict.fromkeys(found))

    @property
    def display_name(self) -> str:
        for key in ("name", "preferred_username", "email"):
            value = self.claims.get(key)
            if isinstance(value, str) and value.strip():
                return value
        return self.subject


class JwtVerifier:
    """Verifies signature, algorithm, time window, issuer, audience and subject.

    The JWKS is cached by PyJWT's `PyJWKClient` for `JWKS_LIFESPAN_SECONDS`. A token whose
    `kid` is in that unexpired set is checked on the event loop: the lookup does no I/O,
    and handing it to a thread cost ~200 µs a verify, more than the RS256 check itself
    (measured: 345 µs against 146 µs). Only a fetch (first use, the set expired, an
    unknown `kid`) runs in a thread, so the loop never blocks on the identity provider.
    PyJWT's per-`kid` key cache is left off: it never expires, so a key the provider
    withdrew would be honoured for the life of the process; here it stops being accepted
    when the set is next fetched.
    """

    def __init__(self, settings: AuthSettings, *, jwks_timeout: float = 5.0) -> None:
        self._settings = settings
        self._algorithms = list(settings.auth_jwt_algorithms)
        self._secret = (
            settings.auth_jwt_secret.get_secret_value() if settings.auth_jwt_secret else None
        )
        self._jwks = (
            PyJWKClient(settings.auth_jwks_url, cache_keys=False, lifespan=JWKS_LIFESPAN_SECONDS,
                        timeout=math.ceil(jwks_timeout))
            if settings.auth_jwks_url
            else None
        )

    @property
    def settings(self) -> AuthSettings:
        return self._settings

    async def verify(self, token: str) -> VerifiedClaims:
        """Verify a raw JWT; raises InvalidToken naming the failed check."""
        alg, kid = self._check_shape_and_algorithm(token)
        key: Any = self._secret
        if alg not in _HMAC and (key := self._known_key(kid)) is None:
            key = await asyncio.to_thread(self._signing_key, kid)
        return self._decode(token, key, alg)

    def verify_sync(self, token: str) -> VerifiedClaims:
        """Blocking variant for code that has no event loop (the CLI)."""
        alg, kid = self._check_shape_and_algorithm(token)
        key: Any = self._secret
        if alg not in _HMAC and (key := self._known_key(kid)) is None:
            key = self._signing_key(kid)
        return self._decode(token, key, alg)

    def _check_shape_and_algorithm(self, token: str) -> tuple[str, Any]:
        """The header's `alg`, checked, and its `kid` (read once: the key is looked up by
        it alone, the payload is `_decode`'s)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(
                "token_size", f"token too large (over {MAX_TOKEN_BYTES} bytes): send a normal JWT"
            )
        if not _JWT_SHAPE.match(token):
            raise InvalidToken(
                "malformed", "malformed token: expected a JWT (three base64url segments)"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken(
                "malformed", "malformed token: the JWT header is not valid"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidToken("algorithm", "unsigned tokens (alg 'none') are never accepted")
        if alg not in self._algorithms:
            raise InvalidToken(
                "algorithm",
                f"token algorithm {alg[:32]!r} is not accepted here "
                f"(allowed: {', '.join(self._algorithms)})",
            )
        return alg, header.get("kid")

    def _known_key(self, kid: Any) -> Any | None:
        """The key named `kid` in the JWKS in memory, or None when only a fetch can tell."""
        assert self._jwks is not None
        cache = self._jwks.jwk_set_cache
        jwk_set = cache.get() if cache is not None else None  # None once expired
        if jwk_set is None:
            return None
        for jwk in jwk_set.keys:  # PyJWKClient's own rule for a signing key
            if jwk.key_id == kid and kid and jwk.public_key_use in ("sig", None):
                return jwk.key
        return None

    def _signing_key(self, kid: Any) -> Any:
        assert self._jwks is not None
        try:
            return self._jwks.get_signing_key(kid).key
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, ValueError):
            # unreachable, or an answer that is not a JWKS (PyJWT lets JSON errors through)
            raise InvalidToken(
                "jwks_unavailable",
                "could not fetch the identity provider's signing keys (AUTH_JWKS_URL); "
                "retry shortly",
            ) from None
        except jwt.PyJWKClientError:
            raise InvalidToken(
                "kid", "token signed with a key the identity provider does not publish (kid)"
            ) from None
        except jwt.PyJWTError:
            raise InvalidToken("malformed", "malformed token header") from None

    def _decode(self, token: str, key: Any, alg: str) -> VerifiedClaims:
        s = self._settings
        audience = s.auth_jwt_audience or None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=s.auth_jwt_issuer,
                leeway=s.auth_leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": audience is not None,
                    "verify_iss": s.auth_jwt_issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("exp", "token expired: sign in again to get a fresh token") from None
        except jwt.ImmatureSignatureError as exc:
            which = "iat" if "iat" in str(exc) else "nbf"
            raise InvalidToken(
                which, f"token not valid yet ({which} is in the future): check the clock"
            ) from None
        except jwt.InvalidIssuedAtError:
            raise InvalidToken("iat", "token 'iat' claim must be a number") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(
                "aud", "token was issued for another audience (aud): request a token for this API"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(
                "iss", "token was issued by an untrusted issuer (iss)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(
                exc.claim, f"token lacks the required {exc.claim!r} claim"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature", "token signature is not valid") from None
        except jwt.exceptions.InvalidSubjectError:
            raise InvalidToken("sub", "token 'sub' claim must be a non-empty string") from None
        except jwt.DecodeError as exc:
            text = str(exc)
            for claim in ("exp", "iat", "nbf"):
                if f"({claim})" in text:
                    raise InvalidToken(claim, f"token {claim!r} claim must be a number") from None
            raise InvalidToken("malformed", "malformed token: it could not be decoded") from None
        except jwt.PyJWTError:
            raise InvalidToken("malformed", "token could not be verified") from None
        except (ValueError, TypeError):
            raise InvalidToken("malformed", "token could not be verified") from None

        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidToken("sub", "token 'sub' claim must be a non-empty string")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidToken("exp", "token 'exp' claim must be a number")
        iat = claims.get("iat")
        if iat is not None:
            if isinstance(iat, bool) or not isinstance(iat, int | float):
                raise InvalidToken("iat", "token 'iat' claim must be a number")
            if iat > time.time() + s.auth_leeway_seconds:
                raise InvalidToken(
                    "iat", "token not valid yet (iat is in the future): check the clock"
                )
        return VerifiedClaims(subject=subject, expires_at=int(exp), claims=claims)


def unverified_expiry(token: str) -> int | None:
    """Read `exp` without checking the signature: only for deciding *not* to use a token.

    The worker uses this (DESIGN.md §7) to refuse a token that has already
    expired before sending it anywhere; the server still verifies it.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return int(exp)
