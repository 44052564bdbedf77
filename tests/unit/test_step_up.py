"""Step-up's decisions that no demo server provokes: never a loop, and the other
credential types' sentence naming the scope (DESIGN.md §8.1)."""

from __future__ import annotations

import pytest

from onbehalf.mcp.failures import explain_refusal
from onbehalf.mcp.interceptors import _ask_to_grant
from onbehalf.oauth.accounts import scope_union

pytestmark = pytest.mark.anyio


class Granted:
    """A connected account that already carries every scope the server asks for."""

    granted_scopes = ("notes", "notes:write")

    def __init__(self) -> None:
        self.flows: list[list[str]] = []

    async def grant(self, scopes: list[str]) -> str:
        self.flows.append(scopes)
        return "https://as.example/authorize?x"


async def test_a_server_asking_again_for_scopes_just_granted_is_reported_not_looped() -> None:
    credential = Granted()
    call = {"id": "call_1", "name": "add_note", "args": {}}
    answer = await _ask_to_grant(call, "notes", credential,  # type: ignore[arg-type]
                                 ("notes:write",))
    assert answer.status == "error"
    assert "asked again for notes:write although you just granted it" in str(answer.content)
    assert credential.flows == [], "no new grant flow for what the user already gave"


def test_other_credentials_name_the_missing_scope() -> None:
    text = explain_refusal("tickets", 403, ("tickets:write",))
    assert text is not None and "not permitted" in text and "tickets:write" in text
    assert explain_refusal("tickets", 403) == (
        "MCP server 'tickets' says you are not permitted to do this (403)")


def test_the_scopes_asked_for_are_the_union_in_order() -> None:
    assert scope_union(["notes"], ["notes", "notes:write"], ["", "x"]) == [
        "notes", "notes:write", "x"]
