"""The headline comparison, and what each optimisation of the kit buys.

`run_core` measures the six variants of `bench.variants` side by side. It
runs with the kit's defaults, as a deployment would: the cold users' sessions
stay pooled (idle TTL `MCP_SESSION_IDLE_SECONDS`, default 60 s) while the
benchmark goes on, exactly as they would on a server that sees a new user
every few hundred milliseconds.

`run_ablation` turns optimisations off, one at a time, each phase measured
against its own `agent-floor`:

- the session pool and tool-list cache, with the documented knobs
  `MCP_SESSION_IDLE_SECONDS=0` and `MCP_TOOLS_CACHE_SECONDS=0` (every run of a
  user opens and initializes a session and lists tools again);
- the shared HTTP transport, by giving every session its own `httpx` client
  (own TLS context and connection pool, the adapters' default);
- and, for scale, what a pass-through `AgentMiddleware` with the same four
  hooks costs any agent before our kit does anything at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from langchain.agents.middleware import AgentMiddleware

from bench.measure import Rounds, Stats, Variant, interleaved
from bench.servers import Fleet
from bench.variants import (
    AgentFloor,
    Floor,
    OnBehalf,
    OpenSession,
    Seed,
    Static,
    onbehalf_graph,
)

CORE_VARIANTS = ("seed", "static", "onbehalf-cold", "onbehalf-warm", "agent-floor", "floor")


async def close_pool() -> None:
    """Close every pooled session of this event loop (end of a section)."""
    from onbehalf.mcp.pool import session_pool

    await session_pool().aclose()


async def run_core(fleet: Fleet, rounds: Rounds) -> dict[str, Any]:
    url = fleet.url("tickets")
    graph = onbehalf_graph(["tickets"])
    opened = OpenSession(url)
    variants: list[Variant] = [
        Seed({"tickets": url}), Static(url),
        OnBehalf(graph, warm=False), OnBehalf(graph, warm=True),
        AgentFloor(opened), Floor(opened),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for variant in variants:
            await variant.setup(stack)
        samples = await interleaved(variants, rounds)
        from onbehalf.mcp.pool import session_pool

        pool = session_pool()
        pool_state = {"idle_sessions_at_end": pool.idle_count, "opened": pool.opened,
                      "reused": pool.reused}
        await close_pool()
    return {"iterations": len(samples[variants[0].name]), "warmup": rounds.warmup,
            "pool": pool_state,
            "samples_ms": {k: [round(s * 1000, 3) for s in v] for k, v in samples.items()},
            "stats": {k: Stats.of(v).__dict__ for k, v in samples.items()}}


class PassThrough(AgentMiddleware[Any, Any, Any]):
    """The four hooks our middleware uses, doing nothing: the cost of being a middleware."""

    async def abefore_agent(self, state: Any, runtime: Any) -> None:
        return None

    async def aafter_agent(self, state: Any, runtime: Any) -> None:
        return None

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(request)

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(request)


@dataclass
class Renamed:
    """A variant under another name, optionally with a patch active while it runs."""

    inner: Any
    name: str
    patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        await self.inner.setup(stack)

    async def before(self) -> Any:
        return await self.inner.before()

    async def run(self, arg: Any) -> Any:
        if self.patch is None:
            return await self.inner.run(arg)
        with self.patch():
            return await self.inner.run(arg)

    def check(self, arg: Any, result: Any) -> None:
        self.inner.check(arg, result)


@contextlib.contextmanager
def _session_clients(make: Callable[..., httpx.AsyncClient]) -> Iterator[None]:
    """Sessions opened meanwhile build their `httpx.AsyncClient` with `make` instead of the
    kit's transport (the listeners the kit passes are ignored)."""
    import onbehalf.mcp.sessions as sessions

    def factory(*listeners: Any, **named: Any) -> Callable[..., httpx.AsyncClient]:
        def build(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx.AsyncClient:
            return make(headers=headers, auth=auth,
                        timeout=timeout if timeout is not None else 30.0)

        return build

    saved = sessions.client_factory
    sessions.client_factory = factory  # type: ignore[assignment]
    try:
        yield
    finally:
        sessions.client_factory = saved


def own_http_client_per_session() -> contextlib.AbstractContextManager[None]:
    """Each session its own default `httpx.AsyncClient` (TLS context, pool): what the
    adapters do by default, i.e. the kit without its shared transport."""
    return _session_clients(lambda **kw: httpx.AsyncClient(follow_redirects=True, **kw))


def connections_per_session() -> contextlib.AbstractContextManager[None]:
    """Each session keeps every connection to itself (on the shared TLS context): the kit
    before its shared request pool. An SSE answer closed early then drops its connection,
    so every MCP request opens a new one."""
    from onbehalf.mcp.transport import session_transport

    return _session_clients(lambda **kw: httpx.AsyncClient(transport=session_transport(), **kw))


def can_patch_transport() -> bool:
    import onbehalf.mcp.sessions as sessions

    return hasattr(sessions, "client_factory")


async def _phase(variants: list[Any], rounds: Rounds) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        for variant in variants:
            await variant.setup(stack)
        samples = await interleaved(variants, rounds, seed=11)
        await close_pool()
    stats = {k: Stats.of(v) for k, v in samples.items()}
    floor = stats["agent-floor"].median_ms
    return {k: {**s.__dict__, "x_agent_floor": round(s.median_ms / floor, 3)}
            for k, s in stats.items()}


async def run_ablation_pool_off(fleet: Fleet, rounds: Rounds) -> dict[str, Any]:
    """Run inside a fresh event loop started with the pool disabled by environment."""
    url = fleet.url("tickets")
    graph = onbehalf_graph(["tickets"])
    variants: list[Any] = [
        AgentFloor(OpenSession(url)),
        Renamed(OnBehalf(graph, warm=True, user="bob"), "onbehalf-warm, pool off"),
    ]
    if can_patch_transport():
        variants.append(Renamed(OnBehalf(graph, warm=True, user="carol"),
                                "onbehalf-warm, pool off, own client",
                                own_http_client_per_session))
    return await _phase(variants, rounds)


async def run_ablation_defaults(fleet: Fleet, rounds: Rounds) -> dict[str, Any]:
    url = fleet.url("tickets")
    graph = onbehalf_graph(["tickets"])
    opened = OpenSession(url)
    variants: list[Any] = [
        AgentFloor(opened),
        AgentFloor(opened, name="agent-floor + pass-through middleware",
                   middleware=(PassThrough(),)),
        OnBehalf(graph, warm=True),
        OnBehalf(graph, warm=False),
    ]
    if can_patch_transport():
        variants += [
            Renamed(OnBehalf(graph, warm=True, user="dave"),
                    "onbehalf-warm, connections per session", connections_per_session),
            Renamed(OnBehalf(graph, warm=False), "onbehalf-cold, connections per session",
                    connections_per_session),
            Renamed(OnBehalf(graph, warm=False), "onbehalf-cold, own client",
                    own_http_client_per_session),
        ]
    return await _phase(variants, rounds)
