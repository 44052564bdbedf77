"""Driving agents in tests: messages in, tool results out, and a model that follows a script."""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from pydantic import Field

from onbehalf.mcp.middleware import McpToolsMiddleware
from onbehalf.mcp.tokens import UserContext

Calls = list[tuple[str, dict[str, Any]]]


def use_servers(monkeypatch: Any, **urls: str) -> None:
    """`MCP_SERVERS` naming each server at its URL, without credentials, 5 s timeout."""
    servers = {name: {"url": url, "auth": {"type": "none"}, "timeout_seconds": 5}
               for name, url in urls.items()}
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": servers}))


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def tool_payload(message: ToolMessage) -> dict[str, Any]:
    """The JSON object an MCP tool returned (text or content blocks)."""
    content = message.content
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return json.loads(content)


class ScriptedModel(GenericFakeChatModel):
    """Asks for exactly the tool calls a test scripts, whatever it is offered, and records
    the system prompt it saw on each call (where the kit tells it about missing servers)."""

    seen_system: list[str] = Field(default_factory=list)
    seen_tools: list[list[str]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        self.seen_tools.append([getattr(t, "name", None) or t.get("name", "?") for t in tools])
        return self

    async def _agenerate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen_system.append(str(messages[0].content))
        return await super()._agenerate(messages, *args, **kwargs)


def scripted_agent(
    calls: Calls, *, middleware: dict[str, Any] | None = None, **agent_args: Any
) -> tuple[Any, ScriptedModel]:
    """An agent with `McpToolsMiddleware` whose model makes `calls` one by one, then says done."""
    replies = [
        AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call_{i}"}])
        for i, (n, a) in enumerate(calls)
    ] + [AIMessage(content="done")]
    model = ScriptedModel(messages=iter(replies))
    agent = create_agent(
        model=model, tools=agent_args.pop("tools", []),
        middleware=[McpToolsMiddleware(**(middleware or {}))],
        context_schema=UserContext, **agent_args,
    )
    return agent, model


async def echo_run(text: str, token: str) -> dict[str, Any]:
    """One run of a scripted agent calling `echo` once as the token's user; its payload."""
    agent, _ = scripted_agent([("echo", {"text": text})])
    state = await agent.ainvoke(say(text), context={"user_token": token})
    [message] = tool_messages(state)
    assert message.status != "error", message.content
    return tool_payload(message)
