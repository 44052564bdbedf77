"""Where OAuth connections live in `REDIS_URL`, and in what form.

Keys (prefix `OAUTH_KEY_PREFIX`, default `onbehalf-oauth:`):

- `tok:<identity>:<server>`: the user's tokens for one server, sealed with
  `TOKEN_SEALING_KEY` and bound to (identity, server); or the plain marker
  `needs_reconnect` once the server or its authorization server refused them.
- `flow:<sha256(state)>`: a started connection (who, which server, the PKCE
  verifier sealed), single use, expiring after `OAUTH_FLOW_TTL_SECONDS`.
- `held:<flow id>`: the code the callback received (sealed) and the hash of the
  confirm secret, waiting for that same user to confirm.
- `client:<server>:<hash>`: a dynamic client registration (RFC 7591), its
  secret sealed, one per (server, issuer, redirect URI).
- `lock:<identity>:<server>`: held by the one process refreshing those tokens.

`state` and the confirm secret are never stored, only their hashes.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from onbehalf.redis_store import RedisStore, StoreError
from onbehalf.sealing import SealingError, seal_value, unseal_value
from onbehalf.settings import OAuthSettings

NEEDS_RECONNECT = "needs_reconnect"


class OAuthStoreError(StoreError):
    """The OAuth store cannot be used; the message says what to do."""


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\^" else c for c in text)


def digest(value: str) -> str:
    """How a single-use secret (`state`, confirm) is stored: its sha256, never itself."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class StoredTokens:
    """One user's tokens for one server, opened, and the exact stored form (compare-and-*)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    scope: str | None
    client_id: str
    issuer: str
    stored: str = field(repr=False)

    def expires_within(self, seconds: float) -> bool:
        return self.expires_at is not None and self.expires_at - seconds <= time.time()


class OAuthStore(RedisStore):
    """Sealed OAuth state per (identity, server) in Redis."""

    what = "the OAuth connection store"
    error = OAuthStoreError

    def default_prefix(self) -> str:
        return OAuthSettings().oauth_key_prefix

    # --- tokens ---------------------------------------------------------------------------

    def _token_key(self, identity: str, server: str) -> str:
        return f"{self.prefix}tok:{quote(identity, safe='')}:{server}"

    @staticmethod
    def _token_aad(identity: str, server: str) -> bytes:
        return f"onbehalf-oauth-token-v1|{identity}|{server}".encode()

    async def tokens(self, identity: str, server: str) -> StoredTokens | str | None:
        """The stored tokens, `NEEDS_RECONNECT`, or None (never connected / forgotten)."""
        stored = await self._run(self._client.get(self._token_key(identity, server)))
        if stored is None or stored == NEEDS_RECONNECT:
            return stored
        try:
            opened = unseal_value(self.keys, stored, self._token_aad(identity, server))
        except SealingError:
            return NEEDS_RECONNECT  # sealed with a retired key, or not this user's: reconnect
        data = json.loads(opened.get_secret_value())
        return StoredTokens(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token"),
            expires_at=data.get("expires_at"),
            scope=data.get("scope"),
            client_id=data["client_id"],
            issuer=data["issuer"],
            stored=stored,
        )

    def _seal_tokens(self, identity: str, server: str, token: dict[str, Any], *,
                     client_id: str, issuer: str, previous: StoredTokens | None) -> str:
        expires_in = token.get("expires_in")
        expires_at = token.get("expires_at")
        if isinstance(expires_in, int | float) or (
            isinstance(expires_in, str) and expires_in.isdigit()
        ):
            expires_at = time.time() + float(expires_in)
        refresh = token.get("refresh_token") or (previous.refresh_token if previous else None)
        record = {
            "access_token": token["access_token"],
            "refresh_token": refresh,
            "expires_at": float(expires_at) if expires_at is not None else None,
            "scope": token.get("scope") or (previous.scope if previous else None),
            "client_id": client_id,
            "issuer": issuer,
        }
        return seal_value(self.keys, json.dumps(record), self._token_aad(identity, server))

    async def put_tokens(self, identity: str, server: str, token: dict[str, Any], *,
                         client_id: str, issuer: str) -> None:
        """Store a new connection (replacing whatever was there)."""
        self.require_durable_keys()
        sealed = self._seal_tokens(identity, server, token, client_id=client_id,
                                   issuer=issuer, previous=None)
        await self._run(self._client.set(self._token_key(identity, server), sealed))

    async def replace_tokens(self, identity: str, server: str, previous: StoredTokens,
                             token: dict[str, Any]) -> bool:
        """Store refreshed tokens only if `previous` is still what is stored."""
        sealed = self._seal_tokens(identity, server, token, client_id=previous.client_id,
                                   issuer=previous.issuer, previous=previous)
        return await self.compare_and_set(
            self._token_key(identity, server), previous.stored, sealed
        )

    async def mark_needs_reconnect(self, identity: str, server: str,
                                   previous: StoredTokens) -> bool:
        """Drop refused tokens, only if unchanged (a concurrent reconnect wins)."""
        return await self.compare_and_set(
            self._token_key(identity, server), previous.stored, NEEDS_RECONNECT
        )

    async def forget_tokens(self, identity: str, server: str) -> None:
        await self._run(self._client.delete(self._token_key(identity, server)))

    # --- flows ----------------------------------------------------------------------------

    @staticmethod
    def _flow_aad(flow_id: str, what: str) -> bytes:
        return f"onbehalf-oauth-flow-v1|{flow_id}|{what}".encode()

    async def put_flow(self, state: str, record: dict[str, Any], verifier: str,
                       ttl: int) -> None:
        self.require_durable_keys()
        await self._put_sealed(f"flow:{digest(state)}", record, "verifier", verifier, ttl)

    async def take_flow(self, state: str) -> dict[str, Any] | None:
        """The flow `state` started, removed in the same step (a replayed state finds none)."""
        return await self._take(f"flow:{digest(state)}")

    async def hold_code(self, flow: dict[str, Any], code: str, confirm: str) -> None:
        ttl = max(1, int(flow["expires_at"] - time.time()))
        record = {**flow, "confirm": digest(confirm)}
        await self._put_sealed(f"held:{flow['flow_id']}", record, "code", code, ttl)

    async def take_held(self, flow_id: str) -> dict[str, Any] | None:
        """A held code, removed whatever happens next: a confirm is tried once."""
        return await self._take(f"held:{flow_id}")

    async def _put_sealed(self, key: str, record: dict[str, Any], slot: str, secret: str,
                          ttl: int) -> None:
        """`record` with `secret` sealed into `slot` (bound to the flow and the slot)."""
        sealed = seal_value(self.keys, secret, self._flow_aad(record["flow_id"], slot))
        await self._run(self._client.set(
            f"{self.prefix}{key}", json.dumps({**record, slot: sealed}), ex=ttl))

    async def _take(self, key: str) -> dict[str, Any] | None:
        raw = await self._run(self._client.getdel(f"{self.prefix}{key}"))
        return json.loads(raw) if raw else None

    async def peek_held(self, flow_id: str) -> dict[str, Any] | None:
        raw = await self._run(self._client.get(f"{self.prefix}held:{flow_id}"))
        return json.loads(raw) if raw else None

    def open_flow_secret(self, record: dict[str, Any], what: str) -> str:
        """The flow's sealed verifier or code (bound to the flow id)."""
        return unseal_value(
            self.keys, record[what], self._flow_aad(record["flow_id"], what)
        ).get_secret_value()

    # --- client registrations -------------------------------------------------------------

    def _client_key(self, server: str, issuer: str, redirect_uri: str) -> str:
        return f"{self.prefix}client:{server}:{digest(issuer + '|' + redirect_uri)[:32]}"

    @staticmethod
    def _client_aad(server: str, issuer: str) -> bytes:
        return f"onbehalf-oauth-client-v1|{server}|{issuer}".encode()

    def _open_registration(self, stored: bytes | str, server: str, issuer: str) -> dict | None:
        try:
            opened = unseal_value(self.keys, stored, self._client_aad(server, issuer))
        except SealingError:
            return None  # sealed with a retired key, or for another issuer: not this one
        return json.loads(opened.get_secret_value())

    async def registration(self, server: str, issuer: str, redirect_uri: str) -> dict | None:
        stored = await self._run(self._client.get(self._client_key(server, issuer, redirect_uri)))
        return None if stored is None else self._open_registration(stored, server, issuer)

    async def registration_of(self, server: str, issuer: str, client_id: str) -> dict | None:
        """The registration of `client_id` at `issuer`, whatever redirect URI it was made for
        (an operator's CLI has no ONBEHALF_PUBLIC_URL). Registrations are few: one per
        server, issuer and public URL; they are SCANned, never listed with KEYS."""
        pattern = _glob_escape(f"{self.prefix}client:{server}:") + "*"
        async for key in self._client.scan_iter(match=pattern, count=500):
            stored = await self._run(self._client.get(key))
            info = None if stored is None else self._open_registration(stored, server, issuer)
            if info is not None and info.get("client_id") == client_id:
                return info
        return None

    async def put_registration(self, server: str, issuer: str, redirect_uri: str,
                               info: dict[str, Any]) -> None:
        self.require_durable_keys()
        sealed = seal_value(self.keys, json.dumps(info), self._client_aad(server, issuer))
        await self._run(self._client.set(self._client_key(server, issuer, redirect_uri), sealed))

    # --- cross-process locks --------------------------------------------------------------

    async def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        """A lock token if this process now holds `name`, else None."""
        token = uuid.uuid4().hex
        got = await self._run(self._client.set(
            f"{self.prefix}lock:{name}", token, nx=True, px=int(ttl_seconds * 1000)))
        return token if got else None

    async def locked(self, name: str) -> bool:
        return bool(await self._run(self._client.exists(f"{self.prefix}lock:{name}")))

    async def unlock(self, name: str, token: str) -> None:
        await self.compare_and_delete(f"{self.prefix}lock:{name}", token)

    def lock_name(self, identity: str, server: str) -> str:
        return f"{quote(identity, safe='')}:{server}"
