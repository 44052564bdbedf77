"""Driving an MCP agent in process: a scripted model and a checkpointed conversation.

`ScriptedModel` answers with exactly the tool calls a test scripts, whatever
tools it is offered, and records what it was shown (system prompt, tool
names); a `Turn` may run an action first (stop a server, sleep past a token's
expiry). `Conversation` keeps one thread in an `InMemorySaver`, so a test can
save a first exchange, make the next one fail, and then check that the first
is still there.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from onbehalf.mcp.middleware import McpToolsMiddleware
from onbehalf.mcp.tokens import UserContext

SAVED_QUESTION = "remember this: saved before the failure"
SAVED_ANSWER = "first answer, saved"


@dataclass(frozen=True)
class Turn:
    """One model reply: these tool calls (or none), after `before` (if any) has run."""

    calls: Sequence[tuple[str, dict[str, Any]]] = ()
    text: str = ""
    before: Callable[[], Awaitable[None]] | None = None


class ScriptedModel(BaseChatModel):
    """Replies turn by turn from `turns`; after the last one it answers "done"."""

    turns: list[Any]
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    offered: list[list[str]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        self.offered.append([getattr(t, "name", None) or t["function"]["name"] for t in tools])
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("the scripted model is async only")

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any
                         ) -> ChatResult:
        index = len(self.prompts)
        self.prompts.append(list(messages))
        turn = self.turns[index] if index < len(self.turns) else Turn(text="done")
        if turn.before is not None:
            await turn.before()
        calls = [
            {"name": name, "args": args, "id": f"call_{index}_{n}", "type": "tool_call"}
            for n, (name, args) in enumerate(turn.calls)
        ]
        message = AIMessage(content=turn.text, tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def system_prompt(self, call: int = 0) -> str:
        """The system message the model was shown on its `call`-th call."""
        first = self.prompts[call][0]
        return str(first.content) if first.type == "system" else ""


class Conversation:
    """One user's thread, checkpointed in memory across several agent runs."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.saver = InMemorySaver()
        self.config = {"configurable": {"thread_id": f"thread-{uuid.uuid4().hex[:8]}"}}
        self.model: ScriptedModel | None = None
        self.middleware: McpToolsMiddleware | None = None

    async def run(self, text: str, turns: Sequence[Turn], **middleware_args: Any
                  ) -> dict[str, Any]:
        """One agent run on this thread with a fresh scripted model and middleware."""
        self.model = ScriptedModel(turns=list(turns))
        self.middleware = McpToolsMiddleware(**middleware_args)
        agent = create_agent(
            model=self.model, tools=[], system_prompt="You are a test agent.",
            middleware=[self.middleware], context_schema=UserContext, checkpointer=self.saver,
        )
        return await agent.ainvoke(
            {"messages": [{"role": "user", "content": text}]},
            config=self.config, context={"user_token": self.token},
        )

    async def save_a_first_exchange(self) -> None:
        """A normal run (one `echo` call) whose messages must survive what follows."""
        state = await self.run(SAVED_QUESTION, [Turn(calls=[("echo", {"text": "kept"})]),
                                                Turn(text=SAVED_ANSWER)])
        assert [m.status for m in tool_messages(state)] == ["success"]

    async def messages(self) -> list[BaseMessage]:
        """The thread's messages as the checkpointer has them now."""
        tuple_ = await self.saver.aget_tuple(self.config)
        assert tuple_ is not None, "nothing was checkpointed"
        return list(tuple_.checkpoint["channel_values"].get("messages", []))

    async def assert_first_exchange_kept(self) -> None:
        messages = await self.messages()
        assert isinstance(messages[0], HumanMessage)
        assert messages[0].content == SAVED_QUESTION
        assert "echo: kept" in text_of(messages[2])
        assert messages[3].content == SAVED_ANSWER


def tool_messages(state_or_messages: Any) -> list[ToolMessage]:
    messages = (state_or_messages["messages"] if isinstance(state_or_messages, dict)
                else state_or_messages)
    return [m for m in messages if isinstance(m, ToolMessage)]


def text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
