"""The sealed token opens only for its own identity, only before expiry, only untampered."""

from __future__ import annotations

import base64
import os
import time

import pytest

from onbehalf.sealing import SealingError, SealingKeyError, SealingKeys, seal_token, unseal_token


def keyring(*raw: bytes) -> SealingKeys:
    return SealingKeys.parse(",".join(base64.urlsafe_b64encode(k).decode() for k in raw))


KEYS = keyring(b"a" * 32)
EXP = int(time.time()) + 86_400  # collected long before it runs: a whole suite later


def test_round_trip() -> None:
    sealed = seal_token(KEYS, "header.payload.signature", identity="alice", expires_at=EXP)
    assert "signature" not in sealed and "payload" not in sealed
    opened = unseal_token(KEYS, sealed, identity="alice", expires_at=EXP)
    assert opened.get_secret_value() == "header.payload.signature"
    assert "signature" not in repr(opened)


def test_each_seal_is_different() -> None:
    a = seal_token(KEYS, "t.o.k", identity="alice", expires_at=EXP)
    b = seal_token(KEYS, "t.o.k", identity="alice", expires_at=EXP)
    assert a != b


def test_another_identity_cannot_open_it() -> None:
    sealed = seal_token(KEYS, "t.o.k", identity="alice", expires_at=EXP)
    with pytest.raises(SealingError) as info:
        unseal_token(KEYS, sealed, identity="bob", expires_at=EXP)
    assert info.value.reason == "tampered"


def test_changed_expiry_cannot_open_it() -> None:
    sealed = seal_token(KEYS, "t.o.k", identity="alice", expires_at=EXP)
    with pytest.raises(SealingError):
        unseal_token(KEYS, sealed, identity="alice", expires_at=EXP + 3600)


def test_tampered_ciphertext_is_refused() -> None:
    sealed = seal_token(KEYS, "t.o.k", identity="alice", expires_at=EXP)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealingError) as info:
        unseal_token(KEYS, flipped, identity="alice", expires_at=EXP)
    assert info.value.reason == "tampered"


def test_expired_seal_does_not_open() -> None:
    past = int(time.time()) - 1
    sealed = seal_token(KEYS, "t.o.k", identity="alice", expires_at=past)
    with pytest.raises(SealingError) as info:
        unseal_token(KEYS, sealed, identity="alice", expires_at=past)
    assert info.value.reason == "expired"


def test_rotation_first_key_seals_every_key_opens() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = seal_token(keyring(old), "t.o.k", identity="alice", expires_at=EXP)
    rotated = keyring(new, old)
    assert unseal_token(rotated, sealed_old, identity="alice", expires_at=EXP).get_secret_value()
    sealed_new = seal_token(rotated, "t.o.k", identity="alice", expires_at=EXP)
    assert unseal_token(keyring(new), sealed_new, identity="alice", expires_at=EXP)


def test_removed_key_says_sign_in_again_after_rotation() -> None:
    sealed = seal_token(keyring(os.urandom(32)), "t.o.k", identity="alice", expires_at=EXP)
    with pytest.raises(SealingError, match="key rotation") as info:
        unseal_token(keyring(os.urandom(32)), sealed, identity="alice", expires_at=EXP)
    assert info.value.reason == "unknown_key"


@pytest.mark.parametrize("bad", ["not base64 !!", base64.urlsafe_b64encode(b"short").decode()])
def test_bad_keys_are_named(bad: str) -> None:
    with pytest.raises(SealingKeyError, match="TOKEN_SEALING_KEY"):
        SealingKeys.parse(bad)


def test_padding_is_optional() -> None:
    raw = base64.urlsafe_b64encode(os.urandom(32)).decode()
    assert SealingKeys.parse(raw.rstrip("=")).keys == SealingKeys.parse(raw).keys


def test_no_key_means_ephemeral_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    keys = SealingKeys.parse(None)
    assert keys.ephemeral
    assert "TOKEN_SEALING_KEY" in caplog.text
    assert "key" not in repr(keys).lower().replace("sealingkeys", "")
