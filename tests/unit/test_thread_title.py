"""`thread_title`: a short title from the conversation, with no token, MCP server or API key."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agents.thread_title.graph import clean_title, graph

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AUTH_JWT_SECRET", "AUTH_JWKS_URL", "TOKEN_SEALING_KEY", "MCP_SERVERS",
                "MCP_SERVERS_FILE", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AGENT_MODEL", "offline")


async def test_title_is_short_and_comes_from_the_first_question() -> None:
    state = await graph.ainvoke(
        {"messages": [("user", "Please list my open tickets about the VPN outage")]}
    )
    title = state["title"]
    assert title == "List open tickets VPN outage"
    assert len(title) <= 60
    assert len(title.split()) <= 6


async def test_title_ignores_tool_traffic_and_later_turns() -> None:
    messages = [
        HumanMessage("Why is the printer on floor three jammed again today?"),
        AIMessage("", tool_calls=[{"name": "list_tickets", "args": {}, "id": "c1"}]),
        ToolMessage("[]", tool_call_id="c1", name="list_tickets"),
        AIMessage("list_tickets returned nothing."),
        HumanMessage("something else entirely"),
    ]
    state = await graph.ainvoke({"messages": messages})
    assert state["title"] == "Printer floor three jammed again today"


async def test_a_conversation_without_questions_is_a_new_conversation() -> None:
    assert (await graph.ainvoke({"messages": []}))["title"] == "New conversation"
    state = await graph.ainvoke({"messages": [AIMessage("Hi! How can I help?")]})
    assert state["title"] == "New conversation"


async def test_a_message_of_only_filler_words_is_a_new_conversation() -> None:
    state = await graph.ainvoke({"messages": [("user", "Hi there, please!")]})
    assert state["title"] == "New conversation"


def test_a_model_reply_is_cleaned_into_a_title() -> None:
    assert clean_title('Title: "VPN outage tickets."\nHope this helps!') == "VPN outage tickets"
    assert len(clean_title("word " * 30)) <= 60
    assert clean_title("   ") == ""
