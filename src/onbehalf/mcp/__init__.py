"""The shared per-user MCP kit: every MCP-using graph is built from these parts.

- `tokens`      where the caller's token is resolved (`resolve_user_token`)
- `servers`     the MCP servers file and its validation
- `credentials` what each server receives (user token, exchange, secret, oauth, static, none)
- `client`      the user's `MultiServerMCPClient`: typed connections, credential as `httpx.Auth`
- `transport`   shared HTTP pools under per-session credentials
- `sessions`    one owner task per open MCP session, opened from the user's client
- `run_scope`   what one run holds: sessions and tools for one user
- `tools`       allowlists and tool naming
- `interceptors` per-call policy: timeout, failure → text, 401 → reconnect, audit, bounds
- `middleware`  `McpToolsMiddleware`, which wires the above into an agent
- `agent`       `build_mcp_agent`, the ~5-line way to define a graph
- `models`      `load_chat_model` (`AGENT_MODEL`; the offline model is `onbehalf.offline_model`)
"""
