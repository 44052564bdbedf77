"""`make dev`: the demo MCP servers and `langgraph dev`, wired for the offline model.

Two MCP servers stand in for what agents really reach: `tickets` takes the
user's own JWT (`user_token`), and `notes` is a hosted-style server with its
own OAuth 2.1 authorization server (`oauth`, DESIGN.md §8), so connecting an
account can be watched in the console. Connected accounts need Redis: the
`REDIS_URL` one when it answers, else a private `redis-server` started here
for the session (nothing kept on disk).

On first use it writes a `.env` with a random dev JWT secret and sealing key,
so that `onbehalf chat --as alice ...` in a second terminal mints tokens the
server accepts. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from onbehalf.dotenv import load_project_dotenv
from onbehalf.local_redis import redis_server_executable

ROOT = Path(__file__).resolve().parents[2]
MCP_PORT = int(os.environ.get("DEV_MCP_PORT", "8765"))
NOTES_PORT = int(os.environ.get("DEV_NOTES_PORT", "8766"))
SERVER_PORT = int(os.environ.get("DEV_SERVER_PORT", "2024"))
DEV_DEFAULTS = {
    "AUTH_JWT_ISSUER": "https://dev.onbehalf.local",
    "AUTH_JWT_AUDIENCE": "onbehalf-api",
    "AGENT_MODEL": "offline",
}


def _ensure_dotenv(path: Path) -> None:
    """Create or complete `.env` with dev-only secrets; never overwrite what is there."""
    existing = path.read_text() if path.exists() else ""
    keys = {line.split("=", 1)[0].strip() for line in existing.splitlines() if "=" in line}
    keys |= {name for name in (*DEV_DEFAULTS, "AUTH_JWT_SECRET", "TOKEN_SEALING_KEY")
             if os.environ.get(name)}  # set by the caller: nothing to write down
    additions = []
    if "AUTH_JWT_SECRET" not in keys and not os.environ.get("AUTH_JWKS_URL"):
        additions.append(f"AUTH_JWT_SECRET={secrets.token_urlsafe(32)}")
    if "TOKEN_SEALING_KEY" not in keys:
        key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        additions.append(f"TOKEN_SEALING_KEY={key}")
    for name, value in DEV_DEFAULTS.items():
        if name not in keys:
            additions.append(f"{name}={value}")
    if additions:
        text = existing.rstrip("\n")
        header = "" if existing else "# written by `make dev`: dev-only settings, never commit\n"
        path.write_text(header + (text + "\n" if text else "") + "\n".join(additions) + "\n")
        print(f"==> wrote dev settings to {path}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


STOPPING = threading.Event()
"""Set by Ctrl-C or SIGTERM: every wait here ends early, and `main` stops the servers."""


def _wait_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not STOPPING.is_set():
        if process.poll() is not None:
            return False
        if not _port_free(port):
            return True
        STOPPING.wait(0.2)
    return False


def _redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_redis(env: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> str | None:
    """A Redis for connected accounts: REDIS_URL's if it answers, else a private one; or None."""
    url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _redis_answers(url):
        return url
    executable = redis_server_executable()
    if executable is None:
        print(f"make dev: no Redis answers at {url} and no redis-server is installed: the "
              "notes server (connected accounts) stays unavailable; install redis-server or "
              "set REDIS_URL", file=sys.stderr)
        return None
    port = _free_port()
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )
    procs.append(server)
    if not _wait_port(port, server, 20):
        print("make dev: the private redis-server did not start (see above)", file=sys.stderr)
        return None
    url = f"redis://127.0.0.1:{port}/0"
    print(f"==> no Redis at {env.get('REDIS_URL') or 'redis://127.0.0.1:6379/0'}; started a "
          f"private one for this session at {url} (connections are forgotten on exit)")
    env["REDIS_URL"] = url
    return url


def _dev_servers() -> str:
    """The servers file for `make dev`: the shipped one, on the dev ports, plus `notes`."""
    config = json.loads((ROOT / "mcp_servers.json").read_text())
    config["servers"]["tickets"]["url"] = f"http://127.0.0.1:{MCP_PORT}/mcp"
    config["servers"]["notes"] = {
        "url": f"http://127.0.0.1:{NOTES_PORT}/mcp",
        "transport": "streamable_http",
        "auth": {"type": "oauth", "scopes": ["notes"],
                 "description": "the demo Notes app: the user's own notes"},
        "timeout_seconds": 10,
    }
    return json.dumps(config)


STOP_SECONDS = 15.0


def _take_the_terminal() -> Callable[[], None]:
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


def _stopped() -> int:
    print("\nmake dev: stopping every server", flush=True)
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


def main() -> int:
    # Ctrl-C (or a SIGTERM) only sets a flag: the servers run in sessions of their own, so
    # the terminal's SIGINT reaches this process alone, which stops them all in order and
    # exits 0, and no second signal lands in the middle of that
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: STOPPING.set())
    give_back = _take_the_terminal()
    try:
        return _serve()
    finally:
        give_back()


def _serve() -> int:
    os.chdir(ROOT)
    _ensure_dotenv(ROOT / ".env")
    load_project_dotenv(ROOT / ".env")
    for port, what, var in ((MCP_PORT, "tickets MCP server", "DEV_MCP_PORT"),
                            (NOTES_PORT, "notes MCP server", "DEV_NOTES_PORT"),
                            (SERVER_PORT, "langgraph dev", "DEV_SERVER_PORT")):
        if not _port_free(port):
            print(f"make dev: port {port} (for the {what}) is already in use; stop whatever "
                  f"uses it, or pick another port: make dev {var}=<port>", file=sys.stderr)
            return 1
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.setdefault("ONBEHALF_DEV_CONSOLE", "1")
    # the server's routine info lines (queue stats, the reloader's "N changes detected"
    # every time the dev state is flushed) bury what a person needs; warnings still show
    env.setdefault("LOG_LEVEL", "WARNING")
    own_servers = not (env.get("MCP_SERVERS") or env.get("MCP_SERVERS_FILE"))
    if own_servers:
        env["MCP_SERVERS"] = _dev_servers()
    prefix = "" if SERVER_PORT == 2024 else f"LANGGRAPH_URL=http://127.0.0.1:{SERVER_PORT} "
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_url = _ensure_redis(env, procs)
        for command, port, what in (("tickets-mcp", MCP_PORT, "tickets MCP server"),
                                    ("notes-mcp", NOTES_PORT, "notes MCP server")):
            mcp = subprocess.Popen(
                [str(bin_dir / "onbehalf"), command, "--port", str(port)], env=env,
                start_new_session=True,
            )
            procs.append(mcp)
            if not _wait_port(port, mcp, 20):
                if STOPPING.is_set():
                    return _stopped()
                print(f"make dev: the {what} did not start (see above)", file=sys.stderr)
                return 1
        server = subprocess.Popen(
            [str(bin_dir / "langgraph"), "dev", "--host", "127.0.0.1",
             "--port", str(SERVER_PORT), "--no-browser", "--n-jobs-per-worker", "16"],
            env=env, start_new_session=True,
        )
        procs.append(server)
        if not _wait_port(SERVER_PORT, server, 120):
            if STOPPING.is_set():
                return _stopped()
            print("make dev: langgraph dev did not start (see above)", file=sys.stderr)
            return 1
        print(
            "\n"
            f"Dev console: http://127.0.0.1:{SERVER_PORT}/console\n"
            "\n"
            "onbehalf is running (offline model, no API key needed):\n"
            f"  LangGraph server  http://127.0.0.1:{SERVER_PORT}\n"
            f"  tickets MCP       http://127.0.0.1:{MCP_PORT}/mcp   (acts with the user's JWT)\n"
            f"  notes MCP         http://127.0.0.1:{NOTES_PORT}/mcp   (OAuth: connect an "
            "account; alice or bob)\n"
            f"  Redis             {redis_url or 'none: connecting accounts is unavailable'}\n"
            + ("" if own_servers else "  (MCP_SERVERS/MCP_SERVERS_FILE is set: the agents use "
               "your servers, not these)\n") +
            "\nIn another terminal, act as alice or bob:\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_tickets"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "list_tickets status=open"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as alice "get_ticket ticket_id=T-1001"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "get_ticket ticket_id=T-1001"'
            "   # not his: not found\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice --graph ticket_triage '
            '"create_ticket title=x body=y"   # read-only graph: no create_ticket\n'
            f'  {prefix}.venv/bin/onbehalf chat --as alice "connect_account server=notes"'
            "   # prints a link: open it, sign in as alice, confirm\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_notes"'
            "   # after connecting: alice's notes\n"
            "  .venv/bin/onbehalf token alice   # a raw JWT for curl or the SDK\n"
            "\nCtrl-C stops every server.\n",
            flush=True,
        )
        while not STOPPING.is_set():
            if any(p.poll() is not None for p in procs):
                print("make dev: a server exited; stopping", file=sys.stderr)
                return 1
            STOPPING.wait(0.5)
        return _stopped()
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
