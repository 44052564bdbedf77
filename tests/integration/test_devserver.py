"""`make dev` and `make serve` find a Redis, or start a private one, or say why not."""

from __future__ import annotations

import subprocess

import pytest
import redis

from onbehalf import processes
from tests.support.tokens import free_port


def test_a_redis_that_answers_is_used_as_it_is(redis_url: str) -> None:
    env, procs = {"REDIS_URL": redis_url}, []
    assert processes.ensure_redis(env, procs, "make dev") == redis_url
    assert procs == [] and env["REDIS_URL"] == redis_url


def test_without_a_redis_a_private_one_runs_for_the_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env: dict[str, str] = {"REDIS_URL": dead}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = processes.ensure_redis(env, procs, "make dev")
        assert url and url != dead and env["REDIS_URL"] == url
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            assert client.ping()
            assert client.config_get("save")["save"] == ""  # nothing kept on disk
        assert "started a private one" in capsys.readouterr().out
    finally:
        for process in procs:
            process.terminate()
            process.wait(timeout=10)


def test_without_any_redis_server_it_says_what_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(processes, "redis_server_executable", lambda: None)
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert processes.ensure_redis(env, [], "make dev") is None
    assert "connected accounts" in capsys.readouterr().err


def test_onbehalfs_own_redis_variable_is_found_or_started_apart(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "ONBEHALF_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/3"}
    assert processes.ensure_redis(env, [], "make serve", "ONBEHALF_REDIS_URL") == env[
        "ONBEHALF_REDIS_URL"]
