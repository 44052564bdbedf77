"""What the security tests share: talking to the server as a user, reading tool results,
scanning anything for tokens, and counting what was tried (for docs/security.md).

Nothing here ever prints a token: failures name tokens by a sha256 prefix
(`tests.support.leaks.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.support.leaks import find_leaks

FIGURES: Counter[str] = Counter()
"""Counts of what the security suite did (cases tried, runs, scans, hits); see conftest."""

AS_USER = re.compile(r"\bas_user\"?\s*:\s*\"?([^\s,\"]+)")
TOKEN_SHA = re.compile(r"\btoken_sha256\"?\s*:\s*\"?([0-9a-f]{64})")


def client_for(url: str, token: str, **headers: str) -> LangGraphClient:
    return get_client(
        url=url, api_key=None, headers={"Authorization": f"Bearer {token}", **headers}
    )


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def message_text(message: Any) -> str:
    """The text of a message, whether a dict from the API or a LangChain message."""
    content = message.get("content") if isinstance(message, Mapping) else message.content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content
        )
    return str(content)


def message_type(message: Any) -> str:
    return str(message.get("type") if isinstance(message, Mapping) else message.type)


def tool_payloads(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """The JSON objects the MCP tools returned, from a run's messages (errors are skipped)."""
    payloads = []
    for message in messages:
        if message_type(message) != "tool":
            continue
        status = message.get("status") if isinstance(message, Mapping) else message.status
        if status == "error":
            continue
        try:
            data = json.loads(message_text(message))
        except ValueError:
            continue
        if isinstance(data, dict):
            payloads.append(data)
    return payloads


def final_text(messages: list[Any]) -> str:
    return message_text(messages[-1]) if messages else ""


def scan(where: str, haystack: str | bytes, tokens: Iterable[str]) -> list[str]:
    """Leaks of any of `tokens` in `haystack`, labelled with where; counted in FIGURES."""
    FIGURES["scans"] += 1
    FIGURES["bytes_scanned"] += len(haystack)
    found = [f"{where}: {hit}" for hit in find_leaks(haystack, list(tokens))]
    FIGURES["hits"] += len(found)
    return found


def scan_files(paths: Iterable[Path], tokens: list[str]) -> list[str]:
    hits: list[str] = []
    for path in paths:
        hits += scan(str(path.name), path.read_bytes(), tokens)
    return hits


def as_json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
