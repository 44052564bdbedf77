"""The handoff's rules that need no Redis: ids, TTL arithmetic, redaction, reprs."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from onbehalf.settings import HandoffSettings, redact_url
from onbehalf.worker.handoff import (
    HandedOffToken,
    HandoffError,
    InvalidExecutionId,
    TokenExpired,
    TokenHandoff,
    TokenMalformed,
    handoff_ttl,
    validate_execution_id,
)
from onbehalf.worker.runner import final_answer
from tests.support.tokens import free_port, mint

BAD_IDS = [
    "",
    "../x",
    "a b",
    "*",
    "agent-token:*",
    "x?",
    "[ab]",
    ".hidden",
    "trailing.",
    "trailing:",
    "-leading",
    "line\nbreak",
    "newline-at-end\n",
    "tab\t",
    "é",
    "x" * 129,
    "x" * 200,
]


@pytest.mark.parametrize(
    "execution_id",
    ["a", "run-42", "wf_01H.step:3", "3f2b6c1e-8d5e-4c5b-9a77-0d1f1c9b2a10", "x" * 128],
)
def test_usual_execution_ids_are_accepted(execution_id: str) -> None:
    assert validate_execution_id(execution_id) == execution_id


@pytest.mark.parametrize("execution_id", BAD_IDS)
def test_execution_ids_that_could_reach_other_keys_are_refused(execution_id: str) -> None:
    with pytest.raises(InvalidExecutionId):
        validate_execution_id(execution_id)


@pytest.mark.anyio
@pytest.mark.parametrize("execution_id", ["../x", "a b", "*", "", "x" * 200])
async def test_invalid_ids_are_refused_before_redis_is_contacted(execution_id: str) -> None:
    # Nothing listens on this port: an InvalidExecutionId (not RedisUnavailable) proves
    # validation comes first.
    settings = HandoffSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with TokenHandoff(settings) as handoff:
        with pytest.raises(InvalidExecutionId):
            await handoff.put(execution_id, mint("alice"))
        with pytest.raises(InvalidExecutionId):
            await handoff.take(execution_id)


def test_ttl_is_the_setting_for_a_long_lived_token() -> None:
    assert handoff_ttl(mint("alice", ttl=3600), max_ttl=600) == 600


def test_ttl_never_outlives_the_token() -> None:
    assert 28 <= handoff_ttl(mint("alice", ttl=30), max_ttl=600) <= 30


def test_ttl_honours_a_shorter_requested_ttl() -> None:
    assert handoff_ttl(mint("alice", ttl=3600), max_ttl=600, requested=45) == 45
    assert 28 <= handoff_ttl(mint("alice", ttl=30), max_ttl=600, requested=300) <= 30


@pytest.mark.parametrize("requested", [0, -5])
def test_non_positive_requested_ttl_is_refused(requested: int) -> None:
    with pytest.raises(HandoffError, match="positive"):
        handoff_ttl(mint("alice"), max_ttl=600, requested=requested)


def test_expired_token_gets_no_ttl() -> None:
    with pytest.raises(TokenExpired, match="expired"):
        handoff_ttl(mint("alice", ttl=-10), max_ttl=600)


@pytest.mark.parametrize(
    "value",
    ["not-a-jwt", "Bearer a.b.c", "a.b", "", "a b.c.d"],
)
def test_values_that_are_not_jwts_are_refused(value: str) -> None:
    with pytest.raises(TokenMalformed):
        handoff_ttl(value, max_ttl=600)


def test_token_without_exp_is_refused() -> None:
    import jwt

    token = jwt.encode({"sub": "alice"}, "s" * 32, algorithm="HS256")
    with pytest.raises(TokenMalformed, match="exp"):
        handoff_ttl(token, max_ttl=600)


def test_expiry_messages_never_echo_the_token() -> None:
    token = mint("alice", ttl=-10)
    with pytest.raises(TokenExpired) as caught:
        handoff_ttl(token, max_ttl=600)
    assert token not in str(caught.value)
    assert token.rsplit(".", 1)[1] not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://worker:hunter2@cache:6379/0", "redis://worker:***@cache:6379/0"),
        ("rediss://hunter2@cache:6380", "rediss://***@cache:6380"),
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
    ],
)
def test_redis_url_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_reprs_show_no_secret() -> None:
    token = mint("alice")
    taken = HandedOffToken("run-1", value=SecretStr(token),
                           expires_at=int(time.time()) + 60, fingerprint="f" * 16)
    assert token not in repr(taken)
    assert token not in str(taken)
    handoff = TokenHandoff(HandoffSettings(redis_url="redis://:hunter2@127.0.0.1:1/0"))
    assert "hunter2" not in repr(handoff)


def test_final_answer_is_the_last_ai_message_text() -> None:
    values = {
        "messages": [
            {"type": "human", "content": "hi"},
            {"type": "ai", "content": [{"type": "text", "text": "first"}]},
            {"type": "tool", "content": "tool output"},
            {"type": "ai", "content": [{"type": "text", "text": "Hello "},
                                       {"type": "tool_use", "id": "x"},
                                       {"type": "text", "text": "Alice"}]},
        ]
    }
    assert final_answer(values) == "Hello Alice"
    assert final_answer({"messages": [{"type": "ai", "content": "plain"}]}) == "plain"
    assert final_answer({"title": "no messages"}) is None
    assert final_answer(None) is None
