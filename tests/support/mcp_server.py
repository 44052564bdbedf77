"""The reference tickets MCP server for tests: as a real subprocess, or in-process in a thread.

- `run_tickets_mcp()` starts `python -m onbehalf.demo.tickets` on a free port with the
  test identity provider's settings and stops it afterwards; the
  `tickets_mcp_server` fixture wraps it (one server per test session).
- `mcp_session(url, token)` opens an MCP client session (anonymous when
  `token` is None); `tool_data(result)` parses a tool result.
- `http_statuses(exc)` lists the HTTP statuses nested in an MCP client failure.
- `health(url)` calls `get_health` anonymously. It opens (and closes) one
  session of its own and makes one tool call, so its numbers include itself:
  `sessions_opened` +1, `sessions_active` +1, `tool_calls` +1.
  `session_counts(url)` subtracts that, giving the counts just before the probe.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from starlette.types import ASGIApp

from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port, subprocess_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 15.0
STOP_SECONDS = 10.0


@dataclass
class TicketsMcpServer:
    """A running `python -m onbehalf.demo.tickets` subprocess."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_dir: Path

    def stderr_text(self) -> str:
        path = self.log_dir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stdout_text(self) -> str:
        path = self.log_dir / "stdout.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def run_tickets_mcp(
    env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[TicketsMcpServer]:
    """Start the server as a subprocess, wait until it accepts connections, stop it on exit.

    `env` overrides the test environment (`subprocess_env`). Output goes to
    files, not pipes, so a chatty server can never block on a full pipe.
    """
    port = free_port() if port is None else port
    log_dir = Path(tempfile.mkdtemp(prefix="tickets-mcp-"))
    with open(log_dir / "stdout.log", "wb") as out, open(log_dir / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "onbehalf.demo.tickets", "--port", str(port)],
            env=subprocess_env(**(env or {})),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=err,
        )
    server = TicketsMcpServer(f"http://127.0.0.1:{port}/mcp", port, process, log_dir)
    try:
        _wait_until_listening(server)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tickets_mcp_server() -> Iterator[TicketsMcpServer]:
    """One tickets MCP server for the whole test session (its data changes as tests create)."""
    with run_tickets_mcp() as server:
        yield server


@contextlib.contextmanager
def serve_app_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app (the demo tickets `build_app`, say) under uvicorn; yields its /mcp URL."""
    with serve_in_thread(app, port) as base_url:
        yield f"{base_url}/mcp"


@contextlib.asynccontextmanager
async def mcp_session(
    url: str, token: str | None = None, *, http_timeout: float = 10.0
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session as `token`'s user (or anonymous); closed on exit."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(http_timeout)) as client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def http_statuses(exc: BaseException) -> list[int]:
    """HTTP status codes of every HTTPStatusError inside `exc` (the MCP client nests them)."""
    found: list[int] = []
    if isinstance(exc, httpx.HTTPStatusError):
        found.append(exc.response.status_code)
    for inner in getattr(exc, "exceptions", ()):
        found.extend(http_statuses(inner))
    if exc.__cause__ is not None:
        found.extend(http_statuses(exc.__cause__))
    return found


def tool_data(result: CallToolResult) -> dict[str, Any]:
    """The JSON object a successful tool returned."""
    assert not result.isError, f"tool failed: {tool_text(result)}"
    if result.structuredContent is not None:
        return dict(result.structuredContent)
    return json.loads(tool_text(result))


def tool_text(result: CallToolResult) -> str:
    """All text content of a tool result (for error messages)."""
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def health(url: str) -> dict[str, Any]:
    """`get_health`, anonymously; the numbers include this probe's own session and call."""
    async with mcp_session(url) as session:
        return tool_data(await session.call_tool("get_health", {}))


async def session_counts(url: str) -> dict[str, int]:
    """Session and tool-call counts as they were just before this probe."""
    data = await health(url)
    return {key: int(data[key]) - 1 for key in ("sessions_opened", "sessions_active", "tool_calls")}


def _wait_until_listening(server: TicketsMcpServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(
                f"tickets MCP server exited with code {code} before listening on port "
                f"{server.port}; stderr:\n{server.stderr_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    _stop(server.process)
    raise RuntimeError(
        f"tickets MCP server did not listen on port {server.port} within {STARTUP_SECONDS:.0f} s; "
        f"stderr:\n{server.stderr_text()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
