"""A real `langgraph dev` process for end-to-end tests.

It runs in a private working directory (symlinks to the project's
`langgraph.json` and `src/`) so that its `.langgraph_api/` files and its log
belong to this test session only and can be scanned for leaked tokens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.tokens import free_port, subprocess_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120


@dataclass
class LangGraphServer:
    url: str
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def state_dir(self) -> Path:
        return self.workdir / ".langgraph_api"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def written_files(self) -> list[Path]:
        if not self.state_dir.exists():
            return []
        return [p for p in self.state_dir.rglob("*") if p.is_file()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@contextlib.contextmanager
def run_langgraph_dev(
    env_overrides: dict[str, str] | None = None,
    *,
    port: int | None = None,
    workdir: Path | None = None,
    n_jobs: int = 12,
) -> Iterator[LangGraphServer]:
    """Start `langgraph dev` on a free port and stop it afterwards."""
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="onbehalf-lg-"))
    for name in ("langgraph.json", "src", "mcp_servers.json"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(PROJECT_ROOT / name)
    port = port or free_port()
    log_path = workdir / "server.log"
    env = subprocess_env(**(env_overrides or {}))
    env.setdefault("LANGSMITH_TRACING", "false")
    env["LANGCHAIN_TRACING_V2"] = "false"
    env["LANGGRAPH_CLI_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                _venv_bin("langgraph"), "dev",
                "--host", "127.0.0.1", "--port", str(port),
                "--no-browser", "--no-reload",
                "--n-jobs-per-worker", str(n_jobs),
                "--server-log-level", "DEBUG",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LangGraphServer(
        url=f"http://127.0.0.1:{port}", workdir=workdir, log_path=log_path, process=process
    )
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()
        if own_workdir and not os.environ.get("ONBEHALF_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


def wait_ready(server: LangGraphServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"langgraph dev exited with {server.process.returncode}:\n"
                + server.log_text()[-4000:]
            )
        try:
            response = httpx.get(f"{server.url}/ok", timeout=2)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(
        f"langgraph dev did not become ready in {STARTUP_SECONDS}s:\n" + server.log_text()[-4000:]
    )
