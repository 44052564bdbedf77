"""The workload every variant runs: discover tools, then the same 3 tool calls.

The calls are valid for any user of the tickets server (a synthetic user sees
no tickets but may still call all three), so warm, cold and static users do
exactly the same work:

    whoami · list_tickets · list_tickets status=open

Agent variants drive them with `WorkloadModel`: a stateless scripted chat
model that asks for call k once it has seen k tool results after the last
human message, then answers. It ignores the tools it is offered
(`bind_tools` returns itself), so every agent variant pays the same model cost
and the only difference between them is how tools reach the agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool

from onbehalf.mcp.tokens import UserContext

Call = tuple[str, dict[str, Any]]

TICKETS_CALLS: tuple[Call, ...] = (
    ("whoami", {}),
    ("list_tickets", {}),
    ("list_tickets", {"status": "open"}),
)
PROMPT = "Who am I, and which of my tickets are open?"
SYSTEM_PROMPT = "You act on behalf of the signed-in user; use the tools to answer."


def prefixed(calls: Sequence[Call], server: str) -> tuple[Call, ...]:
    """The same calls under `<server>_` names (several servers exposing the same tools)."""
    return tuple((f"{server}_{name}", args) for name, args in calls)


def say(text: str = PROMPT) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=text)]}


class WorkloadModel(BaseChatModel):
    """Asks for `calls` one after another, then answers; needs no state between runs."""

    calls: tuple[Call, ...] = TICKETS_CALLS

    @property
    def _llm_type(self) -> str:
        return "bench-workload"

    def bind_tools(self, tools: Any, **kwargs: Any) -> WorkloadModel:  # type: ignore[override]
        return self

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        seen = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                break
            seen += isinstance(message, ToolMessage)
        if seen < len(self.calls):
            name, args = self.calls[seen]
            call = {"name": name, "args": args, "id": f"call_{seen}", "type": "tool_call"}
            reply = AIMessage(content="", tool_calls=[call])
        else:
            reply = AIMessage(content=f"done after {seen} tool calls")
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._reply(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._reply(messages)


def workload_agent(
    *,
    calls: Sequence[Call] = TICKETS_CALLS,
    tools: Sequence[BaseTool] = (),
    middleware: Sequence[AgentMiddleware[Any, Any]] = (),
) -> Any:
    """The one agent shape every agent variant uses; only `tools`/`middleware` differ."""
    return create_agent(
        model=WorkloadModel(calls=tuple(calls)),
        tools=list(tools),
        system_prompt=SYSTEM_PROMPT,
        middleware=list(middleware),
        context_schema=UserContext,
    )


class WorkloadError(AssertionError):
    """A variant did not do the workload (so its timing would mean nothing)."""


def check_agent_result(state: dict[str, Any], calls: Sequence[Call], user: str | None) -> None:
    """Every scripted call answered without error, and as the expected user."""
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    if len(results) != len(calls):
        raise WorkloadError(f"expected {len(calls)} tool results, got {len(results)}")
    for message in results:
        if message.status == "error":
            raise WorkloadError(f"tool {message.name} failed: {str(message.content)[:300]}")
    if user is not None and results:
        check_as_user(results[0].content, user)


def check_as_user(content: Any, user: str) -> None:
    text = content_text(content)
    try:
        as_user = json.loads(text).get("as_user")
    except (ValueError, AttributeError):
        raise WorkloadError(f"not a JSON tool result: {text[:200]}") from None
    if as_user != user:
        raise WorkloadError(f"tool ran as {as_user!r}, expected {user!r}")


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)
