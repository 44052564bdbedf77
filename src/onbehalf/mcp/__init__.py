"""The per-user MCP kit: what a LangGraph project imports to give its graphs MCP tools
that act as the user who asked.

    from onbehalf.mcp import build_mcp_agent, McpToolsMiddleware

`build_mcp_agent(name=..., system_prompt=...)` is a whole agent in one call;
`McpToolsMiddleware` is the piece to add to an agent of your own
(`langchain.agents.create_agent(..., middleware=[McpToolsMiddleware()])`).

Inside, one module per decision:

- `tokens`       where the caller's token is resolved (`resolve_user_token`)
- `credentials`  what each server receives (user token, exchange, secret, oauth, static, none)
- `client`       the user's `MultiServerMCPClient`: typed connections, credential as `httpx.Auth`
- `transport`    shared HTTP pools under per-session credentials
- `sessions`     one owner task per open MCP session, opened from the user's client
- `pool`         healthy sessions kept for the same user and token between runs
- `run_scope`    what one run holds: sessions and tools for one user
- `tools`        allowlists and tool naming
- `failures`     every sentence about a failed server (below all that report one)
- `interceptors` per-call policy: timeout, failure → text, 401 → reconnect, audit, bounds
- `elicitation`  a server asking the user during a call: the pause, the answer, parked calls
- `connect`      the `connect_account` tool for unconnected OAuth servers
- `prewarm`      opening a user's sessions while the server queues their run
- `middleware`   `McpToolsMiddleware`, which wires the above into an agent
- `agent`        `build_mcp_agent`

The servers file is `onbehalf.servers`; the chat model `onbehalf.models`.
"""

from onbehalf.mcp.agent import build_mcp_agent
from onbehalf.mcp.middleware import McpToolsMiddleware
from onbehalf.mcp.tokens import UserContext

__all__ = ["McpToolsMiddleware", "UserContext", "build_mcp_agent"]
