"""Any ASGI app under uvicorn in a daemon thread, for test servers that run in process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from tests.support.tokens import free_port

STARTUP_SECONDS = 15.0
STOP_SECONDS = 10.0


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp, port: int | None = None, *, stopping: threading.Event | None = None
) -> Iterator[str]:
    """Run any ASGI app under uvicorn in a daemon thread; yields `http://127.0.0.1:PORT`.

    `stopping` is set before shutdown begins, so handlers that wait on it
    (a simulated hang) end and never hold up the graceful shutdown.
    """
    port = free_port() if port is None else port
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                       timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, name=f"asgi-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"in-process test server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if stopping is not None:
            stopping.set()
        server.should_exit = True
        thread.join(timeout=STOP_SECONDS)
