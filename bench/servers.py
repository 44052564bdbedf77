"""The MCP servers a benchmark talks to: real subprocesses on loopback, started in parallel.

Every server gets the test identity provider's settings (`tests.support.tokens`),
so tokens minted with `mint` are accepted by all of them and by the
in-process kit alike. With `rtt_ms`, every server is also reachable through
`bench.netem` (one proxy process adding that round-trip time): `Server.url`
is loopback, `Server.remote_url` the same server across the emulated network.
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
    remote_url: str | None = None

    def rss_mb(self) -> float:
        try:
            return psutil.Process(self.process.pid).memory_info().rss / 2**20
        except psutil.Error:
            return float("nan")


@dataclass
class Fleet:
    """Every server of a benchmark run, by name."""

    servers: dict[str, Server] = field(default_factory=dict)
    rtt_ms: float | None = None

    def url(self, name: str, *, remote: bool = False) -> str:
        server = self.servers[name]
        if not remote:
            return server.url
        if server.remote_url is None:
            raise RuntimeError("this fleet was started without an emulated network (rtt_ms)")
        return server.remote_url

    def servers_json(self, *, remote: bool = False) -> str:
        """`MCP_SERVERS` naming every server (graphs narrow it with `servers=`)."""
        return json.dumps({"servers": {
            name: {"url": self.url(name, remote=remote), "auth": {"type": "user_token"},
                   "timeout_seconds": 10}
            for name in self.servers
        }})


@contextlib.contextmanager
def start_fleet(
    tickets: list[str], many_tools: dict[str, int] | None = None, *, rtt_ms: float | None = None
) -> Iterator[Fleet]:
    """Start tickets servers (by name) and N-tool servers (name → N) at once; stop on exit.

    With `rtt_ms`, also one `bench.netem` proxy giving every server a `remote_url`."""
    specs: list[tuple[str, list[str]]] = []
    for name in tickets:
        specs.append((name, ["-m", "onbehalf.demo.tickets"]))
    for name, n in (many_tools or {}).items():
        specs.append((name, ["-m", "bench.many_tools_mcp", "--tools", str(n)]))
    log_dir = Path(tempfile.mkdtemp(prefix="onbehalf-bench-"))
    fleet = Fleet(rtt_ms=rtt_ms)
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for name, argv in specs:
            port = free_port()
            with open(log_dir / f"{name}.log", "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, *argv, "--port", str(port)],
                    env=subprocess_env(), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                )
            fleet.servers[name] = Server(name, f"http://127.0.0.1:{port}/mcp", port, process)
        if rtt_ms is not None:
            pairs = {name: free_port() for name in fleet.servers}
            with open(log_dir / "netem.log", "wb") as log:
                proxy = subprocess.Popen(
                    [sys.executable, "-m", "bench.netem", "--rtt-ms", str(rtt_ms),
                     *(f"{port}:{fleet.servers[name].port}" for name, port in pairs.items())],
                    env=subprocess_env(), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                )
            for name, port in pairs.items():
                fleet.servers[name].remote_url = f"http://127.0.0.1:{port}/mcp"
        for server in fleet.servers.values():
            wait_listening(server.name, server.port, server.process,
                            log_dir / f"{server.name}.log")
        if proxy is not None:
            for port in pairs.values():
                wait_listening("netem", port, proxy, log_dir / "netem.log")
        yield fleet
    finally:
        for server in fleet.servers.values():
            stop_process(server.process)
        if proxy is not None:
            stop_process(proxy)
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def environment(drop: tuple[str, ...] = (), **values: str) -> Iterator[None]:
    """Set `values` and remove `drop` from the environment; everything restored on exit."""
    saved = {k: os.environ.get(k) for k in (*values, *drop)}
    for key in drop:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def configured(fleet: Fleet) -> Iterator[None]:
    """This process acts like a deployment: test identity provider, the fleet as MCP_SERVERS.

    The environment is restored on exit (the smoke test runs inside pytest)."""
    from onbehalf.sealing import process_sealing_keys
    from onbehalf.settings import auth_settings

    dropped = ("AUTH_JWKS_URL", "MCP_SERVERS_FILE", "ONBEHALF_ENV")
    with environment(drop=dropped, **auth_env(), MCP_SERVERS=fleet.servers_json()):
        auth_settings.cache_clear()
        process_sealing_keys.cache_clear()
        try:
            yield
        finally:
            auth_settings.cache_clear()
            process_sealing_keys.cache_clear()


def wait_listening(name: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {STARTUP_SECONDS:.0f}s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
