"""The product's HTTP app (`http.app`) for the bench-only servers, plus bench routes.

A FastAPI app (Aegra mounts its API onto the `http.app` it is given and takes
FastAPI apps only; `langgraph dev` merges any Starlette app's routes), with
the product's middleware, so the bench measures the same edge on both engines.

- `POST /bench/profile/start` starts pyinstrument on the server's event loop
  thread (where the API and, under `langgraph dev`, the runs execute);
  `POST /bench/profile/stop` stops it, writes the call tree to
  `$BENCH_PROFILE_DIR/profile_server.txt` and answers a summary: time by
  package and the inclusive time of our server-edge functions. pyinstrument is
  imported only there (the Aegra venv does not have it).
- `GET /bench/pool` answers counters of the process that serves the request (read, never
  reset). The session pool counts a hit (`SessionPool.acquire`: `reused`) and a session
  opened (`opened`), but a prewarm acquires through the same call as a run (and under
  `langgraph dev` a warm user's run is prewarmed too: two hits per run), so this module
  wraps `SessionPool.acquire` to tell them apart: an acquisition inside a run (a graph
  step: `langgraph.config.get_config()` answers) or outside one (a prewarm), a hit when
  the pool did not call the `open_session` it was given. Also: the prewarmer's counters,
  how often the edge asked for a prewarm in this process and how often one was
  scheduled (a wrapper around the name `onbehalf.edge` calls, `start_prewarm`), and which
  bench graphs this process could prewarm (`graph_tools_for`).
- Per user, inside their runs: MCP sessions initialized (`ClientSession.initialize`, whoever
  opens them: the pool or the floor's own) and token operations (`resolve_user_token`, the
  names the kit's middleware and interceptors call): the floor must show 0 of each per
  measured run, or it is not a floor (`bench.server` refuses its figures).

Custom routes are not behind the auth handler; this app only ever runs on
loopback for the bench.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from langgraph.config import get_config
from mcp.client.session import ClientSession
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from onbehalf import edge
from onbehalf.http_app import app as product_app
from onbehalf.mcp import interceptors as kit_interceptors
from onbehalf.mcp import middleware as kit_middleware
from onbehalf.mcp.pool import SessionKey, SessionPool, session_pool
from onbehalf.mcp.prewarm import graph_tools_for, prewarmer
from onbehalf.mcp.sessions import McpSession

BENCH_GRAPH_IDS = ("bench_onbehalf", "bench_onbehalf_noprewarm", "bench_floor")

EDGE_FUNCTIONS = {
    ("src/onbehalf/edge.py", "authenticate"), ("src/onbehalf/edge.py", "runs_are_private"),
    ("src/onbehalf/edge.py", "threads_are_private"), ("src/onbehalf/edge.py", "_owned"),
    ("onbehalf/http_app.py", "__call__"), ("onbehalf/http_app.py", "_carries_token"),
    ("onbehalf/jwt_auth.py", "verify"), ("onbehalf/sealing.py", "seal_token"),
    ("onbehalf/sealing.py", "unseal_token"), ("onbehalf/mcp/tokens.py", "resolve_user_token"),
    ("onbehalf/mcp/prewarm.py", "start_prewarm"),
}
"""Inclusive time is reported for these (for `__call__` of the HTTP middlewares only its own
body parsing counts: `loads`/`_carries_token` below it, not the app it hands on to)."""

_profiler: Any = None


async def start(request: Request) -> JSONResponse:
    from pyinstrument import Profiler

    global _profiler
    _profiler = Profiler(interval=0.001, async_mode="disabled")
    _profiler.start()
    return JSONResponse({"profiling": True})


def _edge(frame: Any) -> str | None:
    path = (frame.file_path or "").replace("\\", "/")
    for file, function in EDGE_FUNCTIONS:
        if path.endswith(file) and frame.function == function:
            return f"{file}:{function}"
    return None


async def stop(request: Request) -> JSONResponse:
    from bench.profiling import _frames, package_of

    global _profiler
    if _profiler is None:
        return JSONResponse({"error": "not profiling"}, status_code=400)
    _profiler.stop()
    session = _profiler.last_session
    _profiler_ref, _profiler = _profiler, None
    root = session.root_frame() if session is not None else None
    if root is None:
        return JSONResponse({"error": "no samples"}, status_code=500)
    total = root.time or 1e-9
    by_package: Counter[str] = Counter()
    edge: Counter[str] = Counter()
    for frame in _frames(root):
        if frame.is_synthetic:
            continue
        by_package[package_of(frame)] += frame.total_self_time
        name = _edge(frame)
        if name is None or (frame.parent is not None and _edge(frame.parent) == name):
            continue
        if frame.function == "__call__":  # the body scan, not the app below it
            edge[name] += frame.total_self_time + sum(
                c.time for c in frame.children if c.function in ("loads", "_carries_token"))
        else:
            edge[name] += frame.time
    text = _profiler_ref.output_text(unicode=True, color=False, show_all=False)
    path = Path(os.environ.get("BENCH_PROFILE_DIR", ".")) / "profile_server.txt"
    await asyncio.to_thread(path.write_text, text)  # the server refuses blocking I/O on its loop
    return JSONResponse({
        "profiled_seconds": round(total, 3),
        "by_package": [{"name": n, "share": round(s / total, 4)}
                       for n, s in by_package.most_common(14)],
        "edge": [{"name": n, "seconds": round(s, 4), "share": round(s / total, 4)}
                 for n, s in edge.most_common()],
    })


_counted: Counter[str] = Counter()
_acquire = SessionPool.acquire
_start_prewarm = edge.start_prewarm


def _in_run() -> bool:
    return _user_of_run() is not None


def _user_of_run() -> str | None:
    """The identity the run this task belongs to was started for (both engines put the
    authenticated user in `configurable`); None outside a run (e.g. a prewarm)."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:
        return None
    user = configurable.get("langgraph_auth_user")
    identity = (user.get("identity") if isinstance(user, dict)
                else getattr(user, "identity", None)) or configurable.get("user_id")
    return str(identity or "unknown")


_per_user: dict[str, Counter[str]] = {}


def _count_for_run(what: str) -> None:
    user = _user_of_run()
    if user is not None:
        _per_user.setdefault(user, Counter())[what] += 1


async def _counted_acquire(self: SessionPool, key: SessionKey,
                           open_session: Callable[[], Awaitable[McpSession]]) -> McpSession:
    opened = False

    async def opening() -> McpSession:
        nonlocal opened
        opened = True
        return await open_session()

    session = await _acquire(self, key, opening)
    _counted[f"{'run' if _in_run() else 'other'}_{'opened' if opened else 'hits'}"] += 1
    return session


SessionPool.acquire = _counted_acquire  # type: ignore[method-assign]

_initialize = ClientSession.initialize


async def _counted_initialize(self: ClientSession) -> Any:
    _count_for_run("sessions_opened")
    return await _initialize(self)


ClientSession.initialize = _counted_initialize  # type: ignore[method-assign]


def _counting_token_calls(resolve: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        _count_for_run("token_operations")
        return await resolve(*args, **kwargs)
    return counted


for _module in (kit_middleware, kit_interceptors):
    _module.resolve_user_token = _counting_token_calls(  # type: ignore[attr-defined]
        _module.resolve_user_token)


async def _counted_start_prewarm(server_user: Any, assistant_id: Any) -> bool:
    scheduled = await _start_prewarm(server_user, assistant_id)
    _counted["prewarm_asked"] += 1
    _counted["prewarm_scheduled"] += int(scheduled)
    return scheduled


edge.start_prewarm = _counted_start_prewarm  # the name `runs_are_private` calls


async def pool(request: Request) -> JSONResponse:
    sessions, prewarms = session_pool(), prewarmer()
    return JSONResponse({
        "pid": os.getpid(), "opened": sessions.opened, "reused": sessions.reused,
        "idle": sessions.idle_count,
        "runs": {"hits": _counted["run_hits"], "opened": _counted["run_opened"]},
        "outside_runs": {"hits": _counted["other_hits"], "opened": _counted["other_opened"]},
        "prewarm": {"asked": _counted["prewarm_asked"],
                    "scheduled": _counted["prewarm_scheduled"],
                    "started": prewarms.started, "finished": prewarms.finished,
                    "failed": prewarms.failed, "skipped": prewarms.skipped,
                    "graphs_known": [g for g in BENCH_GRAPH_IDS if graph_tools_for(g)]},
        "per_user": {user: dict(counts) for user, counts in _per_user.items()},
    })


app = FastAPI(
    routes=[Route("/bench/profile/start", start, methods=["POST"]),
            Route("/bench/profile/stop", stop, methods=["POST"]),
            Route("/bench/pool", pool, methods=["GET"])],
    middleware=product_app.user_middleware,
    docs_url=None, redoc_url=None, openapi_url=None,
)
