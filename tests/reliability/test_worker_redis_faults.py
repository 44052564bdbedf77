"""Redis failing under the token handoff, through the CLI: bounded, exit 2, REDIS_URL named.

tests/integration/test_worker_cli.py already covers the messages for a Redis
that refuses connections and for one restarted between put and take; what
is added here is the time bound, a Redis that accepts connections but never
answers, and a Redis that goes down after the token was stored.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import PrivateRedis
from tests.support.tokens import free_port, mint, subprocess_env

ONBEHALF = [sys.executable, "-c", "import sys; from onbehalf.cli import main; sys.exit(main())"]
REFUSED_BOUND_SECONDS = 6.0
"""Interpreter start, one connection retry and the message; a refused connection is instant."""
SILENT_BOUND_SECONDS = 10.0
"""Also the handoff's 2 s connect and 3 s command timeouts."""


def onbehalf(*args: str, redis_url: str, cwd: Path, stdin: str = ""
             ) -> tuple[subprocess.CompletedProcess[str], float]:
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_URL=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    proc = subprocess.run([*ONBEHALF, *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)
    return proc, time.monotonic() - started


def reason(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onbehalf: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def new_id() -> str:
    return f"exec-{uuid.uuid4()}"


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def test_handoff_and_worker_with_redis_down_exit_2_quickly(
    throwaway_redis: PrivateRedis, tmp_path: Path
) -> None:
    throwaway_redis.stop()
    token = mint("alice")
    put, put_seconds = onbehalf("handoff", "put", new_id(), redis_url=throwaway_redis.url,
                                cwd=tmp_path, stdin=token)
    run, run_seconds = onbehalf("worker", "run", "--execution-id", new_id(), "hello",
                                redis_url=throwaway_redis.url, cwd=tmp_path)
    for proc, seconds in ((put, put_seconds), (run, run_seconds)):
        assert f"REDIS_URL={throwaway_redis.url}" in reason(proc, 2)
        assert seconds < REFUSED_BOUND_SECONDS, f"took {seconds:.1f}s"
        assert token not in proc.stderr


def test_handoff_and_worker_with_a_redis_that_never_answers_exit_2_in_bounded_time(
    silent_redis: str, tmp_path: Path
) -> None:
    put, put_seconds = onbehalf("handoff", "put", new_id(), redis_url=silent_redis,
                                cwd=tmp_path, stdin=mint("alice"))
    run, run_seconds = onbehalf("worker", "run", "--execution-id", new_id(), "hello",
                                redis_url=silent_redis, cwd=tmp_path)
    for proc, seconds in ((put, put_seconds), (run, run_seconds)):
        line = reason(proc, 2)
        assert f"REDIS_URL={silent_redis}" in line, line
        assert seconds < SILENT_BOUND_SECONDS, f"took {seconds:.1f}s"


def test_redis_down_after_the_put_then_back_empty_exits_2_each_time(
    throwaway_redis: PrivateRedis, tmp_path: Path
) -> None:
    execution_id, token = new_id(), mint("alice")
    put, _ = onbehalf("handoff", "put", execution_id, redis_url=throwaway_redis.url,
                      cwd=tmp_path, stdin=token)
    assert put.returncode == 0, put.stderr

    throwaway_redis.stop()
    down, seconds = onbehalf("worker", "run", "--execution-id", execution_id, "hello",
                             redis_url=throwaway_redis.url, cwd=tmp_path)
    assert f"REDIS_URL={throwaway_redis.url}" in reason(down, 2)
    assert seconds < REFUSED_BOUND_SECONDS, f"took {seconds:.1f}s"

    throwaway_redis.start()  # a restarted Redis keeps nothing (no persistence)
    gone, _ = onbehalf("worker", "run", "--execution-id", execution_id, "hello",
                       redis_url=throwaway_redis.url, cwd=tmp_path)
    assert "no handed-off token" in reason(gone, 2)
    for proc in (down, gone):
        assert token not in proc.stderr and token.rsplit(".", 1)[1] not in proc.stderr
