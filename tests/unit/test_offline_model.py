"""The offline model and model selection: deterministic, keyless, and honest about what it is."""

from __future__ import annotations

import json

import pytest
from langchain.agents import create_agent
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool

from onbehalf.models import ModelConfigError, load_chat_model
from onbehalf.offline_model import OfflineChatModel


@tool
def list_tickets(status: str | None = None) -> str:
    """List the tickets you can see, optionally filtered by status."""
    tickets = [
        {"id": "T-1001", "title": "VPN outage", "status": "open"},
        {"id": "T-1002", "title": "Printer jam", "status": "closed"},
    ]
    return json.dumps([t for t in tickets if status in (None, t["status"])])


@tool
def get_ticket(ticket_id: str) -> str:
    """Get one ticket by its id."""
    return json.dumps({"id": ticket_id, "title": "VPN outage", "status": "open"})


@tool
def set_priority(ticket_id: str, priority: int, urgent: bool = False) -> str:
    """Change how urgent a ticket is."""
    return "ok"


TOOLS = [list_tickets, get_ticket, set_priority]


def reply(text: str, tools: list = TOOLS) -> AIMessage:
    model = OfflineChatModel()
    runnable = model.bind_tools(tools) if tools else model
    return runnable.invoke([SystemMessage("You help with tickets."), HumanMessage(text)])


def only_call(message: AIMessage) -> dict:
    assert message.content == ""
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["id"].startswith("call_")
    return call


def after_tool(result: ToolMessage, request: str = "list_tickets") -> AIMessage:
    call = {"name": result.name or "list_tickets", "args": {}, "id": result.tool_call_id}
    history: list[BaseMessage] = [
        HumanMessage(request),
        AIMessage(content="", tool_calls=[call]),
        result,
    ]
    return OfflineChatModel().bind_tools(TOOLS).invoke(history)


# --- picking the tool --------------------------------------------------------------------


def test_picks_the_tool_named_in_the_message() -> None:
    assert only_call(reply("please run get_ticket ticket_id=T-1"))["name"] == "get_ticket"


def test_picks_the_tool_named_with_spaces() -> None:
    assert only_call(reply("list tickets"))["name"] == "list_tickets"
    assert only_call(reply("Set Priority ticket_id=T-1 priority=2"))["name"] == "set_priority"


def test_picks_the_best_matching_tool_when_none_is_named() -> None:
    call = only_call(reply("Please list my open tickets about the VPN outage"))
    assert call["name"] == "list_tickets"


def test_a_bare_argument_points_at_the_tool_that_takes_it() -> None:
    call = only_call(reply("ticket_id=T-9"))
    assert (call["name"], call["args"]) == ("get_ticket", {"ticket_id": "T-9"})


def test_no_matching_tool_is_a_plain_answer_listing_the_tools() -> None:
    message = reply("what is the weather in Paris?")
    assert message.tool_calls == []
    assert message.content == (
        "I can't help with that with the tools I have. "
        "Available tools: list_tickets, get_ticket, set_priority."
    )


def test_without_tools_it_answers_plainly() -> None:
    message = reply("hello there", tools=[])
    assert message.tool_calls == []
    assert message.content == "You said: hello there"


# --- arguments ---------------------------------------------------------------------------


def test_key_value_arguments_are_coerced_to_the_schema() -> None:
    call = only_call(reply('set_priority ticket_id="T 1001" priority=3 urgent=yes'))
    assert call["args"] == {"ticket_id": "T 1001", "priority": 3, "urgent": True}


def test_unquoted_values_lose_trailing_punctuation() -> None:
    assert only_call(reply("get_ticket ticket_id=T-1001."))["args"] == {"ticket_id": "T-1001"}


def test_json_object_arguments_are_read_and_filtered_by_the_schema() -> None:
    call = only_call(reply('set_priority {"ticket_id": "T-2", "priority": "5", "colour": "red"}'))
    assert call["args"] == {"ticket_id": "T-2", "priority": 5}


def test_unknown_keys_are_dropped() -> None:
    assert only_call(reply("list_tickets status=open owner=bob"))["args"] == {"status": "open"}


def test_a_missing_required_argument_is_asked_for() -> None:
    message = reply("get ticket")
    assert message.tool_calls == []
    assert message.content.startswith("To call get_ticket I need: ticket_id. Say e.g. get_ticket")
    assert "ticket_id=" in message.content


def test_the_question_keeps_what_was_already_given() -> None:
    message = reply("set_priority priority=2")
    assert message.content.startswith("To call set_priority I need: ticket_id.")
    assert "set_priority priority=2 ticket_id=" in message.content


# --- tool results ------------------------------------------------------------------------


def test_a_tool_result_is_answered_with_the_result() -> None:
    result = ToolMessage(
        content='[{"id": "T-1001", "title": "VPN outage"}]',
        tool_call_id="call_1",
        name="list_tickets",
    )
    message = after_tool(result)
    assert message.tool_calls == []
    assert message.content == "list_tickets returned:\n- id: T-1001, title: VPN outage"


def test_mcp_content_blocks_are_read_one_item_per_block() -> None:
    blocks = [
        {"type": "text", "text": '{"id": "T-1"}'},
        {"type": "text", "text": '{"id": "T-2"}'},
    ]
    message = after_tool(ToolMessage(content=blocks, tool_call_id="call_1"))
    assert message.content == "list_tickets returned:\n- id: T-1\n- id: T-2"


def test_a_failed_tool_is_reported_as_a_failure() -> None:
    result = ToolMessage(
        content="ticket T-9 is not shared with you",
        tool_call_id="call_1",
        name="get_ticket",
        status="error",
    )
    message = after_tool(result, request="get_ticket ticket_id=T-9")
    assert message.content == "The tool get_ticket failed: ticket T-9 is not shared with you"


def test_a_new_question_after_a_result_starts_over() -> None:
    history: list[BaseMessage] = [
        HumanMessage("list_tickets"),
        AIMessage(content="", tool_calls=[{"name": "list_tickets", "args": {}, "id": "c1"}]),
        ToolMessage(content="[]", tool_call_id="c1", name="list_tickets"),
        AIMessage(content="list_tickets returned nothing."),
        HumanMessage("get_ticket ticket_id=T-1"),
    ]
    message = OfflineChatModel().bind_tools(TOOLS).invoke(history)
    assert only_call(message)["name"] == "get_ticket"


# --- determinism, identity, streaming ----------------------------------------------------


def test_same_conversation_same_reply() -> None:
    first = reply("set_priority ticket_id=T-1 priority=1")
    second = reply("set_priority ticket_id=T-1 priority=1")
    assert first.tool_calls == second.tool_calls
    assert first.content == second.content


def test_it_does_not_present_itself_as_an_llm() -> None:
    model = OfflineChatModel()
    assert model._llm_type == "onbehalf-offline"
    assert model.model_dump()  # plain pydantic; nothing per-user inside


@pytest.mark.anyio
async def test_async_streaming_rebuilds_the_tool_call() -> None:
    model = OfflineChatModel().bind_tools(TOOLS)
    chunks = [c async for c in model.astream([HumanMessage("get_ticket ticket_id=T-7")])]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessageChunk)
    assert merged.tool_calls[0]["name"] == "get_ticket"
    assert merged.tool_calls[0]["args"] == {"ticket_id": "T-7"}


@pytest.mark.anyio
async def test_in_an_agent_it_calls_the_tool_then_answers_with_its_result() -> None:
    agent = create_agent(OfflineChatModel(), tools=[list_tickets, get_ticket])
    state = await agent.ainvoke({"messages": [("user", "list tickets status=open")]})
    messages = state["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert messages[1].tool_calls[0]["args"] == {"status": "open"}
    assert messages[-1].content == (
        "list_tickets returned:\n- id: T-1001, title: VPN outage, status: open"
    )


@pytest.mark.anyio
async def test_an_agent_streams_its_messages() -> None:
    agent = create_agent(OfflineChatModel(), tools=[list_tickets, get_ticket])
    seen = [
        message
        async for message, _meta in agent.astream(
            {"messages": [("user", "get_ticket ticket_id=T-1001")]}, stream_mode="messages"
        )
    ]
    assert any(isinstance(m, AIMessageChunk) and m.tool_call_chunks for m in seen)
    assert any(isinstance(m, ToolMessage) for m in seen)
    answer = "".join(m.text for m in seen if isinstance(m, AIMessageChunk))
    assert answer.startswith("get_ticket returned: id: T-1001")


# --- choosing the model ------------------------------------------------------------------


def test_offline_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_MODEL", raising=False)
    assert isinstance(load_chat_model(), OfflineChatModel)
    assert isinstance(load_chat_model("offline"), OfflineChatModel)


def test_agent_model_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODEL", "no-such-model")
    with pytest.raises(ModelConfigError, match="AGENT_MODEL='no-such-model'"):
        load_chat_model()


def test_a_bad_name_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelConfigError) as caught:
        load_chat_model("gibberish")
    message = str(caught.value)
    assert "AGENT_MODEL" in message
    assert "'gibberish'" in message
    assert "offline" in message
    assert "\n" not in message
    with pytest.raises(ModelConfigError, match="no model"):
        load_chat_model("openai:")


def test_a_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ModelConfigError, match="set OPENAI_API_KEY"):
        load_chat_model("openai:gpt-4.1-mini")
    with pytest.raises(ModelConfigError, match="set ANTHROPIC_API_KEY"):
        load_chat_model("anthropic:claude-sonnet-4-5")


def test_a_provider_model_is_built_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_openai import ChatOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    model = load_chat_model("openai:gpt-4.1-mini")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "gpt-4.1-mini"
    assert str(model.root_async_client.base_url) == "http://127.0.0.1:9/v1/"


def test_anthropic_honours_its_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy")
    monkeypatch.delenv("ANTHROPIC_API_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    model = load_chat_model("anthropic:claude-sonnet-4-5")
    assert model.anthropic_api_url == "http://127.0.0.1:9"


def test_a_tool_name_no_bound_tool_has_is_answered_not_matched_to_a_look_alike() -> None:
    message = reply("list_notes")  # e.g. a server the user has not connected yet
    assert not message.tool_calls
    assert message.content.startswith("There is no tool list_notes here. Available tools: ")
    assert only_call(reply("ticket_id=T-9"))["name"] == "get_ticket"  # a key=value is no name
