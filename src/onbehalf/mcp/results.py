"""What a tool result may cost the conversation: bounded, with a note when cut.

A tool result is stored in the thread's state and sent to the model on every
later turn; an MCP server that returns megabytes must not break either.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage

from onbehalf.settings import KitSettings, current


def max_result_chars() -> int:
    """MCP_TOOL_RESULT_MAX_CHARS (0 means no limit)."""
    return current(KitSettings).mcp_tool_result_max_chars


def _text_size(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_text_size(p.get("text", "")) if isinstance(p, dict) else _text_size(p)
                   for p in content)
    return len(str(content))


def _flatten(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content
        )
    return str(content)


def bound_result(message: ToolMessage, limit: int | None = None) -> ToolMessage:
    """The message itself when small enough, else its text cut to `limit` with a note."""
    limit = max_result_chars() if limit is None else limit
    size = _text_size(message.content)
    if limit <= 0 or size <= limit:
        return message
    text = _flatten(message.content)[:limit]
    note = (
        f"\n\n[truncated by onbehalf: the tool returned {size:,} characters, "
        f"only the first {limit:,} are shown; ask for less (filters, an id) to see the rest]"
    )
    return message.model_copy(update={"content": text + note, "artifact": None})
