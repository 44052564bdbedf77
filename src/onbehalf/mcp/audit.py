"""The audit trail: one structured record per MCP tool call, never a secret.

Each record names who (identity), where (graph, thread, run), what (server,
tool), how it went (outcome, latency) — and never the token or the call's
arguments, which may carry secrets of their own. Records go to the
`onbehalf.audit` logger as one JSON object per line, also attached to the
log record as `record.audit` for structured handlers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

audit_log = logging.getLogger("onbehalf.audit")

Outcome = Literal[
    "ok", "tool_error", "not_allowed", "timeout", "unavailable", "refused", "expired",
    "cancelled", "failed", "paused",
]


@dataclass(frozen=True)
class ToolCallRecord:
    event: str
    time: float
    identity: str
    graph: str | None
    thread_id: str | None
    run_id: str | None
    server: str | None
    tool: str
    outcome: Outcome
    latency_ms: float


def run_coordinates(config: dict[str, Any] | None, runtime: Any) -> dict[str, str | None]:
    """Graph, thread and run ids of the current call, from whatever the run carries."""
    configurable = (config or {}).get("configurable") or {}
    metadata = (config or {}).get("metadata") or {}
    server_info = getattr(runtime, "server_info", None)
    execution = getattr(runtime, "execution_info", None)
    graph = getattr(server_info, "graph_id", None) or metadata.get("graph_id")
    run_id = (
        getattr(execution, "run_id", None) or metadata.get("run_id")
        or (config or {}).get("run_id")
    )
    thread_id = configurable.get("thread_id") or getattr(execution, "thread_id", None)
    return {
        "graph": str(graph) if graph else None,
        "thread_id": str(thread_id) if thread_id else None,
        "run_id": str(run_id) if run_id else None,
    }


def record_tool_call(
    *,
    identity: str,
    coordinates: dict[str, str | None],
    server: str | None,
    tool: str,
    outcome: Outcome,
    started: float,
) -> ToolCallRecord:
    record = ToolCallRecord(
        event="mcp_tool_call",
        time=time.time(),
        identity=identity,
        graph=coordinates.get("graph"),
        thread_id=coordinates.get("thread_id"),
        run_id=coordinates.get("run_id"),
        server=server,
        tool=tool,
        outcome=outcome,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    if audit_log.isEnabledFor(logging.INFO):  # (the JSON is built only for a logger that keeps it)
        fields = asdict(record)
        audit_log.info("audit %s", json.dumps(fields, sort_keys=True), extra={"audit": fields})
    return record
