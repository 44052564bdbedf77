"""Lazy consent: the one `connect_account` tool the model sees for unconnected accounts.

A user who has not connected an `oauth` server sees none of its tools; while
one or more are unconnected, the model gets this tool, listing them with
their `description`. The middleware runs it (it is never executed as a
function): it pauses the run with the `connect_account` interrupt and a link.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.types import interrupt

from onbehalf.mcp.credentials import AccountNotConnected
from onbehalf.mcp.failures import tool_error, tool_result
from onbehalf.mcp.run_scope import RunScope
from onbehalf.oauth.accounts import OAuthProblem

CONNECT_TOOL = "connect_account"


async def _run_by_middleware(**_: Any) -> str:
    raise RuntimeError("connect_account is run by McpToolsMiddleware, not called directly")


def connect_account_tool(pending: Mapping[str, AccountNotConnected]) -> BaseTool:
    """The tool for these unconnected servers (built per model call: the list changes)."""
    lines = []
    for name, account in sorted(pending.items()):
        what = account.description or "no description"
        again = " (must be reconnected)" if account.state == "needs_reconnect" else ""
        lines.append(f"- {name}: {what}{again}")
    schema = {
        "type": "object",
        "properties": {"server": {
            "type": "string", "enum": sorted(pending),
            "description": "the account to connect",
        }},
        "required": ["server"],
    }
    return StructuredTool(
        name=CONNECT_TOOL,
        description=(
            "Ask the user to connect one of their accounts, so that its tools become "
            "available. Call it only when the user's request needs that account. "
            "Not connected yet:\n" + "\n".join(lines)
        ),
        args_schema=schema,
        coroutine=_run_by_middleware,
    )


def connect_message(server: str, account: AccountNotConnected, link: str) -> str:
    """What the user reads in the `connect_account` interrupt."""
    what = f" ({account.description})" if account.description else ""
    verb = "Reconnect" if account.state == "needs_reconnect" else "Connect"
    return (
        f"{verb} your {server!r} account{what}: open {link} and approve, "
        "then resume this thread"
    )


async def run_connect_account(
    call: dict[str, Any], scope: RunScope, reopen: Callable[[], Awaitable[RunScope]]
) -> ToolMessage | None:
    """The `connect_account` tool: pause the run with a connect link (lazy consent).

    Resuming re-runs this call on a new scope: if the account is connected by then, the
    model reads "connected" and the server's tools are in its next call. After a resume
    without the account, `reopen` gives the run's servers as they are now. None when
    the name belongs to an MCP server's own tool."""
    if CONNECT_TOOL in scope.tools:
        return None
    server = str((call.get("args") or {}).get("server", ""))
    pending = scope.not_connected.get(server)
    if pending is None:
        if server in scope.sessions:
            return _connected(call, server)
        known = ", ".join(sorted(scope.not_connected)) or "none"
        return tool_error(call, f"there is no account {server!r} to connect here "
                          f"(to connect: {known})")
    try:
        link = await pending.connect()
    except OAuthProblem as exc:
        return tool_error(call, f"cannot start connecting {server!r}: {exc}")
    interrupt({
        "type": "connect_account",
        "server": server,
        "connect_url": link,
        "message": connect_message(server, pending, link),
    })
    # resumed without the account connected (the check at the top found none)
    if server in (await reopen()).sessions:
        return _connected(call, server)
    return tool_error(call, f"{server!r} is not connected yet: the user has not finished "
                      "connecting it; ask them to open the link, then resume")


def _connected(call: dict[str, Any], server: str) -> ToolMessage:
    return tool_result(call, f"connected: {server!r} is connected; its tools are available")
