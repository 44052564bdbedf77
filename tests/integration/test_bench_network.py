"""The benchmark's emulated network (`bench.netem`) really adds its round-trip time.

Only lower bounds are asserted (a delay can be longer on a busy machine, never
shorter), plus that bytes pass unchanged in both directions.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.servers import stop_process, wait_listening
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port, subprocess_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RTT_MS = 80.0


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = Starlette(routes=[Route("/echo", _echo, methods=["POST"])])
    with serve_in_thread(app) as base_url:
        target = int(base_url.rsplit(":", 1)[1])
        listen = free_port()
        log = tmp_path_factory.mktemp("netem") / "netem.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.netem", "--rtt-ms", str(RTT_MS),
                 f"{listen}:{target}"],
                env=subprocess_env(), cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_listening("netem", listen, process, log)
            yield f"http://127.0.0.1:{listen}/echo"
        finally:
            stop_process(process)


def test_a_new_connection_costs_a_handshake_and_a_round_trip(proxied: str) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: several chunks each way
    with httpx.Client(timeout=10) as client:
        started = time.perf_counter()
        first = client.post(proxied, content=body)
        first_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        second = client.post(proxied, content=b"again")
        second_ms = (time.perf_counter() - started) * 1000
    assert first.content == body and second.content == b"again"
    assert first_ms >= 2 * RTT_MS * 0.95
    assert second_ms >= RTT_MS * 0.95


def test_a_bad_pair_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.netem", "--rtt-ms", "5", "not-a-pair"],
        env=subprocess_env(), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "LISTEN_PORT:TARGET_PORT" in result.stderr
