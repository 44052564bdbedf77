"""The bench-only graphs `bench.server` serves through `langgraph dev` (never in langgraph.json).

All three run the same scripted `WorkloadModel` (3 tool calls, then an answer):

- `bench_onbehalf`: our middleware, built as `build_mcp_agent` builds a graph (and so
  registered for prewarm at run creation).
- `bench_onbehalf_noprewarm`: the same, not registered: runs of it are never prewarmed
  (the cold figure without prewarm, measured on the same server, interleaved).
- `bench_floor`: tools bound to one session, opened with the floor user's token
  (`BENCH_FLOOR_TOKEN`) on the first run (a warm-up) and kept for the process, over the
  kit's own HTTP transport; no per-user work at all. The tools reach the model and are
  executed by a middleware with the same hooks, so the graph has the same shape.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from bench.workload import workload_agent
from onbehalf.mcp.middleware import McpToolsMiddleware
from onbehalf.mcp.prewarm import register_graph
from onbehalf.mcp.transport import client_factory


def _onbehalf(*, prewarmed: bool) -> Any:
    mcp = McpToolsMiddleware(servers=["tickets"])
    graph = workload_agent(middleware=[mcp])
    if prewarmed:
        register_graph(graph, mcp)
    return graph


class FloorTools(AgentMiddleware[Any, Any, Any]):
    """Tools of one session opened once for the whole process."""

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[str, BaseTool] | None = None
        self._lock: asyncio.Lock | None = None
        self._session_cm: Any = None

    async def _ensure(self) -> dict[str, BaseTool]:
        if self._tools is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._tools is None:
                    # the kit's own HTTP transport (shared, sharded request pools): the floor
                    # differs from the kit only by the per-user work, not by a slower client
                    client = MultiServerMCPClient({"s": {
                        "transport": "streamable_http", "url": os.environ["BENCH_FLOOR_URL"],
                        "headers": {"Authorization": f"Bearer {os.environ['BENCH_FLOOR_TOKEN']}"},
                        "httpx_client_factory": client_factory(),
                    }})
                    self._session_cm = client.session("s")
                    session = await self._session_cm.__aenter__()
                    self._tools = {t.name: t for t in await load_mcp_tools(session)}
        return self._tools

    async def awrap_model_call(
        self, request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        tools = await self._ensure()
        return await handler(request.override(tools=[*request.tools, *tools.values()]))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if request.tool is None:
            tool = (await self._ensure()).get(request.tool_call["name"])
            request = request.override(tool=tool)
        return await handler(request)


bench_onbehalf = _onbehalf(prewarmed=True)
bench_onbehalf_noprewarm = _onbehalf(prewarmed=False)
bench_floor = workload_agent(middleware=[FloorTools()])
