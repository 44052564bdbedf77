"""`make dev` finds a Redis for connected accounts, or starts a private one, or says why not."""

from __future__ import annotations

import subprocess

import pytest
import redis

from onbehalf import devserver
from tests.support.tokens import free_port


def test_a_redis_that_answers_is_used_as_it_is(redis_url: str) -> None:
    env, procs = {"REDIS_URL": redis_url}, []
    assert devserver._ensure_redis(env, procs) == redis_url
    assert procs == [] and env["REDIS_URL"] == redis_url


def test_without_a_redis_a_private_one_runs_for_the_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env: dict[str, str] = {"REDIS_URL": dead}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = devserver._ensure_redis(env, procs)
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
    monkeypatch.setattr(devserver, "redis_server_executable", lambda: None)
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert devserver._ensure_redis(env, []) is None
    assert "connected accounts" in capsys.readouterr().err
