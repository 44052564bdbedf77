"""`assistant`: every tool the user may use, on every configured MCP server."""

from onbehalf.mcp import build_mcp_agent

graph = build_mcp_agent(
    name="assistant",
    system_prompt=(
        "You are a helpful assistant acting on behalf of the signed-in user. "
        "Use the available tools to answer; the tools only show what this user may see."
    ),
)
