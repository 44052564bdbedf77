"""Hand-made JWTs: any header, any payload (even invalid JSON types), any signing key.

PyJWT refuses to produce most hostile tokens (HS256 signed with a PEM public
key, `exp: NaN`, a header that is a JSON list), so these are assembled from
their three segments here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET

_DROP = object()
DROP: Any = _DROP
"""Pass as a claim value to leave the claim out."""


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: dict[str, Any] | list[Any] | str) -> str:
    """A JSON value (or raw JSON text, e.g. with NaN) as a base64url segment."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64url(text)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the test identity provider, changed by `overrides` (DROP removes)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice", "iat": now, "exp": now + 600, "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE, "jti": uuid.uuid4().hex, "scope": "tickets:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def forge(
    payload: dict[str, Any] | list[Any] | str,
    header: dict[str, Any] | list[Any] | str | None = None,
    *,
    key: bytes | str | None = TEST_SECRET,
    digest: Callable[..., Any] = hashlib.sha256,
) -> str:
    """`header.payload.signature` with an HMAC signature under `key` (None: empty signature)."""
    header = {"alg": "HS256", "typ": "JWT"} if header is None else header
    signing_input = f"{segment(header)}.{segment(payload)}"
    if key is None:
        return signing_input + "."
    raw_key = key.encode() if isinstance(key, str) else key
    signature = hmac.new(raw_key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"
