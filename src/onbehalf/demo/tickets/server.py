"""Assembling the tickets MCP server into an ASGI app, and `onbehalf tickets-mcp` to serve it.

Request path, outside in: `BearerGate` (who is calling) → `SessionLedger`
(session counts) → the SDK's streamable-HTTP app at `/mcp` (stateful
sessions) → the tools (`onbehalf.demo.tickets.tools`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from types import FrameType

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from onbehalf.cli_errors import CliError
from onbehalf.demo.tickets.data import TicketStore
from onbehalf.demo.tickets.gate import BearerGate
from onbehalf.demo.tickets.sessions import ServerStats, SessionLedger
from onbehalf.demo.tickets.tools import build_mcp
from onbehalf.demo.tickets.verifier import JwtTokenVerifier
from onbehalf.settings import AuthSettings, SettingsError, auth_settings

MCP_PATH = "/mcp"
SHUTDOWN_GRACE_SECONDS = 3
"""Open notification streams never end by themselves; stop waiting for them after this."""


def build_app(
    settings: AuthSettings, store: TicketStore | None = None, *, host: str = "127.0.0.1"
) -> Starlette:
    """The whole server as one Starlette app; run it under any ASGI server (lifespan on).

    `store` defaults to the seeded tickets; `app.state.stats` and `app.state.store`
    are exposed for in-process tests. `host` is where it will listen: on a
    loopback address the SDK's DNS-rebinding protection is enabled.
    """
    stats = ServerStats()
    store = TicketStore() if store is None else store
    app = build_mcp(store, stats, host=host).streamable_http_app()
    # add_middleware puts each new layer outside the previous ones.
    app.add_middleware(SessionLedger, stats=stats)
    app.add_middleware(BearerGate, verifier=JwtTokenVerifier(settings))
    app.state.stats = stats
    app.state.store = store
    return app


def cmd_serve(args: argparse.Namespace) -> int:
    """`onbehalf tickets-mcp [--host H] [--port P]`: serve until Ctrl-C or SIGTERM."""
    try:
        settings = auth_settings()
    except SettingsError as exc:
        raise CliError(str(exc), exit_code=2) from None
    host: str = args.host
    sock = bind_listening_socket(host, args.port)
    port: int = sock.getsockname()[1]  # the real one, also for --port 0
    logging.getLogger("mcp.server.streamable_http").addFilter(_drop_closed_stream_noise)
    print(f"tickets MCP server on http://{url_host(host)}:{port}{MCP_PATH}", flush=True)
    return serve_until_stopped(build_app(settings, host=host), sock)


def serve_until_stopped(app: ASGIApp, sock: socket.socket) -> int:
    """Serve `app` on a bound socket until Ctrl-C or SIGTERM, then exit 0."""
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal
    # with the previous handler: make SIGTERM end like Ctrl-C, i.e. exit 0.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: the normal way to stop a server
    finally:
        sock.close()
    return 0


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """Bind before starting uvicorn, so a busy port is one clear line rather than a log dump."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): "
            "is another server running there? choose another port with --port",
            exit_code=1,
        ) from None
    return sock


def _drop_closed_stream_noise(record: logging.LogRecord) -> bool:
    """Hide the SDK's traceback for a client closing its session while its GET stream is open.

    mcp 1.30 logs that normal event ("Error in standalone SSE writer",
    anyio.ClosedResourceError) at ERROR on every session close; any other
    error still gets through.
    """
    error = record.exc_info[1] if record.exc_info else None
    closed = isinstance(error, anyio.ClosedResourceError)
    return not (closed and record.getMessage() == "Error in standalone SSE writer")


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
