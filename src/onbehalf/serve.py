"""`make serve`: onbehalf on Aegra with Postgres and Redis, two processes, on one machine.

Production-shaped (DESIGN.md §10): one Aegra process serves the API only, the
other serves the API and runs the queue workers, so a run accepted by one is
executed by the other. Both share a Postgres database (threads, runs,
checkpoints; created when missing) and a Redis for Aegra's queue
(`REDIS_URL`), while onbehalf's own data lives in `ONBEHALF_REDIS_URL` (another
database of the same Redis by default). The demo MCP servers and the offline
model stand in for what a deployment brings; `.env` holds the dev secrets
`make dev` writes.

Aegra needs Python 3.12: it runs from its own venv (`.venv-aegra`, made by
`make serve`, with Aegra pinned exactly and this project installed in it). The
same functions start Aegra for the test suite and the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from onbehalf import processes
from onbehalf.devserver import DEV_DEFAULTS, dev_servers_config, ensure_dotenv
from onbehalf.dotenv import load_project_dotenv
from onbehalf.settings import redact_url

AEGRA_VENV = ".venv-aegra"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/onbehalf"
STARTUP_SECONDS = 120.0

_CREATE_DATABASE = """
import sys, psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
target = conninfo_to_dict(sys.argv[1])
name = target.get("dbname") or "postgres"
admin = make_conninfo(sys.argv[1], dbname="postgres")
try:
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print("created")
except psycopg.OperationalError as exc:
    print(str(exc).strip().splitlines()[0], file=sys.stderr)
    sys.exit(3)
"""


class EngineError(Exception):
    """The engine could not be set up; the message says what to do."""


def aegra_python(root: Path) -> Path:
    """The Aegra venv's python, or EngineError saying how to make it."""
    python = root / AEGRA_VENV / "bin" / "python"
    if not python.exists():
        raise EngineError(
            f"no Aegra venv at {root / AEGRA_VENV}: run `make serve` (it needs Python 3.12; "
            "set AEGRA_PYTHON=/path/to/python3.12 if it is not on PATH)"
        )
    return python


def ensure_database(python: Path, database_url: str) -> bool:
    """Create the database of `database_url` when missing (True if it was created)."""
    result = subprocess.run([str(python), "-c", _CREATE_DATABASE, database_url],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise EngineError(f"cannot reach Postgres at {redact_url(database_url)} ({reason}): "
                          "start PostgreSQL or set DATABASE_URL")
    return "created" in result.stdout


@dataclass(frozen=True)
class Engine:
    """What every Aegra process of one deployment shares."""

    python: Path
    config: Path
    database_url: str
    queue_redis_url: str
    onbehalf_redis_url: str
    jobs_per_worker: int = 10

    def env(self, base: dict[str, str], *, workers: int) -> dict[str, str]:
        env = dict(base)
        env.update(
            AEGRA_CONFIG=str(self.config),
            DATABASE_URL=self.database_url,
            REDIS_BROKER_ENABLED="true",
            REDIS_URL=self.queue_redis_url,
            ONBEHALF_REDIS_URL=self.onbehalf_redis_url,
            WORKER_COUNT=str(workers),
            N_JOBS_PER_WORKER=str(self.jobs_per_worker),
        )
        env.setdefault("LOG_LEVEL", "WARNING")
        return env

    def start(self, base: dict[str, str], *, port: int, workers: int,
              log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        """One Aegra process: API only (`workers=0`) or API + queue workers."""
        return subprocess.Popen(
            [str(self.python), "-m", "uvicorn", "aegra_api.main:app",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=self.config.parent, env=self.env(base, workers=workers),
            stdout=log, stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes],
                 seconds: float = STARTUP_SECONDS) -> bool:
    """Until `GET /health` answers 200 (the database is migrated and connected)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not processes.STOPPING.is_set():
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        processes.STOPPING.wait(0.3)
    return False


def start_pair(engine: Engine, base: dict[str, str], api_port: int, worker_port: int,
               logs: tuple[IO[bytes] | None, IO[bytes] | None] = (None, None),
               *, api_workers: int = 0) -> list[subprocess.Popen[bytes]]:
    """The API + workers process first (it migrates the database), then the API-only one
    (or, with `api_workers`, a second process that executes runs too)."""
    procs = [engine.start(base, port=worker_port, workers=1, log=logs[1])]
    if not wait_healthy(f"http://127.0.0.1:{worker_port}", procs[0]):
        processes.stop_all(procs)
        raise EngineError("the Aegra API + worker process did not start (see its log)")
    procs.insert(0, engine.start(base, port=api_port, workers=api_workers, log=logs[0]))
    if not wait_healthy(f"http://127.0.0.1:{api_port}", procs[0]):
        processes.stop_all(procs)
        raise EngineError("the Aegra API process did not start (see its log)")
    return procs


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def main() -> int:
    return processes.run_at_the_terminal(_serve_or_say_why)


def _serve_or_say_why() -> int:
    try:
        return _serve()
    except EngineError as exc:
        print(f"make serve: {exc}", file=sys.stderr)
        return 1


def _serve() -> int:
    root = Path.cwd()
    api_port, worker_port = _port("SERVE_PORT", 2024), _port("SERVE_WORKER_PORT", 2025)
    mcp_port, notes_port = _port("DEV_MCP_PORT", 8765), _port("DEV_NOTES_PORT", 8766)
    python = aegra_python(root)
    ensure_dotenv(root / ".env")
    load_project_dotenv(root / ".env")
    for port, what, var in ((mcp_port, "tickets MCP server", "DEV_MCP_PORT"),
                            (notes_port, "notes MCP server", "DEV_NOTES_PORT"),
                            (api_port, "Aegra API process", "SERVE_PORT"),
                            (worker_port, "Aegra API + worker process", "SERVE_WORKER_PORT")):
        if not processes.port_free(port):
            raise EngineError(f"port {port} (for the {what}) is already in use; stop whatever "
                              f"uses it, or pick another port: make serve {var}=<port>")
    env = dict(os.environ)
    for name, value in DEV_DEFAULTS.items():
        env.setdefault(name, value)
    url = f"http://127.0.0.1:{api_port}"
    env.setdefault("ONBEHALF_DEV_CONSOLE", "1")
    env.setdefault("ONBEHALF_PUBLIC_URL", url)
    env.setdefault("MCP_SERVERS", dev_servers_config(mcp_port, notes_port))
    database_url = env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    if ensure_database(python, database_url):
        print(f"==> created the database {redact_url(database_url)}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        queue = processes.ensure_redis(env, procs, "make serve", "REDIS_URL", "Aegra's run queue")
        if queue is None:
            return 1
        env.setdefault("ONBEHALF_REDIS_URL", queue.rsplit("/", 1)[0] + "/1")
        ours = processes.ensure_redis(env, procs, "make serve", "ONBEHALF_REDIS_URL",
                            "onbehalf's handoff and connected accounts")
        if ours is None:
            return 1
        bin_dir = Path(sys.executable).parent
        for command, port in (("tickets-mcp", mcp_port), ("notes-mcp", notes_port)):
            procs.append(subprocess.Popen([str(bin_dir / "onbehalf"), command, "--port", str(port)],
                                          env=env, start_new_session=True))
            if not processes.wait_port(port, procs[-1], 20):
                return processes.stopped("make serve") if processes.STOPPING.is_set() else 1
        engine = Engine(python=python, config=root / "langgraph.json",
                        database_url=database_url, queue_redis_url=queue,
                        onbehalf_redis_url=ours)
        procs.extend(start_pair(engine, env, api_port, worker_port))
        prefix = "" if api_port == 2024 else f"LANGGRAPH_URL={url} "
        print(
            "\n"
            "onbehalf on Aegra (offline model, no API key needed):\n"
            f"  API process             {url}   (API only: runs are queued)\n"
            f"  API + worker process    http://127.0.0.1:{worker_port}   (executes the runs)\n"
            f"  Postgres                {redact_url(database_url)}\n"
            f"  Redis: Aegra's queue    {redact_url(queue)}\n"
            f"  Redis: onbehalf's data  {redact_url(ours)}\n"
            f"  tickets MCP             http://127.0.0.1:{mcp_port}/mcp\n"
            f"  notes MCP               http://127.0.0.1:{notes_port}/mcp   (OAuth)\n"
            f"  Dev console             {url}/console\n"
            "\nIn another terminal, act as alice or bob:\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_tickets"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "get_ticket ticket_id=T-1001"'
            "   # not his: not found\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "connect_account server=notes"\n'
            "\nCtrl-C stops every server.\n",
            flush=True,
        )
        return processes.watch(procs, "make serve")
    finally:
        processes.stop_all(procs)


def write_config(workdir: Path, root: Path, graphs: dict[str, str] | None = None,
                 http_app: str | None = None) -> Path:
    """A `langgraph.json` in `workdir` for an engine run elsewhere than the project root:
    the project's own, with paths made absolute (and its graphs or app swapped if asked)."""
    config = json.loads((root / "langgraph.json").read_text())
    config["dependencies"] = [str(root)]
    config["graphs"] = graphs or {
        name: str((root / path.split(":")[0]).resolve()) + ":" + path.split(":")[1]
        for name, path in config["graphs"].items()}
    config["auth"] = {**config["auth"], "path": f"{root / 'src' / 'auth.py'}:auth"}
    if http_app is not None:
        config["http"] = {**config["http"], "app": http_app}
    path = workdir / "langgraph.json"
    path.write_text(json.dumps(config, indent=1))
    return path


if __name__ == "__main__":
    sys.exit(main())
