"""Aegra, the production engine (DESIGN.md §10), for end-to-end tests: two real processes.

One process serves the API only, the other the API and the queue workers, on
a private Postgres (a fresh database per server) and a private Redis whose
database 0 is Aegra's queue (`REDIS_URL`) and database 1 onbehalf's own
(`ONBEHALF_REDIS_URL`) unless a test names another. They are started the way
`make serve` starts them (`onbehalf.serve`), from the Aegra venv that
`make test` builds (`.venv-aegra`, Python 3.12).

`AegraServer` looks like `LangGraphServer` (url, log_text, written_files), so a
test written once runs on both engines through the `engine` switch
(`run_engine`); `url` is the API-only process, `other_url` the one that
executes runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onbehalf.processes import stop_all
from onbehalf.serve import (
    Engine,
    EngineError,
    aegra_python,
    start_pair,
    wait_healthy,
    write_config,
)
from tests.support.langgraph_server import PROJECT_ROOT, LangGraphServer, run_langgraph_dev
from tests.support.postgres_server import PrivatePostgres
from tests.support.redis_server import PrivateRedis, started_redis
from tests.support.tokens import free_port, subprocess_env

ENGINES = ("langgraph_dev", "aegra")


def picked_up(server: AegraServer, kind: str) -> int:
    """How many runs the process `kind` ("api" or "worker") executed, from its log."""
    path = server.workdir / f"{kind}.log"
    return path.read_text(errors="replace").count("Worker picked up run") if path.exists() else 0


def aegra_unavailable_reason() -> str | None:
    """Why the Aegra tests cannot run on this machine, or None."""
    try:
        aegra_python(PROJECT_ROOT)
    except EngineError as exc:
        return f"the Aegra tests did not run: {exc}"
    return None


@dataclass
class AegraServer:
    url: str
    other_url: str
    workdir: Path
    engine: Engine
    base_env: dict[str, str]
    ports: tuple[int, int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_workers: int = 0
    name: str = "aegra"

    @property
    def log_paths(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths)

    def written_files(self) -> list[Path]:
        """Aegra keeps everything in Postgres and Redis: no state files (scanned with SQL)."""
        return [p for p in self.workdir.rglob("*") if p.is_file() and p.suffix != ".log"
                and p.name != "langgraph.json"]

    def start(self) -> None:
        logs = tuple((self.workdir / f"{kind}.log").open("ab") for kind in ("api", "worker"))
        try:
            self.processes = start_pair(self.engine, self.base_env, *self.ports, logs=logs,
                                        api_workers=self.api_workers)
        except EngineError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_text()[-4000:]}") from None
        finally:
            for log in logs:
                log.close()

    def stop(self) -> None:
        stop_all(self.processes)
        self.processes = []

    def kill(self, kind: str) -> None:
        """SIGKILL one process ("api" or "worker") and all it started: a crash, no shutdown."""
        process = self.processes[0 if kind == "api" else 1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_one(self, kind: str) -> None:
        stop_all([self.processes[0 if kind == "api" else 1]])

    def start_one(self, kind: str) -> None:
        """(Re)start one process on its port; the other keeps running."""
        index = 0 if kind == "api" else 1
        url = self.url if kind == "api" else self.other_url
        with (self.workdir / f"{kind}.log").open("ab") as log:
            process = self.engine.start(self.base_env, port=self.ports[index],
                                        workers=self.api_workers if kind == "api" else 1,
                                        log=log)
        self.processes[index] = process
        if not wait_healthy(url, process):
            raise RuntimeError(f"the Aegra {kind} process did not start again:\n"
                               + self.log_text()[-4000:])

    @property
    def api_process(self) -> subprocess.Popen[bytes]:
        return self.processes[0]

    @property
    def worker_process(self) -> subprocess.Popen[bytes]:
        return self.processes[1]


@contextlib.contextmanager
def run_aegra(
    postgres: PrivatePostgres,
    env_overrides: dict[str, str] | None = None,
    *,
    port: int | None = None,
    queue_redis_url: str,
    onbehalf_redis_url: str | None = None,
    api_workers: int = 0,
) -> Iterator[AegraServer]:
    """Aegra's two processes on a fresh database; stopped (and the database left) after."""
    workdir = Path(tempfile.mkdtemp(prefix="onbehalf-aegra-"))
    database = f"onbehalf_{uuid.uuid4().hex[:10]}"
    postgres.create_database(database)
    base = queue_redis_url.rsplit("/", 1)[0]
    env = subprocess_env(**(env_overrides or {}))
    env.setdefault("LANGSMITH_TRACING", "false")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LOG_LEVEL", "INFO")
    api_port, worker_port = port or free_port(), free_port()
    env.setdefault("ONBEHALF_PUBLIC_URL", f"http://127.0.0.1:{api_port}")
    engine = Engine(
        python=aegra_python(PROJECT_ROOT),
        config=write_config(workdir, PROJECT_ROOT),
        database_url=postgres.url(database),
        queue_redis_url=queue_redis_url,
        onbehalf_redis_url=onbehalf_redis_url or f"{base}/1",
    )
    server = AegraServer(url=f"http://127.0.0.1:{api_port}",
                         other_url=f"http://127.0.0.1:{worker_port}", workdir=workdir,
                         engine=engine, base_env=env, ports=(api_port, worker_port),
                         api_workers=api_workers)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if not os.environ.get("ONBEHALF_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def run_engine(
    name: str,
    env_overrides: dict[str, str] | None = None,
    *,
    port: int | None = None,
    postgres: PrivatePostgres | None = None,
    queue_redis_url: str | None = None,
    api_workers: int = 0,
) -> Iterator[LangGraphServer | AegraServer]:
    """The same server for a test on either engine: `langgraph_dev` or `aegra`."""
    if name == "langgraph_dev":
        with run_langgraph_dev(env_overrides, port=port) as dev:
            yield dev
        return
    reason = aegra_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    assert postgres is not None and queue_redis_url is not None
    ours = (env_overrides or {}).get("REDIS_URL")
    with run_aegra(postgres, env_overrides, port=port, queue_redis_url=queue_redis_url,
                   onbehalf_redis_url=ours, api_workers=api_workers) as aegra:
        yield aegra


@pytest.fixture(scope="session")
def engine_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private Redis for the engine's queue, apart from the suite's (restartable)."""
    with started_redis(tmp_path_factory, "redis-engine") as server:
        yield server


@pytest.fixture(scope="session")
def engine_queue_redis(engine_redis: PrivateRedis) -> str:
    return engine_redis.url
