"""The product's HTTP app (`http.app`) for the bench-only server, plus two profiling routes.

`POST /bench/profile/start` starts pyinstrument on the server's event loop
thread (where the API and, under `langgraph dev`, the runs execute);
`POST /bench/profile/stop` stops it, writes the call tree to
`$BENCH_PROFILE_DIR/profile_server.txt` and answers a summary: time by
package and the inclusive time of our server-edge functions. Custom routes
are not behind the auth handler; this app only ever runs on loopback for the
bench.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.profiling import _frames, package_of
from onbehalf.http_app import app as product_app

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

_profiler: Profiler | None = None


async def start(request: Request) -> JSONResponse:
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


app = Starlette(
    routes=[Route("/bench/profile/start", start, methods=["POST"]),
            Route("/bench/profile/stop", stop, methods=["POST"])],
    middleware=product_app.user_middleware,
)
