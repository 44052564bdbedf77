"""`make serve` as an operator runs it: Aegra's two processes, Postgres, Redis, the demo servers.

The command `make serve` runs (`python -m onbehalf.serve`), on free ports, with
the suite's private Postgres (a database it must create itself) and a private
Redis; then what the banner says: `onbehalf chat` as alice and bob through the
API-only process, and Ctrl-C stops every server it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.support.aegra_server import aegra_unavailable_reason
from tests.support.commands import Command, running
from tests.support.postgres_server import PrivatePostgres
from tests.support.tokens import free_port, subprocess_env

pytestmark = [pytest.mark.e2e]



class Serve(Command):
    def __init__(self, command: Command, ports: dict[str, int], database_url: str) -> None:
        super().__init__(command.process, command.log)
        self.ports, self.database_url = ports, database_url
        self.url = f"http://127.0.0.1:{ports['SERVE_PORT']}"


@pytest.fixture(scope="module")
def serve(private_postgres: PrivatePostgres, engine_queue_redis: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    reason = aegra_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    ports = {name: free_port() for name in ("SERVE_PORT", "SERVE_WORKER_PORT", "DEV_MCP_PORT",
                                            "DEV_NOTES_PORT")}
    database_url = private_postgres.url(f"serve_{uuid.uuid4().hex[:8]}")  # not there yet
    base = engine_queue_redis.rsplit("/", 1)[0]
    env = subprocess_env(**{k: str(v) for k, v in ports.items()}, DATABASE_URL=database_url,
                         REDIS_URL=f"{base}/2", ONBEHALF_REDIS_URL=f"{base}/3",
                         PYTHONUNBUFFERED="1", LANGSMITH_TRACING="false")
    log = tmp_path_factory.mktemp("make-serve") / "serve.log"
    with running("onbehalf.serve", env, log) as command:
        yield Serve(command, ports, database_url)


def chat(serve: Serve, user: str, message: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onbehalf", "chat", "--as", user, message],
                          env=subprocess_env(LANGGRAPH_URL=serve.url), capture_output=True,
                          text=True, timeout=90, check=False)


def test_the_banner_names_both_processes_postgres_and_both_redis(serve: Serve) -> None:
    banner = serve.output()
    assert "created the database" in banner
    assert f"{serve.url}   (API only" in banner
    assert f"http://127.0.0.1:{serve.ports['SERVE_WORKER_PORT']}   (executes" in banner
    assert "Redis: Aegra's queue" in banner and "Redis: onbehalf's data" in banner
    assert "Traceback" not in banner


def test_alice_and_bob_chat_through_the_api_process(serve: Serve) -> None:
    alice = chat(serve, "alice", "list_tickets")
    assert alice.returncode == 0, alice.stderr
    assert "as_user: alice" in alice.stdout and "T-1001" in alice.stdout
    bob = chat(serve, "bob", "get_ticket ticket_id=T-1001")
    assert bob.returncode == 0, bob.stderr
    assert "not found" in bob.stdout and "VPN" not in bob.stdout
    with psycopg.connect(serve.database_url) as db:  # the runs live in the database it made
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] >= 2


def test_closing_the_terminal_stops_every_server(serve: Serve) -> None:
    """SIGHUP (the terminal or the tmux session closed) stops everything, as Ctrl-C does
    (make dev's tests press Ctrl-C): the servers run in sessions of their own and would
    otherwise outlive the command."""
    serve.process.send_signal(signal.SIGHUP)
    assert serve.process.wait(timeout=30) == 0, serve.output()[-3000:]
    for port in serve.ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert "Traceback" not in serve.output()
