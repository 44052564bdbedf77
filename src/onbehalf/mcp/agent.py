"""`build_mcp_agent`: how a graph module becomes a few lines of wiring."""

from __future__ import annotations

from collections.abc import Sequence

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_mcp_adapters.interceptors import ToolCallInterceptor
from langgraph.graph.state import CompiledStateGraph

from onbehalf.mcp.middleware import McpToolsMiddleware
from onbehalf.mcp.prewarm import register_graph
from onbehalf.mcp.tokens import UserContext
from onbehalf.models import load_chat_model


def build_mcp_agent(
    *,
    name: str,
    system_prompt: str,
    tools: Sequence[str] | None = None,
    servers: Sequence[str] | None = None,
    middleware: Sequence[AgentMiddleware] = (),
    tool_interceptors: Sequence[ToolCallInterceptor] = (),
) -> CompiledStateGraph:
    """A compiled agent whose MCP tools are loaded per user at run time.

    `tools` and `servers` narrow what the servers file allows (both apply);
    `tool_interceptors` wrap every MCP request of the graph's tools.
    The chat model comes from `AGENT_MODEL` when the module is imported; no
    user, token or MCP server is touched until a run starts.
    """
    mcp = McpToolsMiddleware(tools=tools, servers=servers, tool_interceptors=tool_interceptors)
    graph = create_agent(
        model=load_chat_model(),
        tools=[],
        system_prompt=system_prompt,
        middleware=[mcp, *middleware],
        context_schema=UserContext,
        name=name,
    )
    register_graph(graph, mcp)  # so that the server edge can prewarm this graph's sessions
    return graph
