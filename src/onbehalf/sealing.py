"""Sealing: the user's JWT as AES-GCM ciphertext bound to who it belongs to.

The LangGraph server stores whatever the auth handler returns with the run
record (`runs.get` returns it; `langgraph dev` writes it to disk), so the
user object carries only this ciphertext. The associated data binds it to
the identity and the token's expiry: a sealed token copied into another
user's request, or replayed after expiry, does not open.

Format: ``v1.<key id>.<base64url(nonce || ciphertext)>``; the key id is a
hash prefix of the key, so rotation (several keys, the first seals) needs no
trial decryption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from onbehalf.settings import SealingSettings

log = logging.getLogger("onbehalf.sealing")

_VERSION = "v1"
_NONCE_BYTES = 12


class SealingError(Exception):
    """A sealed token could not be opened; the message says what the user should do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SealingKeyError(ValueError):
    """TOKEN_SEALING_KEY is malformed."""


def _decode_key(text: str, position: int) -> bytes:
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode())
    except (binascii.Error, ValueError):
        raise SealingKeyError(
            f"TOKEN_SEALING_KEY: key #{position} is not urlsafe base64"
        ) from None
    if len(raw) != 32:
        raise SealingKeyError(
            f"TOKEN_SEALING_KEY: key #{position} decodes to {len(raw)} bytes, need 32 "
            "(generate one with: python -c \"import os,base64;"
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())\")"
        )
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"onbehalf-seal-key" + key).hexdigest()[:8]


def _aad(identity: str, expires_at: int) -> bytes:
    return f"onbehalf-seal-{_VERSION}|{identity}|{expires_at}".encode()


@dataclass(frozen=True)
class SealingKeys:
    """The key ring: the first key seals, every key opens."""

    keys: tuple[bytes, ...]
    ephemeral: bool = False

    def __repr__(self) -> str:
        return f"SealingKeys(count={len(self.keys)}, ephemeral={self.ephemeral})"

    @classmethod
    def parse(cls, value: str | None) -> SealingKeys:
        """Parse TOKEN_SEALING_KEY (comma separated, padding optional); none means ephemeral."""
        if value is None or not value.strip():
            log.warning(
                "TOKEN_SEALING_KEY is not set: using an ephemeral key for this process "
                "(dev only; sealed tokens will not open in another process or after a restart)"
            )
            return cls(keys=(os.urandom(32),), ephemeral=True)
        parts = [p for p in value.split(",") if p.strip()]
        return cls(keys=tuple(_decode_key(p, i + 1) for i, p in enumerate(parts)))

    def _by_id(self) -> dict[str, bytes]:
        return {_key_id(k): k for k in self.keys}


def seal_value(keys: SealingKeys, value: str, aad: bytes) -> str:
    """Encrypt any secret under the first key, bound to `aad` (who and what it is for)."""
    key = keys.keys[0]
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, value.encode(), aad)
    body = base64.urlsafe_b64encode(nonce + ciphertext).decode().rstrip("=")
    return f"{_VERSION}.{_key_id(key)}.{body}"


def unseal_value(keys: SealingKeys, sealed: str, aad: bytes) -> SecretStr:
    """Open a sealed value with whichever key sealed it; the same `aad` must be given."""
    try:
        version, key_id, body = sealed.split(".", 2)
    except (AttributeError, ValueError):
        raise SealingError("malformed", "the sealed value is malformed") from None
    if version != _VERSION:
        raise SealingError("malformed", f"unknown sealed value version {version!r}")
    key = keys._by_id().get(key_id)
    if key is None:
        raise SealingError(
            "unknown_key",
            "you signed in before a key rotation (TOKEN_SEALING_KEY changed): please retry "
            "the request so that your token is sealed with the current key",
        )
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        plaintext = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError, binascii.Error):
        raise SealingError(
            "tampered",
            "the sealed token does not belong to this user or was altered; sign in again",
        ) from None
    return SecretStr(plaintext.decode())


def seal_token(keys: SealingKeys, token: str, *, identity: str, expires_at: int) -> str:
    """Encrypt a verified token for one identity until its own expiry."""
    return seal_value(keys, token, _aad(identity, expires_at))


def unseal_token(
    keys: SealingKeys,
    sealed: str,
    *,
    identity: str,
    expires_at: int,
    now: float | None = None,
) -> SecretStr:
    """Open a sealed token for the identity it was sealed for, or say why not."""
    if (now if now is not None else time.time()) >= expires_at:
        raise SealingError(
            "expired", "your sign-in expired before this run could use it: sign in again"
        )
    return unseal_value(keys, sealed, _aad(identity, expires_at))


@lru_cache(maxsize=1)
def process_sealing_keys() -> SealingKeys:
    """The key ring of this process, read once from TOKEN_SEALING_KEY."""
    setting = SealingSettings().token_sealing_key
    return SealingKeys.parse(setting.get_secret_value() if setting else None)
