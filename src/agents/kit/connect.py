"""Lazy consent: the one `connect_account` tool the model sees for unconnected accounts.

A user who has not connected an `oauth` server sees none of its tools; while
one or more are unconnected, the model gets this tool, listing them with
their `description`. The middleware runs it (it is never executed as a
function): it pauses the run with the `connect_account` interrupt and a link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from agents.kit.credentials import AccountNotConnected

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
