"""An MCP server with N trivial tools, behind the same JWT gate as the tickets server.

`python -m bench.many_tools_mcp --tools 500 --port P` serves `tool_000` ...
`tool_499` at `http://127.0.0.1:P/mcp`. Each tool echoes its arguments and
the caller's `sub`, with a description and two parameters of realistic size,
so what grows with N is exactly what a real server's growth costs: the
`tools/list` payload and the LangChain tools built from it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Annotated, Any

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from pydantic import Field
from starlette.applications import Starlette

from onbehalf.demo.tickets.gate import BearerGate
from onbehalf.demo.tickets.tools import caller
from onbehalf.demo.tickets.verifier import JwtTokenVerifier
from onbehalf.settings import auth_settings


def tool_name(index: int) -> str:
    return f"tool_{index:03d}"


def _make_tool(index: int) -> Callable[..., Any]:
    async def tool(
        ctx: Context[Any, Any, Any],
        query: Annotated[str, Field(description="What to look up; any text.")] = "",
        limit: Annotated[int, Field(description="At most this many results.", ge=1)] = 10,
    ) -> dict[str, Any]:
        return {"tool": tool_name(index), "as_user": caller(ctx).client_id,
                "query": query, "limit": limit}

    return tool


def build_app(n_tools: int, *, host: str = "127.0.0.1") -> Starlette:
    mcp = FastMCP(name=f"many-{n_tools}", host=host, log_level="WARNING",
                  session_idle_timeout=None)
    for index in range(n_tools):
        mcp.add_tool(
            _make_tool(index),
            name=tool_name(index),
            description=(
                f"Benchmark tool number {index}: looks up records matching a query in "
                f"collection {index} and returns at most `limit` of them for the caller."
            ),
        )
    app = mcp.streamable_http_app()
    app.add_middleware(BearerGate, verifier=JwtTokenVerifier(auth_settings()))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.tools), host="127.0.0.1", port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
