"""A real `langgraph dev` under concurrent users: throughput, latency, and no crossed answers.

The server is wired (`MCP_SERVERS`) to the tickets MCP server and started with
`--n-jobs-per-worker` ≥ 10 (DESIGN.md §7). N users at once, each doing several
`assistant` runs in a row through `langgraph_sdk` (`runs.wait`, threadless,
"list_tickets"), each with their own JWT. The users are alice, bob and carol
plus synthetic users; every answer must name its own caller
(`as_user: <caller>`), and a run answered for anyone else (or for nobody) is
counted against the target. For reference, the first level is repeated on
`thread_title`, a graph with no MCP at all, on the same server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from tests.support.langgraph_server import run_langgraph_dev
from tests.support.tokens import mint

from bench.measure import Stats
from bench.servers import Fleet

N_JOBS = 12
NAMED_USERS = ("alice", "bob", "carol")
_AS_USER = re.compile(r"as_user: ([\w.@-]+)")


def users_for(count: int, tag: str) -> list[str]:
    named = list(NAMED_USERS[:count])
    return named + [f"load-{tag}-{i:03d}" for i in range(count - len(named))]


async def _user_runs(url: str, user: str, runs: int, graph: str) -> list[dict[str, Any]]:
    from langgraph_sdk import get_client

    client = get_client(url=url, headers={"Authorization": f"Bearer {mint(user, ttl=3600)}"},
                        timeout=120)
    outcomes: list[dict[str, Any]] = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            try:
                state: Any = await client.runs.wait(
                    None, graph,
                    input={"messages": [{"role": "user", "content": "list_tickets"}]},
                )
                if graph == "assistant":
                    found = _AS_USER.search(str(state["messages"][-1]["content"]))
                    outcome = {"ok": True, "as_user": found.group(1) if found else None}
                else:
                    outcome = {"ok": bool(state.get("title")), "as_user": user}
            except Exception as exc:
                outcome = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            outcome["seconds"] = time.perf_counter() - started
            outcome["user"] = user
            outcomes.append(outcome)
    finally:
        await client.aclose()
    return outcomes


async def _level(
    url: str, users: Sequence[str], runs: int, graph: str = "assistant"
) -> dict[str, Any]:
    started = time.perf_counter()
    per_user = await asyncio.gather(*(_user_runs(url, u, runs, graph) for u in users))
    wall = time.perf_counter() - started
    outcomes = [o for runs_ in per_user for o in runs_]
    ok = [o for o in outcomes if o["ok"]]
    crossed = [o for o in ok if o["as_user"] != o["user"]]
    stats = Stats.of([o["seconds"] for o in ok]) if ok else None
    return {
        "graph": graph,
        "users": len(users),
        "runs_per_user": runs,
        "runs": len(outcomes),
        "failed": len(outcomes) - len(ok),
        "errors": sorted({o["error"] for o in outcomes if not o["ok"]})[:5],
        "cross_user_answers": len(crossed),
        "unattributed_answers": sum(1 for o in ok if o["as_user"] is None),
        "wall_seconds": round(wall, 2),
        "runs_per_second": round(len(ok) / wall, 2),
        "p50_ms": round(stats.median_ms, 1) if stats else None,
        "p95_ms": round(stats.p95_ms, 1) if stats else None,
    }


async def _drive(url: str, levels: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    await _level(url, users_for(3, "warmup"), 1)  # graphs imported, first sessions opened
    await _level(url, users_for(3, "warmup"), 1, "thread_title")
    measured = [await _level(url, users_for(n, str(n)), runs) for n, runs in levels]
    n, runs = levels[0]
    # the same server and concurrency without MCP at all: what a run costs anyway
    measured.append(await _level(url, users_for(n, f"{n}-title"), runs, "thread_title"))
    return measured


def run_load(fleet: Fleet, levels: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """`levels`: (concurrent users, runs per user) pairs, measured one after another."""
    servers = {"servers": {"tickets": {"url": fleet.url("tickets"),
                                       "auth": {"type": "user_token"}, "timeout_seconds": 10}}}
    started = time.perf_counter()
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}, n_jobs=N_JOBS) as server:
        startup = time.perf_counter() - started
        results = asyncio.run(_drive(server.url, levels))
    return {"n_jobs_per_worker": N_JOBS, "startup_seconds": round(startup, 1), "levels": results}
