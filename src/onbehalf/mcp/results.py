"""What a tool result may cost the conversation: bounded, with a note when cut.

A tool result is stored in the thread's state and sent to the model on every
later turn; an MCP server that returns megabytes must not break either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.messages import ToolMessage
from pydantic import SecretStr

from onbehalf.settings import KitSettings, current

REMOVED = "[credential removed by onbehalf]"
"""What stands where a server echoed the credential it was sent."""
Answer = TypeVar("Answer")


def credentials_removed(answer: Answer, sent: Sequence[SecretStr]) -> Answer:
    """The answer without the credentials the call sent (`secrets`).

    A server can echo what it received (a debugging tool, an error that quotes the
    request); its answer goes into the thread's state, the model's context and the logs,
    none of which may ever hold a token. Text content, artifacts (structured content) and
    plain strings are cleaned; anything else is returned as it is."""
    if not sent:
        return answer
    secrets = [secret.get_secret_value() for secret in sent]  # for this answer only
    if isinstance(answer, ToolMessage):
        parts = {"content": answer.content, "artifact": answer.artifact}
        if not _holds(parts, secrets):
            return answer
        return answer.model_copy(update=_without(parts, secrets))  # type: ignore[return-value]
    return _without(answer, secrets) if _holds(answer, secrets) else answer


def _holds(value: Any, secrets: Sequence[str]) -> bool:
    if isinstance(value, str):
        return any(secret in value for secret in secrets)
    if isinstance(value, dict):
        return any(_holds(v, secrets) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds(v, secrets) for v in value)
    return False


def _without(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REMOVED)
        return value
    if isinstance(value, dict):
        return {k: _without(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without(v, secrets) for v in value)
    return value


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
