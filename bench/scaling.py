"""How the cost grows: with MCP servers per run, with tools per server, with distinct users.

- servers: 1, 3 and 5 tickets servers (separate processes). Every server
  exposes the same tools, so with more than one they are prefixed
  `<server>_` (DESIGN.md §7) and the calls go to the first server. "Cold
  discovery" is a new user's run whose model answers without calling a tool:
  open every server's session concurrently, list, filter and bind its tools.
- network: the same servers behind `bench.netem` (an emulated round-trip
  time), where concurrency has network waits to overlap; with, for scale,
  the kit's sessions alone (open + `tools/list`, no agent) to 1 server, to 5
  at once, and to 5 one after another (what "summed" would cost).
- tools: one server with 10, 100 or 500 trivial tools (`bench.many_tools_mcp`).
- users: 1, 100 and 1,000 distinct users taking turns (round robin), with the
  pool at its default size. Per-run time and this process's RSS after each
  step. 1,000 users round robin is the worst case for the pool: it holds
  `MCP_SESSION_POOL_SIZE` (512) sessions, so each user's session has been
  evicted (least recently used) before their next turn, and every run is cold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.tokens import mint

from bench.core import close_pool
from bench.many_tools_mcp import tool_name
from bench.measure import Rounds, Stats, interleaved, rss_mb, sequential
from bench.servers import Fleet
from bench.variants import TOKEN_TTL, OnBehalf, Seed, cold_user, onbehalf_graph
from bench.workload import TICKETS_CALLS, Call, WorkloadError, check_agent_result, prefixed

SERVER_COUNTS = (1, 3, 5)
TOOL_COUNTS = (10, 100, 500)


def tickets_calls_for(servers: Sequence[str]) -> tuple[Call, ...]:
    return TICKETS_CALLS if len(servers) == 1 else prefixed(TICKETS_CALLS, servers[0])


MANY_CALLS: tuple[Call, ...] = tuple((tool_name(i), {"query": "q", "limit": 3}) for i in range(3))


def _stats(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {k: Stats.of(v).__dict__ for k, v in samples.items()}


@dataclass
class SessionsOnly:
    """The kit's sessions alone for a new user: open + `tools/list` on each server, no agent.

    Sessions are closed before the next run (untimed)."""

    urls: list[str]
    concurrent: bool
    name: str
    opened: list[Any] = field(default_factory=list)

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        return None

    async def before(self) -> str:
        await self.aclose()
        return mint(cold_user(), ttl=TOKEN_TTL)

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in self.opened))
        self.opened.clear()

    async def _one(self, url: str, token: str) -> int:
        from onbehalf.mcp.client import bearer_client
        from onbehalf.mcp.sessions import McpSession
        from onbehalf.mcp.tools import list_server_tools

        session = McpSession("bench", bearer_client("bench", "bench", url, token), 10.0)
        self.opened.append(session)
        await session.open()
        return len(await list_server_tools(session.client))

    async def run(self, token: str) -> list[int]:
        if self.concurrent:
            return list(await asyncio.gather(*(self._one(u, token) for u in self.urls)))
        return [await self._one(u, token) for u in self.urls]

    def check(self, arg: str, result: list[int]) -> None:
        if len(result) != len(self.urls) or not all(result):
            raise WorkloadError(f"{self.name}: a server listed no tools")


async def run_servers(fleet: Fleet, names: Sequence[str], rounds: Rounds, *,
                      remote: bool = False) -> dict[str, Any]:
    """Cost per server count; `remote`: through the fleet's emulated network, only what
    the concurrency target needs (cold discovery, warm runs) plus `SessionsOnly` for scale:
    every other new user's sessions would sit in the pool and close in the background
    during the measured runs."""
    variants: list[Any] = []
    for count in SERVER_COUNTS:
        servers = list(names[:count])
        calls = tickets_calls_for(servers)
        discovery = onbehalf_graph(servers, calls=())
        graph = onbehalf_graph(servers, calls=calls)
        variants.append(
            OnBehalf(discovery, warm=False, calls=(), name=f"cold discovery, {count} servers"))
        if not remote:
            variants += [
                OnBehalf(graph, warm=False, calls=calls, name=f"onbehalf-cold, {count} servers"),
                Seed({n: fleet.url(n) for n in servers}, calls, name=f"seed, {count} servers",
                     check_user=False),
            ]
        variants.append(
            OnBehalf(graph, warm=True, calls=calls, name=f"onbehalf-warm, {count} servers"))
    if remote:
        urls = [fleet.url(n, remote=True) for n in names[:max(SERVER_COUNTS)]]
        variants += [
            SessionsOnly(urls[:1], True, name="sessions only, 1 server"),
            SessionsOnly(urls, True, name=f"sessions only, {len(urls)} servers at once"),
            SessionsOnly(urls, False, name=f"sessions only, {len(urls)} servers one by one"),
        ]
    async with contextlib.AsyncExitStack() as stack:
        for variant in variants:
            await variant.setup(stack)
        samples = await interleaved(variants, rounds, seed=3)
        for variant in variants:
            if isinstance(variant, SessionsOnly):
                await variant.aclose()
        await close_pool()
    result: dict[str, Any] = {"counts": list(SERVER_COUNTS),
                              "iterations": len(samples[variants[0].name]),
                              "stats": _stats(samples),
                              "samples_ms": {k: [round(x * 1000, 3) for x in v]
                                             for k, v in samples.items()}}
    if remote:
        result["rtt_ms"] = fleet.rtt_ms
    return result


async def run_tools(fleet: Fleet, names: dict[int, str], rounds: Rounds) -> dict[str, Any]:
    variants: list[Any] = []
    for count in TOOL_COUNTS:
        server = names[count]
        discovery = onbehalf_graph([server], calls=())
        graph = onbehalf_graph([server], calls=MANY_CALLS)
        variants += [
            OnBehalf(discovery, warm=False, calls=(), name=f"cold discovery, {count} tools"),
            OnBehalf(graph, warm=True, calls=MANY_CALLS, name=f"onbehalf-warm, {count} tools"),
            Seed({server: fleet.url(server)}, MANY_CALLS, name=f"seed, {count} tools",
                 check_user=False),
        ]
    async with contextlib.AsyncExitStack() as stack:
        for variant in variants:
            await variant.setup(stack)
        samples = await interleaved(variants, rounds, seed=5)
        await close_pool()
    return {"counts": list(TOOL_COUNTS), "iterations": len(samples[variants[0].name]),
            "stats": _stats(samples)}


@dataclass
class RoundRobin:
    """Users taking turns on one graph; each user keeps one token for all their runs."""

    graph: Any
    users: list[str]
    name: str = "round robin"
    tokens: list[str] = field(default_factory=list)
    turn: int = 0

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        self.tokens = [mint(u, ttl=TOKEN_TTL) for u in self.users]

    async def before(self) -> tuple[str, str]:
        i = self.turn % len(self.users)
        self.turn += 1
        return self.users[i], self.tokens[i]

    async def run(self, arg: tuple[str, str]) -> dict[str, Any]:
        from bench.workload import say

        return await self.graph.ainvoke(say(), context={"user_token": arg[1]})

    def check(self, arg: tuple[str, str], result: dict[str, Any]) -> None:
        check_agent_result(result, TICKETS_CALLS, arg[0])


async def run_users(
    fleet: Fleet, *, sizes: Sequence[int], rounds: dict[int, int]
) -> dict[str, Any]:
    """Each size: `rounds[size]` rounds of every user; the first round of a size with
    more than one round is its warm-up (those users' first runs)."""
    from onbehalf.mcp.pool import session_pool

    graph = onbehalf_graph(["tickets"])
    pool = session_pool()
    settings = pool.settings
    results: dict[str, Any] = {
        "pool_size": settings.max_sessions,
        "idle_seconds": settings.idle_seconds,
        "rss_mb_start": round(rss_mb(), 1),
        "steps": [],
    }
    async with contextlib.AsyncExitStack() as stack:
        for size in sizes:
            users = [cold_user() for _ in range(size)]
            variant = RoundRobin(graph, users, name=f"{size} users")
            await variant.setup(stack)
            n_rounds = rounds[size]
            warm_runs = size if n_rounds > 1 else 0
            opened, reused = pool.opened, pool.reused
            samples = await sequential(variant, runs=size * n_rounds - warm_runs,
                                       warmup=warm_runs)
            runs = size * n_rounds
            results["steps"].append({
                "users": size,
                "runs": runs,
                "measured_runs": len(samples),
                **{k: round(v, 3) for k, v in Stats.of(samples).__dict__.items()},
                "sessions_opened_per_run": round((pool.opened - opened) / runs, 3),
                "sessions_reused_per_run": round((pool.reused - reused) / runs, 3),
                "idle_sessions": pool.idle_count,
                "rss_mb": round(rss_mb(), 1),
                "tickets_server_rss_mb": round(fleet.servers["tickets"].rss_mb(), 1),
            })
        await close_pool()
    results["rss_mb_after_close"] = round(rss_mb(), 1)
    return results
