"""Elicitation rules (DESIGN.md §8.1): what a resume may answer, which tools may be sent
again, and that a parked call is only ever handed back to the user and token that left it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mcp.shared.exceptions import McpError, UrlElicitationRequiredError
from mcp.types import ElicitRequestURLParams, ErrorData, Tool, ToolAnnotations
from pydantic import SecretStr

from onbehalf.mcp.elicitation import (
    Parked,
    check_answer,
    drop_parked,
    park,
    parked_count,
    repeatable,
    unpark,
    url_elicitations,
)
from onbehalf.mcp.tokens import UserToken

pytestmark = pytest.mark.anyio

FORM = {"key": "ask-1", "message": "Which repository?", "mode": "form",
        "requested_schema": {"type": "object",
                             "properties": {"repository": {"type": "string"},
                                            "private": {"type": "boolean"}},
                             "required": ["repository"]}}
URL = {"key": "visit-1-1", "message": "Sign in", "mode": "url", "url": "https://x.example/a"}


def responses(**by_key: Any) -> dict[str, Any]:
    return {"responses": by_key}


def test_accepted_content_that_matches_the_form_is_sent() -> None:
    checked = check_answer(responses(**{"ask-1": {"action": "accept", "content": {
        "repository": "acme/web", "private": True}}}), [FORM])
    assert not isinstance(checked, str)
    assert checked["ask-1"].action == "accept"
    assert checked["ask-1"].content == {"repository": "acme/web", "private": True}


@pytest.mark.parametrize(("value", "says"), [
    (responses(**{"ask-1": {"action": "accept", "content": {"private": True}}}), "repository"),
    (responses(**{"ask-1": {"action": "accept", "content": {"repository": 3}}}), "repository"),
    (responses(**{"ask-1": {"action": "accept"}}), "content"),
    (responses(**{"ask-2": {"action": "decline"}}), "keys"),
    (responses(**{"ask-1": {"action": "decline"}, "ask-2": {"action": "decline"}}), "keys"),
    (responses(**{"ask-1": {"action": "maybe"}}), "action"),
    (responses(**{"ask-1": {"action": "decline", "content": {"repository": "a"}}}), "unexpected"),
    ({"responses": {"ask-1": {"action": "decline"}}, "also": 1}, "resume with"),
    ("yes", "resume with"),
    ({"connected": "github"}, "resume with"),
])
def test_an_answer_that_does_not_fit_the_request_is_refused(value: Any, says: str) -> None:
    checked = check_answer(value, [FORM])
    assert isinstance(checked, str) and says in checked, checked


def test_a_url_is_accepted_without_content() -> None:
    checked = check_answer(responses(**{"visit-1-1": {"action": "accept"}}), [URL])
    assert not isinstance(checked, str) and checked["visit-1-1"].action == "accept"
    refused = check_answer(responses(**{"visit-1-1": {"action": "accept", "content": {}}}), [URL])
    assert isinstance(refused, str)


def test_only_read_only_or_idempotent_tools_may_be_sent_again() -> None:
    def tool(**hints: Any) -> Tool:
        return Tool(name="t", inputSchema={"type": "object"},
                    annotations=ToolAnnotations(**hints) if hints else None)

    assert repeatable(tool(readOnlyHint=True))
    assert repeatable(tool(idempotentHint=True))
    assert not repeatable(tool())
    assert not repeatable(tool(readOnlyHint=False, idempotentHint=False))


def test_url_elicitation_required_is_read_from_the_error() -> None:
    error = UrlElicitationRequiredError([ElicitRequestURLParams(
        message="Sign in", url="https://x.example/a", elicitationId="a")])
    received = McpError(error.error)  # as it arrives over the wire
    (params,) = url_elicitations(received) or []
    assert params.url == "https://x.example/a"
    assert url_elicitations(McpError(ErrorData(code=-32603, message="boom"))) is None
    assert url_elicitations(ValueError("no")) is None


def user(identity: str, fingerprint: str) -> UserToken:
    return UserToken(identity=identity, token=SecretStr("t"), expires_at=int(time.time()) + 60,
                     source="context", fingerprint=fingerprint)


def parked_by(identity: str, fingerprint: str, dropped: list[str], seconds: float = 60
              ) -> Parked:
    return Parked(identity=identity, fingerprint=fingerprint, server="s", tool="t",
                  requests=[FORM], asked=0, on_drop=lambda: dropped.append(identity),
                  expires=time.monotonic() + seconds)


async def test_a_parked_call_goes_back_only_to_the_user_and_token_that_left_it() -> None:
    dropped: list[str] = []
    park("thread-1", "call-1", parked_by("alice", "fp-a", dropped))
    assert unpark("thread-1", "call-1", user("bob", "fp-a")) is None
    assert dropped == ["alice"], "handed to nobody else: closed"
    assert unpark("thread-1", "call-1", user("alice", "fp-a")) is None, "gone for good"

    mine = parked_by("alice", "fp-a", dropped)
    park("thread-1", "call-1", mine)
    assert unpark("thread-1", "call-1", user("alice", "fp-other")) is None, "another token"
    park("thread-1", "call-1", mine := parked_by("alice", "fp-a", dropped))
    assert unpark("thread-1", "call-1", user("alice", "fp-a")) is mine
    assert drop_parked() == 0


async def test_a_parked_call_is_closed_after_its_time() -> None:
    dropped: list[str] = []
    park("thread-2", "call-1", parked_by("alice", "fp-a", dropped, seconds=0.05))
    assert parked_count() == 1
    await asyncio.sleep(0.2)
    assert parked_count() == 0 and dropped == ["alice"]
    assert unpark("thread-2", "call-1", user("alice", "fp-a")) is None
