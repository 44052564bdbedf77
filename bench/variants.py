"""The ways of serving a user that the benchmark compares, all doing the same workload.

| variant         | per run                                                                 |
|-----------------|-------------------------------------------------------------------------|
| `seed`          | new `MultiServerMCPClient` with the user's token, `get_tools()` (one    |
|                 | session: initialize + tools/list + close), 3 calls, each on a new session|
| `static`        | tools loaded once at start-up with a service token; 3 calls, each on a  |
|                 | new session (the adapters' default)                                     |
| `onbehalf-cold` | our middleware, a user never seen before (fresh identity every run)     |
| `onbehalf-warm` | our middleware, the same user's next run (pooled session, cached list)  |
| `agent-floor`   | the same agent and model, tools bound to one session opened before      |
|                 | timing starts; no middleware: what any agent costs anyway               |
| `floor`         | that open session, 3 raw `session.call_tool` calls                      |

`seed` and `static` make their 3 calls directly through the LangChain tools
they loaded (`tool.ainvoke(args)`), without an agent around them: that is the
cheapest possible use of those tools, so the ratios against our middleware
(which does include an agent) are conservative.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession
from tests.support.tokens import mint

from bench.workload import (
    TICKETS_CALLS,
    Call,
    WorkloadError,
    check_agent_result,
    check_as_user,
    say,
    workload_agent,
)
from onbehalf.mcp.middleware import McpToolsMiddleware

SERVICE_ACCOUNT = "svc-agent"
WARM_USER = "alice"
TOKEN_TTL = 4 * 3600
_cold_users = itertools.count()


def cold_user() -> str:
    """A user nobody has seen in this process (nothing of theirs can be pooled)."""
    return f"user-{next(_cold_users):06d}"


def connection(url: str, token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"transport": "streamable_http", "url": url, "headers": headers}


async def call_tools(tools: dict[str, BaseTool], calls: Sequence[Call]) -> list[Any]:
    return [await tools[name].ainvoke(args) for name, args in calls]


def check_direct(results: list[Any], calls: Sequence[Call], user: str) -> None:
    if len(results) != len(calls):
        raise WorkloadError(f"expected {len(calls)} results, got {len(results)}")
    check_as_user(results[0], user)


@dataclass
class Seed:
    """A new client per run with the user's token, on every server of `urls` (tools
    prefixed `<server>_` when there are several); the adapters' default session per call.

    `check_user`: the first call's result must say it acted as `user` (off for workloads
    whose first tool does not report its caller)."""

    urls: dict[str, str]
    calls: Sequence[Call] = TICKETS_CALLS
    name: str = "seed"
    user: str = WARM_USER
    check_user: bool = True
    token: str = ""

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        self.token = mint(self.user, ttl=TOKEN_TTL)

    async def before(self) -> None:
        return None

    async def run(self, arg: None) -> list[Any]:
        client = MultiServerMCPClient(
            {n: connection(u, self.token) for n, u in self.urls.items()},  # type: ignore[misc]
            tool_name_prefix=len(self.urls) > 1,
        )
        tools = {t.name: t for t in await client.get_tools()}
        return await call_tools(tools, self.calls)

    def check(self, arg: None, result: list[Any]) -> None:
        if self.check_user:
            check_direct(result, self.calls, self.user)
        elif len(result) != len(self.calls):
            raise WorkloadError(f"{self.name}: expected {len(self.calls)} results")


@dataclass
class Static:
    """One service-token client whose tools were loaded at start-up; session per call."""

    url: str
    calls: Sequence[Call] = TICKETS_CALLS
    name: str = "static"
    tools: dict[str, BaseTool] = field(default_factory=dict)

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        token = mint(SERVICE_ACCOUNT, ttl=TOKEN_TTL)
        client = MultiServerMCPClient({"tickets": connection(self.url, token)})  # type: ignore[dict-item]
        self.tools = {t.name: t for t in await client.get_tools()}

    async def before(self) -> None:
        return None

    async def run(self, arg: None) -> list[Any]:
        return await call_tools(self.tools, self.calls)

    def check(self, arg: None, result: list[Any]) -> None:
        check_direct(result, self.calls, SERVICE_ACCOUNT)


@dataclass
class OnBehalf:
    """Our middleware; `warm` reuses one user (and token), otherwise a new user every run."""

    graph: Any
    warm: bool
    calls: Sequence[Call] = TICKETS_CALLS
    name: str = ""
    user: str = WARM_USER
    token: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or ("onbehalf-warm" if self.warm else "onbehalf-cold")

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        self.token = mint(self.user, ttl=TOKEN_TTL)

    async def before(self) -> tuple[str, str]:
        if self.warm:
            return self.user, self.token
        user = cold_user()
        return user, mint(user, ttl=TOKEN_TTL)

    async def run(self, arg: tuple[str, str]) -> dict[str, Any]:
        return await self.graph.ainvoke(say(), context={"user_token": arg[1]})

    def check(self, arg: tuple[str, str], result: dict[str, Any]) -> None:
        check_agent_result(result, self.calls, arg[0])


def onbehalf_graph(servers: Sequence[str], calls: Sequence[Call] = TICKETS_CALLS) -> Any:
    return workload_agent(calls=calls, middleware=[McpToolsMiddleware(servers=list(servers))])


@dataclass
class OpenSession:
    """One session opened before timing, as `user`; shared by the two floor variants."""

    url: str
    user: str = WARM_USER
    session: ClientSession | None = None
    tools: list[BaseTool] = field(default_factory=list)

    async def open(self, stack: contextlib.AsyncExitStack) -> ClientSession:
        if self.session is None:
            client = MultiServerMCPClient(
                {"s": connection(self.url, mint(self.user, ttl=TOKEN_TTL))}  # type: ignore[dict-item]
            )
            self.session = await stack.enter_async_context(client.session("s"))
            self.tools = await load_mcp_tools(self.session)
        return self.session


@dataclass
class AgentFloor:
    """The same agent and model with tools bound to an already-open session; no middleware."""

    opened: OpenSession
    calls: Sequence[Call] = TICKETS_CALLS
    name: str = "agent-floor"
    middleware: Sequence[Any] = ()
    graph: Any = None

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        await self.opened.open(stack)
        self.graph = workload_agent(
            calls=self.calls, tools=self.opened.tools, middleware=self.middleware
        )

    async def before(self) -> None:
        return None

    async def run(self, arg: None) -> dict[str, Any]:
        return await self.graph.ainvoke(say())

    def check(self, arg: None, result: dict[str, Any]) -> None:
        check_agent_result(result, self.calls, self.opened.user)


@dataclass
class Floor:
    """The MCP round trips alone: 3 `call_tool` on an already-open session."""

    opened: OpenSession
    calls: Sequence[Call] = TICKETS_CALLS
    name: str = "floor"

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        await self.opened.open(stack)

    async def before(self) -> None:
        return None

    async def run(self, arg: None) -> list[Any]:
        session = self.opened.session
        assert session is not None
        return [await session.call_tool(name, args) for name, args in self.calls]

    def check(self, arg: None, result: list[Any]) -> None:
        if any(r.isError for r in result):
            raise WorkloadError("a raw call_tool failed")
        check_as_user(result[0].content[0].text, self.opened.user)
