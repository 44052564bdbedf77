"""`resolve_user_token`: the two safe paths work, every unsafe one is refused with the reason."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from onbehalf.errors import MissingUserToken, UnsafeTokenPath, UserTokenExpired, UserTokenRejected
from onbehalf.mcp.tokens import resolve_user_token
from onbehalf.sealing import process_sealing_keys, seal_token
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio


@dataclass
class FakeServerInfo:
    user: Any


@dataclass
class FakeRuntime:
    context: Any = None
    server_info: Any = None


def server_user(identity: str, token: str, exp: int) -> dict[str, Any]:
    return {
        "identity": identity,
        "token_expires_at": exp,
        "sealed_token": seal_token(process_sealing_keys(), token, identity=identity,
                                   expires_at=exp),
    }


async def test_in_process_context_token_is_verified_and_resolved() -> None:
    token = mint("alice")
    user = await resolve_user_token(FakeRuntime(context={"user_token": token}))
    assert user.identity == "alice"
    assert user.token.get_secret_value() == token
    assert user.source == "context"
    assert token not in repr(user)


async def test_server_user_is_unsealed() -> None:
    token = mint("bob")
    exp = int(time.time()) + 300
    runtime = FakeRuntime(server_info=FakeServerInfo(user=server_user("bob", token, exp)))
    user = await resolve_user_token(runtime)
    assert user.identity == "bob" and user.source == "server"
    assert user.token.get_secret_value() == token


async def test_configurable_user_token_is_refused_with_the_safe_path() -> None:
    with pytest.raises(UnsafeTokenPath) as info:
        await resolve_user_token(
            FakeRuntime(context={"user_token": mint("alice")}),
            {"configurable": {"_user_token": mint("alice")}},
        )
    message = str(info.value)
    assert "checkpoint metadata" in message
    assert "context={'user_token': jwt}" in message


async def test_context_token_on_a_server_run_is_refused() -> None:
    token = mint("bob")
    exp = int(time.time()) + 300
    runtime = FakeRuntime(
        context={"user_token": token},
        server_info=FakeServerInfo(user=server_user("bob", token, exp)),
    )
    with pytest.raises(UnsafeTokenPath, match="run record"):
        await resolve_user_token(runtime)


async def test_no_token_says_how_to_pass_one() -> None:
    with pytest.raises(MissingUserToken, match="Authorization: Bearer"):
        await resolve_user_token(FakeRuntime())


async def test_expired_context_token() -> None:
    with pytest.raises(UserTokenExpired):
        await resolve_user_token(FakeRuntime(context={"user_token": mint("alice", ttl=-60)}))


async def test_forged_context_token_is_rejected() -> None:
    forged = mint("alice", secret="not-the-secret-" + "q" * 30)
    with pytest.raises(UserTokenRejected, match="signature"):
        await resolve_user_token(FakeRuntime(context={"user_token": forged}))


async def test_sealed_token_of_another_user_does_not_open() -> None:
    token = mint("alice")
    exp = int(time.time()) + 300
    stolen = server_user("alice", token, exp)["sealed_token"]
    mallory = {"identity": "mallory", "token_expires_at": exp, "sealed_token": stolen}
    with pytest.raises(UserTokenRejected):
        await resolve_user_token(FakeRuntime(server_info=FakeServerInfo(user=mallory)))
