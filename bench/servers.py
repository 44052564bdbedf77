"""The MCP servers a benchmark talks to: real subprocesses on loopback, started in parallel.

Every server gets the test identity provider's settings (`tests.support.tokens`),
so tokens minted with `mint` are accepted by all of them and by the
in-process kit alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tests.support.tokens import auth_env, free_port, subprocess_env

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 30.0


@dataclass
class Server:
    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        try:
            return psutil.Process(self.process.pid).memory_info().rss / 2**20
        except psutil.Error:
            return float("nan")


@dataclass
class Fleet:
    """Every server of a benchmark run, by name."""

    servers: dict[str, Server] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.servers[name].url

    def servers_json(self) -> str:
        """`MCP_SERVERS` naming every server (graphs narrow it with `servers=`)."""
        return json.dumps({"servers": {
            name: {"url": s.url, "auth": {"type": "user_token"}, "timeout_seconds": 10}
            for name, s in self.servers.items()
        }})


@contextlib.contextmanager
def start_fleet(
    tickets: list[str], many_tools: dict[str, int] | None = None
) -> Iterator[Fleet]:
    """Start tickets servers (by name) and N-tool servers (name → N) at once; stop on exit."""
    specs: list[tuple[str, list[str]]] = []
    for name in tickets:
        specs.append((name, ["-m", "tickets_mcp"]))
    for name, n in (many_tools or {}).items():
        specs.append((name, ["-m", "bench.many_tools_mcp", "--tools", str(n)]))
    log_dir = Path(tempfile.mkdtemp(prefix="onbehalf-bench-"))
    fleet = Fleet()
    try:
        for name, argv in specs:
            port = free_port()
            with open(log_dir / f"{name}.log", "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, *argv, "--port", str(port)],
                    env=subprocess_env(), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                )
            fleet.servers[name] = Server(name, f"http://127.0.0.1:{port}/mcp", port, process)
        for server in fleet.servers.values():
            _wait_listening(server, log_dir / f"{server.name}.log")
        yield fleet
    finally:
        for server in fleet.servers.values():
            _stop(server.process)
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def configured(fleet: Fleet) -> Iterator[None]:
    """This process acts like a deployment: test identity provider, the fleet as MCP_SERVERS.

    The environment is restored on exit (the smoke test runs inside pytest)."""
    from onbehalf.sealing import process_sealing_keys
    from onbehalf.settings import auth_settings

    values = {**auth_env(), "MCP_SERVERS": fleet.servers_json()}
    dropped = ("AUTH_JWKS_URL", "MCP_SERVERS_FILE", "ONBEHALF_ENV")
    saved = {k: os.environ.get(k) for k in (*values, *dropped)}
    for key in dropped:
        os.environ.pop(key, None)
    os.environ.update(values)
    auth_settings.cache_clear()
    process_sealing_keys.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        auth_settings.cache_clear()
        process_sealing_keys.cache_clear()


def _wait_listening(server: Server, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"MCP server {server.name} exited with {server.process.returncode}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"MCP server {server.name} did not listen within {STARTUP_SECONDS:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
