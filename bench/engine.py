"""The `engine` section: the `server` section's measurements on Aegra, the production engine.

DESIGN.md §10: Aegra with two processes, started as `make serve` starts them
(`onbehalf.serve.Engine`, `start_pair`): one serves the API only
(`WORKER_COUNT=0`), the other the API and the queue workers. The clients talk
to the API-only process; every run is queued in Redis and executed by the
other. Both share a Postgres database (`onbehalf_bench` on the local server,
created when missing; `DATABASE_URL` wins when set) and a private redis-server
the bench starts (database 0: Aegra's queue, `REDIS_URL`; database 1:
onbehalf's data, `ONBEHALF_REDIS_URL`), never the machine's Redis. The graphs,
HTTP app and tickets server 30 ms away are the `server` section's
(`bench.server.bench_config`, `bench_env`), measured by the same code
(`bench.server.drive`): CPU is both processes', pool hits are the executing
process's (`GET /bench/pool` on it).

Where the Aegra venv (`make aegra`), Postgres or redis-server is missing, the
section says so in one line and returns `{"skipped": why}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.aegra_server import AegraServer
from tests.support.redis_server import PrivateRedis, redis_server_executable
from tests.support.tokens import free_port, subprocess_env

from bench.measure import Rounds
from bench.server import (
    N_JOBS,
    PROJECT_ROOT,
    Served,
    bench_config,
    bench_env,
    drive,
    judged,
)
from bench.servers import Fleet
from onbehalf.serve import Engine, EngineError, aegra_python, ensure_database
from onbehalf.settings import redact_url

BENCH_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/onbehalf_bench"


def _prerequisites() -> tuple[Path, str, str]:
    """The Aegra venv's python, the database URL (the database made if missing), redis-server;
    EngineError saying what is missing."""
    python = aegra_python(PROJECT_ROOT)
    database_url = os.environ.get("DATABASE_URL") or BENCH_DATABASE_URL
    ensure_database(python, database_url)
    redis = redis_server_executable()
    if redis is None:
        raise EngineError("no redis-server for Aegra's queue (apt-get install redis-server)")
    return python, database_url, redis


@contextlib.contextmanager
def aegra(fleet: Fleet, python: Path, database_url: str,
          redis_executable: str) -> Iterator[tuple[Served, float]]:
    """Aegra's two processes on the bench config and a private Redis: what to measure, and the
    start-up seconds; everything stopped after."""
    workdir = Path(tempfile.mkdtemp(prefix="onbehalf-bench-aegra-"))
    redis = PrivateRedis(redis_executable, lambda: Path(tempfile.mkdtemp(dir=workdir))).start()
    try:
        base = redis.url.rsplit("/", 1)[0]
        engine = Engine(python=python, config=bench_config(workdir), database_url=database_url,
                        queue_redis_url=f"{base}/0", onbehalf_redis_url=f"{base}/1",
                        jobs_per_worker=N_JOBS)
        env = subprocess_env(**bench_env(fleet, workdir), LANGSMITH_TRACING="false",
                             PYTHONUNBUFFERED="1")
        ports = free_port(), free_port()
        server = AegraServer(url=f"http://127.0.0.1:{ports[0]}",
                             other_url=f"http://127.0.0.1:{ports[1]}", workdir=workdir,
                             engine=engine, base_env=env, ports=ports)
        started = time.perf_counter()
        server.start()  # (a RuntimeError with the logs when it does not)
        startup = time.perf_counter() - started
        pids = (server.api_process.pid, server.worker_process.pid)
        try:
            yield Served("engine", server.url, pids, server.other_url,
                         mcp_pids=(fleet.servers["tickets"].process.pid,)), startup
        except Exception:
            print(server.log_text()[-4000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_engine(fleet: Fleet, rounds: Rounds, levels: Sequence[tuple[int, int]], *,
               paired_bursts: int) -> dict[str, Any]:
    """No cold burst and no profile (the `server` section has them): the section stays lean."""
    try:
        python, database_url, redis_executable = _prerequisites()
    except EngineError as exc:
        print(f"    engine section did not run: {exc}", flush=True)
        return {"skipped": str(exc)}
    with aegra(fleet, python, database_url, redis_executable) as (served, startup):
        results = asyncio.run(drive(served, rounds, levels, profile_users=0,
                                    burst_kinds=("warm", "floor"), paired_bursts=paired_bursts))
    results.update({"startup_seconds": round(startup, 1), "rtt_ms": fleet.rtt_ms,
                    "n_jobs_per_worker": N_JOBS, "database": redact_url(database_url)})
    return judged(results, "engine")
