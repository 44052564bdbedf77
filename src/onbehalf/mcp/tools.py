"""Where tools are filtered and named.

Two allowlists apply, the servers file's and the graph's; a tool must pass
both. Names are the MCP server's own (DESIGN.md §7); only where two
configured servers expose the same name are those tools prefixed
`<server>_`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
from mcp import ClientSession
from mcp.types import Tool as McpTool


def is_allowed(tool_name: str, *allowlists: Sequence[str] | None) -> bool:
    """True when every allowlist that is set names the tool."""
    return all(allow is None or tool_name in allow for allow in allowlists)


def public_names(tools_by_server: Mapping[str, Iterable[McpTool]]) -> dict[tuple[str, str], str]:
    """(server, tool) → the name the model sees."""
    counts = Counter(t.name for tools in tools_by_server.values() for t in tools)
    return {
        (server, t.name): (f"{server}_{t.name}" if counts[t.name] > 1 else t.name)
        for server, tools in tools_by_server.items()
        for t in tools
    }


async def list_server_tools(session: ClientSession) -> list[McpTool]:
    """Every tool of a server, following pagination cursors.

    A server that did not declare the `tools` capability at `initialize` offers none and
    is not asked (the MCP spec; such servers answer `tools/list` with "method not found",
    which would read as the server being unavailable on every run)."""
    capabilities = session.get_server_capabilities()
    if capabilities is not None and capabilities.tools is None:
        return []
    tools: list[McpTool] = []
    cursor: str | None = None
    for _ in range(100):
        result = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
        tools.extend(result.tools)
        cursor = result.nextCursor
        if not cursor:
            break
    return tools


def bind_tool(
    session: ClientSession, server: str, tool: McpTool, public_name: str,
    client: MultiServerMCPClient,
) -> BaseTool:
    """A LangChain tool that calls `tool` over this (user's) open session.

    The adapters' own conversion, with the client's callbacks (the server's
    progress notifications) and tool interceptors."""
    lc_tool = convert_mcp_tool_to_langchain_tool(
        session, tool, server_name=server, callbacks=client.callbacks,
        tool_interceptors=client.tool_interceptors,
    )
    if lc_tool.name != public_name:
        lc_tool = lc_tool.model_copy(update={"name": public_name})
    return lc_tool
