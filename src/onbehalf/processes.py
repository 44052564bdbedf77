"""Running a set of local servers for a person at a terminal: `make dev` and `make serve`.

Ports to wait for, a Redis to find or start, and the one way to stop: Ctrl-C
(or SIGTERM) sets `STOPPING`, every server gets SIGINT at once and one shared
deadline, and the command exits 0 with no traceback and no `make` error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import redis

from onbehalf.local_redis import redis_server_executable


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


STOPPING = threading.Event()
"""Set by Ctrl-C or SIGTERM: every wait here ends early, and `main` stops the servers."""


def wait_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not STOPPING.is_set():
        if process.poll() is not None:
            return False
        if not port_free(port):
            return True
        STOPPING.wait(0.2)
    return False


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_redis(env: dict[str, str], procs: list[subprocess.Popen[bytes]], who: str,
                 variable: str = "REDIS_URL",
                 needed_for: str = "the notes server (connected accounts)") -> str | None:
    """A Redis at `variable` if it answers, else a private one started here (put into `env`
    and `procs`); None when there is neither."""
    url = env.get(variable) or "redis://127.0.0.1:6379/0"
    if redis_answers(url):
        return url
    executable = redis_server_executable()
    if executable is None:
        print(f"{who}: no Redis answers at {url} and no redis-server is installed, so "
              f"{needed_for} is unavailable: install redis-server or set {variable}",
              file=sys.stderr)
        return None
    port = free_port()
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )
    procs.append(server)
    if not wait_port(port, server, 20):
        print(f"{who}: the private redis-server did not start (see above)", file=sys.stderr)
        return None
    url = f"redis://127.0.0.1:{port}/0"
    print(f"==> no Redis at {env.get(variable) or 'redis://127.0.0.1:6379/0'}; started a "
          f"private one for this session at {url} (nothing is kept on exit)")
    env[variable] = url
    return url


STOP_SECONDS = 15.0


def take_the_terminal() -> Callable[[], None]:
    """Put this process in a process group of its own, in the terminal's foreground.

    Ctrl-C then reaches this process alone: not `make` (which would print
    `make: *** [dev] Interrupt` and fail), not the servers (which it stops itself).
    Returns what gives the terminal back; without a terminal (tests, CI) it does nothing.
    """
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return lambda: None
    try:
        previous = os.tcgetpgrp(tty)
        if previous != os.getpgrp():  # started in the background: leave job control alone
            os.close(tty)
            return lambda: None
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not take it
        os.tcsetpgrp(tty, os.getpgrp())
    except OSError:
        os.close(tty)
        return lambda: None

    def give_back() -> None:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty, previous)
        os.close(tty)

    return give_back


def stopped(who: str) -> int:
    print(f"\n{who}: stopping every server", flush=True)
    return 0


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT to every server at once, then one shared deadline; whatever is left is killed."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for p in reversed(procs):
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_at_the_terminal(serve: Callable[[], int]) -> int:
    """Run `serve` as the command a person started: Ctrl-C (or SIGTERM, SIGHUP) only sets
    `STOPPING`; the servers run in sessions of their own and this process in a foreground
    group of its own, so the terminal's SIGINT reaches it alone, which stops them all in
    order and exits 0, and no second signal lands in the middle of that."""
    # SIGHUP too: the terminal closing (or tmux's session ending) must stop the servers,
    # which run in sessions of their own and would otherwise outlive this process
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: STOPPING.set())
    give_back = take_the_terminal()
    try:
        return serve()
    finally:
        give_back()


def watch(procs: list[subprocess.Popen[bytes]], who: str) -> int:
    """Until Ctrl-C (exit 0) or until one of the servers exits on its own (exit 1)."""
    while not STOPPING.is_set():
        if any(p.poll() is not None for p in procs):
            print(f"{who}: a server exited; stopping", file=sys.stderr)
            return 1
        STOPPING.wait(0.5)
    return stopped(who)
