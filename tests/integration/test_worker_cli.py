"""`onbehalf handoff put` and `onbehalf worker run` as a user runs them: real processes.

Every failing command must exit with its documented code (DESIGN.md §4),
print exactly one `onbehalf: ...` line on stderr and no traceback, keep
stdout to JSON lines, and never print the token.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import PrivateRedis
from tests.support.tokens import free_port, mint, subprocess_env

# the same entry point as the installed `onbehalf` script.
ONBEHALF = [sys.executable, "-c", "import sys; from onbehalf.cli import main; sys.exit(main())"]
PREFIX = "agent-token:"
STORED = re.compile(r"^stored (?P<key>\S+) ttl=(?P<ttl>\d+)s\n$")


def onbehalf(
    *args: str, redis_url: str, cwd: Path, stdin: str = "", langgraph_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(
        REDIS_URL=redis_url,
        LANGGRAPH_URL=langgraph_url or f"http://127.0.0.1:{free_port()}",
    )
    return subprocess.run(
        [*ONBEHALF, *args], input=stdin, capture_output=True, text=True, env=env, cwd=cwd,
        timeout=30,
    )


def assert_one_reason_line(
    proc: subprocess.CompletedProcess[str], code: int, token: str | None = None
) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("onbehalf: ")
    assert "Traceback" not in proc.stderr
    if token is not None:
        assert_no_token(proc, token)
    return lines[0]


def assert_no_token(proc: subprocess.CompletedProcess[str], token: str) -> None:
    signature = token.rsplit(".", 1)[1]
    for stream in (proc.stdout, proc.stderr):
        assert token not in stream
        assert signature not in stream


def new_id() -> str:
    return f"exec-{uuid.uuid4()}"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


# --- handoff put ------------------------------------------------------------------


def test_handoff_put_prints_the_key_and_the_ttl_given(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    token, execution_id = mint("alice", ttl=3600), new_id()
    proc = onbehalf("handoff", "put", execution_id, redis_url=redis_url, cwd=tmp_path,
                    stdin=token + "\n")
    assert proc.returncode == 0, proc.stderr
    match = STORED.match(proc.stdout)
    assert match, proc.stdout
    assert match["key"] == PREFIX + execution_id
    assert int(match["ttl"]) == 600
    assert proc.stderr == ""
    assert_no_token(proc, token)
    assert sync_redis.get(PREFIX + execution_id) == token.encode()
    assert 0 < sync_redis.ttl(PREFIX + execution_id) <= 600


def test_handoff_put_ttl_is_bounded_by_exp_and_by_the_flag(redis_url: str, tmp_path: Path) -> None:
    short = onbehalf("handoff", "put", new_id(), redis_url=redis_url, cwd=tmp_path,
                     stdin=mint("alice", ttl=30))
    assert short.returncode == 0, short.stderr
    assert int(STORED.match(short.stdout)["ttl"]) <= 30
    capped = onbehalf("handoff", "put", new_id(), "--ttl", "10", redis_url=redis_url,
                      cwd=tmp_path, stdin=mint("alice", ttl=3600))
    assert capped.returncode == 0, capped.stderr
    assert int(STORED.match(capped.stdout)["ttl"]) == 10


def test_handoff_put_of_an_expired_token_exits_2(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    token, execution_id = mint("alice", ttl=-30), new_id()
    proc = onbehalf("handoff", "put", execution_id, redis_url=redis_url, cwd=tmp_path, stdin=token)
    line = assert_one_reason_line(proc, 2, token)
    assert "expired" in line
    assert proc.stdout == ""
    assert sync_redis.exists(PREFIX + execution_id) == 0


def test_handoff_put_without_a_token_on_stdin_exits_2(redis_url: str, tmp_path: Path) -> None:
    proc = onbehalf("handoff", "put", new_id(), redis_url=redis_url, cwd=tmp_path, stdin="\n")
    assert "stdin" in assert_one_reason_line(proc, 2)


def test_handoff_put_refuses_an_execution_id_outside_the_charset(
    redis_url: str, tmp_path: Path
) -> None:
    token = mint("alice")
    proc = onbehalf("handoff", "put", "agent-token:*", redis_url=redis_url, cwd=tmp_path,
                    stdin=token)
    assert "execution id" in assert_one_reason_line(proc, 2, token)


def test_handoff_put_with_redis_down_exits_2_naming_redis_url(tmp_path: Path) -> None:
    token, port = mint("alice"), free_port()
    proc = onbehalf("handoff", "put", new_id(), redis_url=f"redis://:hunter2@127.0.0.1:{port}/0",
                    cwd=tmp_path, stdin=token)
    line = assert_one_reason_line(proc, 2, token)
    assert f"REDIS_URL=redis://:***@127.0.0.1:{port}/0" in line
    assert "hunter2" not in line


# --- worker run -------------------------------------------------------------------


def test_worker_run_without_a_handed_off_token_exits_2(redis_url: str, tmp_path: Path) -> None:
    proc = onbehalf("worker", "run", "--execution-id", new_id(), "hello",
                    redis_url=redis_url, cwd=tmp_path)
    line = assert_one_reason_line(proc, 2)
    assert "no handed-off token" in line
    assert proc.stdout == ""


def test_worker_run_with_an_expired_token_exits_2_and_deletes_it(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    token, execution_id = mint("alice", ttl=-30), new_id()
    sync_redis.set(PREFIX + execution_id, token, ex=60)
    proc = onbehalf("worker", "run", "--execution-id", execution_id, "hello",
                    redis_url=redis_url, cwd=tmp_path)
    assert "expired" in assert_one_reason_line(proc, 2, token)
    assert proc.stdout == ""
    assert sync_redis.exists(PREFIX + execution_id) == 0


def test_worker_run_with_the_server_down_exits_4_naming_langgraph_url_and_uses_up_the_token(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    token, execution_id = mint("alice"), new_id()
    put = onbehalf("handoff", "put", execution_id, redis_url=redis_url, cwd=tmp_path, stdin=token)
    assert put.returncode == 0, put.stderr
    langgraph_url = f"http://127.0.0.1:{free_port()}"
    proc = onbehalf("worker", "run", "--execution-id", execution_id, "list", "my", "tickets",
                    redis_url=redis_url, cwd=tmp_path, langgraph_url=langgraph_url)
    line = assert_one_reason_line(proc, 4, token)
    assert f"LANGGRAPH_URL={langgraph_url}" in line
    assert proc.stdout == ""
    assert sync_redis.exists(PREFIX + execution_id) == 0

    again = onbehalf("worker", "run", "--execution-id", execution_id, "hello",
                     redis_url=redis_url, cwd=tmp_path, langgraph_url=langgraph_url)
    assert "already took it" in assert_one_reason_line(again, 2, token)


def test_worker_run_after_a_redis_restart_says_the_token_is_missing(
    throwaway_redis: PrivateRedis, tmp_path: Path
) -> None:
    token, execution_id = mint("alice"), new_id()
    put = onbehalf("handoff", "put", execution_id, redis_url=throwaway_redis.url, cwd=tmp_path,
                   stdin=token)
    assert put.returncode == 0, put.stderr
    throwaway_redis.restart()
    proc = onbehalf("worker", "run", "--execution-id", execution_id, "hello",
                    redis_url=throwaway_redis.url, cwd=tmp_path)
    assert "no handed-off token" in assert_one_reason_line(proc, 2, token)
    assert proc.stdout == ""


def test_worker_run_with_redis_down_exits_2_naming_redis_url(
    throwaway_redis: PrivateRedis, tmp_path: Path
) -> None:
    throwaway_redis.stop()
    proc = onbehalf("worker", "run", "--execution-id", new_id(), "hello",
                    redis_url=throwaway_redis.url, cwd=tmp_path)
    line = assert_one_reason_line(proc, 2)
    assert f"REDIS_URL={throwaway_redis.url}" in line
    assert proc.stdout == ""
