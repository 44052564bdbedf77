"""Connected accounts: a user's own credential for a third-party service, kept sealed in Redis.

A `user_secret` MCP server (e.g. GitHub) wants the user's token *for that
service*, not our JWT. Values are stored under
``USER_SECRETS_PREFIX + quote(identity) + ":" + name`` and sealed with the
sealing key, bound to (identity, name): a value copied to another user's key
does not open. `delete_if_unchanged` is compare-and-delete, so dropping a
credential the server refused never removes one a concurrent reconnect just
stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from pydantic import SecretStr
from redis.exceptions import RedisError

from onbehalf.redis_store import RedisStore, StoreError
from onbehalf.sealing import (
    SealingError,
    seal_value,
    unseal_value,
)
from onbehalf.settings import RedisSettings

DEFAULT_PREFIX = "onbehalf-secret:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UserSecretError(StoreError):
    """The store cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class StoredSecret:
    """An opened secret and the exact stored form it came from (for compare-and-delete)."""

    name: str
    value: SecretStr = field(repr=False)
    stored: str = field(repr=False)


def _aad(identity: str, name: str) -> bytes:
    return f"onbehalf-user-secret-v1|{identity}|{name}".encode()


def validate_secret_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserSecretError(
            f"secret name {name!r} must be 1-64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return name


class UserSecretStore(RedisStore):
    """Per-user sealed secrets in Redis (`REDIS_URL`)."""

    what = "the secret store"
    error = UserSecretError

    def default_prefix(self) -> str:
        return RedisSettings().user_secrets_prefix or DEFAULT_PREFIX

    def key_for(self, identity: str, name: str) -> str:
        return f"{self.prefix}{quote(identity, safe='')}:{validate_secret_name(name)}"

    async def set(self, identity: str, name: str, value: str) -> None:
        if not value:
            raise UserSecretError("the secret value is empty")
        self.require_durable_keys()
        sealed = seal_value(self.keys, value, _aad(identity, name))
        await self._run(self._client.set(self.key_for(identity, name), sealed))

    async def get(self, identity: str, name: str) -> StoredSecret | None:
        stored = await self._run(self._client.get(self.key_for(identity, name)))
        if stored is None:
            return None
        try:
            value = unseal_value(self.keys, stored, _aad(identity, name))
        except SealingError as exc:
            raise UserSecretError(
                f"the stored {name!r} credential cannot be opened ({exc.reason}): reconnect it"
            ) from None
        return StoredSecret(name=name, value=value, stored=stored)

    async def delete(self, identity: str, name: str) -> bool:
        return bool(await self._run(self._client.delete(self.key_for(identity, name))))

    async def delete_if_unchanged(self, identity: str, secret: StoredSecret) -> bool:
        """Delete only if the stored value is still the one that was used."""
        return await self.compare_and_delete(self.key_for(identity, secret.name), secret.stored)

    async def names(self, identity: str) -> list[str]:
        pattern = f"{self.prefix}{quote(identity, safe='')}:*"
        found: list[str] = []
        try:
            async for key in self._client.scan_iter(match=pattern, count=200):
                found.append(unquote(key.rsplit(":", 1)[1]))
        except RedisError as exc:
            raise UserSecretError(
                f"the secret store at REDIS_URL is unreachable ({type(exc).__name__})"
            ) from None
        return sorted(found)
