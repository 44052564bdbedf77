"""The MCP SDK's `TokenVerifier`, backed by the same `JwtVerifier` as the LangGraph edge.

So a token the LangGraph server accepts is accepted here, and refused here
for the same reasons (signature, algorithm, exp/nbf/iat, iss, aud, sub).
"""

from __future__ import annotations

import hashlib

from mcp.server.auth.provider import AccessToken, TokenVerifier
from pydantic import Field

from onbehalf.jwt_auth import InvalidToken, JwtVerifier, parse_bearer
from onbehalf.settings import AuthSettings


class UserAccessToken(AccessToken):
    """The SDK's AccessToken whose `repr` (and so any stray log line) omits the raw token."""

    token: str = Field(repr=False)


class JwtTokenVerifier(TokenVerifier):
    """Turns a bearer JWT into the SDK's `AccessToken` (client_id and subject = `sub`).

    `verify_token` follows the SDK protocol (None when refused);
    `authenticate` keeps the reason, which our 401 responses need.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self._jwt = JwtVerifier(settings)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.verify_or_raise(token)
        except InvalidToken:
            return None

    async def verify_or_raise(self, token: str) -> AccessToken:
        """Verify a raw JWT; raises InvalidToken naming the failed check."""
        verified = await self._jwt.verify(token)
        return UserAccessToken(
            token=token,
            client_id=verified.subject,
            subject=verified.subject,
            scopes=verified.permissions,
            expires_at=verified.expires_at,
            # `iss` lets the SDK tell apart equal subjects of different issuers
            # when it binds a session to the credential that opened it.
            claims={"iss": verified.claims["iss"]} if "iss" in verified.claims else None,
        )

    async def authenticate(self, authorization: str | None) -> AccessToken:
        """Verify an `Authorization` header value; raises InvalidToken naming the failed check."""
        return await self.verify_or_raise(parse_bearer(authorization))


def token_sha256(token: str) -> str:
    """Full hex sha256 of a token: proves which token arrived without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()
